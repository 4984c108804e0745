"""trainer/flags.py: the TFJob launcher's flags read back as the FnArgs they were written from."""

import pytest
from tfx.components.trainer.fn_args_utils import FnArgs

from trainer import flags

FN_ARGS = FnArgs(
    train_files=['gs://b/t/Split-train/*'], eval_files=['gs://b/t/Split-eval/*'],
    transform_output='gs://b/transform_graph/5', model_run_dir='gs://b/model_run/6',
    serving_model_dir='gs://b/model/6', train_steps=500,
    base_model='gs://b/serving/1796120242',
    custom_config={'hparams': {'num_shards': 2, 'variant': 'c'},
                   'checkpoint_root': 'gs://b/root/checkpoints', 'warm_start_steps': 200})


def test_every_field_the_chief_needs_survives_the_round_trip():
  parsed = flags.fn_args_from_argv(flags.to_flags(FN_ARGS))
  for field in ('train_files', 'eval_files', 'transform_output', 'model_run_dir',
                'serving_model_dir', 'train_steps', 'base_model', 'custom_config'):
    assert getattr(parsed, field) == getattr(FN_ARGS, field), field
  assert parsed.transform_graph_path == FN_ARGS.transform_output


def test_optional_flags_are_left_out_when_unset():
  bare = FnArgs(train_files=['t/*'], transform_output='tr', model_run_dir='m',
                serving_model_dir='s', custom_config={})
  written = flags.to_flags(bare)
  assert '--eval_files' not in written and '--train_steps' not in written
  assert '--checkpoint_root' not in written and '--base_model' not in written
  assert '--warm_start_steps' not in written
  parsed = flags.fn_args_from_argv(written)
  assert parsed.eval_files == [] and parsed.custom_config == {'hparams': {}}


def test_missing_flags_are_named():
  with pytest.raises(SystemExit, match='--transform_output, --serving_model_dir'):
    flags.fn_args_from_argv(['--train_files', 't/*', '--model_dir', 'm'])
