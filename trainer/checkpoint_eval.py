"""POS@N and NEG@N of the model being trained, on the eval split, at every checkpoint.

The same exact ranking over the whole vocabulary as the exported target_rank signature (and so
the Evaluator), computed on the model in memory: training progress reads in the metric the gate
uses, and benchmarks can time how fast a trainer reaches a given POS@N.
"""

from typing import Callable, Dict, Sequence

import tensorflow as tf
import tf_keras

from contract import features
from contract import settings
from evaluation import hit_rate
from trainer import model as model_lib

# evaluate(model) -> {'pos_at_N': ..., 'neg_at_N': ...}
Evaluate = Callable[[tf_keras.Model], Dict[str, float]]


def make_evaluate(eval_dataset: tf.data.Dataset, num_vocabulary: int,
                  ns: Sequence[int] = settings.METRIC_NS) -> Evaluate:
  """Returns evaluate(model): hit rates over every batch of eval_dataset.

  Args:
    eval_dataset: finite batches with one target each (dataset.make_dataset with
      sequence_targets=False, repeat=False); take() a part of it to bound the cost.
    num_vocabulary: V, the vocabulary items ranked (the OOV bucket is left out, as in serving).
    ns: the N of POS@N and NEG@N.
  """

  @tf.function
  def ranks(model, batch):
    scores = model.scores(model(batch, training=False))[:, :num_vocabulary]
    return model_lib.target_ranks(scores, batch[features.ITEM_XF])

  def evaluate(model: tf_keras.Model) -> Dict[str, float]:
    counts = hit_rate.HitCounts(tuple(ns))
    for batch in eval_dataset:
      counts = counts.merged(hit_rate.hit_counts(ranks(model, batch).numpy(),
                                                 batch[features.LABEL].numpy(), ns))
    return counts.rates()

  return evaluate
