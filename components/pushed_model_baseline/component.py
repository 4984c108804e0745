"""PushedModelBaseline: the Evaluator's baseline taken from the push directory, not from MLMD.

Kubeflow Pipelines v2 (self-hosted) cannot execute a Resolver node, so the latest-blessed-model
resolver of the local and Beam runners has no Kubeflow equivalent. The model that matters as a
baseline is the one in service anyway: the newest numbered version in the TF Serving model
directory Pusher writes to. This component copies that version into a Model artifact laid out as
the Trainer lays out its own (`<uri>/Format-Serving/saved_model.pb`), which is where the Evaluator
looks (tfx.utils.path_utils.serving_model_path).

Nothing pushed yet (the first run, or a push directory emptied by a rollback): the candidate model
itself becomes the baseline. Every change threshold then compares the candidate with itself
(difference 0, inside any tolerance), so the gate reduces to the absolute thresholds, exactly what
the Evaluator does when a Resolver finds no blessed model. The artifact records which case it was.
Without a candidate (the Trainer's warm-start base, which the Trainer waits for), nothing pushed
leaves the artifact empty, and the Trainer starts cold.

    baseline = PushedModelBaseline(
        candidate_model=trainer.outputs['model'], serving_model_dir=serving_model_dir)
    evaluator = Evaluator(..., baseline_model=baseline.outputs['model'])
"""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.pushed_model_baseline import executor

CANDIDATE_MODEL_KEY = executor.CANDIDATE_MODEL_KEY
SERVING_MODEL_DIR_KEY = executor.SERVING_MODEL_DIR_KEY
MODEL_KEY = executor.MODEL_KEY


class PushedModelBaselineSpec(types.ComponentSpec):
  """Inputs, parameters and outputs of PushedModelBaseline."""

  PARAMETERS = {
      SERVING_MODEL_DIR_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {
      CANDIDATE_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model,
                                                           optional=True),
  }
  OUTPUTS = {
      MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
  }


class PushedModelBaseline(base_component.BaseComponent):
  """Outputs the newest model version in a TF Serving model directory as a Model artifact.

  Outputs:
    model: a Model artifact holding a copy of `<serving_model_dir>/<newest version>` (or of the
      candidate when nothing has been pushed), with custom properties `baseline_source`
      ('pushed' | 'candidate' | 'none'), `pushed_version` and `pushed_model_path`.
  """

  SPEC_CLASS = PushedModelBaselineSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, serving_model_dir: str,
               candidate_model: Optional[types.BaseChannel] = None):
    """Args:

      serving_model_dir: the directory Pusher pushes numbered versions into (local path, gs://,
        s3://); may not exist yet.
      candidate_model: the Trainer's model: the baseline when nothing has been pushed yet.
        Without it (the Trainer's warm-start base, which the Trainer waits for) the output is
        left empty then, and `baseline_source` says 'none'.
    """
    super().__init__(spec=PushedModelBaselineSpec(
        candidate_model=candidate_model,
        serving_model_dir=serving_model_dir,
        model=types.Channel(type=standard_artifacts.Model)))
