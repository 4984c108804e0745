"""Parameter-server training on a real local cluster: separate PS, worker and chief processes.

Every test runs its cluster inside LocalCluster's context manager, which stops every process it
started (chief included), whether the test passes, fails or times out.
"""

import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf

from contract import features
from tests.trainer import cluster_testing
from tests.trainer import tiny_data
from trainer import cluster as cluster_lib
from trainer import warm_start

POS_N = 10


def _alive(process: psutil.Process) -> bool:
  try:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


def _run_cluster_command(command, output, interrupt_when=None):
  """Runs the cluster command; returns (exit code, processes it started, those left running).

  With interrupt_when, sends the command SIGINT (Ctrl-C) once its output holds that text.
  Whatever happens, the test kills the command's process group and every process it saw.
  """
  started = {}  # pid -> psutil.Process, which knows its start time, so a reused pid is not ours
  interrupted = False
  with open(output, 'wb') as log:
    # Its own session (process group), so that the test can stop everything the command started.
    process = subprocess.Popen(command, env=cluster_testing.environment_without_cluster(),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + cluster_testing.CHIEF_TIMEOUT_SECONDS
    try:
      while process.poll() is None and time.time() < deadline:
        with contextlib.suppress(psutil.Error):
          for child in psutil.Process(process.pid).children(recursive=True):
            started.setdefault(child.pid, child)
        if interrupt_when and not interrupted and interrupt_when in cluster_testing.read(output):
          process.send_signal(signal.SIGINT)
          interrupted = True
        time.sleep(0.5)
      left_running = [pid for pid, child in started.items() if _alive(child)]
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
      for child in started.values():
        if _alive(child):
          child.kill()
  return process.returncode, started, left_running


def _checkpoint_steps(model_dir):
  return sorted(int(path.rsplit('-', 1)[1].split('.')[0])
                for path in glob.glob(os.path.join(model_dir, 'checkpoints', 'ckpt-*.index')))


@pytest.fixture(scope='module')
def single_process_export(tiny_transform, tmp_path_factory):
  """The serving export of the tiny training in one process."""
  root = str(tmp_path_factory.mktemp('single'))
  output = os.path.join(root, 'chief.log')
  with open(output, 'wb') as log:
    process = subprocess.Popen(
        [sys.executable, '-m', 'trainer.run'] + cluster_testing.trainer_args(tiny_transform, root),
        env=cluster_testing.environment_without_cluster(), stdout=log, stderr=subprocess.STDOUT)
    try:
      cluster_testing.wait_for_exit(process, output)
    finally:
      if process.poll() is None:
        process.kill()
  assert process.returncode == 0, cluster_testing.read(output)[-3000:]
  return os.path.join(root, 'serving')


@pytest.fixture(scope='module')
def single_process_pos(tiny_transform, single_process_export):
  """POS@N of the same training in one process (the reference the cluster must match)."""
  return cluster_testing.pos_at_n(single_process_export, tiny_transform, POS_N)


def test_two_ps_two_workers_shard_the_item_tables_and_match_single_process_quality(
    tiny_transform, single_process_pos, tmp_path):
  """The cluster command end to end: trains, exports, and leaves no process behind."""
  root = str(tmp_path)
  args = cluster_testing.trainer_args(tiny_transform, root, num_shards=2)
  output = os.path.join(root, 'cluster.log')
  command = [sys.executable, '-m', 'trainer.cluster', '--num_ps', '2', '--num_workers', '2',
             '--log_dir', os.path.join(root, 'logs'), '--'] + args
  returncode, started, left_running = _run_cluster_command(command, output)
  text = cluster_testing.read(output)
  assert returncode == 0, text[-3000:]
  assert len(started) >= 5  # 2 ps, 2 workers, the chief
  assert not left_running, left_running
  # The item table and the item bias (one row per item) live on both parameter servers.
  assert 'item_embedding is sharded in 2' in text, text[-3000:]
  assert 'item_bias is sharded in 2' in text
  assert 'trained to step 200' in text

  export_dir = os.path.join(root, 'serving')
  loaded = tf.saved_model.load(export_dir)
  top = loaded.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(tiny_transform.raw_eval_examples[:3])})
  assert top[features.TOP_ITEM_IDS].shape == (3, cluster_testing.TINY_HPARAMS['top_k'])
  # The export holds the whole table as one plain variable, not the two shards.
  shapes = tf.train.load_checkpoint(os.path.join(export_dir, 'variables', 'variables')
                                    ).get_variable_to_shape_map()
  [table_shape] = [shape for key, shape in shapes.items()
                   if 'item_embedding/' in key and key.endswith('VARIABLE_VALUE')]
  num_items = tiny_data.NUM_GENRES * tiny_data.SONGS_PER_GENRE + 1  # every song, and the OOV bucket
  assert table_shape == [num_items, cluster_testing.TINY_HPARAMS['item_embedding_dim']]
  cluster_pos = cluster_testing.pos_at_n(export_dir, tiny_transform, POS_N)
  chance = POS_N / (tiny_data.NUM_GENRES * tiny_data.SONGS_PER_GENRE)
  assert cluster_pos > 3 * chance, (cluster_pos, single_process_pos)
  # Two workers update the tables asynchronously, so the cluster's result varies from run to run:
  # one fresh-clone CI run gave 0.80 against the single process's 0.95, while three runs in a row
  # on the same machine were within 0.1. Within 0.15, far above chance, still says the sharded
  # tables learnt what one process learns.
  assert cluster_pos >= single_process_pos - 0.15, (cluster_pos, single_process_pos)


def test_a_warm_started_cluster_trains_from_the_remapped_weights_in_its_shards(
    drifted_transform, single_process_export, tmp_path):
  """The chief remaps the base's rows to the new vocabulary, and the sharded tables start from
  them: with a learning rate too small to move them, the export holds the initial weights."""
  root = str(tmp_path)
  args = cluster_testing.trainer_args(drifted_transform, root, num_shards=2, learning_rate=1e-9,
                                      steps_per_checkpoint=2)
  output = os.path.join(root, 'cluster.log')
  command = [sys.executable, '-m', 'trainer.cluster', '--num_ps', '2', '--num_workers', '1',
             '--log_dir', os.path.join(root, 'logs'), '--'] + args + [
                 '--base_model', single_process_export, '--warm_start_steps', '2']
  returncode, _, left_running = _run_cluster_command(command, output)
  text = cluster_testing.read(output)
  assert returncode == 0, text[-3000:]
  assert not left_running, left_running
  assert 'item_embedding is sharded in 2' in text, text[-3000:]
  kept = tiny_data.NUM_GENRES * (tiny_data.SONGS_PER_GENRE - tiny_data.DRIFT)
  assert f'{kept} items keep their vectors' in text, text[-3000:]
  assert 'trained to step 2' in text, text[-3000:]
  initial = tf.train.load_checkpoint(os.path.join(root, 'model', warm_start.INITIAL_WEIGHTS_PREFIX))
  exported = tf.train.load_checkpoint(os.path.join(root, 'serving', 'variables', 'variables'))
  for name in ('item_embedding', 'item_bias', 'position_embedding'):
    key = f'model/{name}/.ATTRIBUTES/VARIABLE_VALUE'
    np.testing.assert_allclose(exported.get_tensor(key), initial.get_tensor(key), atol=1e-6,
                               err_msg=name)


def test_the_cluster_command_stops_every_process_on_ctrl_c(tiny_transform, tmp_path):
  root = str(tmp_path)
  command = [sys.executable, '-m', 'trainer.cluster', '--num_ps', '1', '--num_workers', '1',
             '--log_dir', os.path.join(root, 'logs'), '--'] + cluster_testing.trainer_args(
                 tiny_transform, root, train_steps=100000)
  output = os.path.join(root, 'cluster.log')
  returncode, started, left_running = _run_cluster_command(command, output,
                                                           interrupt_when='starting the chief')
  assert returncode == 130, cluster_testing.read(output)[-3000:]
  assert 'interrupted: stopped the chief and every server' in cluster_testing.read(output)
  assert len(started) >= 2 and not left_running, (started, left_running)


def _logged_steps(text):
  """The steps of the training loop's progress lines ('step N: ...') in a chief's output."""
  return [int(step) for step in re.findall(r'\bstep (\d+): ', text)]


def test_training_completes_when_a_worker_dies(tiny_transform, tmp_path):
  root = str(tmp_path)
  train_steps = 300
  args = cluster_testing.trainer_args(tiny_transform, root, train_steps=train_steps,
                                      steps_per_log=25)
  output = os.path.join(root, 'chief.log')
  with cluster_lib.LocalCluster(1, 2, args, log_dir=os.path.join(root, 'logs')) as cluster, \
      open(output, 'wb') as log:
    chief = cluster.start_chief(stdout=log)
    cluster_testing.wait_for_output(output, 'step 25:', chief, cluster_testing.CHIEF_TIMEOUT_SECONDS)
    cluster.kill('worker', 1)
    chief_running_at_kill = chief.poll() is None
    # Read after the kill: its last progress line is at or past the step the kill landed on.
    logged_by_kill = _logged_steps(cluster_testing.read(output))
    worker_status = cluster.processes[('worker', 1)].returncode
    text = cluster_testing.wait_for_exit(chief, output)
  assert worker_status == -signal.SIGKILL, worker_status
  # The kill landed mid-training: the chief was still training, and logged steps after it.
  assert chief_running_at_kill and logged_by_kill[-1] < train_steps, logged_by_kill
  assert [s for s in _logged_steps(text) if s > logged_by_kill[-1]], text[-3000:]
  assert chief.returncode == 0, text[-3000:]
  assert f'trained to step {train_steps}' in text, text[-3000:]
  assert os.path.isdir(os.path.join(root, 'serving'))


def test_a_dead_parameter_server_fails_the_job_which_resumes_from_its_checkpoint(
    tiny_transform, tmp_path):
  root = str(tmp_path)
  model_dir = os.path.join(root, 'model')
  args = cluster_testing.trainer_args(tiny_transform, root, train_steps=100000,
                                      steps_per_checkpoint=20, steps_per_log=20, num_shards=2)
  output = os.path.join(root, 'chief.log')
  with cluster_lib.LocalCluster(2, 1, args, log_dir=os.path.join(root, 'logs')) as cluster, \
      open(output, 'wb') as log:
    chief = cluster.start_chief(stdout=log)
    cluster_testing.wait_for_output(output, 'step 40:', chief, cluster_testing.CHIEF_TIMEOUT_SECONDS)
    cluster.kill('ps', 1)
    text = cluster_testing.wait_for_exit(chief, output, timeout=180)
  assert chief.returncode != 0
  assert 'error: training stopped after step' in text, text[-3000:]
  assert 'a parameter server died or is unreachable' in text
  checkpoints = _checkpoint_steps(model_dir)
  assert checkpoints and checkpoints[-1] >= 20, checkpoints

  # Restarting every task (new processes) resumes from the last checkpoint and finishes.
  resume_args = cluster_testing.trainer_args(tiny_transform, root, train_steps=checkpoints[-1] + 20,
                                             steps_per_checkpoint=20, steps_per_log=20, num_shards=2)
  output = os.path.join(root, 'chief_restarted.log')
  with cluster_lib.LocalCluster(2, 1, resume_args, log_dir=os.path.join(root, 'logs2')) as cluster, \
      open(output, 'wb') as log:
    chief = cluster.start_chief(stdout=log)
    text = cluster_testing.wait_for_exit(chief, output)
  assert chief.returncode == 0, text[-3000:]
  assert f'at step {checkpoints[-1]}' in text and 'resuming from' in text, text[-3000:]
  assert f'trained to step {checkpoints[-1] + 20} (20 steps this run' in text
