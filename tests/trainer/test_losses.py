"""Checks the sampled softmax, the negative-feedback loss and their combination."""

import numpy as np
import tensorflow as tf
import tf_keras

from contract import features
from contract import settings
from trainer import losses
from trainer import model as model_lib
from trainer import samplers

NUM_ITEMS = 9
NUM_INTENTS = 4
HPARAMS = settings.HParams(history_length=4, item_embedding_dim=3, hidden_dim=4, num_layers=1,
                              num_heads=2, ffn_dim=8, dropout=0.0, num_sampled=3)


def _model():
  tf_keras.utils.set_random_seed(1)
  model = model_lib.build_model(HPARAMS, NUM_ITEMS, NUM_INTENTS)
  # Non-zero biases, so the test sees them.
  model.item_bias_table.assign(tf.random.normal([NUM_ITEMS, 1], seed=2))
  return model


def _sampled():
  """A fixed sample: ids 2, 5, 1 with their expected counts; targets below hit 5 and 1."""
  sampled_ids = tf.constant([2, 5, 1], tf.int64)
  true_expected_count = tf.constant([[0.5], [0.25], [0.125]])
  sampled_expected_count = tf.constant([0.4, 0.2, 0.8])
  return sampled_ids, true_expected_count, sampled_expected_count


def _fixed_sample(num_targets):
  """Ids 2, 5, 1 as a sampler would return them for num_targets true ids."""
  return (tf.constant([2, 5, 1], tf.int64), tf.fill([num_targets, 1], 0.5),
          tf.constant([0.4, 0.2, 0.8]))


def _batch(sequences):
  """A training batch from sequences of (item, label) plays; the history is all but the last."""
  size, width = len(sequences), HPARAMS.history_length + 1

  def padded(rows, length):
    return [row + [0] * (length - len(row)) for row in rows]

  items = [[item for item, _ in sequence] for sequence in sequences]
  labels = [[label for _, label in sequence] for sequence in sequences]
  history = padded([row[:-1] for row in items], HPARAMS.history_length)
  return {
      features.HISTORY_ITEM_XF: tf.constant(history, tf.int64),
      features.HISTORY_PLAY_RATE_XF: tf.constant(history, tf.float32) / 10.0,
      features.HISTORY_INTENT_XF: tf.ones([size, HPARAMS.history_length], tf.int64),
      features.HISTORY_LENGTH: tf.constant([len(row) - 1 for row in items], tf.int64),
      features.SEQUENCE_ITEM_XF: tf.constant(padded(items, width), tf.int64),
      features.SEQUENCE_LABEL: tf.constant(
          [row + [features.LABEL_NEITHER] * (width - len(row)) for row in labels], tf.int64),
      features.SEQUENCE_LENGTH: tf.constant([len(row) for row in items], tf.int64),
  }


class PositiveLossTest(tf.test.TestCase):

  def test_matches_hand_computed_value(self):
    model = _model()
    users = tf.random.normal([3, 4], seed=3)
    targets = tf.constant([0, 5, 1], tf.int64)
    weights = tf.constant([1.0, 2.0, 0.5])
    got = losses.positive_loss(model, users, targets, weights, _sampled(), unique_gather=True)

    vectors, bias = model.all_item_vectors().numpy(), model.all_item_bias().numpy()
    u = users.numpy()
    sampled_ids, true_count, sampled_count = (t.numpy() for t in _sampled())
    expected = []
    for row, target in enumerate(targets.numpy()):
      target_logit = u[row] @ vectors[target] + bias[target] - np.log(true_count[row, 0])
      sampled_logits = [u[row] @ vectors[s] + bias[s] - np.log(c)
                        for s, c in zip(sampled_ids, sampled_count) if s != target]
      logits = np.array([target_logit] + sampled_logits)
      expected.append(weights.numpy()[row] * (np.log(np.exp(logits).sum()) - target_logit))
    self.assertAllClose(got, expected, rtol=1e-5)

  def test_matches_tf_sampled_softmax_on_the_unfactorized_table(self):
    model = _model()
    users = tf.random.normal([3, 4], seed=4)
    targets = tf.constant([0, 5, 1], tf.int64)
    got = losses.positive_loss(model, users, targets, tf.ones([3]), _sampled(),
                               unique_gather=True)
    reference = tf.nn.sampled_softmax_loss(
        weights=model.all_item_vectors(), biases=model.all_item_bias(),
        labels=targets[:, tf.newaxis], inputs=users, num_sampled=3, num_classes=NUM_ITEMS,
        sampled_values=_sampled(), remove_accidental_hits=True)
    self.assertAllClose(got, reference, rtol=1e-5)

  def test_unique_gather_equals_plain_gather_in_values_and_gradients(self):
    model = _model()
    users = tf.random.normal([6, 4], seed=5)
    # Repeated targets, and samples that repeat targets: what unique gather deduplicates.
    targets = tf.constant([5, 5, 0, 1, 5, 0], tf.int64)
    sample = samplers.make_sampler('log_uniform', NUM_ITEMS, num_sampled=4, seed=6)(targets)
    results = {}
    for unique_gather in (True, False):
      with tf.GradientTape() as tape:
        tape.watch(users)
        loss = losses.positive_loss(model, users, targets, tf.ones([6]), sample,
                                    unique_gather=unique_gather)
        total = tf.reduce_sum(loss)
      variables = [model.item_embedding, model.item_bias_table,
                   model.item_projection.kernel]
      gradients = tape.gradient(total, [users] + variables)
      results[unique_gather] = (loss, [tf.convert_to_tensor(g) for g in gradients])
    self.assertAllClose(results[True][0], results[False][0], rtol=1e-6)
    for unique, plain in zip(results[True][1], results[False][1]):
      self.assertAllClose(unique, plain, rtol=1e-5, atol=1e-7)
    self.assertGreater(float(tf.reduce_max(tf.abs(results[True][1][1]))), 0.0)


class NegativeLossTest(tf.test.TestCase):

  def test_matches_hand_computed_value(self):
    users = tf.constant([[1.0, 0.0], [0.5, -1.0]])
    targets = tf.constant([[2.0, 3.0], [1.0, 1.0]])
    bias = tf.constant([0.5, -0.25])
    got = losses.negative_loss(users, targets, bias, tf.constant([1.0, 0.0]), neg_weight=2.0)
    score = 1.0 * 2.0 + 0.5  # the second example has weight 0
    self.assertAllClose(got, [2.0 * np.log1p(np.exp(score)), 0.0])


POS, NEG, NEITHER = features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER


class ComputeLossesTest(tf.test.TestCase):

  def _losses(self, hparams, sequences):
    model = _model()
    sampler = lambda ids: _fixed_sample(tf.size(ids))
    return model, losses.compute_losses(model, _batch(sequences), hparams, sampler,
                                        training=False)

  def test_every_play_is_a_target_of_the_user_vector_before_it(self):
    sequences = [[(0, POS), (3, NEG), (6, NEITHER), (5, POS)], [(2, POS)]]
    model, got = self._losses(HPARAMS, sequences)
    users = model.target_user_vectors(_batch(sequences))  # [2, 5, H]
    positive_users = tf.stack([users[0, 0], users[0, 3], users[1, 0]])
    positive = losses.positive_loss(model, positive_users, tf.constant([0, 5, 2], tf.int64),
                                    tf.ones([3]), _fixed_sample(3), unique_gather=True)
    negative = losses.negative_loss(users[0, 1:2], model.item_vectors(tf.constant([3], tf.int64)),
                                    model.item_bias(tf.constant([3], tf.int64)), tf.ones([1]),
                                    neg_weight=1.0)
    # Five real targets, 'neither' included; padding is not counted.
    self.assertAllClose(got['positive_loss'], tf.reduce_sum(positive) / 5)
    self.assertAllClose(got['negative_loss'], tf.reduce_sum(negative) / 5)
    self.assertAllClose(got['loss'], got['positive_loss'] + got['negative_loss'])
    # Plays in a loss: three positives and one negative.
    self.assertEqual(float(got[losses.TARGETS]), 4.0)

  def test_candidates_earn_the_repeat_bonus_of_their_earlier_plays(self):
    sequences = [[(3, POS), (5, POS), (3, POS), (3, NEG)]]
    model = _model()
    bonus = model.repeat_bonus
    recency = np.array([0.5, 0.25, 0.125, 0.0])
    bonus.recency.assign(recency)
    bonus.rate_weight.assign(2.0)
    bonus.intent_weight.assign([0.0, 1.0, 0.0, 0.0])  # every play of _batch has intent 1
    batch = _batch(sequences)
    got = losses.compute_losses(model, batch, HPARAMS, lambda ids: _fixed_sample(tf.size(ids)),
                                training=False)
    users = model.target_user_vectors(batch)[0]  # [L + 1, H]

    def weight(q, j):  # history play j (rate item / 10) as seen by play q; context weights are 0
      return float(recency[q - 1 - j] + 2.0 * sequences[0][j][0] / 10.0 + 1.0)

    none = model_lib.NO_REPEAT
    # Play 2 (item 3) returns to play 0 (item 3); of the sampled ids 2, 5, 1, id 5 was play 1.
    positive = losses.positive_loss(
        model, users[:3], tf.constant([3, 5, 3], tf.int64), tf.ones([3]), _fixed_sample(3),
        unique_gather=True, target_log_mass=tf.constant([none, none, weight(2, 0)]),
        sampled_log_mass=tf.constant([[none] * 3, [none] * 3, [none, weight(2, 1), none]]))
    # The skip (play 3, item 3) may return to plays 0 and 2 of item 3.
    negative = losses.negative_loss(
        users[3:4], model.item_vectors(tf.constant([3], tf.int64)),
        model.item_bias(tf.constant([3], tf.int64)), tf.ones([1]), neg_weight=1.0,
        target_log_mass=tf.constant([np.logaddexp(weight(3, 0), weight(3, 2))], tf.float32))
    self.assertAllClose(got['positive_loss'], tf.reduce_sum(positive) / 4)
    self.assertAllClose(got['negative_loss'], tf.reduce_sum(negative) / 4)

  def test_neither_targets_and_padding_do_not_matter(self):
    _, got = self._losses(HPARAMS, [[(0, POS), (3, NEG), (6, NEITHER)], [(2, POS)]])
    # The last play is not in the history, so a 'neither' item there changes nothing.
    _, other = self._losses(HPARAMS, [[(0, POS), (3, NEG), (7, NEITHER)], [(2, POS)]])
    self.assertAllClose(got, other)

  def test_variant_b_has_no_negative_loss(self):
    _, got = self._losses(HPARAMS.replace(variant='b'), [[(0, POS), (3, NEG)]])
    self.assertEqual(float(got['negative_loss']), 0.0)
    self.assertEqual(float(got[losses.TARGETS]), 1.0)
    self.assertGreater(float(got['positive_loss']), 0.0)

  def test_batch_without_positives_is_finite(self):
    _, got = self._losses(HPARAMS, [[(3, NEG), (4, NEG)]])
    self.assertEqual(float(got['positive_loss']), 0.0)
    self.assertGreater(float(got['negative_loss']), 0.0)

  def test_trains_under_tf_function_with_a_real_sampler(self):
    model = _model()
    sampler = samplers.make_sampler('learned_unigram', NUM_ITEMS, num_sampled=3, seed=1)
    optimizer = tf_keras.optimizers.Adam(0.05)
    batch = _batch([[(0, POS), (3, NEG), (0, POS)], [(3, NEG), (0, POS)]])

    @tf.function
    def step():
      with tf.GradientTape() as tape:
        loss = losses.compute_losses(model, batch, HPARAMS, sampler)['loss']
      optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))
      return loss

    first = float(step())
    for _ in range(30):
      last = float(step())
    self.assertLess(last, first)


if __name__ == '__main__':
  tf.test.main()
