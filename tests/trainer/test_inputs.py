"""Checks the dense model batch built from Transform's sparse outputs."""

import tensorflow as tf

from contract import features
from contract import settings
from trainer import inputs

HPARAMS = settings.HParams(history_length=3, pos_threshold=0.8)
_HISTORY_NAMES = (features.HISTORY_ITEM_XF, features.HISTORY_PLAY_RATE_XF,
                  features.HISTORY_INTENT_XF)

_SPEC = {
    features.HISTORY_ITEM_XF: tf.io.VarLenFeature(tf.int64),
    features.HISTORY_PLAY_RATE_XF: tf.io.VarLenFeature(tf.float32),
    features.HISTORY_INTENT_XF: tf.io.VarLenFeature(tf.int64),
    features.HISTORY_LABEL: tf.io.VarLenFeature(tf.int64),
    features.ITEM_XF: tf.io.FixedLenFeature([1], tf.int64),
    features.PLAY_RATE_XF: tf.io.FixedLenFeature([], tf.float32),
    features.INTENT_XF: tf.io.FixedLenFeature([], tf.int64),
    features.LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def _int64s(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _example(items, play_rates, intents, labels, target):
  item, play_rate, intent, label = target
  feature = {
      features.HISTORY_ITEM_XF: _int64s(items),
      features.HISTORY_PLAY_RATE_XF: _floats(play_rates),
      features.HISTORY_INTENT_XF: _int64s(intents),
      features.HISTORY_LABEL: _int64s(labels),
      features.ITEM_XF: _int64s([item]),
      features.PLAY_RATE_XF: _floats([play_rate]),
      features.INTENT_XF: _int64s([intent]),
      features.LABEL: _int64s([label]),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# Oldest play first. The first history is longer than history_length, the third is empty.
# Labels follow thresholds 0.8 / 0.3.
EXAMPLES = [
    _example([1, 2, 3, 4, 5], [0.9, 0.1, 1.0, 0.85, 0.3], [0, 1, 2, 0, 1], [1, 0, 1, 1, 0],
             target=(7, 0.95, 2, 1)),
    _example([6], [0.5], [2], [-1], target=(8, 0.2, 1, 0)),
    _example([], [], [], [], target=(9, 0.5, 0, -1)),
]


def _transformed():
  return tf.io.parse_example(tf.constant(EXAMPLES), _SPEC)


class ToModelBatchTest(tf.test.TestCase):

  def test_pads_after_real_positions_and_keeps_the_most_recent(self):
    batch = inputs.to_model_batch(_transformed(), HPARAMS)
    self.assertAllEqual(batch[features.HISTORY_ITEM_XF], [[3, 4, 5], [6, 0, 0], [0, 0, 0]])
    self.assertAllClose(batch[features.HISTORY_PLAY_RATE_XF],
                        [[1.0, 0.85, 0.3], [0.5, 0, 0], [0, 0, 0]])
    self.assertAllEqual(batch[features.HISTORY_INTENT_XF], [[2, 0, 1], [2, 0, 0], [0, 0, 0]])
    self.assertAllEqual(batch[features.HISTORY_LENGTH], [3, 1, 0])
    self.assertAllEqual(batch[features.ITEM_XF], [7, 8, 9])
    self.assertAllEqual(batch[features.LABEL], [1, 0, -1])
    self.assertEqual(batch[features.HISTORY_ITEM_XF].dtype, tf.int64)

  def test_history_filter_of_variant_a_keeps_well_played_songs_before_truncating(self):
    batch = inputs.to_model_batch(_transformed(), HPARAMS.replace(variant='a'))
    self.assertAllEqual(batch[features.HISTORY_ITEM_XF], [[1, 3, 4], [0, 0, 0], [0, 0, 0]])
    self.assertAllClose(batch[features.HISTORY_PLAY_RATE_XF], [[0.9, 1.0, 0.85], [0] * 3, [0] * 3])
    self.assertAllEqual(batch[features.HISTORY_INTENT_XF], [[0, 2, 0], [0] * 3, [0] * 3])
    self.assertAllEqual(batch[features.HISTORY_LENGTH], [3, 0, 0])

  def test_sequence_targets_are_history_then_target_and_the_input_drops_the_last(self):
    batch = inputs.to_model_batch(_transformed(), HPARAMS, sequence_targets=True)
    self.assertAllEqual(batch[features.SEQUENCE_ITEM_XF],
                        [[3, 4, 5, 7], [6, 8, 0, 0], [9, 0, 0, 0]])
    self.assertAllEqual(batch[features.SEQUENCE_LABEL],
                        [[1, 1, 0, 1], [-1, 0, -1, -1], [-1, -1, -1, -1]])
    self.assertAllEqual(batch[features.SEQUENCE_LENGTH], [4, 2, 1])
    self.assertAllEqual(batch[features.HISTORY_ITEM_XF], [[3, 4, 5], [6, 0, 0], [0, 0, 0]])
    self.assertAllEqual(batch[features.HISTORY_INTENT_XF], [[2, 0, 1], [2, 0, 0], [0, 0, 0]])
    self.assertAllEqual(batch[features.HISTORY_LENGTH], [3, 1, 0])

  def test_sequence_targets_of_variant_a_are_the_well_played_plays(self):
    batch = inputs.to_model_batch(_transformed(), HPARAMS.replace(variant='a'),
                                  sequence_targets=True)
    self.assertAllEqual(batch[features.SEQUENCE_ITEM_XF], [[1, 3, 4, 7], [0] * 4, [0] * 4])
    self.assertAllEqual(batch[features.SEQUENCE_LABEL], [[1, 1, 1, 1], [-1] * 4, [-1] * 4])
    self.assertAllEqual(batch[features.SEQUENCE_LENGTH], [4, 0, 0])
    self.assertAllEqual(batch[features.HISTORY_ITEM_XF], [[1, 3, 4], [0] * 3, [0] * 3])
    self.assertAllClose(batch[features.HISTORY_PLAY_RATE_XF], [[0.9, 1.0, 0.85], [0] * 3, [0] * 3])
    self.assertAllEqual(batch[features.HISTORY_LENGTH], [3, 0, 0])

  def test_sequence_targets_need_the_target_features(self):
    transformed = _transformed()
    del transformed[features.HISTORY_LABEL]
    with self.assertRaisesRegex(KeyError, features.HISTORY_LABEL):
      inputs.to_model_batch(transformed, HPARAMS, sequence_targets=True)

  def test_runs_in_tf_data_without_targets(self):
    history_spec = {name: _SPEC[name] for name in _HISTORY_NAMES}
    dataset = (tf.data.Dataset.from_tensor_slices(EXAMPLES).batch(2)
               .map(lambda serialized: tf.io.parse_example(serialized, history_spec))
               .map(lambda transformed: inputs.to_model_batch(transformed, HPARAMS)))
    first, second = list(dataset)
    self.assertNotIn(features.ITEM_XF, first)
    self.assertEqual(first[features.HISTORY_ITEM_XF].shape, [2, 3])
    self.assertAllEqual(second[features.HISTORY_LENGTH], [0])
    self.assertEqual(dataset.element_spec[features.HISTORY_ITEM_XF].shape.as_list(), [None, 3])

  def test_missing_history_feature_is_named(self):
    transformed = _transformed()
    del transformed[features.HISTORY_INTENT_XF]
    with self.assertRaisesRegex(KeyError, features.HISTORY_INTENT_XF):
      inputs.to_model_batch(transformed, HPARAMS)


if __name__ == '__main__':
  tf.test.main()
