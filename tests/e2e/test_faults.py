"""A pipeline run killed mid-training, through the real TFX CLI, and the re-run that resumes it.

  1. `tfx run create` is started and, once the Trainer has written a checkpoint, the CLI alone is
     killed: its child runner goes on training (what the README warns of);
  2. the whole run is killed as a crash would (every process of its group, SIGKILL);
  3. the same command again: the finished upstream steps come from the cache, and the Trainer
     resumes from the newest checkpoint the killed run wrote, trains to the end, and the model is
     evaluated and pushed.
"""

import copy
import glob
import os
import re
import signal
import subprocess
import time

import pytest

from contract import settings
from tests.e2e.cli_workspace import CACHED, PIPELINE, REPO_ROOT, SMALL_CONFIG, TFX_CLI, Workspace
from trainer import checkpoints

STEPS_PER_CHECKPOINT = 100
CONFIG = copy.deepcopy(SMALL_CONFIG)
CONFIG['train']['train_steps'] = 3000
CONFIG['train']['hparams'].update(steps_per_checkpoint=STEPS_PER_CHECKPOINT, steps_per_log=100)
TIMEOUT_SECONDS = 600


def checkpoint_steps(workspace: Workspace):
  """The steps of the checkpoints under the pipeline's checkpoint root, newest first."""
  root = os.path.join(workspace.paths.pipeline_root, settings.CHECKPOINT_ROOT_DIR)
  return sorted((step for directory in glob.glob(os.path.join(root, '*'))
                 for step, _ in checkpoints.numbered_checkpoints(directory)), reverse=True)


def wait_for_checkpoint(workspace: Workspace, after_step: int, process: subprocess.Popen):
  deadline = time.time() + TIMEOUT_SECONDS
  while time.time() < deadline:
    steps = checkpoint_steps(workspace)
    if steps and steps[0] > after_step:
      return steps[0]
    if process.poll() is not None and after_step < 0:
      pytest.fail(f'the run ended ({process.returncode}) before writing a checkpoint')
    time.sleep(0.5)
  pytest.fail(f'no checkpoint past step {after_step} within {TIMEOUT_SECONDS} s')


@pytest.fixture(scope='module')
def killed_and_rerun(tmp_path_factory):
  workspace = Workspace(tmp_path_factory.mktemp('faults'))
  workspace.write_config(CONFIG)
  workspace.generate('day1', seed=21, events=12000)
  workspace.create_pipeline()
  log_path = os.path.join(workspace.root, 'killed_run.log')
  with open(log_path, 'w') as log:
    cli = subprocess.Popen([TFX_CLI, 'run', 'create', '--engine', 'local', '--pipeline_name',
                            PIPELINE], env=workspace.env, cwd=REPO_ROOT, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
  try:
    first_step = wait_for_checkpoint(workspace, -1, cli)
    cli.kill()  # the CLI alone
    cli.wait()
    still_training_step = wait_for_checkpoint(workspace, first_step, cli)
  finally:
    os.killpg(cli.pid, signal.SIGKILL)  # the crash: the runner and every process it started
  time.sleep(1)
  killed_at = checkpoint_steps(workspace)[0]
  rerun = workspace.cli('run', 'create', '--engine', 'local', '--pipeline_name', PIPELINE)
  return workspace, first_step, still_training_step, killed_at, rerun


def test_killing_only_the_cli_leaves_the_runner_training(killed_and_rerun):
  _, first_step, still_training_step, _, _ = killed_and_rerun
  assert still_training_step > first_step


def test_the_rerun_resumes_from_the_killed_runs_newest_checkpoint(killed_and_rerun):
  workspace, _, _, killed_at, rerun = killed_and_rerun
  assert 0 < killed_at < CONFIG['train']['train_steps']
  resumed = re.findall(r'resuming from \S+ckpt-(\d+) at step (\d+)', rerun.stderr + rerun.stdout)
  assert resumed == [(str(killed_at), str(killed_at))], (rerun.stderr + rerun.stdout)[-5000:]
  assert checkpoint_steps(workspace)[0] == CONFIG['train']['train_steps']


def test_the_rerun_takes_finished_steps_from_the_cache_and_pushes(killed_and_rerun):
  workspace, _, _, _, _ = killed_and_rerun
  run = workspace.latest_run()
  for node in ('PlayLogExampleGen', 'Transform'):
    assert run.states[node] == CACHED, node
  assert run.blessed()
  assert len(workspace.pushed_versions()) == 1
