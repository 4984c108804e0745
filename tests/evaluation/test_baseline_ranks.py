"""The repeat baseline in TF (what the exported target-rank signature returns) against numpy."""

import numpy as np
import tensorflow as tf

from evaluation import baseline_ranks
from evaluation import baselines

V = 12
POS_THRESHOLD = 0.8
HISTORY_LENGTH = 6


def _batch(rng, size):
  """Histories of 0..9 plays (OOV ids among them) with rates 0.1 or 0.9, and their targets."""
  histories = [rng.integers(0, V + 1, size=int(rng.integers(0, 10))) for _ in range(size)]
  rates = [np.where(rng.random(h.size) < 0.6, 0.9, 0.1).astype(np.float32) for h in histories]
  return histories, rates, rng.integers(0, V + 1, size=size)


def _sparse(rows, dtype):
  return tf.RaggedTensor.from_row_lengths(
      tf.constant(np.concatenate(rows).astype(dtype)), [len(r) for r in rows]).to_sparse()


@tf.function(input_signature=[tf.SparseTensorSpec([None, None], tf.int64),
                              tf.SparseTensorSpec([None, None], tf.float32),
                              tf.TensorSpec([None], tf.int64)])
def _graph_ranks(items, rates, targets):
  return baseline_ranks.repeat_ranks(items, rates, targets, V, POS_THRESHOLD, HISTORY_LENGTH)


def test_tf_repeat_ranks_equal_numpy_on_the_most_recent_plays():
  histories, rates, targets = _batch(np.random.default_rng(2), 300)
  ranks = _graph_ranks(_sparse(histories, np.int64), _sparse(rates, np.float32),
                       tf.constant(targets)).numpy()
  # The model reads the most recent HISTORY_LENGTH plays; so does the baseline.
  expected = baselines.repeat_ranks([h[-HISTORY_LENGTH:] for h in histories],
                                    [r[-HISTORY_LENGTH:] >= POS_THRESHOLD for r in rates],
                                    targets, V)
  np.testing.assert_array_equal(ranks, expected)
  assert (ranks[targets == V] == V).all()


def test_tf_repeat_ranks_by_hand():
  # 3 played through twice, 5 once, 7 skipped: order 3, 5, 0, 1, 2, 4, 6, 7, ...
  items = tf.ragged.constant([[3, 7, 5, 3], [3, 7, 5, 3], [3, 7, 5, 3], []], tf.int64)
  rates = tf.ragged.constant([[1.0, 0.2, 0.8, 0.9]] * 3 + [[]], tf.float32)
  ranks = baseline_ranks.repeat_ranks(items, rates, tf.constant([3, 5, 7, 4], tf.int64), V,
                                      POS_THRESHOLD, HISTORY_LENGTH)
  np.testing.assert_array_equal(ranks.numpy(), [0, 1, 7, 4])
