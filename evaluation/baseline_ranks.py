"""The repeat baseline's exact target rank in TF, from the request's own history.

The exported target-rank signature returns it beside the model's rank (features.REPEAT_RANK), so
the Evaluator measures the baseline on the same targets as the model; evaluation/baselines.py
`repeat_ranks` is the same ranking in numpy (the benchmarks' and the tests' reference):

  the history's played-through items (play rate >= pos_threshold, what ingestion labels
  positive) by how often they were played through, ties by the most recent play, then every
  other item by popularity (Transform's vocabulary is frequency-ordered: id = popularity rank).

Like the model, it reads the most recent history_length plays of the history.
"""

from typing import Union

import tensorflow as tf


def repeat_ranks(history_items: Union[tf.SparseTensor, tf.RaggedTensor],
                 history_play_rates: Union[tf.SparseTensor, tf.RaggedTensor],
                 targets: tf.Tensor, num_vocabulary: Union[int, tf.Tensor],
                 pos_threshold: float, history_length: int) -> tf.Tensor:
  """The target's rank [B] int64 under the repeat baseline of its history (OOV target: V).

  Args:
    history_items: item ids [B, None] int64, oldest first, V for OOV plays (no item: never
      ranked); a SparseTensor (Transform's output) or a RaggedTensor.
    history_play_rates: the plays' rates [B, None] float, the same shape.
    targets: the targets' item ids [B] int64.
    num_vocabulary: V.
    pos_threshold: a play with this rate or more was played through.
    history_length: L, how many of the most recent plays are read ([B, L, L] is computed).

  Returns:
    [B] int64: how many items rank ahead of the target.
  """
  items, played = _played_through(history_items, history_play_rates, num_vocabulary,
                                  pos_threshold, history_length)
  targets = tf.reshape(tf.cast(targets, tf.int64), [-1])
  positions = tf.range(history_length)
  # same[b, j, k]: play k was played through and is the item of play j.
  same = (items[:, :, tf.newaxis] == items[:, tf.newaxis, :]) & played[:, tf.newaxis, :]
  counts = tf.reduce_sum(tf.cast(same, tf.int64), axis=2)  # [B, L]
  last = tf.reduce_max(tf.where(same, positions, -1), axis=2)  # [B, L]; -1: none
  # One position per distinct played-through item: its last play.
  distinct = played & tf.equal(last, positions)  # [B, L]
  is_target = played & tf.equal(items, targets[:, tf.newaxis])  # [B, L]
  target_count = tf.reduce_sum(tf.cast(is_target, tf.int64), axis=1, keepdims=True)  # [B, 1]
  target_last = tf.reduce_max(tf.where(is_target, positions, -1), axis=1, keepdims=True)
  ahead = distinct & ((counts > target_count)
                      | (tf.equal(counts, target_count) & (last > target_last)))
  rank_among_repeated = tf.reduce_sum(tf.cast(ahead, tf.int64), axis=1)
  # A target not played through: behind every repeated item, then by popularity among the rest.
  more_popular_repeated = tf.reduce_sum(
      tf.cast(distinct & (items < targets[:, tf.newaxis]), tf.int64), axis=1)
  rank_among_rest = (tf.reduce_sum(tf.cast(distinct, tf.int64), axis=1) + targets
                     - more_popular_repeated)
  num_vocabulary = tf.cast(num_vocabulary, tf.int64)
  return tf.where(targets >= num_vocabulary, num_vocabulary,
                  tf.where(target_count[:, 0] > 0, rank_among_repeated, rank_among_rest))


def _played_through(history_items, history_play_rates, num_vocabulary, pos_threshold: float,
                    history_length: int):
  """The most recent history_length plays as items [B, L] int64 (padding: V) and whether each
  is a played-through vocabulary item [B, L] bool."""
  items = _ragged(history_items)[:, -history_length:]
  rates = _ragged(history_play_rates)[:, -history_length:]
  num_vocabulary = tf.cast(num_vocabulary, tf.int64)
  real = tf.sequence_mask(items.row_lengths(), history_length)
  dense_items = tf.cast(items, tf.int64).to_tensor(default_value=num_vocabulary,
                                                   shape=[None, history_length])
  dense_rates = tf.cast(rates, tf.float32).to_tensor(default_value=0.0,
                                                     shape=[None, history_length])
  played = real & (dense_rates >= pos_threshold) & (dense_items < num_vocabulary)
  return dense_items, played


def _ragged(history: Union[tf.SparseTensor, tf.RaggedTensor]) -> tf.RaggedTensor:
  if isinstance(history, tf.SparseTensor):
    # Varlen features are ragged-right (columns 0..n-1 in each row), as from_sparse requires.
    return tf.RaggedTensor.from_sparse(history)
  return history
