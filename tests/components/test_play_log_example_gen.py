"""PlayLogExampleGen: real Beam runs (DirectRunner) of the executor on small play logs."""

import collections
import csv
import glob
import gzip
import json
import os

import numpy as np
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
from components.play_log_example_gen import driver
from components.play_log_example_gen import executor
from components.play_log_example_gen import input_files
from components.play_log_example_gen import play_columns
from components.play_log_example_gen import play_log_reader as r
from components.play_log_example_gen import user_examples
from contract import features
from contract import settings
from datagen import generate as generate_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 1,180 real rows of Spotify's Music Streaming Sessions Dataset. Its terms allow it in tests from a
# data folder beside the repository but not a copy inside it, so the test that reads it is skipped,
# saying why, where that folder is absent.
MSSD_FILE = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mssd_fragment.csv')
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
HEADER = 'user_id,item_id,ts,play_ms,duration_ms,intent\n'
# A play's features as an example's target, and the same features of its history plays.
TARGET_FEATURES = (features.ITEM_ID, features.TS, features.PLAY_RATE, features.INTENT,
                   features.LABEL)
HISTORY_FEATURES = (features.HISTORY_ITEM_ID, features.HISTORY_TS, features.HISTORY_PLAY_RATE,
                    features.HISTORY_INTENT, features.HISTORY_LABEL)


INGEST_FIELDS = frozenset(settings.IngestConfig.__dataclass_fields__)


def run_executor(tmp_path, input_base, with_driver=False, **ingest):
  """Runs the executor on the DirectRunner with these ingest settings, given as the component
  gives them (one JSON), after the driver when with_driver (its properties handed on as a
  pipeline's launcher hands them); returns (examples artifact, quarantine artifact)."""
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / 'out' / 'examples')
  quarantine = artifacts.Quarantine()
  quarantine.uri = str(tmp_path / 'out' / 'quarantine')
  # Most tests here are about the train and eval splits; the valid split's tests ask for one.
  ingest = {'input_format': 'csv', 'valid_plays_per_user': 0, **ingest}
  assert set(ingest) <= INGEST_FIELDS, set(ingest) - INGEST_FIELDS
  properties = {'input_base': str(input_base), executor.INGEST_CONFIG_KEY: json.dumps(ingest)}
  if with_driver:
    properties.update(driver_output(properties))
  executor.Executor().Do({}, {'examples': [examples], 'quarantine': [quarantine]}, properties)
  return examples, quarantine


def driver_output(properties):
  """The exec properties the driver adds to these, as its run gives them to the launcher."""
  output = driver.Driver(None).run(portable_data_types.ExecutionInfo(exec_properties=properties))
  return {name: value.string_value for name, value in output.exec_properties.items()}


def fingerprint(properties):
  return driver.driver_properties(properties)[driver.INPUT_FINGERPRINT_KEY]


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
  config = user_examples.ExampleConfig(history_length=0, pos_threshold=settings.POS_THRESHOLD,
                                       neg_threshold=settings.NEG_THRESHOLD, eval_plays_per_user=0)
  for example in examples:
    for play in window_of(example):
      assert play[features.LABEL] == config.labels(np.array([play[features.PLAY_RATE]]))[0], play


def read_quarantine(quarantine):
  return read_quarantine_dir(quarantine.uri)


def read_quarantine_dir(directory):
  rows = []
  for path in glob.glob(os.path.join(str(directory), 'quarantine-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      rows.extend(json.loads(line) for line in f)
  return rows


def counts_of(artifact):
  return {name: artifact.get_int_custom_property(name)
          for name in ('rows_read', 'rows_used', 'rows_quarantined', 'train_examples',
                       'valid_examples', 'eval_examples', 'train_plays')}


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
    ('u2,i4,1700000300000,1000,200000,shuffle', None),  # an intent of its own: kept, counted
    ('u2,i5,1700000400000,250000,200000,genre_request', r.BAD_PLAY_RATE),  # 1.25 x the song
    ('u2,i6,1700000500000,205000,200000,genre_request', None),  # 1.025 x: rate 1, counted
]
# The broken-rows tests narrow the timestamps to 2000-01-01 onwards, so epoch seconds are caught.
MIN_TS_2000 = 946684800000
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
  examples, quarantine = run_executor(tmp_path, logs, max_bad_fraction=1.0,
                                      min_ts_ms=MIN_TS_2000, eval_plays_per_user=2)

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
  # Good rows: u1 3, u2 2, u4 2. Each user's last two plays are eval: u1's first is all of train.
  assert (counts['train_examples'], counts['train_plays'], counts['eval_examples']) == (1, 1, 6)
  assert counts_of(quarantine) == counts
  for name, count in (('blank_lines', 1), ('capped_play_rates', 1), ('unknown_intents', 1),
                      ('files_read', 3), ('files_ignored', 1), ('tied_plays', 0)):
    assert examples.get_int_custom_property(name) == count, name
  assert json.loads(examples.get_string_custom_property('ignored_files')) == [
      os.path.join(str(logs), '_SUCCESS')]
  by_reason = json.loads(examples.get_string_custom_property('quarantined_by_reason'))
  assert by_reason == dict(collections.Counter(expected_broken_reasons(str(logs)).values()))
  assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'valid', 'eval']

  plays = {(play['user_id'], play[features.ITEM_ID]): play for play in written_plays(examples)}
  assert plays[('u1', 'i2')][features.TS] == T0 + 40_000
  assert plays[('u1', 'i3')][features.TS] == T0 + 100_000 - 3_600_000  # +01:00 offset
  assert plays[('u1', 'i3')][features.INTENT] == features.DEFAULT_INTENT
  assert plays[('u2', 'i6')][features.PLAY_RATE] == 1.0
  assert plays[('u2', 'i4')][features.INTENT] == 'shuffle'
  assert plays[('u4', 'i1')][features.LABEL] == features.LABEL_POSITIVE  # from the .gz file


def test_run_fails_when_bad_fraction_passes_the_limit(tmp_path):
  logs = tmp_path / 'logs'
  write_broken_logs(str(logs))
  with pytest.raises(RuntimeError) as failure:
    run_executor(tmp_path, logs, max_bad_fraction=0.5, min_ts_ms=MIN_TS_2000)
  message = str(failure.value)
  bad = len(expected_broken_reasons(str(logs)))
  read = bad + sum(1 for _, reason in BROKEN_CSV_ROWS if reason is None) + 2
  assert f'{bad} of {read} rows ({bad / read:.2%}) were quarantined' in message
  assert 'max_bad_fraction=0.5' in message
  # The top reason (5 bad timestamps) comes first, with row locations to look at.
  assert f'{r.BAD_TIMESTAMP}: 5 (e.g. {logs}/broken.csv:' in message
  assert message.index(r.BAD_TIMESTAMP) < message.index(r.BAD_DURATION)
  assert message.endswith(f'is in {tmp_path}/out/quarantine')
  # The failed run leaves no examples behind, only the quarantine the message points at.
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*'))
  assert read_quarantine_dir(tmp_path / 'out' / 'quarantine')


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
                       history_length=settings.HISTORY_LENGTH)
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
      'play_rate': [1.0, 0.5, 0.5, None, 0.0],
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


def test_valid_split_holds_each_users_last_plays_before_eval(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # u1: 8 plays; u2: 5 plays (3 before eval: too few to give 2 and keep 2); u3: 1 play.
  rows = ([['u1', f'a{k}', T0 + k * 1000, 190_000, 200_000, 'on_demand'] for k in range(8)]
          + [['u2', f'b{k}', T0 + k * 1000, 10_000, 200_000, 'recommend'] for k in range(5)]
          + [['u3', 'c0', T0, 190_000, 200_000, 'on_demand']])
  write_csv(logs / 'a.csv', rows)
  examples, _ = run_executor(tmp_path, logs, history_length=3, eval_plays_per_user=2,
                             valid_plays_per_user=2)
  by_split = {split: sorted(read_split(examples, split), key=lambda e: (e['user_id'], e['ts']))
              for split in features.SPLITS}
  assert [(e['user_id'], e['item_id'], e['history_item_id']) for e in by_split['valid']] == [
      ('u1', 'a4', ['a1', 'a2', 'a3']), ('u1', 'a5', ['a2', 'a3', 'a4'])]
  assert [e['item_id'] for e in by_split['eval']] == ['a6', 'a7', 'b3', 'b4', 'c0']
  # Nothing of the valid split is trained on: u1 trains a0..a3, u2 b0..b2.
  trained = {play['item_id'] for e in by_split['train'] for play in window_of(e)}
  assert trained == {'a0', 'a1', 'a2', 'a3', 'b0', 'b1', 'b2'}
  counts = counts_of(examples)
  assert counts['train_plays'] + counts['valid_examples'] + counts['eval_examples'] == 14
  assert counts['valid_examples'] == 2


@pytest.mark.skipif(not os.path.exists(MSSD_FILE), reason=(
    f'{MSSD_FILE} is absent (its terms do not allow a copy in the repository)'))
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
                       history_length=settings.HISTORY_LENGTH)
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
  examples, _ = run_executor(tmp_path, logs, history_length=4, eval_plays_per_user=2)
  assert counts_of(examples)['rows_quarantined'] == 0
  train = read_split(examples, 'train')
  assert_train_windows(train, train_items_in_csv(summary['files'], 2), history_length=4)
  users = [e['user_id'] for e in train]  # in the order written
  repeats = sum(a == b for a, b in zip(users, users[1:])) / (len(users) - 1)
  # In a random order a record follows one of its own user with this probability; in the users'
  # order nearly always (there are ~20 windows per user).
  n = len(users)
  random_repeats = sum(k * (k - 1) for k in collections.Counter(users).values()) / (n * (n - 1))
  assert random_repeats < 0.05
  assert repeats < 2 * random_repeats, (repeats, random_repeats)


def expected_tf_example(user_id, history, target, config):
  """Builds with the protobuf library what user_examples encodes by hand (plays: dicts)."""
  example = tf.train.Example()
  feature = example.features.feature
  label = lambda play: int(config.labels(np.array([play['play_rate']]))[0])
  feature[features.USER_ID].bytes_list.value.append(user_id.encode())
  feature[features.HISTORY_ITEM_ID].bytes_list.value.extend(
      [p['item_id'].encode() for p in history])
  feature[features.HISTORY_PLAY_RATE].float_list.value.extend([p['play_rate'] for p in history])
  feature[features.HISTORY_INTENT].bytes_list.value.extend([p['intent'].encode() for p in history])
  feature[features.HISTORY_TS].int64_list.value.extend([p['ts'] for p in history])
  feature[features.HISTORY_LABEL].int64_list.value.extend([label(p) for p in history])
  feature[features.ITEM_ID].bytes_list.value.append(target['item_id'].encode())
  feature[features.PLAY_RATE].float_list.value.append(target['play_rate'])
  feature[features.INTENT].bytes_list.value.append(target['intent'].encode())
  feature[features.TS].int64_list.value.append(target['ts'])
  feature[features.LABEL].int64_list.value.append(label(target))
  return example


def plays_table(plays):
  return pa.Table.from_pylist(plays, schema=r.PLAYS_SCHEMA)


def test_encoded_examples_equal_tf_examples():
  config = user_examples.ExampleConfig(history_length=2, pos_threshold=0.8, neg_threshold=0.3,
                                       eval_plays_per_user=2, valid_plays_per_user=1)
  user = 'u' * 200
  plays = [dict(user_id=user, item_id=item, ts=ts, play_rate=rate, intent=intent, seq=0,
                file_index=0, line=line)
           for line, (ts, item, rate, intent) in enumerate([
               (T0, 'é', 0.25, 'recommend'), (T0 + 1, 'b' * 300, 0.9, 'on_demand'),
               (T0 + 2, 'c', 0.5, 'genre_request'), (T0 + 3, 'd', 0.5, 'recommend'),
               (T0 + 4, 'e', 0.95, 'on_demand'), (2**42, 'f', 0.1, 'recommend')], start=2)]
  # A negative int64 (the 'neither' label) is a 10-byte varint, history and target.
  assert config.labels(np.array([0.5]))[0] == features.LABEL_NEITHER
  # (split, first play, target): train plays 0-2 in the window [0, 1, 2]; valid play 3 and eval
  # plays 4 and 5, each with the two plays before it.
  spans = [('train', 0, 2), ('valid', 1, 3), ('eval', 2, 4), ('eval', 3, 5)]
  built = user_examples.bucket_examples(plays_table(plays[::-1]), config, ['f.csv'])
  assert [(e.split, e.plays) for e in built.examples] == [(split, target + 1 - start)
                                                          for split, start, target in spans]
  for (_, start, target), example in zip(spans, built.examples):
    assert tf.train.Example.FromString(example.serialized) == expected_tf_example(
        user, plays[start:target], plays[target], config)


def test_varints_equal_protobuf_encoding():
  values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2**40, 2**63 - 1, -1, -2**63])
  encoded, offsets = user_examples.varints(values)
  for k, value in enumerate(values.tolist()):
    packed = tf.train.Int64List(value=[value]).SerializeToString()
    assert encoded[offsets[k]:offsets[k + 1]] == packed[2:], value  # after tag and length


def test_component_spec_and_parameter_errors(tmp_path):
  gen = component.PlayLogExampleGen(input_base=str(tmp_path),
                                    ingest_config={'column_mapping': 'mssd'})
  assert set(gen.outputs) == {'examples', 'quarantine'}
  # One ingest parameter: the whole IngestConfig as JSON, validated once here.
  assert set(gen.exec_properties) == {'input_base', executor.INGEST_CONFIG_KEY}
  ingest = json.loads(gen.exec_properties[executor.INGEST_CONFIG_KEY])
  assert settings.IngestConfig.from_dict(ingest) == settings.IngestConfig(column_mapping='mssd')
  assert ingest['history_length'] == settings.HISTORY_LENGTH
  assert ingest['max_bad_fraction'] == settings.MAX_BAD_FRACTION
  same = component.PlayLogExampleGen(input_base=str(tmp_path),
                                     ingest_config=settings.IngestConfig(column_mapping='mssd'))
  assert same.exec_properties == gen.exec_properties
  with pytest.raises(ValueError, match=r"history_lenght: unknown setting; did you mean "
                                       r"'history_length'"):
    component.PlayLogExampleGen(input_base=str(tmp_path), ingest_config={'history_lenght': 20})
  with pytest.raises(ValueError, match="unknown column mapping 'spotify'"):
    component.PlayLogExampleGen(input_base=str(tmp_path),
                                ingest_config={'column_mapping': 'spotify'})
  with pytest.raises(ValueError, match='maps unknown canonical columns'):
    component.PlayLogExampleGen(input_base=str(tmp_path),
                                ingest_config={'column_mapping': '{"rate": "x"}'})
  with pytest.raises(ValueError, match='neg_threshold < pos_threshold'):
    component.PlayLogExampleGen(input_base=str(tmp_path), ingest_config={'pos_threshold': 0.2})
  with pytest.raises(ValueError, match=r"input_format: 'xml' is not allowed; choose one of"):
    component.PlayLogExampleGen(input_base=str(tmp_path), ingest_config={'input_format': 'xml'})
  with pytest.raises(ValueError, match='holds no play-log files'):
    input_files.find_input_files(str(tmp_path / 'nothing-*.csv'))
  with pytest.raises(ValueError, match=r"ts_unit: 'us' is not allowed; choose one of"):
    component.PlayLogExampleGen(input_base=str(tmp_path), ingest_config={'ts_unit': 'us'})


def test_the_examples_record_the_settings_that_shaped_them(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', f'i{k}', T0 + k, 1000 * k, 10_000, 'on_demand']
                             for k in range(8)])
  examples, _ = run_executor(tmp_path, logs, history_length=3, pos_threshold=0.7,
                             neg_threshold=0.25, eval_plays_per_user=2)
  assert examples.get_int_custom_property(features.EXAMPLE_HISTORY_LENGTH) == 3
  assert examples.get_float_custom_property(features.EXAMPLE_POS_THRESHOLD) == 0.7
  assert examples.get_float_custom_property(features.EXAMPLE_NEG_THRESHOLD) == 0.25
  # The same beside the splits, where the Trainer finds them (through Transform's copy).
  with open(os.path.join(examples.uri, features.EXAMPLE_SETTINGS_FILE)) as f:
    assert json.load(f) == {'history_length': 3, 'pos_threshold': 0.7, 'neg_threshold': 0.25,
                            'eval_max_users': None}  # the eval split's bound: none


def test_the_executor_takes_the_settings_once(tmp_path):
  with pytest.raises(ValueError, match=r"\['history_length'\] given both in ingest_config"):
    executor.ingest_settings({'input_base': str(tmp_path), 'history_length': 3,
                              executor.INGEST_CONFIG_KEY: '{"history_length": 4}'})
  # Direct callers (benchmarks) may give the fields as properties of their own.
  assert executor.ingest_settings({'history_length': 3.0}).history_length == 3


def test_the_encoder_writes_the_one_definition_of_the_example(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', f'i{k}', T0 + k, 1000 * k, 10_000, 'on_demand']
                             for k in range(6)])
  examples, _ = run_executor(tmp_path, logs, history_length=3, eval_plays_per_user=2)
  kinds = {features.BYTES: 'bytes_list', features.INT64: 'int64_list',
           features.FLOAT: 'float_list'}
  for split in features.SPLITS:
    files = glob.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*.gz'))
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      assert set(feature) == set(features.RAW_FEATURE_NAMES), split
      for definition in features.RAW_FEATURES:
        assert feature[definition.name].WhichOneof('kind') == kinds[definition.dtype]
        values = getattr(feature[definition.name], kinds[definition.dtype]).value
        if definition.scalar:
          assert len(values) == 1, definition.name
        else:
          assert len(values) == len(feature[features.HISTORY_ITEM_ID].bytes_list.value)


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
  properties = {'input_base': str(logs)}
  first = driver_output(properties)[driver.INPUT_FINGERPRINT_KEY]
  assert first.startswith('files:1,sha256:')
  assert fingerprint(properties) == first  # stable
  write_csv(logs / 'b.csv', [['u2', 'i1', T0, 1000, 200_000, 'on_demand']])
  second = fingerprint(properties)
  assert second.startswith('files:2,') and second != first
  with open(logs / 'b.csv', 'a') as f:
    f.write('u2,i2,1700000001000,1000,200000,on_demand\n')
  assert fingerprint(properties) != second


DAILY = {'partition_pattern': settings.DAILY_PARTITION_PATTERN}


def write_partitions(logs, days):
  """One file per day folder: {day: [(item, ts)]} plays of user u1, each played to the end."""
  for day, plays in days.items():
    os.makedirs(logs / day, exist_ok=True)
    write_csv(logs / day / 'part-0.csv',
              [['u1', item, ts, 190_000, 200_000, 'on_demand'] for item, ts in plays])


def test_partitions_are_ordered_by_date_or_span_and_the_window_keeps_the_newest(tmp_path):
  logs = tmp_path / 'logs'
  write_partitions(logs, {day: [('i1', T0)] for day in (
      '2026-11-29', '2026-12-01', '2026-11-30', '2026-02-30', 'notes')})
  found = input_files.find_input_files(str(logs), settings.DAILY_PARTITION_PATTERN, 2)
  assert [p.name for p in found.partitions] == ['2026-11-30', '2026-12-01']
  assert found.partitions[-1].span == (np.datetime64('2026-12-01') - np.datetime64('1970-01-01')
                                       ).astype(int)
  assert [p.name for p in found.partitions_outside_window] == ['2026-11-29']
  assert found.data == [str(logs / day / 'part-0.csv') for day in ('2026-11-30', '2026-12-01')]
  # No date (Feb 30th) and no match are not partitions: ignored and listed, never read.
  assert found.ignored == [str(logs / day / 'part-0.csv') for day in ('2026-02-30', 'notes')]

  spans = tmp_path / 'spans'
  write_partitions(spans, {f'span-{n}': [('i1', T0)] for n in (2, 10, 9)})
  found = input_files.find_input_files(str(spans), 'span-{SPAN}')
  assert [(p.name, p.span) for p in found.partitions] == [('span-2', 2), ('span-9', 9),
                                                          ('span-10', 10)]
  write_partitions(spans, {'span-09': [('i1', T0)]})
  with pytest.raises(ValueError, match="partitions 'span-09' and 'span-9' have the same span"):
    input_files.find_input_files(str(spans), 'span-{SPAN}')
  with pytest.raises(ValueError, match="holds no play-log files in partitions named 'day-{SPAN}'"):
    input_files.find_input_files(str(spans), 'day-{SPAN}')


def test_a_window_of_days_builds_histories_across_them_and_records_what_it_read(tmp_path):
  logs = tmp_path / 'logs'
  day = 24 * 3600 * 1000
  write_partitions(logs, {
      '2023-11-13': [('old0', T0 - day), ('old1', T0 - day + 1000)],
      '2023-11-14': [(f'i{k}', T0 + k * 1000) for k in range(4)],
      '2023-11-15': [(f'i{k}', T0 + day + k * 1000) for k in range(4, 7)],
      'README': [('x', T0)]})
  examples, quarantine = run_executor(tmp_path, logs, window_partitions=2,
                                      eval_plays_per_user=1, **DAILY)
  [last] = read_split(examples, 'eval')
  # The newest play's history reaches back into the day before, not into the day outside.
  assert last[features.ITEM_ID] == 'i6'
  assert last[features.HISTORY_ITEM_ID] == ['i0', 'i1', 'i2', 'i3', 'i4', 'i5']
  assert counts_of(examples)['rows_read'] == 7
  assert examples.span == (np.datetime64('2023-11-15') - np.datetime64('1970-01-01')).astype(int)
  assert json.loads(examples.get_string_custom_property(executor.PARTITIONS_PROPERTY)) == [
      '2023-11-14', '2023-11-15']
  assert examples.get_int_custom_property(executor.PARTITIONS_OUTSIDE_WINDOW_PROPERTY) == 1
  assert examples.get_int_custom_property('files_ignored') == 1  # README/part-0.csv


def test_the_fingerprint_follows_the_window(tmp_path):
  logs = tmp_path / 'logs'
  write_partitions(logs, {'2023-11-14': [('i1', T0)], '2023-11-15': [('i2', T0 + 1)]})
  properties = {'input_base': str(logs), 'window_partitions': 1, **DAILY}
  first = fingerprint(properties)
  write_partitions(logs, {'2023-11-13': [('i0', T0 - 1)]})  # an older day: outside the window
  assert fingerprint(properties) == first
  write_partitions(logs, {'2023-11-16': [('i3', T0 + 2)]})  # a new day
  assert fingerprint(properties) != first


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


# --- Bad input a new user would try: every row used, quarantined with a reason, or ignored -----

def assert_accounted(examples, quarantine, reasons, labels):
  """Asserts rows read = used + quarantined, each quarantined row's (file name, line) -> reason,
  and {item_id: label} of every written play."""
  counts = counts_of(examples)
  assert counts['rows_read'] == counts['rows_used'] + counts['rows_quarantined']
  assert counts['rows_used'] == counts['train_plays'] + counts['eval_examples']
  assert {(os.path.basename(q['source']), q['line']): q['reason']
          for q in read_quarantine(quarantine)} == reasons
  assert counts['rows_quarantined'] == len(reasons)
  assert {p['item_id']: p['label'] for p in written_plays(examples)} == labels
  assert counts['rows_used'] == len(labels)


def canonical_lines(first_item, count, user='u1', rate_ms=190_000):
  return [f'{user},i{k},{T0 + k * 1000},{rate_ms},200000,on_demand'
          for k in range(first_item, first_item + count)]


def test_an_open_quote_costs_its_own_line_only(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  lines = canonical_lines(0, 1000)
  lines.insert(500, 'u1,"i-open,1700000000000,1000,200000,on_demand')
  lines.insert(700, 'u1,"i,quoted",1700000000500,1000,200000,on_demand')  # a closed quote
  (logs / 'a.csv').write_text(HEADER + '\n'.join(lines) + '\n')
  examples, quarantine = run_executor(tmp_path, logs)
  expected = {f'i{k}': features.LABEL_POSITIVE for k in range(1000)}
  expected['i,quoted'] = features.LABEL_NEGATIVE
  assert_accounted(examples, quarantine, {('a.csv', 502): r.UNPARSEABLE_ROW}, expected)
  # The same plays through the column-wise path (no bad line in the block) give the same examples.
  clean = tmp_path / 'clean'
  os.makedirs(clean)
  del lines[500]
  (clean / 'a.csv').write_text(HEADER + '\n'.join(lines) + '\n')
  clean_examples, _ = run_executor(tmp_path / 'again', clean)
  for split in ('train', 'eval'):
    key = lambda e: (e['user_id'], e['ts'])
    assert sorted(read_split(examples, split), key=key) == sorted(
        read_split(clean_examples, split), key=key)


def test_compression_is_decided_by_content_not_name(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  with gzip.open(logs / 'gzipped.csv', 'wt') as f:  # gzipped, named .csv
    f.write(HEADER + '\n'.join(canonical_lines(0, 3)) + '\n')
  (logs / 'plain.csv.gz').write_text(HEADER + '\n'.join(canonical_lines(3, 3)) + '\n')
  examples, quarantine = run_executor(tmp_path, logs)
  assert_accounted(examples, quarantine, {},
                   {f'i{k}': features.LABEL_POSITIVE for k in range(6)})


def test_input_is_found_recursively_and_ignored_files_are_listed(tmp_path):
  logs = tmp_path / 'logs'
  for day in ('2026-11-30', '2026-12-01', '_temporary/0'):
    os.makedirs(logs / day)
  (logs / '2026-11-30' / 'part-0.csv').write_text(HEADER + canonical_lines(0, 1)[0] + '\n')
  (logs / '2026-12-01' / 'part-0.csv').write_text(HEADER + canonical_lines(1, 1)[0] + '\n')
  (logs / '_temporary' / '0' / 'part-0.csv').write_text(HEADER + canonical_lines(2, 1)[0] + '\n')
  (logs / '_SUCCESS').write_text('')
  (logs / '2026-12-01' / '.part-0.csv.crc').write_bytes(b'\x00\x01')
  examples, quarantine = run_executor(tmp_path, logs)
  assert_accounted(examples, quarantine, {}, {'i0': features.LABEL_POSITIVE,
                                              'i1': features.LABEL_POSITIVE})
  assert examples.get_int_custom_property('files_read') == 2
  assert json.loads(examples.get_string_custom_property('ignored_files')) == [
      str(logs / '2026-12-01' / '.part-0.csv.crc'), str(logs / '_SUCCESS'),
      str(logs / '_temporary' / '0' / 'part-0.csv')]
  assert examples.get_int_custom_property('files_ignored') == 3


def test_jsonl_play_fields_are_decided_by_the_whole_file(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  rows = [{'user_id': 'u1', 'item_id': 'i0', 'ts': T0}]  # no play fields in the first object
  rows += [{'user_id': 'u1', 'item_id': f'i{k}', 'ts': T0 + k, 'play_ms': 1000 * k,
            'duration_ms': 4000} for k in range(1, 5)]
  (logs / 'a.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  examples, quarantine = run_executor(tmp_path, logs, input_format='jsonl', max_bad_fraction=0.5)
  assert_accounted(examples, quarantine, {('a.jsonl', 1): r.MISSING_PLAY_RATE}, {
      'i1': features.LABEL_NEGATIVE, 'i2': features.LABEL_NEITHER, 'i3': features.LABEL_NEITHER,
      'i4': features.LABEL_POSITIVE})


def test_a_mapped_column_the_file_lacks_is_an_error_naming_both(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  (logs / 'a.csv').write_text('user_id,item_id,ts,ms_played\nu1,i1,1700000000000,1000\n')
  mapping = json.dumps({'play_ms': 'ms_played', 'duration_ms': 'track_ms'})
  with pytest.raises(ValueError, match=r"a.csv: no column \['track_ms'\] needed by column "
                                       r"mapping 'custom'"):
    run_executor(tmp_path, logs, column_mapping=mapping)
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*'))


def test_out_of_range_values_are_quarantined_not_clamped(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  (logs / 'rates.csv').write_text('user_id,item_id,ts,play_rate\n' + ''.join(
      f'u1,{item},{T0 + k},{rate}\n' for k, (item, rate) in enumerate([
          ('r-five', '5'), ('r-inf', 'inf'), ('r-neg', '-3'), ('r-nan', 'nan'),
          ('r-over', '1.0000001'), ('r-one', '1'), ('r-zero', '0.0'), ('r-half', ' .5 ')])))
  (logs / 'ms.csv').write_text(HEADER + ''.join(
      f'u2,{item},{T0 + k},{play_ms},{duration_ms},on_demand\n'
      for k, (item, play_ms, duration_ms) in enumerate([
          ('m-huge', 10**15, 2000), ('m-past', 2200, 2000), ('m-capped', 2050, 2000),
          ('m-end', 2000, 2000), ('m-skip', 100, 2000)])))
  examples, quarantine = run_executor(tmp_path, logs, max_bad_fraction=1.0,
                                      eval_plays_per_user=0)
  assert_accounted(examples, quarantine, {
      ('rates.csv', 2): r.BAD_PLAY_RATE, ('rates.csv', 3): r.BAD_PLAY_RATE,
      ('rates.csv', 4): r.BAD_PLAY_RATE, ('rates.csv', 5): r.BAD_PLAY_RATE,
      ('rates.csv', 6): r.BAD_PLAY_RATE, ('ms.csv', 2): r.BAD_PLAY_RATE,
      ('ms.csv', 3): r.BAD_PLAY_RATE,
  }, {'r-one': features.LABEL_POSITIVE, 'r-zero': features.LABEL_NEGATIVE,
      'r-half': features.LABEL_NEITHER, 'm-capped': features.LABEL_POSITIVE,
      'm-end': features.LABEL_POSITIVE, 'm-skip': features.LABEL_NEGATIVE})
  assert examples.get_int_custom_property('capped_play_rates') == 1
  details = {q['raw']: q['detail'] for q in read_quarantine(quarantine)}
  assert details[f'u1,r-five,{T0},5'] == "play_rate 5.0 is not in [0, 1]"
  assert details[f'u2,m-huge,{T0},{10**15},2000,on_demand'] == (
      f'play_ms {10**15} is more than 1.05 x duration_ms 2000')


def test_empty_or_header_only_input_fails_naming_it(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  (logs / 'header.csv').write_text(HEADER)
  (logs / 'empty.csv').write_text('')
  with pytest.raises(RuntimeError, match=f"no rows in the 2 file.s. under input_base '{logs}'"):
    run_executor(tmp_path, logs)
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*'))
  os.makedirs(tmp_path / 'none' / '_temporary')
  with pytest.raises(ValueError, match='holds no play-log files'):
    run_executor(tmp_path, tmp_path / 'none')


def test_a_byte_order_mark_is_accepted(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  (logs / 'a.csv').write_bytes(b'\xef\xbb\xbf' + (HEADER + canonical_lines(0, 2)[0]).encode())
  examples, quarantine = run_executor(tmp_path, logs, eval_plays_per_user=0)
  assert_accounted(examples, quarantine, {}, {'i0': features.LABEL_POSITIVE})
  (logs / 'a.csv').unlink()
  (logs / 'a.jsonl').write_bytes(b'\xef\xbb\xbf' + json.dumps(
      {'user_id': 'u1', 'item_id': 'j0', 'ts': T0, 'play_rate': 0.1}).encode() + b'\n')
  examples, quarantine = run_executor(tmp_path / 'jsonl', logs, input_format='jsonl',
                                      eval_plays_per_user=0)
  assert_accounted(examples, quarantine, {}, {'j0': features.LABEL_NEGATIVE})


def test_timestamp_bounds_and_unit_are_settings(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  t1996 = 820454400  # 1996-01-01, in seconds
  (logs / 'a.csv').write_text(HEADER + f'u1,i0,{t1996},500,2000,on_demand\n'
                              f'u1,i1,{t1996 + 60},2000,2000,on_demand\n')
  # A real ratings log from 1996 in seconds: with ts_unit='s' every row is kept, in ms.
  examples, quarantine = run_executor(tmp_path, logs, ts_unit='s', eval_plays_per_user=0)
  assert_accounted(examples, quarantine, {}, {'i0': features.LABEL_NEGATIVE,
                                              'i1': features.LABEL_POSITIVE})
  assert sorted(p['ts'] for p in written_plays(examples)) == [t1996 * 1000, (t1996 + 60) * 1000]
  # Narrowed bounds quarantine them, naming the bounds and the unit; with no row left the run
  # fails, keeping the quarantine its message points at.
  with pytest.raises(RuntimeError, match='all 2 rows read were quarantined'):
    run_executor(tmp_path / 'narrow', logs, ts_unit='s', min_ts_ms=MIN_TS_2000,
                 max_bad_fraction=1.0)
  detail = read_quarantine_dir(tmp_path / 'narrow' / 'out' / 'quarantine')[0]['detail']
  assert "1996-01-01T00:00:00+00:00 is outside [2000-01-01T00:00:00+00:00" in detail
  assert "ts_unit='s'" in detail


def test_truncated_gzip_and_garbage_parquet_fail_naming_the_file(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  data = gzip.compress((HEADER + '\n'.join(canonical_lines(0, 500)) + '\n').encode())
  (logs / 'cut.csv.gz').write_bytes(data[:len(data) // 2])
  with pytest.raises(Exception, match=r'cut.csv.gz: cannot read it as csv: EOFError'):
    run_executor(tmp_path, logs)
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*'))
  garbage = tmp_path / 'garbage'
  os.makedirs(garbage)
  (garbage / 'plays.parquet').write_bytes(b'PAR1 this is not parquet')
  with pytest.raises(Exception, match=r'plays.parquet: cannot read it as parquet'):
    run_executor(tmp_path / 'p', garbage, input_format='parquet')


def test_tied_plays_are_counted_and_ordered_by_seq(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # Three plays of u1 at the same ms, written out of order; seq says which came first.
  (logs / 'a.csv').write_text(HEADER.replace('intent', 'intent,n') + ''.join(
      f'u1,{item},{T0},1000,2000,on_demand,{n}\n' for item, n in (('c', 3), ('a', 1), ('b', 2)))
      + f'u1,d,{T0 + 1},1000,2000,on_demand,0\n')
  examples, _ = run_executor(tmp_path, logs, column_mapping='{"seq": "n"}',
                             eval_plays_per_user=1)
  assert [e['history_item_id'] for e in read_split(examples, 'eval')] == [['a', 'b', 'c']]
  assert examples.get_int_custom_property('tied_plays') == 3
  # Without seq, ties keep the input order.
  examples, _ = run_executor(tmp_path / 'input_order', logs, eval_plays_per_user=1)
  assert [e['history_item_id'] for e in read_split(examples, 'eval')] == [['c', 'a', 'b']]


def test_column_wise_check_passes_only_what_the_row_rules_accept_unchanged():
  mapping = column_mapping_lib.parse_column_mapping('canonical')
  validator = r.RowValidator(r.TimestampRule(0, 4_102_444_800_000), has_play_rate=True)
  values = {
      'user_id': ['u', ' u ', '', None, '7', 'u', 'u', 'u', 'u', 'u', 'u', 'u'],
      'item_id': ['i', 'i', 'i', 'i', 'i', ' ', 'i', 'i', 'i', 'i', 'i', 'i'],
      'ts': [str(T0), f' {T0} ', str(T0), str(T0), '2023-11-14T22:13:20Z', str(T0), '1.5',
             '-5', '99999999999999999999', str(T0), str(T0), str(T0)],
      'play_ms': ['10', '10', '10', '10', '10', '10', '10', '10', '10', '2100', '-1', '10.0'],
      'duration_ms': ['20'] * 12,
      'play_rate': [''] * 11 + ['0.5'],
      'intent': ['', 'recommend', 'x', '', '', '', '', '', '', '', '', ''],
  }
  table = pa.table({k: pa.array(v, pa.string()) for k, v in values.items()})
  checked = play_columns.check(table, mapping, validator)
  for row, ok in zip(table.to_pylist(), checked.ok):
    try:
      play = validator.play(row)
    except r.BadRow:
      assert not ok, row
      continue
    if ok:
      index = table.to_pylist().index(row)
      assert (checked.columns['user_id'][index].as_py(), checked.columns['item_id'][index].as_py(),
              int(checked.columns['ts'][index]), float(checked.columns['play_rate'][index]),
              checked.columns['intent'][index].as_py()) == (
                  play.user_id, play.item_id, play.ts, play.play_rate, play.intent), row
  # The clean rows pass column-wise; the rest go to the row rules.
  assert checked.ok.tolist() == [True, True, False, False, False, False, False, False, False,
                                 False, False, False]


def test_global_time_cut_by_fraction_of_the_plays(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # u1 plays through the whole range, u2 only early, u3 only late: 0 .. 100 s, 20 plays.
  plays = ([('u1', f'a{k}', T0 + k * 10_000) for k in range(11)]
           + [('u2', f'b{k}', T0 + k * 1_000) for k in range(3)]
           + [('u3', f'c{k}', T0 + 94_000 + k * 1_000) for k in range(6)])
  write_csv(logs / 'a.csv', [[u, i, ts, 1000, 2000, 'on_demand'] for u, i, ts in plays])
  examples, _ = run_executor(tmp_path, logs, eval_fraction=0.25)
  # The latest 5 plays (a quarter of 20): c2..c5 at 96..99 s and a10 at 100 s; not a9 at 90 s,
  # which a cut by a quarter of the time range (75 s) would have put in eval with a8.
  cut = T0 + 96_000
  assert examples.get_int_custom_property('eval_start_ts') == cut
  evals = read_split(examples, 'eval')
  assert sorted(e['item_id'] for e in evals) == sorted(i for _, i, ts in plays if ts >= cut)
  train_plays = {play['item_id'] for e in read_split(examples, 'train') for play in window_of(e)}
  assert train_plays == {i for _, i, ts in plays if ts < cut}
  # An eval play's history reaches back into the train period, as a served request would.
  a10 = next(e for e in evals if e['item_id'] == 'a10')
  assert a10['history_item_id'] == [f'a{k}' for k in range(10)]
  with pytest.raises(ValueError, match=r"give at most one of \['eval_plays_per_user', "
                     r"'eval_start_ts', 'eval_fraction'\]"):
    component.PlayLogExampleGen(input_base=str(logs),
                                ingest_config={'eval_start_ts': T0, 'eval_fraction': 0.1})
  with pytest.raises(ValueError, match='give at most one of'):
    component.PlayLogExampleGen(input_base=str(logs),
                                ingest_config={'eval_plays_per_user': 2, 'eval_fraction': 0.1})
  with pytest.raises(ValueError, match=r'eval_fraction: 1.0 is not allowed; must be in \(0, 1\)'):
    component.PlayLogExampleGen(input_base=str(logs), ingest_config={'eval_fraction': 1.0})


def test_default_split_is_the_latest_tenth_of_the_plays(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  plays = [(f'u{k % 3}', f'i{k}', T0 + k * 1_000) for k in range(101)]  # 0 .. 100 s
  write_csv(logs / 'a.csv', [[u, i, ts, 1000, 2000, 'on_demand'] for u, i, ts in plays])
  examples, _ = run_executor(tmp_path, logs)
  cut = T0 + 100_000 - int(100_000 * settings.EVAL_FRACTION)
  assert examples.get_int_custom_property('eval_start_ts') == cut
  assert sorted(e['item_id'] for e in read_split(examples, 'eval')) == sorted(
      i for _, i, ts in plays if ts >= cut)
  assert counts_of(examples)['eval_examples'] == 11


@pytest.mark.parametrize('cut_s, empty, side', [(-1, 'train', 'before'),
                                                (1_000, 'eval', 'at or after')])
def test_a_cut_that_leaves_a_split_empty_fails_and_writes_nothing(tmp_path, cut_s, empty, side):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [['u1', f'i{k}', T0 + k * 1_000, 1000, 2000, 'on_demand']
                             for k in range(5)])
  with pytest.raises(RuntimeError, match=f'the {empty} split is empty: no play is {side} the '
                                         f'cut time eval_start_ts={T0 + cut_s * 1000}'):
    run_executor(tmp_path, logs, eval_start_ts=T0 + cut_s * 1000)
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*'))
