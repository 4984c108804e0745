"""The two losses of the feedback-aware DeepMatch: sampled softmax on positives, sigmoid on negatives.

positive_loss and negative_loss score flat lists of (user vector, target) pairs; compute_losses
gathers those pairs from every position of a batch of play sequences. Under a parameter-server
strategy each worker step is one replica on one whole batch, so a batch's own mean is the step's.
"""

from typing import Dict, Optional

import tensorflow as tf

from contract import features
from contract import settings
from trainer import model as model_lib
from trainer import samplers

LOSS_NAMES = ('loss', 'positive_loss', 'negative_loss')
TARGETS = 'targets'  # compute_losses' count of the plays in a loss: the plays a batch trains


def positive_loss(model: model_lib.DeepMatch,
                  user_vectors: tf.Tensor,
                  target_ids: tf.Tensor,
                  weights: tf.Tensor,
                  sampled: samplers.Sample,
                  unique_gather: bool,
                  target_log_mass: Optional[tf.Tensor] = None,
                  sampled_log_mass: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-example weighted sampled-softmax loss [B] of the target items.

  The logits are user . item + item bias (mixed with a return to the history, given the log
  repeat masses: model.RepeatBonus), less the log of each candidate's expected count (the
  correction that makes the sampled softmax an unbiased stand-in for the full one); a sampled id
  equal to the example's target (an accidental hit) is removed from that example's candidates.

  Args:
    model: gives item_vectors and item_bias.
    user_vectors: [B, H].
    target_ids: [B] item ids.
    weights: [B] example weights.
    sampled: a sampler's (sampled_ids [S], true_expected_count [B, 1], sampled_expected_count [S]).
    unique_gather: look up and project each distinct id of targets + samples once, then expand
      (popular items repeat a lot in a batch); False looks up every occurrence.
    target_log_mass: [B], the targets' log repeat masses R (model.repeat_log_mass), or None.
    sampled_log_mass: [B, S], the sampled candidates' for each example, or None.
  """
  sampled_ids, true_expected_count, sampled_expected_count = sampled
  target_ids = tf.reshape(tf.cast(target_ids, tf.int64), [-1])
  sampled_ids = tf.cast(sampled_ids, tf.int64)
  candidate_vectors, candidate_bias = _item_vectors_and_bias(
      model, tf.concat([target_ids, sampled_ids], axis=0), unique_gather)
  num_targets = tf.shape(target_ids)[0]
  target_vectors, sampled_vectors = candidate_vectors[:num_targets], candidate_vectors[num_targets:]
  target_bias, sampled_bias = candidate_bias[:num_targets], candidate_bias[num_targets:]

  target_logits = tf.reduce_sum(user_vectors * target_vectors, axis=-1) + target_bias
  sampled_logits = (tf.matmul(user_vectors, sampled_vectors, transpose_b=True)
                    + sampled_bias[tf.newaxis, :])
  if target_log_mass is not None:
    target_logits += model_lib.repeat_offsets(target_log_mass, target_logits)
  if sampled_log_mass is not None:
    sampled_logits += model_lib.repeat_offsets(sampled_log_mass, sampled_logits)
  target_logits -= tf.math.log(tf.reshape(true_expected_count, [-1]))
  sampled_logits -= tf.math.log(sampled_expected_count)[tf.newaxis, :]
  sampled_logits = _remove_accidental_hits(sampled_logits, target_ids, sampled_ids)
  logits = tf.concat([target_logits[:, tf.newaxis], sampled_logits], axis=1)
  # Cross-entropy with the target in column 0.
  losses = tf.reduce_logsumexp(logits, axis=1) - target_logits
  return losses * tf.cast(weights, losses.dtype)


def negative_loss(user_vectors: tf.Tensor,
                  target_vectors: tf.Tensor,
                  target_bias: tf.Tensor,
                  weights: tf.Tensor,
                  neg_weight: float,
                  target_log_mass: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-example weighted sigmoid cross-entropy [B] of score user . item + bias (mixed with a
  return, given the targets' log repeat masses [B]: model.RepeatBonus) against label 0."""
  logits = tf.reduce_sum(user_vectors * target_vectors, axis=-1) + target_bias
  if target_log_mass is not None:
    logits += model_lib.repeat_offsets(target_log_mass, logits)
  losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(logits), logits=logits)
  return neg_weight * losses * tf.cast(weights, losses.dtype)


def compute_losses(model: model_lib.DeepMatch,
                   batch: Dict[str, tf.Tensor],
                   hparams: settings.HParams,
                   sampler: samplers.Sampler,
                   training: bool = True) -> Dict[str, tf.Tensor]:
  """Scalars {'loss', 'positive_loss', 'negative_loss', 'targets'} of a batch with sequence targets.

  Every real play of the batch's sequences (features.SEQUENCE_*, see trainer.inputs) is a target,
  scored against the user vector that precedes it (model.target_user_vectors). Positives
  (LABEL_POSITIVE) go to the sampled softmax, over one set of sampled candidates shared by the
  batch; negatives (LABEL_NEGATIVE) to the sigmoid loss when hparams.negative_loss (variant c),
  else nowhere; 'neither' targets to no loss. Only the positive targets reach the sampler, so
  learned_unigram learns the distribution the softmax is over. Both losses are sums over their
  targets divided by the number of targets of every label (the batch's real plays), so a loss
  is a mean per play whatever the mix of labels. 'targets' counts the plays in a loss. With the
  model's repeat bonus, every candidate's logit is mixed with a return to its plays earlier in
  the sequence, as the target's is.
  """
  sequence_vectors = model.target_user_vectors(batch, training=training)  # [B, L + 1, H]
  sequence_items = tf.cast(batch[features.SEQUENCE_ITEM_XF], tf.int64)
  real = tf.sequence_mask(batch[features.SEQUENCE_LENGTH], tf.shape(sequence_vectors)[1])
  user_vectors = tf.boolean_mask(sequence_vectors, real)  # [T, H]
  target_ids = tf.boolean_mask(sequence_items, real)
  labels = tf.boolean_mask(batch[features.SEQUENCE_LABEL], real)
  denominator = tf.maximum(tf.cast(tf.size(labels), user_vectors.dtype), 1.0)
  repeat_weights = (None if model.repeat_bonus is None
                    else model.repeat_bonus.sequence_weights(batch, sequence_vectors,
                                                             model.history_item_vectors(batch)))

  def log_mass_of(candidates, targets_mask):
    """The log repeat masses of candidates ([S] shared, or the sequence items [B, L + 1]) at
    the masked targets."""
    if repeat_weights is None:
      return None
    shared = candidates.shape.rank == 1
    log_mass = model_lib.repeat_log_mass(repeat_weights, batch[features.HISTORY_ITEM_XF],
                                         candidates if shared else candidates[:, :, tf.newaxis])
    return tf.boolean_mask(log_mass if shared else log_mass[..., 0], targets_mask)

  is_positive = tf.equal(labels, features.LABEL_POSITIVE)
  positive_ids = tf.boolean_mask(target_ids, is_positive)
  sampled = sampler(positive_ids)
  # The same targets as is_positive, before the flattening: [B, L + 1].
  positive_targets = real & tf.equal(batch[features.SEQUENCE_LABEL], features.LABEL_POSITIVE)
  positive = positive_loss(model, tf.boolean_mask(user_vectors, is_positive), positive_ids,
                           tf.ones_like(positive_ids, tf.float32), sampled,
                           unique_gather=hparams.unique_gather,
                           target_log_mass=log_mass_of(sequence_items, positive_targets),
                           sampled_log_mass=log_mass_of(tf.cast(sampled[0], tf.int64),
                                                        positive_targets))
  positive = tf.reduce_sum(positive) / denominator

  trained = tf.reduce_sum(tf.cast(is_positive, user_vectors.dtype))
  if hparams.negative_loss:
    is_negative = tf.equal(labels, features.LABEL_NEGATIVE)
    trained += tf.reduce_sum(tf.cast(is_negative, user_vectors.dtype))
    negative_ids = tf.boolean_mask(target_ids, is_negative)
    negative_vectors, negative_bias = _item_vectors_and_bias(model, negative_ids,
                                                             hparams.unique_gather)
    negative_targets = real & tf.equal(batch[features.SEQUENCE_LABEL], features.LABEL_NEGATIVE)
    negative = negative_loss(tf.boolean_mask(user_vectors, is_negative), negative_vectors,
                             negative_bias, tf.ones_like(negative_ids, tf.float32),
                             hparams.neg_weight,
                             target_log_mass=log_mass_of(sequence_items, negative_targets))
    negative = tf.reduce_sum(negative) / denominator
  else:
    negative = tf.zeros([], user_vectors.dtype)
  return {'loss': positive + negative, 'positive_loss': positive, 'negative_loss': negative,
          TARGETS: trained}


def _item_vectors_and_bias(model, ids, unique_gather):
  if not unique_gather:
    return model.item_vectors(ids), model.item_bias(ids)
  unique_ids, positions = tf.unique(ids)
  # tf.gather on the looked-up tensors, not on the (possibly sharded) tables.
  return (tf.gather(model.item_vectors(unique_ids), positions),
          tf.gather(model.item_bias(unique_ids), positions))


def _remove_accidental_hits(sampled_logits, target_ids, sampled_ids):
  rows, columns, hit_weights = tf.nn.compute_accidental_hits(
      target_ids[:, tf.newaxis], sampled_ids, num_true=1)
  indices = tf.stack([rows, tf.cast(columns, tf.int32)], axis=1)
  return tf.tensor_scatter_nd_add(sampled_logits, indices, tf.cast(hit_weights, sampled_logits.dtype))
