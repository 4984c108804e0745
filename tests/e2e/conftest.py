"""The end-to-end runs, as chained session fixtures: each run is made once, by the first test that
needs it, after every run before it in its chain.

Daily chain (local engine, one workspace, one metadata store; daily partitions, a rolling window
of WINDOW days and warm start from the first run on), ordered so that no upstream step runs twice
on the same inputs:

  gate_failure   day 1, a first model of one training step: below most-popular, not pushed
  day1           day 1 again, trained: blessed and pushed (ingestion and Transform from the cache)
  cached_broken  day 1 with the one-step training settings again: every upstream step, the
                 Trainer too, comes from the cache (the one-step model of gate_failure), and
                 against the day-1 model as baseline it is a broken candidate: not blessed
  day2           day 2 arrives: warm start from the day-1 model
  day3_killed    day 3 arrives: the run is killed mid-training (first the CLI alone, then the
                 whole process group)
  day3           the same command again: ingestion and Transform from the cache, the Trainer
                 resumes from the killed run's newest checkpoint, blessed and pushed

Beam chain: one run of beam_runner.py (`tfx ... --engine beam`, the DirectRunner's
multi-processing workers) with pipeline root, play logs and push directory in a bucket of a local
S3-protocol server.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import pytest

from contract import settings
from contract import storage as storage_names
from pipeline.local_paths import DATA_ENV
from tests.e2e import cli_workspace
from tests.e2e.cli_workspace import Run, Workspace, config
from tests.s3_server import S3Server

# A first model that has trained one step; the floor and ceiling let anything through, so only
# most-popular (and the repeat baseline) stand between it and serving.
# Without warm start: the same Trainer settings and inputs when the day-1 model is in service, so
# the broken candidate is this model, from the cache.
def _one_step(**changes) -> dict:
  one_step = config(train={'train_steps': 1, 'warm_start': False}, **changes)
  del one_step['train']['warm_start_steps']  # only allowed with warm_start
  return one_step


GATE_FAILURE_CONFIG = _one_step(gate={'pos_floor': 0.0, 'neg_ceiling': 1.0,
                                      'popularity_margin': 0.1})
BROKEN_CONFIG = _one_step()
# Day 3's run is killed mid-training and resumed: three checkpoints, the first seen before the
# CLI is killed, the second before the crash, the third after the resume.
KILL_STEPS_PER_CHECKPOINT = 100
KILL_CONFIG = config(train={'warm_start_steps': 3 * KILL_STEPS_PER_CHECKPOINT,
                            'hparams': {'steps_per_checkpoint': KILL_STEPS_PER_CHECKPOINT}})

BUCKET = 'playrecall-e2e'
PIPELINE_ROOT = f's3://{BUCKET}/playrecall/root'
DATA_PREFIX = 'playrecall/plays/'
SERVING_PREFIX = 'playrecall/serving/'


@dataclasses.dataclass
class Step:
  """One run of a chain and what was seen around it."""
  run: Run
  config: dict
  versions_before: List[int]
  versions_after: List[int]
  summary: Optional[str] = None

  @property
  def new_versions(self) -> List[int]:
    return sorted(set(self.versions_after) - set(self.versions_before))


@dataclasses.dataclass
class Killed:
  """A run killed mid-training: the CLI alone once a checkpoint was written, then its whole
  process group once the runner (left alone) had written another."""
  run: Run  # what MLMD holds of it
  new_checkpoint_dirs: List[str]
  cli_killed_at_step: int  # the newest checkpoint when the CLI was killed
  still_training_step: int  # a checkpoint the runner wrote after the CLI was gone
  killed_at_step: int  # the newest checkpoint after the crash
  train_steps: int
  versions_before: List[int]
  log_path: str


@pytest.fixture(scope='session')
def generated_days(tmp_path_factory):
  """(directory, day names oldest first): the play logs of DAYS days, shipped one at a time."""
  out_dir = str(tmp_path_factory.mktemp('generated'))
  return out_dir, cli_workspace.generate_days(out_dir, seed=41)


@pytest.fixture(scope='session')
def days(generated_days):
  return generated_days[1]


@pytest.fixture(scope='session')
def daily(tmp_path_factory):
  workspace = Workspace(tmp_path_factory.mktemp('daily'))
  workspace.write_config(cli_workspace.SMALL_CONFIG)  # each run writes its own
  workspace.create_pipeline()
  return workspace


def _run(workspace: Workspace, run_config: dict, summary: bool = False) -> Step:
  workspace.write_config(run_config)
  before = workspace.pushed_versions()
  run = workspace.run_pipeline()
  return Step(run, run_config, before, workspace.pushed_versions(),
              workspace.summary() if summary else None)


@pytest.fixture(scope='session')
def gate_failure(daily, generated_days):
  directory, names = generated_days
  daily.ship_day(directory, names[0])
  return _run(daily, GATE_FAILURE_CONFIG, summary=True)


@pytest.fixture(scope='session')
def day1(gate_failure, daily):
  return _run(daily, cli_workspace.SMALL_CONFIG, summary=True)


@pytest.fixture(scope='session')
def cached_broken(day1, daily):
  return _run(daily, BROKEN_CONFIG)


@pytest.fixture(scope='session')
def day2(cached_broken, daily, generated_days):
  directory, names = generated_days
  daily.ship_day(directory, names[1])
  return _run(daily, cli_workspace.SMALL_CONFIG)


def _checkpoint_dirs(workspace: Workspace) -> Dict[str, List[int]]:
  root = os.path.join(workspace.paths.pipeline_root, settings.CHECKPOINT_ROOT_DIR)
  return {name: workspace.checkpoint_steps(os.path.join(root, name))
          for name in (os.listdir(root) if os.path.isdir(root) else [])}


@pytest.fixture(scope='session')
def day3_killed(day2, daily, generated_days):
  directory, names = generated_days
  daily.ship_day(directory, names[2])
  daily.write_config(KILL_CONFIG)
  before = daily.pushed_versions()
  known = set(_checkpoint_dirs(daily))

  def newest_step() -> int:
    steps = [s for name, found in _checkpoint_dirs(daily).items() if name not in known
             for s in found]
    return max(steps, default=-1)

  def wait_past(step: int, process, timeout_seconds: float = 900) -> int:
    deadline = time.time() + timeout_seconds
    while time.time() < deadline:
      newest = newest_step()
      if newest > step:
        return newest
      if step < 0 and process.poll() is not None:
        pytest.fail(f'the run ended ({process.returncode}) before writing a checkpoint')
      time.sleep(0.2)
    pytest.fail(f'no checkpoint past step {step} within {timeout_seconds} s')

  log_path = os.path.join(daily.root, 'killed_run.log')
  cli = daily.start_run(log_path)
  try:
    first = wait_past(-1, cli)
    cli.kill()  # the CLI alone: its runner goes on
    cli.wait()
    still_training = wait_past(first, cli)
  finally:
    os.killpg(cli.pid, signal.SIGKILL)  # the crash: the runner and every process it started
  time.sleep(1)
  new_dirs = sorted(set(_checkpoint_dirs(daily)) - known)
  return Killed(daily.latest_run(), new_dirs, first, still_training, newest_step(),
                KILL_CONFIG['train']['warm_start_steps'], before, log_path)


@pytest.fixture(scope='session')
def day3(day3_killed, daily):
  before = daily.pushed_versions()
  run = daily.run_pipeline()
  return Step(run, KILL_CONFIG, before, daily.pushed_versions())


@pytest.fixture(scope='session')
def daily_steps(day1, day2, day3):
  """The completed run of each day, oldest first."""
  return [day1, day2, day3]


# --- Beam engine, everything in a bucket -------------------------------------------------------

@pytest.fixture(scope='session')
def s3_server():
  server = S3Server().start()
  yield server
  server.stop()


@pytest.fixture(scope='session')
def bucket(s3_server):
  return s3_server.create_bucket(BUCKET)


@pytest.fixture(scope='session')
def beam_s3(tmp_path_factory, s3_server, bucket, generated_days):
  """The Beam engine's run of day 1, everything on s3:// but the metadata store."""
  directory, names = generated_days
  workspace = Workspace(tmp_path_factory.mktemp('beam_s3'), engine='beam')
  day = os.path.join(directory, names[0])
  for name in sorted(os.listdir(day)):
    bucket.upload_file(os.path.join(day, name), BUCKET, f'{DATA_PREFIX}{names[0]}/{name}')
  workspace.env.update(s3_server.env)
  # The endpoint as boto3 reads it (AWS_ENDPOINT_URL) only: storage shares it with tensorflow-io.
  workspace.env.pop(storage_names.TFIO_ENDPOINT_ENV, None)
  workspace.env[storage_names.PIPELINE_ROOT_ENV] = PIPELINE_ROOT
  # A directory on an object store is named with its trailing slash (there are no directories).
  workspace.env[DATA_ENV] = f's3://{BUCKET}/{DATA_PREFIX}'
  workspace.env[storage_names.SERVING_MODEL_DIR_ENV] = f's3://{BUCKET}/{SERVING_PREFIX}'.rstrip(
      '/')
  workspace.write_config(cli_workspace.SMALL_CONFIG)
  workspace.create_pipeline()
  run = workspace.run_pipeline()
  return Step(run, cli_workspace.SMALL_CONFIG, [], [], workspace.summary()), workspace


def serve_from_s3(workspace: Workspace, version_dir: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'tests.e2e.s3_serve', version_dir],
                        env=workspace.env, cwd=cli_workspace.REPO_ROOT, capture_output=True,
                        text=True)
