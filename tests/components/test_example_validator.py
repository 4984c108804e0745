"""ExampleValidator against the curated schema stops a run whose examples break it, naming the
anomaly: PlayLogExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator, each
component's executor driven directly."""

import glob
import os

import pytest
import tensorflow as tf
from tfx.components.schema_gen.import_schema_gen import executor as import_schema_gen_executor
from tfx.components.statistics_gen import executor as statistics_gen_executor
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.example_validator import executor as validator_executor
from components.play_log_example_gen import user_examples
from contract import features
from contract import schema as schema_lib
from tests.components.test_play_log_example_gen import T0
from tests.components.test_play_log_example_gen import run_executor
from tests.components.test_play_log_example_gen import write_csv


def _artifact(kind, uri, splits=None):
  made = kind()
  made.uri = str(uri)
  if splits:
    made.split_names = artifact_utils.encode_split_names(list(splits))
  return made


def _example_gen(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  write_csv(logs / 'a.csv', [[f'u{u}', f'i{k}', T0 + 1000 * k, 1000 * k, 10_000, 'on_demand']
                             for u in range(3) for k in range(8)])
  examples, _ = run_executor(tmp_path, logs, history_length=3, eval_plays_per_user=2)
  return examples


def _validate(tmp_path, examples):
  """StatisticsGen, ImportSchemaGen (the repository's schema) and ExampleValidator; returns the
  anomalies artifact."""
  statistics = _artifact(standard_artifacts.ExampleStatistics, tmp_path / 'statistics',
                         features.SPLITS)
  statistics_gen_executor.Executor().Do({'examples': [examples]}, {'statistics': [statistics]},
                                        {'exclude_splits': '[]'})
  schema = _artifact(standard_artifacts.Schema, tmp_path / 'schema')
  import_schema_gen_executor.Executor().Do({}, {'schema': [schema]},
                                           {'schema_file': schema_lib.SCHEMA_FILE})
  anomalies = _artifact(standard_artifacts.ExampleAnomalies, tmp_path / 'anomalies')
  validator_executor.Executor().Do({'statistics': [statistics], 'schema': [schema]},
                                   {'anomalies': [anomalies]}, {'exclude_splits': '[]'})
  return anomalies


def _rewrite(examples, split, change):
  """Rewrites a split's examples (gzipped TFRecords) with change(tf.train.Example) applied."""
  for path in glob.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*.gz')):
    records = [tf.train.Example.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(path, compression_type='GZIP')]
    with tf.io.TFRecordWriter(path, options='GZIP') as writer:
      for example in records:
        change(example)
        writer.write(example.SerializeToString())


def test_examples_as_ingestion_writes_them_pass(tmp_path):
  anomalies = _validate(tmp_path, _example_gen(tmp_path))
  blessed = anomalies.get_json_value_custom_property('blessed')
  assert {split: int(value) for split, value in dict(blessed).items()} == {
      split: 1 for split in features.SPLITS}


def test_examples_lacking_a_feature_stop_the_run_naming_it(tmp_path, monkeypatch):
  # An encoder that leaves out the history's play rates.
  monkeypatch.setattr(user_examples, '_LAYOUT', tuple(
      entry for entry, definition in zip(user_examples._LAYOUT, features.RAW_FEATURES[1:])
      if definition.name != features.HISTORY_PLAY_RATE))
  examples = _example_gen(tmp_path)
  with pytest.raises(validator_executor.ExampleAnomaliesError) as raised:
    _validate(tmp_path, examples)
  message = str(raised.value)
  assert 'split train: history_play_rate: SCHEMA_MISSING_COLUMN' in message
  assert 'stops before Transform' in message
  assert str(tmp_path / 'anomalies') in message


def test_out_of_range_values_stop_the_run_naming_them(tmp_path):
  examples = _example_gen(tmp_path)

  def out_of_range(example):
    feature = example.features.feature
    feature[features.PLAY_RATE].float_list.value[0] = 1.5
    feature[features.HISTORY_LABEL].int64_list.value.append(2)
    feature[features.HISTORY_ITEM_ID].bytes_list.value.append(b'i0')
    feature[features.HISTORY_PLAY_RATE].float_list.value.append(-0.5)

  _rewrite(examples, features.EVAL_SPLIT, out_of_range)
  with pytest.raises(validator_executor.ExampleAnomaliesError) as raised:
    _validate(tmp_path, examples)
  message = str(raised.value)
  assert 'split eval: play_rate: FLOAT_TYPE_BIG_FLOAT' in message
  assert 'split eval: history_label: INT_TYPE_BIG_INT' in message
  assert 'split eval: history_play_rate: FLOAT_TYPE_SMALL_FLOAT' in message
  assert 'split train' not in message


def test_an_unknown_feature_is_an_anomaly_too(tmp_path):
  examples = _example_gen(tmp_path)
  _rewrite(examples, features.TRAIN_SPLIT, lambda example: example.features.feature[
      'history_playrate'].float_list.value.append(0.5))
  with pytest.raises(validator_executor.ExampleAnomaliesError,
                     match='split train: history_playrate: SCHEMA_NEW_COLUMN'):
    _validate(tmp_path, examples)
