"""A config file that would be misread is refused at load, naming the file and the key (issue 27):
keys given twice, integers past any sane run, a file that is not UTF-8, and the partition and
warm-start settings of daily runs."""

import json

import pytest

from contract import settings
from contract.typed import SettingError


def _write(tmp_path, data: bytes) -> str:
  path = tmp_path / 'prod.json'
  path.write_bytes(data)
  return str(path)


@pytest.mark.parametrize('text, key', [
    ('{"train": {"train_steps": 5}, "train": {"eval_steps": 3}}', 'train'),
    ('{"train": {"train_steps": 5, "train_steps": 50}}', 'train.train_steps'),
    ('{"ingest": {"partition_pattern": "{YYYY}-{MM}-{DD}"},'
     ' "train": {"hparams": {"num_layers": 1, "num_layers": 2}}}', 'train.hparams.num_layers'),
])
def test_a_key_given_twice_is_refused_naming_file_and_key(tmp_path, text, key):
  path = _write(tmp_path, text.encode())
  with pytest.raises(SettingError) as raised:
    settings.PipelineConfig.from_json_file(path)
  assert str(raised.value) == (f'{path}: {key}: given twice in one object; JSON would keep only '
                               'the last value and silently drop the other: keep one')


@pytest.mark.parametrize('values, message', [
    ({'train': {'train_steps': 10**12}},
     'train.train_steps: 1000000000000 is not allowed; must be <= 1,000,000,000'),
    ({'train': {'warm_start': True, 'warm_start_steps': 10**10}},
     'train.warm_start_steps: 10000000000 is not allowed; must be <= 1,000,000,000'),
    ({'train': {'eval_steps': 10**12}},
     'train.eval_steps: 1000000000000 is not allowed; must be <= 1,000,000,000'),
    ({'train': {'hparams': {'batch_size': 10**9}}},
     'train.hparams.batch_size: 1000000000 is not allowed; must be <= 1,048,576'),
    ({'train': {'hparams': {'num_layers': 1000}}},
     'train.hparams.num_layers: 1000 is not allowed; must be <= 256'),
    ({'ingest': {'history_length': 10**6}},
     'ingest.history_length: 1000000 is not allowed; must be <= 10,000'),
    ({'ingest': {'min_ts_ms': 10**18}},
     'ingest.min_ts_ms: 1000000000000000000 is not allowed; must be <= 253,402,300,799,999'),
    ({'vocabulary': {'item_vocab_size': 10**12}},
     'vocabulary.item_vocab_size: 1000000000000 is not allowed; must be <= 2,147,483,647'),
    ({'train': {'train_steps': 10**30}},
     'train.train_steps: 1000000000000000000000000000000 is not a 64-bit integer'),
])
def test_integers_past_any_sane_run_are_refused_at_load(tmp_path, values, message):
  path = _write(tmp_path, json.dumps(values).encode())
  with pytest.raises(SettingError) as raised:
    settings.PipelineConfig.from_json_file(path)
  assert str(raised.value).startswith(f'{path}: {message}'), str(raised.value)


def test_a_config_that_is_not_utf8_is_named_with_what_it_is(tmp_path):
  path = _write(tmp_path, '{"train": {"train_steps": 5}}'.encode('utf-16'))
  with pytest.raises(SettingError) as raised:
    settings.PipelineConfig.from_json_file(path)
  assert str(raised.value) == (
      f'{path}: not UTF-8 text: byte 0xff at offset 0 (the file starts with a UTF-16 byte-order '
      'mark: it is UTF-16); save the config as UTF-8')
  path = _write(tmp_path, '{"pipeline_name": "caf\u00e9"}'.encode('latin-1'))
  with pytest.raises(SettingError, match=r'prod\.json: not UTF-8 text: byte 0xe9 at offset 22; '
                                         r'save the config as UTF-8$'):
    settings.PipelineConfig.from_json_file(path)
  # A UTF-8 byte-order mark, which some editors write, is UTF-8.
  path = _write(tmp_path, b'\xef\xbb\xbf{"train": {"train_steps": 5}}')
  assert settings.PipelineConfig.from_json_file(path).train.train_steps == 5


@pytest.mark.parametrize('values, message', [
    ({'ingest': {'partition_completeness': 'always'}},
     "ingest.partition_completeness: 'always' is not allowed; choose one of "
     "['auto', 'marker', 'settled', 'none']"),
    ({'ingest': {'partition_marker': 'DONE'}},
     "ingest.partition_marker: 'DONE' is not allowed; a file name starting with \"_\" or \".\""),
    ({'ingest': {'incomplete_partitions': 'wait'}},
     "ingest.incomplete_partitions: 'wait' is not allowed; choose one of ['fail', 'skip']"),
    ({'ingest': {'partition_settle_seconds': -1}},
     'ingest.partition_settle_seconds: -1 is not allowed; must be in [0, 604800]'),
    ({'ingest': {'off_day_plays': 'drop'}},
     "ingest.off_day_plays: 'drop' is not allowed; choose one of ['count', 'quarantine']"),
    ({'train': {'damaged_base': 'ignore'}},
     "train.damaged_base: 'ignore' is not allowed; choose one of ['fail', 'cold']"),
])
def test_the_daily_run_settings_are_checked_at_load(tmp_path, values, message):
  path = _write(tmp_path, json.dumps(values).encode())
  with pytest.raises(SettingError) as raised:
    settings.PipelineConfig.from_json_file(path)
  assert str(raised.value).startswith(f'{path}: {message}'), str(raised.value)


def test_the_daily_run_settings_default_to_the_safe_choice():
  ingest = settings.IngestConfig()
  assert (ingest.partition_completeness, ingest.partition_marker,
          ingest.incomplete_partitions, ingest.off_day_plays) == ('auto', '_SUCCESS', 'fail',
                                                                  'count')
  assert settings.TrainConfig().damaged_base == 'fail'
  round_trip = settings.PipelineConfig.from_dict(settings.PipelineConfig().to_dict())
  assert round_trip == settings.PipelineConfig()
