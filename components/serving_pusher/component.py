"""ServingPusher: TFX's Pusher whose versions appear in the serving directory whole or not at all.

    pusher = ServingPusher(model=trainer.outputs['model'],
                           model_blessing=evaluator.outputs['blessing'],
                           push_destination=PushDestination(filesystem=...))

Same spec, inputs, outputs and artifact properties as tfx.components.Pusher; only the executor
differs (executor.py says how, and why).
"""

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.serving_pusher import executor


class ServingPusher(tfx.components.Pusher):
  """Pushes a blessed model as one new numbered version, cleaning up after crashed pushes."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
