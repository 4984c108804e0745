"""TFX's Transform whose transformed examples keep the examples' recorded settings (executor.py).

The class keeps TFX's name, so the node id is 'Transform' as before.
"""

from tfx.components.transform import component as tfx_component
from tfx.dsl.components.base import executor_spec

from components.transform import executor


class Transform(tfx_component.Transform):
  """Transform; the transformed examples record the settings their examples recorded."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
