"""ExampleValidator whose anomalies stop the run (executor.py).

TFX's component with another executor; the class keeps TFX's name, so the node id is
'ExampleValidator' as before. The pipeline makes Transform wait for it.
"""

from tfx.components.example_validator import component as tfx_component
from tfx.dsl.components.base import executor_spec

from components.example_validator import executor


class ExampleValidator(tfx_component.ExampleValidator):
  """Validates each split's statistics against the schema; an anomaly fails the run, named."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
