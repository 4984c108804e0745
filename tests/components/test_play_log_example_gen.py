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
from transform import features

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MSSD_FILE = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mssd_fragment.csv')
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
HEADER = 'user_id,item_id,ts,play_ms,duration_ms,intent\n'


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
  files = glob.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*.gz'))
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
    })
  return parsed


def read_quarantine(quarantine):
  rows = []
  for path in glob.glob(os.path.join(quarantine.uri, 'quarantine-*.jsonl')):
    with open(path, encoding='utf-8') as f:
      rows.extend(json.loads(line) for line in f)
  return rows


def counts_of(artifact):
  return {name: artifact.get_int_custom_property(name)
          for name in ('rows_read', 'rows_used', 'rows_quarantined', 'train_examples',
                       'eval_examples')}


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
  assert counts['rows_used'] == good == counts['train_examples'] + counts['eval_examples']
  assert counts_of(quarantine) == counts
  by_reason = json.loads(examples.get_string_custom_property('quarantined_by_reason'))
  assert by_reason == dict(collections.Counter(expected_broken_reasons(str(logs)).values()))
  assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'eval']

  plays = {(e[features.USER_ID], e[features.ITEM_ID]): e
           for split in ('train', 'eval') for e in read_split(examples, split)}
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


def test_histories_labels_and_split_by_last_plays(tmp_path):
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
  write_csv(logs / 'b.csv', [['u1', 'i5', T0 + 3000, 200_000, 200_000, 'on_demand']])
  examples, _ = run_executor(tmp_path, logs, history_length=2, eval_plays_per_user=2,
                             max_bad_fraction=0.0)
  train = sorted(read_split(examples, 'train'), key=lambda e: (e['user_id'], e['ts']))
  evals = sorted(read_split(examples, 'eval'), key=lambda e: (e['user_id'], e['ts']))
  assert [(e['user_id'], e['item_id'], e['history_item_id'], e['label']) for e in train] == [
      ('u1', 'i1', [], features.LABEL_POSITIVE),
      ('u1', 'i2', ['i1'], features.LABEL_POSITIVE),
      ('u1', 'i3', ['i1', 'i2'], features.LABEL_NEITHER),
  ]
  assert [(e['user_id'], e['item_id'], e['history_item_id'], e['label']) for e in evals] == [
      ('u1', 'i4', ['i2', 'i3'], features.LABEL_NEGATIVE),
      ('u1', 'i5', ['i3', 'i4'], features.LABEL_POSITIVE),
      ('u2', 'i9', [], features.LABEL_NEGATIVE),  # a one-play user is all eval
  ]
  assert train[2]['history_play_rate'] == [0.95, 0.8]
  assert train[2]['history_intent'] == ['on_demand', 'genre_request']
  assert evals[1]['history_play_rate'] == [0.5, 0.1]
  eval_plays = {(e['user_id'], e['item_id']) for e in evals}
  assert not any((e['user_id'], item) in eval_plays for e in train for item in e['history_item_id'])


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
  assert sorted(e['item_id'] for e in train) == ['i0', 'i1']
  assert sorted(e['item_id'] for e in evals) == ['7', 'i2', 'i3']
  for e in train + evals:
    assert e['play_rate'] == round(features.DEFAULT_PLAY_RATE, 4)
    assert e['intent'] == features.DEFAULT_INTENT
    assert e['label'] == features.LABEL_POSITIVE
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
  examples_read = read_split(examples, 'train') + read_split(examples, 'eval')
  assert sorted((e['item_id'], e['play_rate'], e['ts']) for e in examples_read) == [
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
  expected = mssd_expectations()
  examples_read = read_split(examples, 'train') + read_split(examples, 'eval')
  got = {}
  for e in examples_read:
    position = (e['ts'] // 1000) % 60
    got[(e['user_id'], e['item_id'], position)] = (e['play_rate'], e['intent'])
  assert got == {k: (round(v[0], 4), v[1]) for k, v in expected.items()}
  rates = collections.Counter(e['play_rate'] for e in examples_read)
  assert rates == {0.05: 427, 1.0: 398, 0.5: 186, 0.2: 152, 0.7: 17}
  assert set(e['intent'] for e in examples_read) == set(features.INTENTS)
  # Within a session, the history is the earlier positions in order.
  longest = max(examples_read, key=lambda e: len(e['history_item_id']))
  session = sorted((k[2], k[1]) for k in expected if k[0] == longest['user_id'])
  assert longest['history_item_id'] == [item for _, item in session[:-1]]


def test_encoded_examples_equal_tf_examples():
  config = user_examples.ExampleConfig(history_length=2, pos_threshold=0.8, neg_threshold=0.3,
                                       eval_plays_per_user=1)
  plays = [(T0, 0, 2, 'é', 0.25, 'recommend'), (T0 + 1, 0, 3, 'b' * 300, 0.9, 'on_demand'),
           (T0 + 2, 0, 4, 'c', 0.5, 'genre_request')]
  encoded = list(user_examples.user_examples('u' * 200, plays, config))
  assert [split for split, _ in encoded] == ['train', 'train', 'eval']
  for t, (_, serialized) in enumerate(encoded):
    expected = tf.train.Example()
    feature = expected.features.feature
    history = plays[max(0, t - 2):t]
    feature[features.USER_ID].bytes_list.value.append(b'u' * 200)
    feature[features.HISTORY_ITEM_ID].bytes_list.value.extend([p[3].encode() for p in history])
    feature[features.HISTORY_PLAY_RATE].float_list.value.extend([p[4] for p in history])
    feature[features.HISTORY_INTENT].bytes_list.value.extend([p[5].encode() for p in history])
    feature[features.ITEM_ID].bytes_list.value.append(plays[t][3].encode())
    feature[features.PLAY_RATE].float_list.value.append(plays[t][4])
    feature[features.INTENT].bytes_list.value.append(plays[t][5].encode())
    feature[features.TS].int64_list.value.append(plays[t][0])
    feature[features.LABEL].int64_list.value.append(config.label(plays[t][4]))
    assert tf.train.Example.FromString(serialized) == expected
  assert config.label(0.25) == features.LABEL_NEGATIVE  # a negative int64 encodes too
  negative = user_examples.encode_example(b'', b'', b'', b'', b'', b'', b'', -5, -1)
  assert tf.train.Example.FromString(negative).features.feature[
      features.LABEL].int64_list.value == [-1]


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
