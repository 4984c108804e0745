"""Tiny real models with the exported model's target-rank contract, and eval data for them.

A model here scores every item of a fixed vocabulary with a fixed table (no user dependence),
and its TARGET_RANK_SIGNATURE parses serialized tf.Examples and returns each target's exact rank
among the whole vocabulary: the number of items scored strictly higher (scores are distinct);
out-of-vocabulary targets get rank V. Beside it, like the exported model, the target's rank by
play count and under the repeat baseline of the example's history (the exported model's own TF
code, on the items' play-count ranks).
"""

import os
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from contract import features
from contract import settings
from evaluation import baseline_ranks
from evaluation import baselines

OOV_ITEM = 'song_never_seen'


def item_vocabulary(size: int) -> List[str]:
  return [f'song_{i:04d}' for i in range(size)]


class FixedScoreRanker(tf.Module):
  """Ranks the target item by a fixed per-item score; gives its popularity rank beside."""

  def __init__(self, items: Sequence[str], scores: np.ndarray, popularity: np.ndarray):
    super().__init__()
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(items)),
                                            tf.range(len(items), dtype=tf.int64)),
        default_value=-1)
    self._scores = tf.Variable(np.asarray(scores, np.float32), trainable=False)
    self._popularity = tf.Variable(np.asarray(popularity, np.int64), trainable=False)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def target_rank(self, examples):
    parsed = tf.io.parse_example(examples, {
        features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        features.HISTORY_ITEM_ID: tf.io.VarLenFeature(tf.string),
        features.HISTORY_PLAY_RATE: tf.io.VarLenFeature(tf.float32),
    })
    item_index = self._table.lookup(parsed[features.ITEM_ID])
    known = item_index >= 0
    target_score = tf.gather(self._scores, tf.maximum(item_index, 0))
    higher = tf.reduce_sum(
        tf.cast(self._scores[None, :] > target_score[:, None], tf.int64), axis=1)
    vocabulary_size = tf.size(self._scores, out_type=tf.int64)
    popularity_rank = tf.where(known, tf.gather(self._popularity, tf.maximum(item_index, 0)),
                               vocabulary_size)
    return {features.TARGET_RANK: tf.where(known, higher, vocabulary_size),
            features.POPULARITY_RANK: popularity_rank,
            features.REPEAT_RANK: baseline_ranks.repeat_ranks(
                self._popularity_ids(parsed[features.HISTORY_ITEM_ID]),
                parsed[features.HISTORY_PLAY_RATE], popularity_rank, vocabulary_size,
                settings.POS_THRESHOLD, settings.HISTORY_LENGTH)}

  def _popularity_ids(self, items: tf.SparseTensor) -> tf.SparseTensor:
    """Items [B, None] as their play-count ranks (V if unknown), as the exported model's ids."""
    index = self._table.lookup(items.values)
    ids = tf.where(index >= 0, tf.gather(self._popularity, tf.maximum(index, 0)),
                   tf.size(self._scores, out_type=tf.int64))
    return tf.SparseTensor(items.indices, ids, items.dense_shape)


def save_ranker(path: str, items: Sequence[str], scores: np.ndarray,
                popularity: np.ndarray) -> str:
  """Saves a ranker; popularity[i] is item i's rank by play count (a permutation of 0..V-1)."""
  ranker = FixedScoreRanker(items, scores, popularity)
  tf.saved_model.save(ranker, path,
                      signatures={features.TARGET_RANK_SIGNATURE: ranker.target_rank})
  return path


def ranks_by_hand(items: Sequence[str], scores: np.ndarray, targets: Sequence[str]) -> np.ndarray:
  index = {item: i for i, item in enumerate(items)}
  ranks = []
  for target in targets:
    if target in index:
      ranks.append(int(np.sum(scores > scores[index[target]])))
    else:
      ranks.append(len(items))
  return np.asarray(ranks, np.int64)


def popularity_ranks_by_hand(items: Sequence[str], popularity: np.ndarray,
                             targets: Sequence[str]) -> np.ndarray:
  index = {item: i for i, item in enumerate(items)}
  return np.asarray([popularity[index[t]] if t in index else len(items) for t in targets],
                    np.int64)


def repeat_ranks_by_hand(items: Sequence[str], popularity: np.ndarray,
                        histories: Sequence[Sequence[str]],
                        history_play_rates: Sequence[Sequence[float]],
                        targets: Sequence[str]) -> np.ndarray:
  """The repeat baseline's ranks by the numpy reference, on the items' play-count ranks."""
  index = {item: i for i, item in enumerate(items)}

  def ids(values):
    return [popularity[index[v]] if v in index else len(items) for v in values]

  played = [np.asarray(rates, np.float32) >= np.float32(settings.POS_THRESHOLD)
            for rates in history_play_rates]
  return baselines.repeat_ranks([ids(h) for h in histories], played, ids(targets), len(items))


def play_example(user: str, history: Sequence[str], target: str, play_rate: float, intent: str,
                 label: int, ts: int,
                 history_play_rates: Optional[Sequence[float]] = None) -> tf.train.Example:
  """An eval example; its history plays are played through (rate 0.9) unless rates are given."""
  def bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

  def float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  def int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

  return tf.train.Example(features=tf.train.Features(feature={
      features.USER_ID: bytes_feature([user]),
      features.TS: int_feature([ts]),
      features.HISTORY_ITEM_ID: bytes_feature(history),
      features.HISTORY_PLAY_RATE: float_feature(
          [0.9] * len(history) if history_play_rates is None else history_play_rates),
      features.HISTORY_INTENT: bytes_feature([features.DEFAULT_INTENT] * len(history)),
      features.ITEM_ID: bytes_feature([target]),
      features.PLAY_RATE: float_feature([play_rate]),
      features.INTENT: bytes_feature([intent]),
      features.LABEL: int_feature([label]),
  }))


def write_examples(path: str, examples: Sequence[tf.train.Example]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  return path
