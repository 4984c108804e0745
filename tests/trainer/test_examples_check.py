"""The Trainer refuses hyper-parameters that disagree with the settings its examples record."""

import json
import types

import pytest
from tfx.types import standard_artifacts

from components.transform import executor as transform_executor
from contract import features
from contract import settings
from trainer import run


def _examples_with_settings(root, **recorded):
  (root / 'Split-train').mkdir(parents=True)
  (root / features.EXAMPLE_SETTINGS_FILE).write_text(json.dumps(
      {'history_length': 50, 'pos_threshold': 0.8, 'neg_threshold': 0.3, **recorded}))
  return [str(root / 'Split-train' / '*')]


def test_run_fn_refuses_another_history_length_naming_both(tmp_path):
  train_files = _examples_with_settings(tmp_path / 'transformed')
  fn_args = types.SimpleNamespace(
      train_files=train_files, eval_files=[], train_steps=None,
      custom_config={settings.TRAINER_HPARAMS_KEY: {'history_length': 30}})
  with pytest.raises(ValueError, match=r"hparams.history_length 30 disagrees with the examples' "
                                       r"history_length 50 \(written by PlayLogExampleGen"):
    run.run_fn(fn_args)


def test_another_pos_threshold_is_refused_and_agreeing_hparams_pass(tmp_path):
  train_files = _examples_with_settings(tmp_path / 'transformed', pos_threshold=0.9)
  fn_args = types.SimpleNamespace(train_files=train_files)
  with pytest.raises(ValueError, match=r"hparams.pos_threshold 0.8 disagrees with the examples' "
                                       r'pos_threshold 0.9'):
    run.check_examples(fn_args, settings.HParams())
  run.check_examples(fn_args, settings.HParams(pos_threshold=0.9))
  # neg_threshold is recorded but no hyper-parameter: nothing to agree with.
  run.check_examples(types.SimpleNamespace(train_files=_examples_with_settings(
      tmp_path / 'other', neg_threshold=0.1)), settings.HParams())


def test_examples_that_record_nothing_are_not_checked(tmp_path):
  (tmp_path / 'Split-train').mkdir()
  run.check_examples(types.SimpleNamespace(train_files=[str(tmp_path / 'Split-train' / '*')]),
                     settings.HParams(history_length=7))


def test_transform_carries_the_recorded_settings_to_the_transformed_examples(tmp_path):
  source = standard_artifacts.Examples()
  source.uri = str(tmp_path / 'examples')
  _examples_with_settings(tmp_path / 'examples', history_length=20)
  source.set_int_custom_property(features.EXAMPLE_HISTORY_LENGTH, 20)
  source.set_float_custom_property(features.EXAMPLE_POS_THRESHOLD, 0.8)
  source.set_float_custom_property(features.EXAMPLE_NEG_THRESHOLD, 0.3)
  target = standard_artifacts.Examples()
  target.uri = str(tmp_path / 'transformed')
  (tmp_path / 'transformed').mkdir()
  transform_executor.carry_example_settings(source, target)
  assert target.get_int_custom_property(features.EXAMPLE_HISTORY_LENGTH) == 20
  assert target.get_float_custom_property(features.EXAMPLE_POS_THRESHOLD) == 0.8
  assert target.get_float_custom_property(features.EXAMPLE_NEG_THRESHOLD) == 0.3
  with pytest.raises(ValueError, match="history_length 50 disagrees with the examples' "
                                       'history_length 20'):
    run.check_examples(types.SimpleNamespace(
        train_files=[str(tmp_path / 'transformed' / 'Split-train' / '*')]), settings.HParams())
