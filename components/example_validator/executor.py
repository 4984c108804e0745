"""TFX's ExampleValidator executor, failing the run when a split's statistics break the schema.

TFX 1.16's ExampleValidator only writes the anomalies (and a `blessed` custom property per split
on the ExampleAnomalies artifact); nothing downstream reads them, and Transform does not take
them as an input. This executor writes them the same way, then raises naming every anomaly (its
split, feature, TFDV reason and description) and where the anomalies are, so Transform and
everything after it never run on examples that break the curated schema
(contract/raw_examples.schema.pbtxt).
"""

from typing import Any, Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator import executor as tfx_executor
from tfx.components.example_validator import labels
from tfx.types import artifact_utils
from tfx.types import standard_component_specs


class ExampleAnomaliesError(RuntimeError):
  """The examples break the schema; the message names each anomaly."""


def describe(anomalies: anomalies_pb2.Anomalies) -> List[str]:
  """One line per anomalous feature: 'feature: REASON_TYPE (description)', and the dataset's."""
  lines = []
  for name, info in sorted(anomalies.anomaly_info.items()):
    reasons = '; '.join(
        f'{anomalies_pb2.AnomalyInfo.Type.Name(reason.type)} ({reason.short_description}: '
        f'{reason.description})' for reason in info.reason)
    lines.append(f'{name}: {reasons or info.description}')
  if anomalies.HasField('dataset_anomaly_info'):
    info = anomalies.dataset_anomaly_info
    lines.append('the dataset: ' + '; '.join(
        f'{anomalies_pb2.AnomalyInfo.Type.Name(r.type)} ({r.description})' for r in info.reason))
  return lines


class Executor(tfx_executor.Executor):
  """ExampleValidator's executor; raises ExampleAnomaliesError after writing anomalies."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]):
    self._found = []
    result = super().Do(input_dict, output_dict, exec_properties)
    if self._found:
      uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.ANOMALIES_KEY])
      statistics = artifact_utils.get_single_uri(
          input_dict[standard_component_specs.STATISTICS_KEY])
      lines = [f'  split {split}: {line}' for split, anomalies in self._found
               for line in describe(anomalies)]
      raise ExampleAnomaliesError(
          'ExampleValidator: the examples break the schema (contract/raw_examples.schema.pbtxt), '
          'so the run stops before Transform:\n' + '\n'.join(lines)
          + f'\nAnomalies in {uri}; statistics in {statistics}. Fix the input (or, if the '
          'examples are right, the definition in contract/features.py and the schema made from '
          'it: python -m contract.schema --write contract/raw_examples.schema.pbtxt).')
    return result

  def _Validate(self, inputs: Dict[str, Any], outputs: Dict[str, Any]
                ) -> anomalies_pb2.Anomalies:
    anomalies = super()._Validate(inputs, outputs)
    if anomalies.anomaly_info or anomalies.HasField('dataset_anomaly_info'):
      # The split is the last folder of the output path (TFX's Split-<name>).
      split = outputs[labels.SCHEMA_DIFF_PATH].rstrip('/').rsplit('/', 1)[-1]
      self._found.append((split.replace('Split-', '', 1), anomalies))
    return anomalies
