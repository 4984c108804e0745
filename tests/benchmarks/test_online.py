"""benchmarks/online.py: the simulated online experiment's accounting, on a tiny generated log.

In this process (numpy only): the baselines run the simulation; every served song is played
through, partly played, skipped or left unplayed, listening time adds up from the play records,
the users' requests start from their real histories in the log, and a seed gives the same run.
Then `python benchmarks/online.py --quick`, as documented: a tiny log, a tiny model trained and
exported by the project's code and asked through its serving signatures, the baselines; it must
print both tables, and its records (the real model's among them) must add up the same way.
"""

import csv
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import online
from contract import settings
from datagen import generate
from tests.benchmarks.test_quick import LOAD_AVERAGE, NUMBER, REPO_ROOT, TIMEOUT_SECONDS

SESSIONS = 2


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  log_dir = str(tmp_path_factory.mktemp('online_log'))
  generate.generate(log_dir, num_events=3_000, num_items=300, seed=3, fmt='csv', overwrite=True)
  return online.load_world(log_dir)


def check_accounting(plays, served, per_user, num_users, sessions):
  """The records of one run add up (arrays as online.Simulation holds them or its npz)."""
  # Every served song has exactly one fate, and a played one is the play that served it.
  fate = served['outcome']
  assert set(np.unique(fate)) <= {online.THROUGH, online.PARTLY, online.SKIPPED, online.UNPLAYED}
  from_system = plays['serve'] >= 0
  rows = plays['serve'][from_system]
  assert len(np.unique(rows)) == len(rows)  # no served song is played twice
  played = np.zeros(len(fate), bool)
  played[rows] = True
  assert np.all(fate[~played] == online.UNPLAYED)
  rate = plays['play_ms'][from_system] / plays['duration_ms'][from_system]
  expected = np.where(rate >= settings.POS_THRESHOLD, online.THROUGH,
                      np.where(rate <= settings.NEG_THRESHOLD, online.SKIPPED, online.PARTLY))
  np.testing.assert_array_equal(fate[rows], expected)
  np.testing.assert_array_equal(served['item'][rows], plays['item'][from_system])
  np.testing.assert_array_equal(served['user'][rows], plays['user'][from_system])
  # Per user: served = through + partly + skipped + unplayed, and the figures are the records'.
  total = sum(per_user[f'served {name}'] for name in online.OUTCOMES)
  np.testing.assert_array_equal(total, per_user['served'])
  np.testing.assert_array_equal(per_user['served'],
                                np.bincount(served['user'], minlength=num_users))
  listening_ms = np.zeros(num_users)
  for user, heard in zip(plays['user'], plays['play_ms']):
    listening_ms[user] += heard
  np.testing.assert_allclose(per_user['listening_min'] * 60_000, listening_ms)
  assert np.all((plays['play_ms'] >= 0) & (plays['play_ms'] <= plays['duration_ms']))
  np.testing.assert_array_equal(per_user['plays'], np.bincount(plays['user'],
                                                               minlength=num_users))
  for user in range(num_users):
    mine = plays['user'] == user
    assert per_user['distinct_songs'][user] == len(np.unique(plays['item'][mine]))
    # Each user plays its sessions out, sessions numbered from 1 without a gap.
    assert set(plays['session'][mine]) == set(range(1, sessions + 1))
  assert per_user['played_through'].sum() == np.sum(
      plays['play_ms'] / plays['duration_ms'] >= settings.POS_THRESHOLD)


@pytest.mark.parametrize('name', online.BASELINES)
def test_the_baselines_accounting_adds_up(world, name):
  system = next(s for s in online.baseline_systems(world) if s.name == name)
  users = online.population(world, 12)
  run = online.simulate(world, system, users, SESSIONS, seed=0, slate=3, top_k=20)
  assert run.requests > 0 and run.fallbacks == 0 and len(run.served['item']) > 0
  check_accounting(run.plays, run.served, run.per_user, len(users), SESSIONS)
  # Only recommend plays are served; the user's own choices are not.
  recommend = run.plays['intent'] == online.generator.INTENT_RECOMMEND
  np.testing.assert_array_equal(run.plays['serve'] >= 0, recommend)
  # A queue never repeats a song already played in the session.
  for row in np.flatnonzero(run.plays['serve'] >= 0):
    same = ((run.plays['user'] == run.plays['user'][row])
            & (run.plays['session'] == run.plays['session'][row]))
    assert run.plays['item'][row] not in run.plays['item'][same[:row].nonzero()[0]]
  # The same seed gives the same run; another seed another one.
  again = online.simulate(world, system, users, SESSIONS, seed=0, slate=3, top_k=20)
  np.testing.assert_array_equal(again.plays['item'], run.plays['item'])
  other = online.simulate(world, system, users, SESSIONS, seed=1, slate=3, top_k=20)
  assert not np.array_equal(other.plays['play_ms'], run.plays['play_ms'])


def test_requests_start_from_the_users_real_history_in_the_log(world):
  user = int(online.population(world, 1)[0])
  history = online.log_history(world, user, 5)
  path, = glob.glob(os.path.join(world.log_dir, 'plays-*'))
  with open(path, newline='') as f:
    rows = [row for row in csv.DictReader(f) if row['user_id'] == f'u{user:06d}']
  assert history.items == [int(row['item_id'][1:]) for row in rows[-5:]]
  np.testing.assert_allclose(history.rates, [int(row['play_ms']) / int(row['duration_ms'])
                                             for row in rows[-5:]])
  assert [online.generator.INTENT_NAMES[i] for i in history.intents] == [
      row['intent'] for row in rows[-5:]]


def test_common_random_numbers_keep_the_users_own_plays_until_the_systems_differ(world):
  users = online.population(world, 8)
  popular, repeat, _ = online.baseline_systems(world)
  a = online.simulate(world, popular, users, 1, seed=0, slate=3, top_k=20)
  b = online.simulate(world, repeat, users, 1, seed=0, slate=3, top_k=20)
  for user in range(len(users)):
    first_a = a.plays['intent'][a.plays['user'] == user]
    first_b = b.plays['intent'][b.plays['user'] == user]
    # The intents are drawn by play index alone: the same sequence while both sessions last.
    common = min(len(first_a), len(first_b))
    np.testing.assert_array_equal(first_a[:common], first_b[:common])


def test_quick_prints_both_tables_and_its_records_add_up(tmp_path):
  work_dir = str(tmp_path / 'quick')
  stdout = run_quick_in(work_dir)
  lines = stdout.splitlines()
  assert any(line.startswith('| system | listening min/user |') for line in lines), stdout
  for name in online.BASELINES + ('c',):
    assert any(re.match(rf'\| {re.escape(name)} \| {NUMBER} \| ± {NUMBER} \|', line)
               for line in lines), (name, stdout[-3000:])
    assert any(re.match(rf'\| {re.escape(name)} \| \d+ \| {NUMBER} \| {NUMBER} \|', line)
               for line in lines), (name, stdout[-3000:])
  assert 'Responsiveness:' in stdout
  records = sorted(glob.glob(os.path.join(work_dir, 'records', '*.npz')))
  assert [os.path.basename(r) for r in records] == [
      'c-seed0.npz', 'co_occurrence__previous_play-seed0.npz', 'most_popular-seed0.npz',
      'repeat__own_history-seed0.npz']
  for path in records:
    with np.load(path) as arrays:
      group = lambda prefix: {k[len(prefix):]: arrays[k] for k in arrays.files
                              if k.startswith(prefix)}
      check_accounting(group('plays_'), group('served_'), group('per_user_'),
                       len(arrays['users']), online.QUICK['sessions'])


def run_quick_in(work_dir: str) -> str:
  """`python benchmarks/online.py --quick --work_dir work_dir`, as test_quick.run_quick runs a
  benchmark's --quick (which takes no arguments): its stdout."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT)
  result = subprocess.run(
      [sys.executable, os.path.join('benchmarks', 'online.py'), '--quick', '--work_dir', work_dir],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
  assert result.returncode == 0, f'online.py --quick failed:\n{result.stdout[-3000:]}\n' \
                                 f'{result.stderr[-5000:]}'
  assert '(--quick: a smoke run; the figures are not meaningful)' in result.stdout
  assert LOAD_AVERAGE.search(result.stdout), result.stdout[-3000:]
  return result.stdout


def test_the_baselines_top_items_are_the_order_their_ranks_count():
  """evaluation.baselines' top-k lists (what the simulation serves) list the items in the order
  of the exact ranks the offline benchmark measures."""
  from evaluation import baselines  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  size = 30
  for _ in range(50):
    history = rng.integers(0, size + 1, size=rng.integers(0, 12))
    played = rng.random(history.size) < 0.6
    top = baselines.repeat_top_items(history, played, size, size)
    np.testing.assert_array_equal(baselines.repeat_ranks([history] * size, [played] * size, top,
                                                         size), np.arange(size))
    assert len(baselines.repeat_top_items(history, played, 5, size)) == 5
  ranker = baselines.CooccurrenceRanker(size, rng.integers(0, size, 300),
                                        rng.integers(0, size, 300))
  for previous in list(range(size)) + [size]:  # size: an OOV previous play
    top = ranker.top_items(previous, size)
    np.testing.assert_array_equal(ranker.ranks([previous] * size, top), np.arange(size))
