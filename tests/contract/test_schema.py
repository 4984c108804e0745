"""The curated schema: generated from the example's one definition, and what is checked in."""

import subprocess
import sys

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from contract import features
from contract import schema as schema_lib


def test_the_checked_in_schema_is_what_the_definition_generates():
  with open(schema_lib.SCHEMA_FILE, encoding='utf-8') as f:
    assert f.read() == schema_lib.schema_text(), (
        'run python -m contract.schema --write contract/raw_examples.schema.pbtxt')


def test_the_command_writes_and_checks(tmp_path):
  path = tmp_path / 'schema.pbtxt'
  command = [sys.executable, '-m', 'contract.schema']
  subprocess.run(command + ['--write', str(path)], check=True, capture_output=True)
  assert path.read_text() == schema_lib.schema_text()
  assert subprocess.run(command + ['--check', str(path)], capture_output=True).returncode == 0
  path.write_text(path.read_text().replace('max: 1.0', 'max: 2.0'))
  checked = subprocess.run(command + ['--check', str(path)], capture_output=True, text=True)
  assert checked.returncode == 1 and 'contract.schema --write' in checked.stderr


def test_transform_parses_what_the_definition_says():
  with open(schema_lib.SCHEMA_FILE, encoding='utf-8') as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  assert schema_utils.schema_as_feature_spec(schema).feature_spec == features.raw_feature_spec()


def test_domains_presence_and_value_counts():
  schema = {f.name: f for f in schema_lib.raw_schema().feature}
  assert list(schema) == list(features.RAW_FEATURE_NAMES)
  for feature in schema.values():
    assert feature.presence.min_fraction == 1.0 and feature.presence.min_count == 1
  for name in (features.PLAY_RATE, features.HISTORY_PLAY_RATE):
    assert (schema[name].float_domain.min, schema[name].float_domain.max) == (0.0, 1.0)
  for name in (features.LABEL, features.HISTORY_LABEL):
    domain = schema[name].int_domain
    assert set(range(domain.min, domain.max + 1)) == {-1, 0, 1} == set(features.LABELS)
  for name in (features.INTENT, features.HISTORY_INTENT):  # unknown intents are kept
    assert schema[name].WhichOneof('domain_info') is None
  assert schema[features.ITEM_ID].HasField('shape')  # one value
  assert schema[features.HISTORY_ITEM_ID].value_count.min == 0  # an empty history is allowed


def test_history_ts_is_kept_by_a_written_decision():
  [history_ts] = [f for f in features.RAW_FEATURES if f.name == features.HISTORY_TS]
  assert history_ts.read_by == () and 'by decision' in history_ts.note
  everything_else = [f for f in features.RAW_FEATURES if f.name != features.HISTORY_TS]
  assert all(f.read_by for f in everything_else)
