"""TFX's Transform executor; the transformed examples keep what their examples recorded.

PlayLogExampleGen records the settings that shaped its examples (history_length, the label
thresholds: contract/features.py EXAMPLE_SETTINGS) as custom properties and in
EXAMPLE_SETTINGS_FILE at the artifact's root. TFX's Transform writes the same examples
transformed but carries neither, and the Trainer reads only the transformed ones; this executor
copies both, so the Trainer can refuse hyper-parameters that disagree with its examples.
"""

import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.transform import executor as tfx_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs

from contract import features


def carry_example_settings(source: types.Artifact, target: types.Artifact) -> None:
  """Copies the recorded settings (properties and file) of source examples to target ones."""
  for key in features.EXAMPLE_SETTINGS:
    if source.has_custom_property(key):
      value = source.get_custom_property(key)
      if key == features.EXAMPLE_HISTORY_LENGTH:
        target.set_int_custom_property(key, int(value))
      else:
        target.set_float_custom_property(key, float(value))
  path = os.path.join(source.uri, features.EXAMPLE_SETTINGS_FILE)
  if fileio.exists(path):
    fileio.copy(path, os.path.join(target.uri, features.EXAMPLE_SETTINGS_FILE), overwrite=True)


class Executor(tfx_executor.Executor):
  """Transform's executor, then the examples' recorded settings onto the transformed examples."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    sources = input_dict[standard_component_specs.EXAMPLES_KEY]
    targets = output_dict.get(standard_component_specs.TRANSFORMED_EXAMPLES_KEY) or []
    # One transformed examples artifact per examples artifact, in order (materialize=True).
    for source, target in zip(sources, targets):
      carry_example_settings(source, target)
