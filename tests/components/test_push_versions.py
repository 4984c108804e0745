"""Push versions unique even within one second, and a staging folder never taken for a crashed
push's leftover while its push lives (issue 27)."""

import json
import os
import socket
import subprocess
import sys
import threading

from tfx.utils import io_utils

from components.serving_pusher import executor
from tests.components.test_serving_pusher import _write_saved_model


def test_two_pushes_in_the_same_second_get_two_versions_and_neither_deletes_the_other(
    tmp_path, monkeypatch):
  model_path = str(tmp_path / 'model')
  _write_saved_model(model_path)
  serving_dir = str(tmp_path / 'serving')
  first_copying, second_done = threading.Event(), threading.Event()
  real_copy_dir = io_utils.copy_dir
  seen_during_copy = {}

  def copy_dir(source, destination, *args, **kwargs):
    if threading.current_thread().name == 'first':
      first_copying.set()
      assert second_done.wait(60)
      # The second push's cleanup ran while this one was copying; this staging folder is live.
      seen_during_copy['leftovers'] = executor.leftovers_of_crashed_pushes(serving_dir)
    real_copy_dir(source, destination, *args, **kwargs)

  monkeypatch.setattr(io_utils, 'copy_dir', copy_dir)
  results = {}

  def push(name):
    if name == 'second':
      assert first_copying.wait(60)
      # What the executor does before each push: clear crashed pushes' leftovers.
      for path in executor.leftovers_of_crashed_pushes(serving_dir):
        io_utils.fileio.rmtree(path)
    results[name] = executor.publish(model_path, serving_dir, '1700000000')
    if name == 'second':
      second_done.set()

  threads = [threading.Thread(target=push, args=(name,), name=name)
             for name in ('first', 'second')]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(120)
  assert results == {'first': os.path.join(serving_dir, '1700000000'),
                     'second': os.path.join(serving_dir, '1700000001')}
  assert seen_during_copy['leftovers'] == []
  assert sorted(os.listdir(serving_dir)) == ['1700000000', '1700000001']
  for version in ('1700000000', '1700000001'):
    assert os.path.exists(os.path.join(serving_dir, version, executor.SAVED_MODEL_FILE))


def _staging(serving_dir, name, owner=None, age_seconds=0.0):
  path = os.path.join(serving_dir, f'{executor.STAGING_PREFIX}{name}')
  os.makedirs(os.path.join(path, 'model', 'variables'))
  if owner is not None:
    with open(os.path.join(path, executor.OWNER_FILE), 'w') as f:
      json.dump(owner, f)
  if age_seconds:
    for directory in (path, os.path.join(path, executor.OWNER_FILE), os.path.join(path, 'model')):
      if os.path.exists(directory):
        stamp = os.path.getmtime(directory) - age_seconds
        os.utime(directory, (stamp, stamp))
  return path


def test_a_staging_folder_is_a_leftover_only_once_its_push_is_gone(tmp_path):
  serving_dir = str(tmp_path / 'serving')
  finished = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                            capture_output=True, text=True, check=True)
  here = socket.gethostname()
  live = _staging(serving_dir, '101', {'host': here, 'pid': os.getpid()})
  crashed = _staging(serving_dir, '102', {'host': here, 'pid': int(finished.stdout)})
  other_host_busy = _staging(serving_dir, '103', {'host': 'pod-b', 'pid': 7})
  other_host_stale = _staging(serving_dir, '104', {'host': 'pod-b', 'pid': 7},
                              age_seconds=executor.STALE_STAGING_SECONDS + 60)
  no_owner = _staging(serving_dir, '105')
  leftovers = executor.leftovers_of_crashed_pushes(serving_dir)
  assert leftovers == sorted([crashed, other_host_stale, no_owner])
  assert live not in leftovers and other_host_busy not in leftovers
