"""PlayLogExampleGen: real Beam runs (DirectRunner) of the executor on small play logs."""

import collections
import csv
import glob
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.components.util import examples_utils
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.play_log_example_gen import artifacts
from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import component
from components.play_log_example_gen import defaults
from components.play_log_example_gen import driver
from components.play_log_example_gen import executor
from components.play_log_example_gen import play_log_reader as r
from components.play_log_example_gen import user_examples
from datagen import generate as generate_lib
from transform import features

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MSSD_FILE = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mssd_fragment.csv')
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
HEADER = 'user_id,item_id,ts,play_ms,duration_ms,intent\n'
# A play's features as an example's target, and the same features of its history plays.
TARGET_FEATURES = (features.ITEM_ID, features.TS, features.PLAY_RATE, features.INTENT,
                   features.LABEL)
HISTORY_FEATURES = (features.HISTORY_ITEM_ID, features.HISTORY_TS, features.HISTORY_PLAY_RATE,
                    features.HISTORY_INTENT, features.HISTORY_LABEL)


def run_executor(tmp_path, input_base, **exec_properties):
  """Runs the executor on the DirectRunner; returns (examples artifact, quarantine artifact)."""
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'out' / 'examples')
  quarantine = artifacts.Quarantine()
  quarantine.uri = str(tmp_path / 'out' / 'quarantine')
  properties = {'input_base': str(input_base), 'input_format': 'csv'}
  properties.update(exec_properties)
  executor.Executor().Do({}, {'examples': [examples], 'quarantine': [quarantine]}, properties)
  return examples, quarantine


def read_split(examples, split):
  """Returns a split's examples as dicts, in the order they were written (files by name)."""
  files = sorted(glob.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*.gz')))
  assert files, f'no files in split {split}'
  parsed = []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    parsed.append({
        features.USER_ID: feature[features.USER_ID].bytes_list.value[0].decode(),
        features.ITEM_ID: feature[features.ITEM_ID].bytes_list.value[0].decode(),
        features.TS: feature[features.TS].int64_list.value[0],
        features.PLAY_RATE: round(feature[features.PLAY_RATE].float_list.value[0], 4),
        features.INTENT: feature[features.INTENT].bytes_list.value[0].decode(),
        features.LABEL: feature[features.LABEL].int64_list.value[0],
        features.HISTORY_ITEM_ID: [v.decode() for v in
                                   feature[features.HISTORY_ITEM_ID].bytes_list.value],
        features.HISTORY_PLAY_RATE: [round(v, 4) for v in
                                     feature[features.HISTORY_PLAY_RATE].float_list.value],
        features.HISTORY_INTENT: [v.decode() for v in
                                  feature[features.HISTORY_INTENT].bytes_list.value],
        features.HISTORY_TS: list(feature[features.HISTORY_TS].int64_list.value),
        features.HISTORY_LABEL: list(feature[features.HISTORY_LABEL].int64_list.value),
    })
  return parsed


def window_of(example):
  """Returns an example's plays, oldest first (its history, then its target), each a dict with
  the target's feature names and the user_id."""
  history = zip(*(example[name] for name in HISTORY_FEATURES))
  target = tuple(example[name] for name in TARGET_FEATURES)
  return [dict(zip(TARGET_FEATURES, play), user_id=example[features.USER_ID])
          for play in (*history, target)]


def written_plays(examples):
  """Returns every play that was written once: the train windows' plays and the eval targets."""
  return ([play for e in read_split(examples, 'train') for play in window_of(e)]
          + [window_of(e)[-1] for e in read_split(examples, 'eval')])


def train_windows_by_user(train):
  """Returns {user_id: [window (plays, oldest first), ...]} with each user's windows by time."""
  by_user = collections.defaultdict(list)
  for example in train:
    by_user[example[features.USER_ID]].append(window_of(example))
  return {user: sorted(windows, key=lambda w: (w[0][features.TS], w[-1][features.TS]))
          for user, windows in by_user.items()}


def assert_train_windows(train, train_items, history_length):
  """Asserts that the train examples cut each user's train plays (train_items: {user_id: item ids
  in time order}) into consecutive disjoint windows of history_length + 1 plays from the first
  play on (the last window may be shorter), so that every train play is written exactly once."""
  windows = train_windows_by_user(train)
  assert set(windows) == {user for user, items in train_items.items() if items}
  for user, user_windows in windows.items():
    assert [play[features.ITEM_ID] for window in user_windows for play in window] == (
        train_items[user])
    assert all(len(window) == history_length + 1 for window in user_windows[:-1])
    assert len(user_windows[-1]) <= history_length + 1


def assert_labels_follow_the_thresholds(examples):
  """Asserts every play's label, at every history position and as target, from its play rate
  and the default thresholds."""
  config = user_examples.ExampleConfig(history_length=0, pos_threshold=defaults.POS_THRESHOLD,
                                       neg_threshold=defaults.NEG_THRESHOLD, eval_plays_per_user=0)
  for example in examples:
    for play in window_of(example):
      assert play[features.LABEL] == config.label(play[features.PLAY_RATE]), play


def read_quarantine(quarantine):
  rows = []
  for path in glob.glob(os.path.join(quarantine.uri, 'quarantine-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      rows.extend(json.loads(line) for line in f)
  return rows


def counts_of(artifact):
  return {name: artifact.get_int_custom_property(name)
          for name in ('rows_read', 'rows_used', 'rows_quarantined', 'train_examples',
                       'eval_examples', 'train_plays')}


# --- The file of broken rows ------------------------------------------------------------------
# (line text, reason or None for a good row). Line numbers follow from the order (header = 1).
BROKEN_CSV_ROWS = [
    ('u1,i1,1700000000000,190000,200000,on_demand', None),
    ('u1,i2,2023-11-14T22:14:00Z,10000,200000,recommend', None),  # ISO-8601 is fine
    ('u1,i3,2023-11-14T22:15:00+01:00,100000,200000,', None),  # offset; empty intent = on_demand
    ('u1,i1,1700000000000,190000,200000,on_demand', r.DUPLICATE_EVENT),
    ('u1,i4,1700000300000,190000', r.UNPARSEABLE_ROW),  # too few fields
    ('u1,i4,1700000300000,190000,200000,on_demand,extra', r.UNPARSEABLE_ROW),
    (',i4,1700000300000,190000,200000,on_demand', r.MISSING_USER_ID),
    ('u2,,1700000300000,190000,200000,on_demand', r.MISSING_ITEM_ID),
    ('u2,i4,1700000300000,lots,200000,on_demand', r.BAD_TYPE),
    ('u2,i4,1700000300000,1.5,200000,on_demand', r.BAD_TYPE),
    ('u2,i4,1700000300000,-1,200000,on_demand', r.NEGATIVE_PLAY_MS),
    ('u2,i4,1700000300000,1000,-200000,on_demand', r.BAD_DURATION),
    ('u2,i4,1700000300000,1000,0,on_demand', r.BAD_DURATION),
    ('u2,i4,1700000300000,1000,36000000,on_demand', r.BAD_DURATION),  # 10 h
    ('u2,i4,yesterday,1000,200000,on_demand', r.BAD_TIMESTAMP),
    ('u2,i4,,1000,200000,on_demand', r.BAD_TIMESTAMP),
    ('u2,i4,1700000300,1000,200000,on_demand', r.BAD_TIMESTAMP),  # epoch seconds
    ('u2,i4,1999-12-31T23:59:59Z,1000,200000,on_demand', r.BAD_TIMESTAMP),
    ('u2,i4,4102444800000,1000,200000,on_demand', r.BAD_TIMESTAMP),  # 2100
    ('u2,i4,1700000300000,,200000,on_demand', r.MISSING_PLAY_RATE),
    ('u2,i4,1700000300000,1000,200000,shuffle', r.UNKNOWN_INTENT),
    ('u2,i5,1700000400000,250000,200000,genre_request', None),  # play_ms > duration: rate 1
]
NON_UTF8_LINE = b'u3,caf\xe9,1700000000000,1000,200000,on_demand\n'


def write_broken_logs(directory):
  """Writes the broken CSV, a non-UTF-8 line, an empty file, and a gzipped good file."""
  os.makedirs(directory)
  with open(os.path.join(directory, 'broken.csv'), 'wb') as f:
    f.write(HEADER.encode())
    for text, _ in BROKEN_CSV_ROWS[:5]:
      f.write(text.encode() + b'\n')
    f.write(NON_UTF8_LINE)
    for text, _ in BROKEN_CSV_ROWS[5:]:
      f.write(text.encode() + b'\n')
    f.write(b'\n')  # a trailing blank line is no row
  open(os.path.join(directory, 'empty.csv'), 'wb').close()
  with gzip.open(os.path.join(directory, 'more.csv.gz'), 'wt') as f:
    f.write(HEADER + 'u4,i1,1700000000000,200000,200000,recommend\n'
            'u4,i2,1700000001000,1000,200000,recommend\n')
  open(os.path.join(directory, '_SUCCESS'), 'w').close()  # skipped like Hadoop markers


def expected_broken_reasons(directory):
  """Returns {(file, line): reason} for every bad row of write_broken_logs."""
  path = os.path.join(directory, 'broken.csv')
  expected = {}
  line = 1
  for index, (_, reason) in enumerate(BROKEN_CSV_ROWS):
    line += 1
    if index == 5:
      expected[(path, line)] = r.NON_UTF8
      line += 1
    if reason:
      expected[(path, line)] = reason
  return expected


def test_every_broken_row_is_quarantined_with_its_reason(tmp_path):
  logs = tmp_path / 'logs'
  write_broken_logs(str(logs))
  examples, quarantine = run_executor(tmp_path, logs, max_bad_fraction=1.0)

  quarantined = read_quarantine(quarantine)
  assert {(q['source'], q['line']): q['reason'] for q in quarantined} == expected_broken_reasons(
      str(logs))
  non_utf8 = next(q for q in quarantined if q['reason'] == r.NON_UTF8)
  assert 'caf\\xe9' in non_utf8['raw']
  too_few = next(q for q in quarantined if q['line'] == 6)
  assert too_few['raw'] == 'u1,i4,1700000300000,190000'
  assert '4 fields, the header has 6' in too_few['detail']

  good = sum(1 for _, reason in BROKEN_CSV_ROWS if reason is None) + 2  # + the gzipped file
  bad = len(expected_broken_reasons(str(logs)))
  counts = counts_of(examples)
  assert counts['rows_read'] == good + bad == counts['rows_used'] + counts['rows_quarantined']
  assert counts['rows_used'] == good == counts['train_plays'] + counts['eval_examples']
  # Good rows: u1 3, u2 1, u4 2. Each user's last two plays are eval: u1's first is all of train.
  assert (counts['train_examples'], counts['train_plays'], counts['eval_examples']) == (1, 1, 5)
  assert counts_of(quarantine) == counts
  by_reason = json.loads(examples.get_string_custom_property('quarantined_by_reason'))
  assert by_reason == dict(collections.Counter(expected_broken_reasons(str(logs)).values()))
  assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'eval']

  plays = {(play['user_id'], play[features.ITEM_ID]): play for play in written_plays(examples)}
  assert plays[('u1', 'i2')][features.TS] == T0 + 40_000
  assert plays[('u1', 'i3')][features.TS] == T0 + 100_000 - 3_600_000  # +01:00 offset
  assert plays[('u1', 'i3')][features.INTENT] == features.DEFAULT_INTENT
  assert plays[('u2', 'i5')][features.PLAY_RATE] == 1.0
  assert plays[('u4', 'i1')][features.LABEL] == features.LABEL_POSITIVE  # from the .gz file


def test_run_fails_when_bad_fraction_passes_the_limit(tmp_path):
  logs = tmp_path / 'logs'
  write_broken_logs(str(logs))
  with pytest.raises(RuntimeError) as failure:
    run_executor(tmp_path, logs, max_bad_fraction=0.5)
  message = str(failure.value)
  bad = len(expected_broken_reasons(str(logs)))
  read = bad + sum(1 for _, reason in BROKEN_CSV_ROWS if reason is None) + 2
  assert f'{bad} of {read} rows ({bad / read:.2%}) were quarantined' in message
  assert 'max_bad_fraction=0.5' in message
  # The top reason (5 bad timestamps) comes first, with row locations to look at.
  assert f'{r.BAD_TIMESTAMP}: 5 (e.g. {logs}/broken.csv:' in message
  assert message.index(r.BAD_TIMESTAMP) < message.index(r.BAD_DURATION)
  assert message.endswith(f'is in {tmp_path}/out/quarantine')


def write_csv(path, rows):
  with open(path, 'w', newline='') as f:
    f.write(HEADER)
    csv.writer(f).writerows(rows)


def test_train_windows_eval_histories_labels_and_split_by_last_plays(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # u1 out of order in the file, with a tie at T0 + 2000 broken by file order (i3 before i4).
  write_csv(logs / 'a.csv', [
      ['u1', 'i3', T0 + 2000, 100_000, 200_000, 'recommend'],  # 0.5 neither
      ['u1', 'i1', T0, 190_000, 200_000, 'on_demand'],  # 0.95 positive
      ['u1', 'i4', T0 + 2000, 20_000, 200_000, 'recommend'],  # 0.1 negative
      ['u1', 'i2', T0 + 1000, 160_000, 200_000, 'genre_request'],  # 0.8 positive (>=)
      ['u2', 'i9', T0, 60_000, 200_000, 'recommend'],  # 0.3 negative (<=)
  ])
  write_csv(logs / 'b.csv', [['u1', 'i5', T0 + 3000, 200_000, 200_000, 'on_demand'],
                             ['u1', 'i6', T0 + 4000, 0, 200_000, 'recommend'],
                             ['u1', 'i7', T0 + 5000, 180_000, 200_000, 'on_demand']])
  examples, _ = run_executor(tmp_path, logs, history_length=2, eval_plays_per_user=2,
                             max_bad_fraction=0.0)
  train = sorted(read_split(examples, 'train'), key=lambda e: (e['user_id'], e['ts']))
  evals = sorted(read_split(examples, 'eval'), key=lambda e: (e['user_id'], e['ts']))
  # u1's train plays i1..i5 in windows of 3 from the first play: [i1, i2, i3] and [i4, i5].
  assert [(e['user_id'], e['item_id'], e['history_item_id'], e['label'], e['history_label'])
          for e in train] == [
      ('u1', 'i3', ['i1', 'i2'], features.LABEL_NEITHER,
       [features.LABEL_POSITIVE, features.LABEL_POSITIVE]),
      ('u1', 'i5', ['i4'], features.LABEL_POSITIVE, [features.LABEL_NEGATIVE]),
  ]
  assert_train_windows(train, {'u1': ['i1', 'i2', 'i3', 'i4', 'i5'], 'u2': []}, history_length=2)
  assert train[0]['history_play_rate'] == [0.95, 0.8]
  assert train[0]['history_intent'] == ['on_demand', 'genre_request']
  assert train[0]['history_ts'] == [T0, T0 + 1000]
  assert train[1]['history_ts'] == [T0 + 2000]
  # Eval histories are the two plays before the target, train plays or not.
  assert [(e['user_id'], e['item_id'], e['history_item_id'], e['label'], e['history_label'])
          for e in evals] == [
      ('u1', 'i6', ['i4', 'i5'], features.LABEL_NEGATIVE,
       [features.LABEL_NEGATIVE, features.LABEL_POSITIVE]),
      ('u1', 'i7', ['i5', 'i6'], features.LABEL_POSITIVE,
       [features.LABEL_POSITIVE, features.LABEL_NEGATIVE]),
      ('u2', 'i9', [], features.LABEL_NEGATIVE, []),  # a one-play user is all eval
  ]
  assert evals[0]['history_play_rate'] == [0.1, 1.0]
  assert evals[0]['history_ts'] == [T0 + 2000, T0 + 3000]
  assert_labels_follow_the_thresholds(train + evals)
  eval_plays = {(e['user_id'], e['item_id']) for e in evals}
  assert not any((play['user_id'], play['item_id']) in eval_plays
                 for e in train for play in window_of(e))
  counts = counts_of(examples)
  assert (counts['train_examples'], counts['train_plays'], counts['eval_examples']) == (2, 5, 3)


def test_history_length_zero_writes_every_train_play_alone(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', f'i{k}', T0 + k, 1000, 200_000, 'on_demand']
                             for k in range(4)])
  examples, _ = run_executor(tmp_path, logs, history_length=0, eval_plays_per_user=1)
  train = read_split(examples, 'train')
  assert sorted(e['item_id'] for e in train) == ['i0', 'i1', 'i2']
  assert all(e['history_item_id'] == [] == e['history_ts'] == e['history_label'] for e in train)
  assert [e['history_item_id'] for e in read_split(examples, 'eval')] == [[]]


def test_split_by_cut_time_and_log_without_play_rates_as_gzipped_jsonl(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  lines = [json.dumps({'user_id': 'u1', 'item_id': f'i{k}', 'ts': T0 + k * 1000})
           for k in range(4)]
  lines.insert(2, '{"user_id": "u1", "item_id": ')  # bad JSON
  lines.insert(3, '["u1", "i7", 1700000000000]')  # not an object
  lines.append(json.dumps({'user_id': 'u2', 'item_id': 7, 'ts': T0 + 5000}))  # int id is fine
  lines.append(json.dumps({'user_id': 'u2', 'item_id': ['i1'], 'ts': T0 + 6000}))
  with gzip.open(logs / 'plays.jsonl.gz', 'wt') as f:
    f.write('\n'.join(lines) + '\n')
  examples, quarantine = run_executor(tmp_path, logs / '*.jsonl.gz', input_format='jsonl',
                                      eval_start_ts=T0 + 2000, max_bad_fraction=0.5)
  assert {(q['line'], q['reason']) for q in read_quarantine(quarantine)} == {
      (3, r.UNPARSEABLE_ROW), (4, r.UNPARSEABLE_ROW), (8, r.BAD_TYPE)}
  train, evals = read_split(examples, 'train'), read_split(examples, 'eval')
  assert_train_windows(train, {'u1': ['i0', 'i1'], 'u2': []},
                       history_length=defaults.HISTORY_LENGTH)
  assert sorted(e['item_id'] for e in evals) == ['7', 'i2', 'i3']
  for e in train + evals:
    for play in window_of(e):
      assert play['play_rate'] == round(features.DEFAULT_PLAY_RATE, 4)
      assert play['intent'] == features.DEFAULT_INTENT
      assert play['label'] == features.LABEL_POSITIVE
  assert counts_of(examples)['rows_read'] == 8


def test_parquet_with_nulls_and_play_rate_column(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  table = pa.table({
      'user_id': ['u1', None, 'u1', 'u1', 'u1'],
      'item_id': ['i1', 'i2', 'i3', 'i4', 'i5'],
      'ts': pa.array([T0, T0 + 1, None, T0 + 3, T0 + 4], pa.timestamp('ms', tz='UTC')),
      'play_rate': [1.7, 0.5, 0.5, None, -0.2],  # clipped to [0, 1]
  })
  pq.write_table(table, logs / 'plays.parquet')
  examples, quarantine = run_executor(tmp_path, logs, input_format='parquet',
                                      max_bad_fraction=0.7)
  assert sorted((q['line'], q['reason']) for q in read_quarantine(quarantine)) == [
      (2, r.MISSING_USER_ID), (3, r.BAD_TIMESTAMP), (4, r.MISSING_PLAY_RATE)]
  assert sorted((p['item_id'], p['play_rate'], p['ts']) for p in written_plays(examples)) == [
      ('i1', 1.0, T0), ('i5', 0.0, T0 + 4)]


def mssd_expectations():
  """Returns {(session, track): (play_rate, intent)} straight from the MSSD table's docs."""
  mapping = column_mapping_lib.MSSD_MAPPING
  skip_levels = mapping['play_rate']['columns']
  reason_table, context_table = (l['table'] for l in mapping['intent']['lookups'])
  expected = {}
  with open(MSSD_FILE, newline='') as f:
    for row in csv.DictReader(f):
      play_rate = next((v for c, v in skip_levels if row[c] == 'True'), 0.7)
      intent = (reason_table.get(row['hist_user_behavior_reason_start'])
                or context_table[row['context_type']])
      expected[(row['session_id'], row['track_id_clean'], int(row['session_position']))] = (
          play_rate, intent)
  return expected


def test_mssd_mapping_reads_the_real_log(tmp_path):
  examples, _ = run_executor(tmp_path, MSSD_FILE, column_mapping='mssd', max_bad_fraction=0.0,
                             eval_plays_per_user=1)
  counts = counts_of(examples)
  assert counts['rows_read'] == 1180 == counts['rows_used']
  assert counts['eval_examples'] == 169  # one per session
  assert counts['train_plays'] == 1180 - 169
  expected = mssd_expectations()
  plays = written_plays(examples)
  got = {}
  for play in plays:
    position = (play['ts'] // 1000) % 60
    got[(play['user_id'], play['item_id'], position)] = (play['play_rate'], play['intent'])
  assert got == {k: (round(v[0], 4), v[1]) for k, v in expected.items()}
  rates = collections.Counter(play['play_rate'] for play in plays)
  assert rates == {0.05: 427, 1.0: 398, 0.5: 186, 0.2: 152, 0.7: 17}
  assert set(play['intent'] for play in plays) == set(features.INTENTS)
  # A session's plays but the last, by position, are its train plays: sessions are at most 20
  # plays long, so they fit in one window.
  sessions = collections.defaultdict(list)
  for session, track, _ in sorted(expected, key=lambda k: k[2]):
    sessions[session].append(track)
  train, evals = read_split(examples, 'train'), read_split(examples, 'eval')
  assert_train_windows(train, {session: tracks[:-1] for session, tracks in sessions.items()},
                       history_length=defaults.HISTORY_LENGTH)
  assert_labels_follow_the_thresholds(train + evals)
  # Within a session, an eval history is the earlier positions in order.
  longest = max(evals, key=lambda e: len(e['history_item_id']))
  assert longest['history_item_id'] == sessions[longest['user_id']][:-1]


def train_items_in_csv(paths, eval_plays_per_user):
  """Returns {user_id: item ids of the train plays, in time order} of canonical CSV logs."""
  plays = collections.defaultdict(list)
  for path in paths:
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        plays[row['user_id']].append((int(row['ts']), row['item_id']))
  return {user: [item for _, item in sorted(user_plays)][:len(user_plays) - eval_plays_per_user]
          for user, user_plays in plays.items()}


def test_train_windows_are_written_in_random_order(tmp_path):
  logs = tmp_path / 'logs'
  # The generator writes each user's plays together, as logs exported per user would be.
  summary = generate_lib.generate(str(logs), num_events=20_000, num_users=200, num_items=2_000,
                                  seed=5)
  examples, _ = run_executor(tmp_path, logs, history_length=4)
  assert counts_of(examples)['rows_quarantined'] == 0
  train = read_split(examples, 'train')
  assert_train_windows(train, train_items_in_csv(summary['files'], defaults.EVAL_PLAYS_PER_USER),
                       history_length=4)
  users = [e['user_id'] for e in train]  # in the order written
  repeats = sum(a == b for a, b in zip(users, users[1:])) / (len(users) - 1)
  # In a random order a record follows one of its own user with this probability; in the users'
  # order nearly always (there are ~20 windows per user).
  n = len(users)
  random_repeats = sum(k * (k - 1) for k in collections.Counter(users).values()) / (n * (n - 1))
  assert random_repeats < 0.05
  assert repeats < 2 * random_repeats, (repeats, random_repeats)


def expected_tf_example(user_id, history, target, config):
  """Builds with the protobuf library what user_examples encodes by hand."""
  example = tf.train.Example()
  feature = example.features.feature
  feature[features.USER_ID].bytes_list.value.append(user_id.encode())
  feature[features.HISTORY_ITEM_ID].bytes_list.value.extend([p[3].encode() for p in history])
  feature[features.HISTORY_PLAY_RATE].float_list.value.extend([p[4] for p in history])
  feature[features.HISTORY_INTENT].bytes_list.value.extend([p[5].encode() for p in history])
  feature[features.HISTORY_TS].int64_list.value.extend([p[0] for p in history])
  feature[features.HISTORY_LABEL].int64_list.value.extend([config.label(p[4]) for p in history])
  feature[features.ITEM_ID].bytes_list.value.append(target[3].encode())
  feature[features.PLAY_RATE].float_list.value.append(target[4])
  feature[features.INTENT].bytes_list.value.append(target[5].encode())
  feature[features.TS].int64_list.value.append(target[0])
  feature[features.LABEL].int64_list.value.append(config.label(target[4]))
  return example


def test_encoded_examples_equal_tf_examples():
  config = user_examples.ExampleConfig(history_length=2, pos_threshold=0.8, neg_threshold=0.3,
                                       eval_plays_per_user=2)
  plays = [(T0, 0, 2, 'é', 0.25, 'recommend'), (T0 + 1, 0, 3, 'b' * 300, 0.9, 'on_demand'),
           (T0 + 2, 0, 4, 'c', 0.5, 'genre_request'), (T0 + 3, 0, 5, 'd', 0.5, 'recommend'),
           (T0 + 4, 0, 6, 'e', 0.95, 'on_demand'), (T0 + 5, 0, 7, 'f', 0.1, 'recommend')]
  assert config.label(0.5) == features.LABEL_NEITHER  # a negative int64: history and target label
  # (split, first play, target): train plays 0-3 in windows [0, 1, 2] and [3]; eval plays 4 and 5
  # with the two plays before each.
  spans = [('train', 0, 2), ('train', 3, 3), ('eval', 2, 4), ('eval', 3, 5)]
  encoded = list(user_examples.user_examples('u' * 200, plays, config))
  assert [(e.split, e.plays) for e in encoded] == [(split, target + 1 - start)
                                                   for split, start, target in spans]
  for (_, start, target), example in zip(spans, encoded):
    assert tf.train.Example.FromString(example.serialized) == expected_tf_example(
        'u' * 200, plays[start:target], plays[target], config)


def test_component_spec_and_parameter_errors(tmp_path):
  gen = component.PlayLogExampleGen(input_base=str(tmp_path), column_mapping='mssd')
  assert set(gen.outputs) == {'examples', 'quarantine'}
  assert gen.exec_properties['history_length'] == defaults.HISTORY_LENGTH
  assert gen.exec_properties['max_bad_fraction'] == defaults.MAX_BAD_FRACTION
  with pytest.raises(ValueError, match="unknown column mapping 'spotify'"):
    component.PlayLogExampleGen(input_base=str(tmp_path), column_mapping='spotify')
  with pytest.raises(ValueError, match='maps unknown canonical columns'):
    component.PlayLogExampleGen(input_base=str(tmp_path), column_mapping='{"rate": "x"}')
  with pytest.raises(ValueError, match='neg_threshold < pos_threshold'):
    component.PlayLogExampleGen(input_base=str(tmp_path), pos_threshold=0.2)
  with pytest.raises(ValueError, match='input_format must be one of'):
    component.PlayLogExampleGen(input_base=str(tmp_path), input_format='xml')
  with pytest.raises(ValueError, match='matches no files'):
    executor.input_files(str(tmp_path / 'nothing-*.csv'))


def test_missing_required_column_names_the_file(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  (logs / 'plays.csv').write_text('user,item_id,ts\nu1,i1,1700000000000\n')
  with pytest.raises(Exception, match=r"plays.csv: no column \['user_id'\]"):
    run_executor(tmp_path, logs)


def test_driver_fingerprint_changes_with_the_input_files(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', 'i1', T0, 1000, 200_000, 'on_demand']])
  execution = portable_data_types.ExecutionInfo(exec_properties={'input_base': str(logs)})
  first = driver.Driver(None).run(execution).exec_properties[driver.INPUT_FINGERPRINT_KEY]
  assert first.string_value.startswith('files:1,sha256:')
  assert driver.input_fingerprint(str(logs)) == first.string_value  # stable
  write_csv(logs / 'b.csv', [['u2', 'i1', T0, 1000, 200_000, 'on_demand']])
  second = driver.input_fingerprint(str(logs))
  assert second.startswith('files:2,') and second != first.string_value
  with open(logs / 'b.csv', 'a') as f:
    f.write('u2,i2,1700000001000,1000,200000,on_demand\n')
  assert driver.input_fingerprint(str(logs)) != second


def test_in_a_local_pipeline_statistics_gen_reads_it_and_new_files_bust_the_cache(tmp_path):
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', f'i{k}', T0 + k, 1000 * k, 200_000, 'on_demand']
                             for k in range(5)])
  metadata_path = str(tmp_path / 'metadata.db')

  def run():
    example_gen = component.PlayLogExampleGen(input_base=str(logs))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name='play_log_example_gen_test', pipeline_root=str(tmp_path / 'root'),
        components=[example_gen, statistics_gen], enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path)))
    with metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(
        metadata_path)) as m:
      executions = m.store.get_executions_by_type('components.play_log_example_gen.component.'
                                                  'PlayLogExampleGen')
      examples = m.store.get_artifacts_by_type('Examples')
    return executions[-1].last_known_state, examples

  state, examples = run()
  assert state == metadata_store_pb2.Execution.COMPLETE
  assert examples[-1].custom_properties['rows_read'].int_value == 5
  statistics = glob.glob(str(tmp_path / 'root' / 'StatisticsGen' / 'statistics' / '*' /
                             'Split-train' / 'FeatureStats.pb'))
  assert statistics
  state, _ = run()
  assert state == metadata_store_pb2.Execution.CACHED
  write_csv(logs / 'b.csv', [['u2', 'i1', T0, 1000, 200_000, 'on_demand']])
  state, examples = run()
  assert state == metadata_store_pb2.Execution.COMPLETE
  assert examples[-1].custom_properties['rows_read'].int_value == 6
