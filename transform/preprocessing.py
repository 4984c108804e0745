"""Transform's preprocessing_fn: item and intent vocabularies and play-rate features."""

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from contract import features
from contract import settings


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Maps raw play-history examples to item ids, intent ids and clipped play rates.

  The vocabularies count each training play once: the training split holds every play exactly
  once, in disjoint windows (history + target), so history and target items together are the
  true play frequencies. (The eval split, whose histories overlap, is not analysed.)

  Args:
    inputs: raw features as PlayLogExampleGen writes them (history features are sparse).
    custom_config: the fields of contract.settings.VocabularyConfig (missing: its defaults).

  Returns:
    The transformed features named in features.py.
  """
  config = settings.VocabularyConfig.from_dict(custom_config or {})

  played_items = _every_play(inputs[features.HISTORY_ITEM_ID], inputs[features.ITEM_ID])
  item_vocab = tft.vocabulary(
      played_items, top_k=config.item_vocab_size, frequency_threshold=config.item_min_count,
      vocab_filename=features.ITEM_VOCAB)
  # The same ordering with counts, for the fixed_unigram sampler. Both files are ordered by
  # (count, item) descending, so line i of one is line i of the other.
  tft.vocabulary(
      played_items, top_k=config.item_vocab_size, frequency_threshold=config.item_min_count,
      store_frequency=True,
      vocab_filename=features.ITEM_VOCAB_COUNTS)
  intent_vocab = tft.vocabulary(
      _every_play(inputs[features.HISTORY_INTENT], inputs[features.INTENT]),
      vocab_filename=features.INTENT_VOCAB)

  def item_ids(x):
    return tft.apply_vocabulary(x, item_vocab, num_oov_buckets=features.NUM_OOV_BUCKETS)

  def intent_ids(x):
    return tft.apply_vocabulary(x, intent_vocab, num_oov_buckets=features.NUM_OOV_BUCKETS)

  return {
      features.HISTORY_ITEM_XF: item_ids(inputs[features.HISTORY_ITEM_ID]),
      features.HISTORY_PLAY_RATE_XF: _clipped_play_rate(inputs[features.HISTORY_PLAY_RATE]),
      features.HISTORY_INTENT_XF: intent_ids(inputs[features.HISTORY_INTENT]),
      features.ITEM_XF: item_ids(inputs[features.ITEM_ID]),
      features.PLAY_RATE_XF: _clipped_play_rate(inputs[features.PLAY_RATE]),
      features.INTENT_XF: intent_ids(inputs[features.INTENT]),
      features.LABEL: inputs[features.LABEL],
      features.HISTORY_LABEL: inputs[features.HISTORY_LABEL],
  }


def _every_play(history: tf.SparseTensor, target: tf.Tensor) -> tf.Tensor:
  """The values of every play of a batch, histories and targets, as one vector [plays]."""
  return tf.concat([history.values, tf.reshape(target, [-1])], axis=0)


def _clipped_play_rate(play_rate):
  # ExampleGen clips already; serving requests come from outside and may not.
  if isinstance(play_rate, tf.SparseTensor):
    return tf.SparseTensor(play_rate.indices, _clip(play_rate.values), play_rate.dense_shape)
  return _clip(play_rate)


def _clip(values):
  return tf.clip_by_value(tf.cast(values, tf.float32), 0.0, 1.0)
