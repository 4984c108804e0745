"""Tests of the synthetic play-log generator: contract, determinism, formats, ground truth."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from contract import features
from datagen import generate as generate_lib
from datagen import ground_truth as ground_truth_lib
from datagen import model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(num_events=6_000, num_users=60, num_items=600, seed=7)
COLUMNS = [features.USER_ID, features.ITEM_ID, features.TS, 'play_ms', 'duration_ms',
           features.INTENT]


def _generate(tmp_path, name, **kwargs):
  args = dict(SMALL, progress=False)
  args.update(kwargs)
  return generate_lib.generate(str(tmp_path / name), **args)


def _read(summary):
  """All shards of a generated log as one DataFrame, in file order."""
  frames = []
  for path in summary['files']:
    if path.endswith('.parquet'):
      frames.append(pq.read_table(path).to_pandas())
    elif '.jsonl' in path:
      frames.append(pd.read_json(path, lines=True, dtype=False, compression='infer'))
    else:
      frames.append(pd.read_csv(path, compression='infer'))
  return pd.concat(frames, ignore_index=True)


def _bytes(paths):
  return [open(p, 'rb').read() for p in paths]


@pytest.fixture(scope='module')
def csv_log(tmp_path_factory):
  summary = generate_lib.generate(str(tmp_path_factory.mktemp('log')), num_events=30_000,
                                  num_users=200, num_items=2_000, seed=3, num_shards=2,
                                  progress=False)
  return summary, _read(summary), ground_truth_lib.load(os.path.dirname(summary['files'][0]))


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
  first = _generate(tmp_path, 'a', use_gzip=True, num_shards=2)
  second = _generate(tmp_path, 'b', use_gzip=True, num_shards=2)
  other = _generate(tmp_path, 'c', use_gzip=True, num_shards=2, seed=8)
  assert _bytes(first['files']) == _bytes(second['files'])
  assert _bytes([first['ground_truth']]) == _bytes([second['ground_truth']])
  assert _bytes(first['files']) != _bytes(other['files'])


def test_chunk_size_and_shard_count_do_not_change_the_rows(tmp_path):
  whole = _generate(tmp_path, 'whole', num_shards=1)
  chunked = _generate(tmp_path, 'chunked', num_shards=1, chunk_events=97)
  sharded = _generate(tmp_path, 'sharded', num_shards=4, chunk_events=500)
  assert _bytes(whole['files']) == _bytes(chunked['files'])
  assert len(sharded['files']) == 4
  pd.testing.assert_frame_equal(_read(whole), _read(sharded))
  parquet_whole = _generate(tmp_path, 'pq_whole', fmt='parquet', num_shards=1)
  parquet_chunked = _generate(tmp_path, 'pq_chunked', fmt='parquet', num_shards=1,
                              chunk_events=333)
  pd.testing.assert_frame_equal(_read(parquet_whole), _read(parquet_chunked))


@pytest.mark.parametrize('fmt,use_gzip,play_field', [
    ('csv', False, 'play_ms'), ('csv', True, 'play_rate'), ('jsonl', False, 'play_ms'),
    ('jsonl', True, 'play_rate'), ('parquet', False, 'play_ms'), ('parquet', False, 'play_rate')])
def test_every_format_reads_back_in_the_contract_schema(tmp_path, fmt, use_gzip, play_field):
  summary = _generate(tmp_path, 'log', fmt=fmt, use_gzip=use_gzip, play_field=play_field,
                      num_shards=2)
  for path in summary['files']:
    name = os.path.basename(path)
    assert name.startswith('plays-') and name.endswith(('.gz',) if use_gzip else (fmt,)), name
    if use_gzip:
      with gzip.open(path) as f:
        f.read(1)  # a real gzip stream
  frame = _read(summary)
  expected = [play_field if c == 'play_ms' else c for c in COLUMNS]
  assert list(frame.columns) == expected
  assert len(frame) == SMALL['num_events'] == summary['events']
  for column in (features.USER_ID, features.ITEM_ID, features.INTENT):
    assert frame[column].map(type).eq(str).all(), column
  for column in (features.TS, 'duration_ms') + (('play_ms',) if play_field == 'play_ms' else ()):
    assert frame[column].dtype == np.int64, column
  if play_field == 'play_rate':
    assert frame['play_rate'].dtype == np.float64
    assert frame['play_rate'].between(0, 1).all()
  assert set(frame[features.INTENT]) == set(features.INTENTS)


def test_play_rate_column_matches_play_ms(tmp_path):
  by_ms = _read(_generate(tmp_path, 'ms'))
  by_rate = _read(_generate(tmp_path, 'rate', play_field='play_rate'))
  np.testing.assert_allclose(by_rate['play_rate'], by_ms['play_ms'] / by_ms['duration_ms'],
                             atol=5e-5)


def test_rows_follow_the_contract(csv_log):
  summary, frame, truth = csv_log
  assert len(frame) == summary['events'] == 30_000
  assert frame[features.USER_ID].nunique() == 200
  assert frame[features.TS].groupby(frame[features.USER_ID]).diff().dropna().gt(0).all()
  assert (frame['play_ms'] >= 0).all() and (frame['play_ms'] <= frame['duration_ms']).all()
  assert frame['duration_ms'].between(120_000, 360_000).all()
  # Sessions: seconds apart inside a session, at least half an hour between sessions.
  gaps = frame[features.TS].groupby(frame[features.USER_ID]).diff().dropna()
  previous_play = frame['play_ms'].groupby(frame[features.USER_ID]).shift().dropna()
  in_session = gaps - previous_play
  assert (in_session.between(1_000, 10_000) | (gaps >= 30 * 60_000)).all()
  assert 0.03 < (gaps >= 30 * 60_000).mean() < 0.2  # mean session length is 12 plays


def test_activity_is_heavy_tailed_and_sums_to_num_events(csv_log):
  _, frame, truth = csv_log
  counts = frame[features.USER_ID].value_counts()
  assert counts.sum() == 30_000 and counts.min() >= 5
  assert counts.max() > 5 * counts.median()
  np.testing.assert_array_equal(
      counts.sort_index().to_numpy(), truth.user_num_events)


def test_popularity_is_zipf_like_and_matches_the_ground_truth(csv_log):
  _, frame, truth = csv_log
  plays = np.bincount(truth.item_index(frame[features.ITEM_ID]), minlength=2_000)
  top = np.sort(plays)[::-1][:200]
  slope = np.polyfit(np.log(np.arange(1, 201)), np.log(np.maximum(top, 1)), 1)[0]
  assert -1.5 < slope < -0.5
  # The most popular tenth of the catalogue by ground truth gets most of the plays.
  hits = np.argsort(-truth.item_popularity)[:200]
  assert plays[hits].sum() > 0.5 * plays.sum()


def test_play_rate_follows_the_ground_truth_affinity(csv_log):
  _, frame, truth = csv_log
  play_rate = frame['play_ms'] / frame['duration_ms']
  affinity = truth.affinity(frame[features.USER_ID], frame[features.ITEM_ID])
  assert play_rate[affinity == model.AFFINITY_LIKED].mean() > 0.85
  assert play_rate[affinity == model.AFFINITY_DISLIKED].mean() < 0.2
  assert 0.4 < play_rate[affinity == model.AFFINITY_NEUTRAL].mean() < 0.7
  # Specific disliked items are skipped even when they are in a liked genre.
  users = truth.user_index(frame[features.USER_ID])
  items = truth.item_index(frame[features.ITEM_ID])
  disliked_item = (truth.user_disliked_items[users] == items[:, None]).any(axis=1)
  assert disliked_item.sum() > 20
  assert play_rate[disliked_item].mean() < 0.2
  # on_demand plays are the user's own picks: almost always liked and played through.
  on_demand = frame[features.INTENT] == 'on_demand'
  assert (affinity[on_demand] == model.AFFINITY_LIKED).mean() > 0.95
  assert (affinity[frame[features.INTENT] == 'recommend'] != model.AFFINITY_LIKED).mean() > 0.3


def test_history_carries_signal_about_the_next_plays(csv_log):
  _, frame, truth = csv_log
  genre = truth.item_genre[truth.item_index(frame[features.ITEM_ID])]
  users = frame[features.USER_ID].to_numpy()
  same_user = users[1:] == users[:-1]
  # Sessions focus on one genre: consecutive plays share it far more often than chance (less
  # than half the time: skips and genre requests move sessions, recommendations stray).
  same_genre = (genre[1:] == genre[:-1])[same_user].mean()
  chance = (np.bincount(genre) / len(genre)) ** 2
  assert same_genre > 0.4 > 3 * chance.sum()
  # A skip is informative: after a user skipped a genre (or a song), later plays of it are skipped
  # far more often than after plays of it that were not skipped.
  skipped = (frame['play_ms'] / frame['duration_ms']).to_numpy() <= 0.3
  items = frame[features.ITEM_ID].to_numpy()
  for key, factor in ((genre, 2.0), (items, 5.0)):
    after_skip, after_play = _skip_rate_after(users, key, skipped)
    assert after_skip > factor * after_play, (after_skip, after_play)


def _skip_rate_after(users, keys, skipped):
  """Skip rate of plays of a (user, key) seen before: after an earlier skip of it, and after
  earlier plays of it none of which was skipped."""
  skipped_before = {}
  counts = np.zeros((2, 2))  # [skipped before?, skipped now?]
  for user, key, skip in zip(users, keys, skipped):
    before = skipped_before.get((user, key))
    if before is not None:
      counts[int(before), int(skip)] += 1
    skipped_before[(user, key)] = bool(before) or bool(skip)
  rates = counts[:, 1] / counts.sum(axis=1)
  return rates[1], rates[0]


def test_ground_truth_files_describe_the_run(csv_log):
  summary, _, truth = csv_log
  out_dir = os.path.dirname(summary['files'][0])
  assert sorted(os.listdir(out_dir)) == sorted(
      [os.path.basename(f) for f in summary['files']]
      + [ground_truth_lib.JSON_NAME, ground_truth_lib.NPZ_NAME])
  with open(summary['ground_truth']) as f:
    document = json.load(f)
  assert document['generator']['seed'] == 3
  assert document['output']['files'] == [os.path.basename(f) for f in summary['files']]
  assert len(document['genres']) == truth.config.num_genres
  assert truth.item_genre.shape == (2_000,) and truth.user_liked_genres.shape == (200, 3)
  assert truth.user_neutral_mean.shape == (200, truth.config.num_genres)
  np.testing.assert_allclose(truth.item_popularity.sum(), 1.0)
  liked = truth.user_liked_genres
  assert not (liked == truth.user_disliked_genre[:, None]).any()
  favourite_genres = truth.item_genre[truth.user_favourites]
  np.testing.assert_array_equal(favourite_genres, np.broadcast_to(liked[:, :, None],
                                                                  favourite_genres.shape))


@pytest.mark.parametrize('kwargs,message', [
    (dict(fmt='parquet', use_gzip=True), 'gzip applies to csv and jsonl'),
    (dict(fmt='xml'), 'format must be one of'),
    (dict(num_events=100, num_users=60), 'num_events (100) must be >= num_users (60)'),
    (dict(recommend_shar=0.5), "unknown generator parameter(s): ['recommend_shar']"),
    (dict(interrupt_rate=1.5), 'interrupt_rate must be in [0, 1]'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
  with pytest.raises(ValueError) as error:
    _generate(tmp_path, 'bad', **kwargs)
  assert message in str(error.value)


def test_refuses_to_mix_with_an_earlier_log_unless_overwriting(tmp_path):
  _generate(tmp_path, 'log', num_shards=3)
  with pytest.raises(FileExistsError, match='already holds a generated log'):
    _generate(tmp_path, 'log', num_shards=1)
  summary = _generate(tmp_path, 'log', num_shards=1, overwrite=True)
  assert sorted(os.listdir(tmp_path / 'log')) == sorted(
      [ground_truth_lib.JSON_NAME, ground_truth_lib.NPZ_NAME, 'plays-00000-of-00001.csv'])
  assert len(_read(summary)) == SMALL['num_events']


def _run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  return subprocess.run([sys.executable, '-m', 'datagen.generate', *args], env=env,
                        capture_output=True, text=True, cwd=REPO_ROOT)


def test_command_line(tmp_path):
  result = _run_cli('--help')
  assert result.returncode == 0 and '--num_events' in result.stdout and '--set' in result.stdout
  out_dir = str(tmp_path / 'cli')
  result = _run_cli('--out_dir', out_dir, '--num_events', '3000', '--num_users', '30',
                    '--num_items', '300', '--format', 'jsonl', '--gzip',
                    '--set', 'recommend_share=0.6', '--quiet')
  assert result.returncode == 0, result.stderr
  assert 'events 3,000' in result.stdout and 'files 1' in result.stdout
  assert ground_truth_lib.load(out_dir).config.recommend_share == 0.6
  assert os.path.exists(os.path.join(out_dir, 'plays-00000-of-00001.jsonl.gz'))
  result = _run_cli('--out_dir', out_dir, '--num_events', '3000', '--set', 'nope=1')
  assert result.returncode == 2 and "--set 'nope=1'" in result.stderr
  result = _run_cli('--out_dir', out_dir, '--num_events', '3000')
  assert result.returncode == 2 and 'already holds a generated log' in result.stderr


def test_days_are_partitions_of_about_equal_plays_over_a_drifting_catalogue(tmp_path):
  summary = _generate(tmp_path, 'daily', num_events=400_000, num_users=400, num_items=3_000,
                      days=4)
  out_dir = str(tmp_path / 'daily')
  assert [os.path.dirname(os.path.relpath(p, out_dir)) for p in summary['files']] == [
      '2024-01-31', '2024-02-01', '2024-02-02', '2024-02-03']
  days = [pd.read_csv(path) for path in summary['files']]
  sizes = np.array([len(day) for day in days])
  assert sizes.sum() == summary['events']
  assert sizes.min() > 0.8 * sizes.mean(), sizes  # a steady state: no day far below the others
  for day_number, day in enumerate(days):  # each file holds its own day's plays only
    day_start = np.datetime64('2024-01-31', 'ms').astype(np.int64) + day_number * 86_400_000
    assert day['ts'].between(day_start, day_start + 86_400_000 - 1).all()

  truth = ground_truth_lib.load(out_dir)
  plays = pd.concat(days)
  item = truth.item_index(plays['item_id'].tolist())
  ts = plays['ts'].to_numpy()
  assert (ts >= truth.item_released_ts_ms[item]).all()  # no song played before its release
  assert (ts < truth.item_faded_ts_ms[item]).all()  # nor after it faded
  first, last = set(days[0]['item_id']), set(days[-1]['item_id'])
  assert len(last - first) > 0.02 * len(first) and len(first - last) > 0.02 * len(first), (
      'songs come and go between the first and the last day')
  output = json.load(open(summary['ground_truth']))['output']
  assert output['plays_of_songs_not_yet_released_or_faded'] > 0
