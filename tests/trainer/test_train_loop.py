"""The training loop in one process: learns, checkpoints at intervals, resumes, logs and summarises.

The same loop under a parameter-server cluster is covered by test_cluster.py.
"""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import settings
from tests.trainer import cluster_testing
from trainer import checkpoints
from trainer import dataset
from trainer import losses
from trainer import model as model_lib
from trainer import samplers
from trainer import train_loop
from trainer import vocabulary

HPARAMS = settings.HParams.from_dict(dict(
    cluster_testing.TINY_HPARAMS, train_steps=40, steps_per_log=10, steps_per_checkpoint=20))


def _train(tiny, model_dir, hparams, lines):
  output = tft.TFTransformOutput(tiny.transform_output)
  num_items, num_intents = vocabulary.num_items(output), vocabulary.num_intents(output)
  sampler = samplers.make_sampler(hparams.sampler, num_items, num_sampled=hparams.num_sampled,
                                  seed=hparams.seed)
  return train_loop.train(
      tf.distribute.get_strategy(),
      lambda: model_lib.build_model(hparams, num_items, num_intents),
      lambda context: dataset.make_dataset(tiny.train_files, output, hparams, hparams.batch_size,
                                           input_context=context),
      lambda model, batch: losses.compute_losses(model, batch, hparams, sampler),
      hparams, model_dir, log=lines.append)


@pytest.fixture(scope='module')
def first_run(tiny_transform, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('train_loop'))
  lines = []
  return model_dir, _train(tiny_transform, model_dir, HPARAMS, lines), lines


def _losses(lines):
  return [float(line.split('loss=')[1].split()[0]) for line in lines if line.startswith('step ')]


def test_trains_with_progress_lines_and_a_falling_loss(first_run):
  _, result, lines = first_run
  assert result.start_step == 0 and result.final_step == 40
  progress = [line for line in lines if line.startswith('step ')]
  assert [line.split(':')[0] for line in progress] == ['step 10', 'step 20', 'step 30', 'step 40']
  assert all('positive_loss=' in line and 'examples/s=' in line for line in progress)
  first, *_, last = _losses(lines)
  assert last < first


def test_checkpoints_at_intervals_with_the_step(first_run):
  model_dir, result, _ = first_run
  index_files = glob.glob(os.path.join(model_dir, checkpoints.CHECKPOINT_DIR, 'ckpt-*.index'))
  assert sorted(os.path.basename(p) for p in index_files) == ['ckpt-20.index', 'ckpt-40.index']
  assert result.checkpoint_path.endswith('ckpt-40')
  assert result.examples_per_second > 0


def test_tensorboard_summaries_hold_losses_and_throughput(first_run):
  model_dir, _, _ = first_run
  scalars = train_loop.read_summaries(model_dir)
  for tag in losses.LOSS_NAMES + ('examples_per_second', 'targets_per_second'):
    assert [step for step, _ in scalars[tag]] == [10, 20, 30, 40], (tag, scalars)


# The optimizer's step counter in a checkpoint written by train_loop.train.
OPTIMIZER_ITERATIONS_KEY = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'


def test_resumes_from_the_last_checkpoint_with_its_weights(first_run, tiny_transform):
  model_dir, first, _ = first_run
  key = 'model/item_embedding/.ATTRIBUTES/VARIABLE_VALUE'
  saved = tf.train.load_checkpoint(first.checkpoint_path)
  assert saved.get_tensor(OPTIMIZER_ITERATIONS_KEY) == 40
  lines = []
  # Another seed: a fresh start would draw other initial weights, so only a restore lands near
  # the saved ones.
  resumed = _train(tiny_transform, model_dir,
                   HPARAMS.replace(train_steps=50, seed=HPARAMS.seed + 1), lines)
  assert resumed.start_step == 40 and resumed.final_step == 50
  assert any(line.startswith('resuming from') and 'at step 40' in line for line in lines)
  assert [line.split(':')[0] for line in lines if line.startswith('step ')] == ['step 50']
  new = tf.train.load_checkpoint(resumed.checkpoint_path)
  # The optimizer went on counting from the restored 40 (a fresh start would be at 10), ...
  assert new.get_tensor(OPTIMIZER_ITERATIONS_KEY) == 50
  # ... and ten more steps moved the restored weights a little, far less than their size.
  moved = np.abs(new.get_tensor(key) - saved.get_tensor(key)).mean()
  assert moved < 0.5 * np.abs(saved.get_tensor(key)).mean()


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(first_run, tiny_transform,
                                                                 tmp_path):
  model_dir = str(tmp_path / 'copy')
  shutil.copytree(first_run[0], model_dir)
  checkpoint_dir = os.path.join(model_dir, checkpoints.CHECKPOINT_DIR)
  (newest, newest_path), (previous, _), *_ = checkpoints.numbered_checkpoints(checkpoint_dir)
  [data] = glob.glob(newest_path + '.data-*')
  with open(data, 'r+b') as f:
    f.truncate(100)
  lines = []
  resumed = _train(tiny_transform, model_dir, HPARAMS.replace(train_steps=newest + 10), lines)
  assert resumed.start_step == previous and resumed.final_step == newest + 10
  assert any(f'ckpt-{newest} cannot be restored' in line for line in lines), lines
  assert os.path.exists(os.path.join(checkpoint_dir, f'corrupt-ckpt-{newest}.index'))


def test_sharded_variables_lists_only_partitioned_tables():
  table = tf.Variable(tf.zeros([4, 2]), name='items/part_0')
  other = tf.Variable(tf.zeros([4, 2]), name='items/part_1')
  dense = tf.Variable(tf.zeros([3]), name='dense/kernel')

  class Holder(tf.Module):
    variables = (table, other, dense)

  assert train_loop.sharded_variables(Holder()) == {'items': [[4, 2], [4, 2]]}
