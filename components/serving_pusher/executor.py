"""Executor of ServingPusher: TFX's Pusher, publishing each version in one step.

TFX's filesystem push copies the model file by file into `<base>/<version>` (saved_model.pb
last). A push killed midway leaves that version folder incomplete (empty, or assets without
saved_model.pb); TF Serving, which polls `<base>` for the largest numbered folder, then sees a
newest version it cannot load, and the folder stays after later runs. Here the model is copied
into a staging folder beside the versions, named so that TF Serving ignores it (not a number),
and renamed to its version in one step. Before each push, what crashed pushes left (staging
folders, and numbered folders without saved_model.pb) is deleted; a folder holding a SavedModel
is never touched.

Two pushes at once (two runs of one pipeline, within the same second) get different versions:
a push claims its version by naming a folder holding its owner (host and process, OWNER_FILE)
`.staging-<version>` (a rename, one step that fails onto another push's folder). A staging
folder is a crashed push's leftover only when its owner is gone: a process of this host that is
no longer running, or for another host's push, when the folder has not changed for
STALE_STAGING_SECONDS; or when it has no owner file (the owner is written before the folder
takes its name). So no push deletes a live push's staging folder.

Renaming a directory is one step on local and POSIX file systems (a mounted volume). Object
stores (gs://, s3://) have no directory rename: there the files are copied into the version
folder with saved_model.pb last, as TFX does, and the cleanup before the next push removes a
folder a crash left incomplete. One pipeline pushes into a serving directory at a time there.
"""

import json
import os
import socket
import time
import uuid
from typing import Any, Dict, List, Optional

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
OWNER_FILE = 'owner.json'  # in a staging folder: {"host": ..., "pid": ...} of the push
CLAIM_PREFIX = '.claim-'  # a staging folder being named (its owner file written first)
_STAGED_MODEL = 'model'  # in a staging folder: the copy, renamed to the version when whole
# A staging folder of another host (whose process cannot be asked) that has not changed for this
# long is a crashed push's: a copy of any model into the serving volume takes minutes.
STALE_STAGING_SECONDS = 6 * 3600


def _owner() -> Dict[str, Any]:
  return {'host': socket.gethostname(), 'pid': os.getpid()}


def _process_is_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's: it exists
    return True
  return True


def _staging_is_live(path: str, now: float) -> bool:
  """Whether a push may still be writing this staging folder (see the module doc)."""
  owner: Optional[Dict[str, Any]] = None
  try:
    with fileio.open(os.path.join(path, OWNER_FILE)) as f:
      owner = json.loads(f.read())
  except Exception:  # pylint: disable=broad-except  # missing, half written: judged by its age
    owner = None
  if not owner:
    return False  # a push writes its owner before the folder gets its name
  if owner.get('host') == socket.gethostname() and isinstance(owner.get('pid'), int):
    return _process_is_running(owner['pid'])
  try:
    changed = max([os.path.getmtime(path)] + [os.path.getmtime(os.path.join(path, name))
                                             for name in os.listdir(path)])
  except OSError:
    return False
  return now - changed < STALE_STAGING_SECONDS


def leftovers_of_crashed_pushes(base_directory: str, now: Optional[float] = None) -> List[str]:
  """Staging folders of pushes that are no longer running, and numbered version folders without
  a SavedModel, under base_directory."""
  if not fileio.exists(base_directory):
    return []
  now = time.time() if now is None else now
  found = []
  for name in fileio.listdir(base_directory):
    name = name.rstrip('/')  # object stores list directories with a trailing slash
    path = os.path.join(base_directory, name)
    if name.startswith(STAGING_PREFIX):
      if not _moves_directories_in_one_step(path) or not _staging_is_live(path, now):
        found.append(path)
    elif name.startswith(CLAIM_PREFIX) and not _staging_is_live(path, now):
      found.append(path)
    elif name.isdigit() and not holds_saved_model(path):
      found.append(path)
  return sorted(found)


def _free_version(base_directory: str) -> str:
  """The current Unix time as a version, moved on while that folder exists (two pushes within a
  second; publish() claims it)."""
  version = int(time.time())
  while fileio.exists(os.path.join(base_directory, str(version))):
    version += 1
  return str(version)


def _claim(base_directory: str, version: str) -> Optional[str]:
  """Creates `<base>/.staging-<version>` for this push, its owner file already inside, or
  returns None when another push has it (or the version exists)."""
  staging = os.path.join(base_directory, f'{STAGING_PREFIX}{version}')
  if os.path.exists(os.path.join(base_directory, version)) or os.path.exists(staging):
    return None
  os.makedirs(base_directory, exist_ok=True)
  # Written aside first, so that a staging folder never exists without its owner.
  claim = os.path.join(base_directory, f'{CLAIM_PREFIX}{uuid.uuid4().hex}')
  os.mkdir(claim)
  with open(os.path.join(claim, OWNER_FILE), 'w') as f:
    json.dump(_owner(), f)
  try:
    os.rename(claim, staging)  # one step; fails onto another push's (non-empty) staging folder
  except OSError:
    fileio.rmtree(claim)
    return None
  return staging


def _moves_directories_in_one_step(path: str) -> bool:
  return '://' not in path


def publish(model_path: str, base_directory: str, version: str) -> str:
  """Copies the SavedModel in model_path to `<base_directory>/<version>` (or, on a local file
  system, to the next version no other push has claimed); returns that path."""
  if _moves_directories_in_one_step(base_directory):
    staging = _claim(base_directory, version)
    while staging is None:
      version = str(int(version) + 1)
      staging = _claim(base_directory, version)
    serving_path = os.path.join(base_directory, version)
    staged = os.path.join(staging, _STAGED_MODEL)
    try:
      io_utils.copy_dir(model_path, staged)
      os.rename(staged, serving_path)  # one step; fails rather than merge into an existing one
    finally:
      fileio.rmtree(staging)
    return serving_path
  serving_path = os.path.join(base_directory, version)
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
    version = os.path.basename(serving_path)  # publish moves on past versions others claimed
    logging.info('Model written to serving path %s.', serving_path)
    # As TFX's Pusher: a copy under the artifact's uri for the record.
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
