"""make_dataset on a real Transform output: dense model batches, per-worker shards, bad patterns."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import features
from contract import settings
from tests.trainer import tiny_data
from trainer import dataset

HPARAMS = settings.HParams(history_length=tiny_data.HISTORY_LENGTH)


@pytest.fixture(scope='module')
def tf_transform_output(tiny_transform):
  return tft.TFTransformOutput(tiny_transform.transform_output)


def _targets(ds):
  """Every example's (target id, history ids) in the dataset, as a multiset."""
  examples = collections.Counter()
  for batch in ds:
    for target, history in zip(batch[features.ITEM_XF].numpy(), batch[features.HISTORY_ITEM_XF].numpy()):
      examples[(int(target), tuple(history))] += 1
  return examples


def test_training_batches_are_full_dense_model_batches(tiny_transform, tf_transform_output):
  ds = dataset.make_dataset(tiny_transform.train_files, tf_transform_output, HPARAMS, batch_size=16)
  spec = ds.element_spec
  assert spec[features.HISTORY_ITEM_XF].shape.as_list() == [16, tiny_data.HISTORY_LENGTH]
  assert spec[features.HISTORY_PLAY_RATE_XF].dtype == tf.float32
  assert spec[features.ITEM_XF].shape.as_list() == [16]
  assert spec[features.SEQUENCE_ITEM_XF].shape.as_list() == [16, tiny_data.HISTORY_LENGTH + 1]
  # Repeated: more batches than one pass holds.
  batches = list(ds.take(tiny_data.NUM_TRAIN_EXAMPLES // 16 + 5))
  lengths = np.concatenate([b[features.HISTORY_LENGTH].numpy() for b in batches])
  assert lengths.min() >= 0 and lengths.max() <= tiny_data.HISTORY_LENGTH
  labels = np.concatenate([b[features.LABEL].numpy() for b in batches])
  assert set(labels) == {features.LABEL_POSITIVE, features.LABEL_NEGATIVE}
  # Every play is a target: the history's and the target's.
  for batch in batches[:3]:
    np.testing.assert_array_equal(batch[features.SEQUENCE_LENGTH],
                                  batch[features.HISTORY_LENGTH] + 1)
    last = batch[features.SEQUENCE_LENGTH].numpy() - 1
    np.testing.assert_array_equal(
        np.take_along_axis(batch[features.SEQUENCE_ITEM_XF].numpy(), last[:, None], 1)[:, 0],
        batch[features.ITEM_XF])


def test_one_pass_reads_every_example_once(tiny_transform, tf_transform_output):
  ds = dataset.make_dataset(tiny_transform.eval_files, tf_transform_output, HPARAMS, batch_size=16,
                            shuffle=False, repeat=False)
  assert sum(_targets(ds).values()) == tiny_data.NUM_EVAL_EXAMPLES


@pytest.mark.parametrize('num_pipelines', [2, 3])  # 2: by file (2 files); 3: by record
def test_worker_shards_are_disjoint_and_cover_the_data(tiny_transform, tf_transform_output,
                                                      num_pipelines):
  def shard(index):
    context = tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=index)
    return _targets(dataset.make_dataset(tiny_transform.train_files, tf_transform_output, HPARAMS,
                                         batch_size=8, input_context=context, shuffle=False,
                                         repeat=False))

  shards = [shard(i) for i in range(num_pipelines)]
  whole = _targets(dataset.make_dataset(tiny_transform.train_files, tf_transform_output, HPARAMS,
                                        batch_size=8, shuffle=False, repeat=False))
  assert sum(shards, collections.Counter()) == whole
  assert all(sum(s.values()) > tiny_data.NUM_TRAIN_EXAMPLES // (2 * num_pipelines) for s in shards)


def test_a_pattern_matching_nothing_is_named(tiny_transform, tf_transform_output, tmp_path):
  missing = str(tmp_path / 'Split-train' / '*.gz')
  with pytest.raises(FileNotFoundError, match='Split-train'):
    dataset.make_dataset(tiny_transform.train_files + [missing], tf_transform_output, HPARAMS, 8)
