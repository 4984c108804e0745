"""The single place of settings: defaults, JSON overrides, and clear errors for typos."""

import json

import pytest

from pipeline import configs


def test_json_overrides_only_what_it_names(tmp_path, monkeypatch):
  path = tmp_path / 'config.json'
  path.write_text(json.dumps({'ingest': {'history_length': 30},
                              'gate': {'ns': [5, 20], 'gate_n': 5}}))
  monkeypatch.setenv(configs.CONFIG_ENV, str(path))
  config = configs.load_config()
  assert config.ingest.history_length == 30
  assert config.ingest.pos_threshold == configs.IngestConfig().pos_threshold
  assert config.gate.ns == (5, 20)
  assert config.train == configs.TrainConfig()


def test_no_file_means_defaults(monkeypatch):
  monkeypatch.delenv(configs.CONFIG_ENV, raising=False)
  assert configs.load_config() == configs.PipelineConfig()


def test_a_misspelt_setting_is_named_in_the_error():
  with pytest.raises(ValueError, match=r"config.ingest: unknown settings \['histroy_length'\]"):
    configs.PipelineConfig.from_dict({'ingest': {'histroy_length': 30}})


def test_round_trip_through_a_dict():
  config = configs.PipelineConfig.from_dict({'train': {'train_steps': 7}})
  assert configs.PipelineConfig.from_dict(config.to_dict()) == config
