"""Synthetic training batches for the trainer benchmarks (train_speed.py, scale.py).

Each example is a play sequence as PlayLogExampleGen cuts training windows: up to
history_length + 1 plays, the history followed by the target play. Item ids follow Zipf
popularity with id = popularity rank (as Transform's frequency-ordered vocabulary gives them);
most sequences are full (a long-time user's window), the rest of random length 1..L; each play's
label is drawn from LABEL_PROBABILITIES and its play rate drawn consistently with the label under
PlayLogExampleGen's thresholds; intents are uniform over the known intents. The raw features are
turned into the model batch by the trainer's own input function (inputs.to_model_batch with
sequence targets), so the batches have exactly the training contract of contract/features.py.
"""

from typing import Dict, List, NamedTuple

import numpy as np
import tensorflow as tf

from contract import features
from contract import settings
from trainer import inputs

# Rows of the intent table: the known intents and the OOV bucket.
NUM_INTENTS = len(features.INTENTS) + features.NUM_OOV_BUCKETS
LABELS = (features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER)
LABEL_PROBABILITIES = (0.55, 0.25, 0.20)
FULL_LENGTH_SHARE = 0.8
# Play-rate range [low, high) of each label, consistent with PlayLogExampleGen's thresholds.
_PLAY_RATE_RANGES = {
    features.LABEL_POSITIVE: (settings.POS_THRESHOLD, 1.0),
    features.LABEL_NEGATIVE: (0.0, settings.NEG_THRESHOLD),
    features.LABEL_NEITHER: (np.nextafter(settings.NEG_THRESHOLD, 1.0), settings.POS_THRESHOLD),
}

Batch = Dict[str, tf.Tensor]


class BatchCounts(NamedTuple):
  """What one batch holds, for counting the work a training step does on it."""
  sequences: int
  plays: int  # real plays: the sum of SEQUENCE_LENGTH (compute_losses' 'targets')
  positive_plays: int
  negative_plays: int
  last_positive: int  # sequences whose last play (the example's target) is positive
  last_negative: int


def model_num_items(vocabulary_size: int) -> int:
  """Rows of the model's item tables for a vocabulary of this size: the OOV bucket included."""
  return vocabulary_size + features.NUM_OOV_BUCKETS


def zipf_probabilities(vocabulary_size: int, exponent: float) -> np.ndarray:
  """Popularity of ids 0..V-1: proportional to 1 / (rank + 1)^exponent."""
  weights = 1.0 / np.arange(1, vocabulary_size + 1) ** exponent
  return weights / weights.sum()


def training_batches(hparams: settings.HParams, vocabulary_size: int, num_batches: int,
                     seed: int, zipf_exponent: float = 1.0) -> List[Batch]:
  """num_batches model batches of hparams.batch_size sequences, with sequence targets."""
  rng = np.random.default_rng(seed)
  popularity = zipf_probabilities(vocabulary_size, zipf_exponent)
  return [_model_batch(rng, popularity, hparams) for _ in range(num_batches)]


def batch_counts(batch: Batch) -> BatchCounts:
  length = batch[features.SEQUENCE_LENGTH].numpy()
  labels = batch[features.SEQUENCE_LABEL].numpy()
  real = np.arange(labels.shape[1])[np.newaxis, :] < length[:, np.newaxis]
  last = batch[features.LABEL].numpy()
  return BatchCounts(
      sequences=int(length.size), plays=int(length.sum()),
      positive_plays=int(np.sum(real & (labels == features.LABEL_POSITIVE))),
      negative_plays=int(np.sum(real & (labels == features.LABEL_NEGATIVE))),
      last_positive=int(np.sum(last == features.LABEL_POSITIVE)),
      last_negative=int(np.sum(last == features.LABEL_NEGATIVE)))


def stacked(batches: List[Batch]) -> Batch:
  """The batches stacked on a new first axis, for tf.data.Dataset.from_tensor_slices."""
  return {name: tf.stack([batch[name] for batch in batches]) for name in batches[0]}


def _model_batch(rng: np.random.Generator, popularity: np.ndarray,
                 hparams: settings.HParams) -> Batch:
  size, max_plays = hparams.batch_size, hparams.history_length + 1
  lengths = np.where(rng.random(size) < FULL_LENGTH_SHARE, max_plays,
                     rng.integers(1, max_plays, size=size))
  total = int(lengths.sum())
  labels = rng.choice(LABELS, size=total, p=LABEL_PROBABILITIES)
  play_rates = np.empty(total)
  for label, (low, high) in _PLAY_RATE_RANGES.items():
    chosen = labels == label
    play_rates[chosen] = rng.uniform(low, high, size=int(chosen.sum()))
  plays = {
      features.HISTORY_ITEM_XF: rng.choice(popularity.size, size=total, p=popularity),
      features.HISTORY_PLAY_RATE_XF: play_rates.astype(np.float32),
      features.HISTORY_INTENT_XF: rng.integers(0, len(features.INTENTS), size=total),
      features.HISTORY_LABEL: labels,
  }
  return inputs.to_model_batch(_transformed_features(plays, lengths), hparams,
                               sequence_targets=True)


def _transformed_features(plays: Dict[str, np.ndarray], lengths: np.ndarray) -> Batch:
  """Transform's output for sequences of these lengths: every play but the last is history."""
  last = np.cumsum(lengths) - 1
  is_history = np.ones(int(lengths.sum()), bool)
  is_history[last] = False
  targets = {features.HISTORY_ITEM_XF: features.ITEM_XF,
             features.HISTORY_PLAY_RATE_XF: features.PLAY_RATE_XF,
             features.HISTORY_INTENT_XF: features.INTENT_XF,
             features.HISTORY_LABEL: features.LABEL}
  transformed = {}
  for history, target in targets.items():
    transformed[history] = tf.RaggedTensor.from_row_lengths(plays[history][is_history],
                                                            lengths - 1)
    transformed[target] = tf.constant(plays[history][last])
  return transformed
