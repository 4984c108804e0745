"""Driver of PlayLogExampleGen: fingerprints the input files so MLMD caching sees new data.

The component has no input artifacts, so without a fingerprint a re-run over changed files
under the same input_base would be served from the cache. Like TFX's FileBasedDriver, the
driver adds an `input_fingerprint` exec property that becomes part of the cache key; unlike it,
the fingerprint is taken from the files' content (input_files.content_digest: a streaming
SHA-256, or an object store's own checksum), not their sizes and modification times, which a
re-delivered day keeps (`cp -p`, `rsync -a`, object-store copies) while its bytes change.

The files are those the executor will read, found with the same settings: a window's newest
partition that is not complete yet fails the run here, before anything is cached. Each file's
digest is handed to the executor too (`input_digests`), which keys its partition cache by them:
each input byte is hashed once per run.
"""

import json
from typing import Any, Dict

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types
from tfx.orchestration import data_types_utils
from tfx.orchestration import metadata
from tfx.orchestration.portable import base_driver as ir_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2

from components.play_log_example_gen import executor
from components.play_log_example_gen import input_files

INPUT_BASE_KEY = 'input_base'
PARTITION_PATTERN_KEY = 'partition_pattern'
WINDOW_PARTITIONS_KEY = 'window_partitions'
INPUT_FINGERPRINT_KEY = 'input_fingerprint'


def driver_properties(exec_properties: Dict[str, Any]) -> Dict[str, str]:
  """The properties the driver adds: `input_fingerprint`, a digest of the paths and contents of
  the files a run reads (with a rolling window, those of its partitions: a new partition changes
  it, an old one leaving the window too, and so does any changed byte), and `input_digests`,
  each of those files' content digest (JSON {path: digest})."""
  ingest = executor.ingest_settings(exec_properties)
  files = input_files.find_input_files(
      exec_properties[INPUT_BASE_KEY], ingest.partition_pattern, ingest.window_partitions,
      input_files.Completeness.of(ingest)).data
  digests = input_files.content_digests(files)
  return {INPUT_FINGERPRINT_KEY: f'files:{len(files)},sha256:{input_files.files_digest(digests)}',
          executor.INPUT_DIGESTS_KEY: json.dumps(digests, sort_keys=True)}


class Driver(base_driver.BaseDriver, ir_base_driver.BaseDriver):
  """Adds `input_fingerprint` and `input_digests` to the exec properties before the cache
  lookup."""

  def __init__(self, metadata_handle: metadata.Metadata):
    base_driver.BaseDriver.__init__(self, metadata_handle)
    ir_base_driver.BaseDriver.__init__(self, metadata_handle)

  def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                              pipeline_info: data_types.PipelineInfo,
                              component_info: data_types.ComponentInfo) -> Dict[str, Any]:
    del pipeline_info, component_info
    exec_properties.update(driver_properties(exec_properties))
    return exec_properties

  def run(self, execution_info: portable_data_types.ExecutionInfo
          ) -> driver_output_pb2.DriverOutput:
    result = driver_output_pb2.DriverOutput()
    for name, value in driver_properties(execution_info.exec_properties).items():
      data_types_utils.set_metadata_value(result.exec_properties[name], value)
    return result
