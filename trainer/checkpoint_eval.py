"""Validation loss, POS@N and NEG@N of the model being trained, on the eval split, at every
checkpoint.

The ranks are the same exact ranking over the whole vocabulary as the exported target_rank
signature (and so the Evaluator), computed on the model in memory: training progress reads in
the metric the gate uses, and benchmarks can time how fast a trainer reaches a given POS@N.

The validation losses are the training losses' exact counterparts on each eval target: a
full-softmax cross-entropy for a played-through song (training samples the softmax, so its loss
is on another scale; this one is comparable from run to run) and the weighted sigmoid loss for a
skipped one (variant c). Each is a sum over its targets divided by the number of targets of
every label, as in training. A validation loss that rises while the training loss falls is the
model memorising the training plays.
"""

from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras

from contract import features
from contract import settings
from evaluation import hit_rate
from trainer import dataset
from trainer import losses as losses_lib
from trainer import model as model_lib
from trainer import vocabulary

# evaluate(model) -> {'loss': ..., 'positive_loss': ..., 'negative_loss': ..., 'pos_at_N': ...}
Evaluate = Callable[[tf_keras.Model], Dict[str, float]]


def target_losses(scores: tf.Tensor, targets: tf.Tensor, labels: tf.Tensor,
                  hparams: settings.HParams) -> Dict[str, tf.Tensor]:
  """Sums {'positive_loss', 'negative_loss'} over a batch's targets (scalars).

  Args:
    scores: [B, V] scores of the vocabulary items.
    targets: [B] target ids; one outside [0, V) (the OOV bucket) is in no loss.
    labels: [B] LABEL_* values.
    hparams: negative_loss (variant c) and neg_weight.
  """
  num_vocabulary = tf.shape(scores, out_type=tf.int64)[1]
  targets = tf.cast(targets, tf.int64)
  in_vocabulary = targets < num_vocabulary
  target_scores = tf.gather(scores, tf.where(in_vocabulary, targets, 0), batch_dims=1)
  softmax = tf.reduce_logsumexp(scores, axis=1) - target_scores
  positive = in_vocabulary & tf.equal(labels, features.LABEL_POSITIVE)
  losses = {'positive_loss': tf.reduce_sum(tf.where(positive, softmax, 0.0))}
  if hparams.negative_loss:
    sigmoid = hparams.neg_weight * tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.zeros_like(target_scores), logits=target_scores)
    negative = in_vocabulary & tf.equal(labels, features.LABEL_NEGATIVE)
    losses['negative_loss'] = tf.reduce_sum(tf.where(negative, sigmoid, 0.0))
  else:
    losses['negative_loss'] = tf.zeros([], scores.dtype)
  return losses


def make_evaluate(eval_dataset: tf.data.Dataset, num_vocabulary: int,
                  hparams: settings.HParams,
                  ns: Sequence[int] = settings.METRIC_NS) -> Evaluate:
  """Returns evaluate(model): validation losses and hit rates over every batch of eval_dataset.

  Args:
    eval_dataset: finite batches with one target each (dataset.make_dataset with
      sequence_targets=False, repeat=False); take() a part of it to bound the cost.
    num_vocabulary: V, the vocabulary items ranked (the OOV bucket is left out, as in serving).
    hparams: the model's hyper-parameters (the losses' settings).
    ns: the N of POS@N and NEG@N.
  """

  @tf.function
  def ranks_and_losses(model, batch):
    scores = model.scores(batch, training=False)[:, :num_vocabulary]
    targets, labels = batch[features.ITEM_XF], batch[features.LABEL]
    return (model_lib.target_ranks(scores, targets),
            target_losses(scores, targets, labels, hparams))

  def evaluate(model: tf_keras.Model) -> Dict[str, float]:
    counts = hit_rate.HitCounts(tuple(ns))
    sums = {'positive_loss': 0.0, 'negative_loss': 0.0}
    num_targets = 0
    for batch in eval_dataset:
      ranks, losses = ranks_and_losses(model, batch)
      labels = batch[features.LABEL].numpy()
      counts = counts.merged(hit_rate.hit_counts(ranks.numpy(), labels, ns))
      for name, value in losses.items():
        sums[name] += float(value.numpy())
      num_targets += len(labels)
    metrics = {name: value / max(num_targets, 1) for name, value in sums.items()}
    metrics['loss'] = metrics['positive_loss'] + metrics['negative_loss']
    return dict(sorted(metrics.items(), key=lambda item: losses_lib.LOSS_NAMES.index(item[0])),
                **counts.rates())

  return evaluate


def evaluate_on_files(eval_files: Sequence[str], eval_steps: Optional[int],
                      tf_transform_output, hparams: settings.HParams) -> Optional[Evaluate]:
  """evaluate(model) on the eval files (at most eval_steps batches), or None without files.

  One process only (run_fn passes None under a parameter-server strategy): there the chief
  would read every item-table shard at each checkpoint; the Evaluator measures the exported
  model either way.
  """
  if not eval_files:
    return None
  eval_dataset = dataset.make_dataset(eval_files, tf_transform_output, hparams,
                                      hparams.batch_size, shuffle=False, repeat=False,
                                      sequence_targets=False)
  if eval_steps:
    eval_dataset = eval_dataset.take(eval_steps)
  return make_evaluate(eval_dataset, vocabulary.num_vocabulary_items(tf_transform_output),
                       hparams)
