"""run_fn (TFX's Trainer entry point) in one process, TF_CONFIG roles, the partitioner, the commands."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from contract import features
from evaluation import hit_rate
from tests.trainer import cluster_testing
from trainer import run
from trainer import train_loop


@pytest.fixture(scope='module')
def exported(tiny_transform, tmp_path_factory):
  root = str(tmp_path_factory.mktemp('run_fn'))
  fn_args = FnArgs(
      train_files=tiny_transform.train_files, eval_files=tiny_transform.eval_files,
      transform_output=tiny_transform.transform_output, model_run_dir=os.path.join(root, 'run'),
      serving_model_dir=os.path.join(root, 'serving'), train_steps=30,
      custom_config={'hparams': dict(cluster_testing.TINY_HPARAMS, steps_per_checkpoint=10)})
  previous = os.environ.pop(run.TF_CONFIG, None)
  try:
    run.run_fn(fn_args)
  finally:
    if previous is not None:
      os.environ[run.TF_CONFIG] = previous
  return fn_args


def test_run_fn_trains_train_steps_and_exports_a_loadable_model(exported, tiny_transform):
  checkpoints = tf.train.get_checkpoint_state(os.path.join(exported.model_run_dir, 'checkpoints'))
  # fn_args.train_steps (30) wins over the hparams' train_steps (200).
  assert checkpoints.model_checkpoint_path.endswith('ckpt-30')
  loaded = tf.saved_model.load(exported.serving_model_dir)
  assert set(loaded.signatures) == {features.SERVING_SIGNATURE, features.USER_VECTOR_SIGNATURE,
                                    features.TARGET_RANK_SIGNATURE}
  ranks = cluster_testing.target_ranks(exported.serving_model_dir, tiny_transform.raw_eval_examples)
  assert ranks.shape == (len(tiny_transform.raw_eval_examples),) and ranks.min() >= 0


def test_run_fn_measures_the_eval_split_at_every_checkpoint_as_the_evaluator_would(
    exported, tiny_transform):
  scalars = train_loop.read_summaries(exported.model_run_dir)
  assert [step for step, _ in scalars['eval/pos_at_50']] == [10, 20, 30]
  seconds = [value for _, value in scalars['training_seconds']]
  assert 0 < seconds[0] < seconds[1] < seconds[2]
  # The last checkpoint is the exported model: the same POS@N and NEG@N as its target ranks.
  ranks = cluster_testing.target_ranks(exported.serving_model_dir, tiny_transform.raw_eval_examples)
  want = hit_rate.hit_rates(ranks, tiny_transform.raw_eval_labels)
  for name in ('pos_at_10', 'pos_at_50', 'neg_at_10'):
    assert scalars[f'eval/{name}'][-1][1] == pytest.approx(want[name]), name


def test_cluster_task_reads_tf_config():
  cluster = {'chief': ['a:1'], 'worker': ['b:1', 'b:2'], 'ps': ['c:1']}
  assert run.cluster_task({}) is None
  task = run.cluster_task({'TF_CONFIG': json.dumps({'cluster': cluster,
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
    run.cluster_task({'TF_CONFIG': tf_config})


def test_partitioner_shards_the_item_tables_only():
  partitioner = run.ItemTablePartitioner(num_items=1001, num_shards=4)
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
    run.fn_args_from_flags(run._parse_args(args))


def test_cluster_command_without_training_args_says_what_to_give():
  result = _command('trainer.cluster', '--num_ps', '1')
  assert result.returncode == 2 and 'after --' in result.stderr
