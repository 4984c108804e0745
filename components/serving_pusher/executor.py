"""Executor of ServingPusher: TFX's Pusher, publishing each version in one step.

TFX's filesystem push copies the model file by file into `<base>/<version>` (saved_model.pb
last). A push killed midway leaves that version folder incomplete (empty, or assets without
saved_model.pb); TF Serving, which polls `<base>` for the largest numbered folder, then sees a
newest version it cannot load, and the folder stays after later runs. Here the model is copied
into a staging folder beside the versions, named so that TF Serving ignores it (not a number),
and renamed to its version in one step. Before each push, what crashed pushes left (staging
folders, and numbered folders without saved_model.pb) is deleted; a folder holding a SavedModel
is never touched.

Renaming a directory is one step on local and POSIX file systems (a mounted volume). Object
stores (gs://, s3://) have no directory rename: there the files are copied into the version
folder with saved_model.pb last, as TFX does, and the cleanup before the next push removes a
folder a crash left incomplete. One pipeline pushes into a serving directory at a time.
"""

import os
import time
import uuid
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

from components.pushed_model_baseline.executor import holds_saved_model

STAGING_PREFIX = '.staging-'
SAVED_MODEL_FILE = 'saved_model.pb'


def leftovers_of_crashed_pushes(base_directory: str) -> List[str]:
  """Staging folders, and numbered version folders without a SavedModel, under base_directory."""
  if not fileio.exists(base_directory):
    return []
  found = []
  for name in fileio.listdir(base_directory):
    name = name.rstrip('/')  # object stores list directories with a trailing slash
    path = os.path.join(base_directory, name)
    if name.startswith(STAGING_PREFIX) or (name.isdigit() and not holds_saved_model(path)):
      found.append(path)
  return sorted(found)


def _free_version(base_directory: str) -> str:
  """The current Unix time as a version, moved on while that folder exists (two pushes within a
  second)."""
  version = int(time.time())
  while fileio.exists(os.path.join(base_directory, str(version))):
    version += 1
  return str(version)


def _moves_directories_in_one_step(path: str) -> bool:
  return '://' not in path


def publish(model_path: str, base_directory: str, version: str) -> str:
  """Copies the SavedModel in model_path to `<base_directory>/<version>`; returns that path."""
  serving_path = os.path.join(base_directory, version)
  if _moves_directories_in_one_step(base_directory):
    staging = os.path.join(base_directory, f'{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}')
    io_utils.copy_dir(model_path, staging)
    fileio.rename(staging, serving_path)
  else:
    io_utils.copy_dir(model_path, serving_path, deny_regex_patterns=[r'saved_model\.pb'])
    io_utils.copy_file(os.path.join(model_path, SAVED_MODEL_FILE),
                       os.path.join(serving_path, SAVED_MODEL_FILE))
  return serving_path


class Executor(pusher_executor.Executor):
  """Pushes a blessed model to a filesystem destination as one new version (see module doc)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    if destination.WhichOneof('destination') != 'filesystem':
      raise ValueError('ServingPusher pushes to a filesystem destination only, got '
                       f'{destination.WhichOneof("destination")!r}')
    base_directory = destination.filesystem.base_directory
    for path in leftovers_of_crashed_pushes(base_directory):
      logging.warning('Deleting %s, left incomplete by a crashed push.', path)
      fileio.rmtree(path)
    model_path = self.GetModelPath(input_dict)
    version = _free_version(base_directory)
    serving_path = publish(model_path, base_directory, version)
    logging.info('Model written to serving path %s.', serving_path)
    # As TFX's Pusher: a copy under the artifact's uri for the record.
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
