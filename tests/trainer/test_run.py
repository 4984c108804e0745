"""run_fn (TFX's Trainer entry point) in one process, TF_CONFIG roles, the partitioner, the commands."""

import contextlib
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from contract import features
from contract import settings
from evaluation import hit_rate
from tests.trainer import cluster_testing
from trainer import distribution
from trainer import flags
from trainer import run
from trainer import train_loop


def _fn_args(tiny_transform, root, execution, **hparams):
  """The FnArgs of one Trainer execution: its own model_run and serving dirs, as TFX gives."""
  return FnArgs(
      train_files=tiny_transform.train_files, eval_files=tiny_transform.eval_files,
      transform_output=tiny_transform.transform_output,
      model_run_dir=os.path.join(root, 'model_run', execution),
      serving_model_dir=os.path.join(root, 'serving', execution), train_steps=30,
      custom_config={'hparams': dict(cluster_testing.TINY_HPARAMS, steps_per_checkpoint=10,
                                     **hparams),
                     'checkpoint_root': os.path.join(root, 'checkpoints')})


@contextlib.contextmanager
def _one_process():
  """No TF_CONFIG while inside: run_fn trains here."""
  previous = os.environ.pop(distribution.TF_CONFIG, None)
  try:
    yield
  finally:
    if previous is not None:
      os.environ[distribution.TF_CONFIG] = previous


def _logged_run_fn(fn_args, caplog):
  """Runs run_fn in one process; returns its log lines."""
  caplog.clear()
  with _one_process(), caplog.at_level(logging.INFO, logger='absl'):
    run.run_fn(fn_args)
  return [record.getMessage() for record in caplog.records]


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp('run_fn'))


@pytest.fixture(scope='module')
def exported(tiny_transform, root):
  fn_args = _fn_args(tiny_transform, root, '1')
  with _one_process():
    run.run_fn(fn_args)
  return fn_args


def test_run_fn_trains_train_steps_and_exports_a_loadable_model(exported, tiny_transform):
  checkpoint_dir = run.checkpoint_dir(exported, run.hparams_from_fn_args(exported))
  assert os.path.dirname(checkpoint_dir) == exported.custom_config['checkpoint_root']
  # fn_args.train_steps (30) wins over the hparams' train_steps (200).
  assert tf.train.get_checkpoint_state(checkpoint_dir).model_checkpoint_path.endswith('ckpt-30')
  loaded = tf.saved_model.load(exported.serving_model_dir)
  assert set(loaded.signatures) == {features.SERVING_SIGNATURE, features.USER_VECTOR_SIGNATURE,
                                    features.TARGET_RANK_SIGNATURE}
  ranks = cluster_testing.target_ranks(exported.serving_model_dir, tiny_transform.raw_eval_examples)
  assert ranks.shape == (len(tiny_transform.raw_eval_examples),) and ranks.min() >= 0


def test_a_new_execution_of_the_same_training_resumes_from_its_checkpoint(
    exported, tiny_transform, root, caplog):
  lines = _logged_run_fn(_fn_args(tiny_transform, root, '2'), caplog)
  assert any(re.fullmatch(r'resuming from \S+/ckpt-30 at step 30', line) for line in lines), lines
  assert any('(0 steps this run' in line for line in lines), lines


def test_a_changed_setting_starts_afresh(exported, tiny_transform, root, caplog):
  changed = _fn_args(tiny_transform, root, '3', learning_rate=0.02)
  lines = _logged_run_fn(changed, caplog)
  assert any(line.endswith('starting at step 0') for line in lines), lines
  assert run.checkpoint_dir(changed, run.hparams_from_fn_args(changed)) != run.checkpoint_dir(
      exported, run.hparams_from_fn_args(exported))


def test_a_warm_start_trains_its_own_steps_from_the_base_in_its_own_folder(
    exported, drifted_transform, root, caplog):
  warm = _fn_args(drifted_transform, root, '4')
  warm.base_model = exported.serving_model_dir
  warm.custom_config[settings.TRAINER_WARM_START_STEPS_KEY] = 10
  lines = _logged_run_fn(warm, caplog)
  assert any(line.startswith(f'warm start from {exported.serving_model_dir}: ') for line in lines)
  assert any(line.startswith('trained to step 10 (10 steps this run') for line in lines), lines
  hparams = run.hparams_from_fn_args(warm).replace(train_steps=10)
  warm_dir = run.checkpoint_dir(warm, hparams, warm.base_model)
  assert warm_dir != run.checkpoint_dir(warm, hparams)  # never resumed by a cold training
  assert tf.train.get_checkpoint_state(warm_dir).model_checkpoint_path.endswith('ckpt-10')


def test_run_fn_measures_every_checkpoint_and_exports_the_best_as_the_evaluator_sees_it(
    exported, tiny_transform):
  scalars = train_loop.read_summaries(exported.model_run_dir)
  for tag in ('eval/pos_at_50', 'eval/loss', 'eval/positive_loss', 'eval/negative_loss'):
    assert [step for step, _ in scalars[tag]] == [10, 20, 30], tag
  for (_, loss), (_, positive), (_, negative) in zip(
      scalars['eval/loss'], scalars['eval/positive_loss'], scalars['eval/negative_loss']):
    assert loss == pytest.approx(positive + negative) and positive > 0 and negative > 0
  seconds = [value for _, value in scalars['training_seconds']]
  assert 0 < seconds[0] < seconds[1] < seconds[2]
  # The exported model is the checkpoint with the best POS@50 on these files (the first of
  # equals): the same POS@N and NEG@N as its target ranks.
  pos_at_50 = [value for _, value in scalars[f'eval/{settings.SELECTION_METRIC}']]
  best = pos_at_50.index(max(pos_at_50))
  ranks = cluster_testing.target_ranks(exported.serving_model_dir, tiny_transform.raw_eval_examples)
  want = hit_rate.hit_rates(ranks, tiny_transform.raw_eval_labels)
  for name in ('pos_at_10', 'pos_at_50', 'neg_at_10'):
    assert scalars[f'eval/{name}'][best][1] == pytest.approx(want[name]), name


def test_cluster_task_reads_tf_config():
  cluster = {'chief': ['a:1'], 'worker': ['b:1', 'b:2'], 'ps': ['c:1']}
  assert distribution.cluster_task({}) is None
  task = distribution.cluster_task({'TF_CONFIG': json.dumps({'cluster': cluster,
                                                    'task': {'type': 'worker', 'index': 1}})})
  assert (task.type, task.index, task.cluster, task.rpc_layer) == ('worker', 1, cluster, 'grpc')


@pytest.mark.parametrize('tf_config, message', [
    ('{"cluster": ', 'must be JSON'),
    (json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1']}, 'task': {'type': 'chief'}}),
     "lacks ['ps']"),
    (json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1'], 'ps': ['c:1']},
                 'task': {'type': 'worker', 'index': 3}}), 'is not one of the cluster tasks'),
])
def test_a_bad_tf_config_is_a_clear_error(tf_config, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
    distribution.cluster_task({'TF_CONFIG': tf_config})


def test_partitioner_shards_the_item_tables_only():
  partitioner = distribution.ItemTablePartitioner(num_items=1001, num_shards=4)
  assert partitioner(tf.TensorShape([1001, 32]), tf.float32) == [4, 1]
  assert partitioner(tf.TensorShape([1001, 1]), tf.float32) == [4, 1]
  assert partitioner(tf.TensorShape([50, 64]), tf.float32) == [1, 1]  # positions
  assert partitioner(tf.TensorShape([64, 128]), tf.float32) == [1, 1]  # a dense kernel


def _command(*args):
  env = cluster_testing.environment_without_cluster()
  return subprocess.run([sys.executable, '-m', *args], env=env, capture_output=True, text=True,
                        timeout=300)


def test_the_commands_have_help():
  cluster_help = _command('trainer.cluster', '--help')
  assert cluster_help.returncode == 0 and '--num_ps' in cluster_help.stdout
  run_help = _command('trainer.run', '--help')
  assert run_help.returncode == 0 and '--transform_output' in run_help.stdout


def test_bad_hparams_flag_names_the_field(tiny_transform, tmp_path):
  args = cluster_testing.trainer_args(tiny_transform, str(tmp_path))
  args[args.index('--hparams') + 1] = '{"hiden_dim": 8}'
  with pytest.raises(SystemExit, match='hiden_dim'):
    flags.fn_args_from_argv(args)


def test_cluster_command_without_training_args_says_what_to_give():
  result = _command('trainer.cluster', '--num_ps', '1')
  assert result.returncode == 2 and 'after --' in result.stderr
