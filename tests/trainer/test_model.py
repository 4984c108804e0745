"""Checks the DeepMatch model's shapes, masks, variants and empty-history answer."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from contract import features
from contract import settings
from trainer import model as model_lib

NUM_ITEMS = 20
NUM_INTENTS = 4
L = 6
HPARAMS = settings.HParams(history_length=L, item_embedding_dim=4, hidden_dim=8, num_layers=2,
                              num_heads=2, ffn_dim=16, dropout=0.1)


def _model(hparams=HPARAMS):
  tf_keras.utils.set_random_seed(1)
  return model_lib.build_model(hparams, NUM_ITEMS, NUM_INTENTS)


def _batch(items, play_rates, intents, lengths):
  return {
      features.HISTORY_ITEM_XF: tf.constant(items, tf.int64),
      features.HISTORY_PLAY_RATE_XF: tf.constant(play_rates, tf.float32),
      features.HISTORY_INTENT_XF: tf.constant(intents, tf.int64),
      features.HISTORY_LENGTH: tf.constant(lengths, tf.int64),
  }


def _two_histories():
  return _batch(items=[[3, 7, 1, 0, 0, 0], [5, 4, 3, 2, 9, 8]],
                play_rates=[[1.0, 0.1, 0.9, 0, 0, 0], [0.5, 0.5, 1.0, 0.2, 0.8, 0.3]],
                intents=[[0, 1, 2, 0, 0, 0], [2, 2, 1, 0, 0, 3]],
                lengths=[3, 6])


def _with(batch, name, row, column, value):
  values = batch[name].numpy().copy()
  values[row, column] = value
  return dict(batch, **{name: tf.constant(values)})


class DeepMatchTest(tf.test.TestCase):

  def test_shapes(self):
    model = _model()
    batch = _two_histories()
    self.assertEqual(model(batch).shape, [2, 8])
    self.assertEqual(model.sequence_outputs(batch).shape, [2, L, 8])
    self.assertEqual(model.item_vectors(tf.constant([[1, 2, 3]], tf.int64)).shape, [1, 3, 8])
    self.assertEqual(model.item_bias(tf.constant([[1, 2, 3]], tf.int64)).shape, [1, 3])
    self.assertEqual(model.all_item_vectors().shape, [NUM_ITEMS, 8])
    self.assertEqual(model.all_item_bias().shape, [NUM_ITEMS])
    self.assertEqual(model.scores(batch).shape, [2, NUM_ITEMS])

  def test_item_vectors_are_the_factorized_table_projected(self):
    model = _model()
    ids = tf.constant([4, 0, 19], tf.int64)
    expected = tf.matmul(tf.gather(model.item_embedding, ids), model.item_projection.kernel)
    self.assertAllClose(model.item_vectors(ids), expected)
    self.assertAllClose(model.all_item_vectors().numpy()[[4, 0, 19]], expected)
    # O(V * E + E * H) item parameters, not O(V * H).
    self.assertEqual(model.item_embedding.shape, [NUM_ITEMS, 4])
    self.assertEqual(model.item_projection.kernel.shape, [4, 8])

  def test_unique_history_lookup_equals_plain_lookup_in_values_and_gradients(self):
    batch = _two_histories()
    results = []
    for unique_gather in (True, False):
      model = _model(HPARAMS.replace(unique_gather=unique_gather, dropout=0.0))
      with tf.GradientTape() as tape:
        total = tf.reduce_sum(model(batch) ** 2)
      gradient = tape.gradient(total, model.item_embedding)
      results.append((model(batch), tf.convert_to_tensor(gradient)))
    self.assertAllClose(results[0][0], results[1][0], rtol=1e-6)
    self.assertAllClose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)
    ids = tf.constant([[3, 3, 5], [5, 0, 3]], tf.int64)
    model = _model()
    self.assertAllClose(model.item_vectors(ids, unique=True), model.item_vectors(ids))

  def test_padding_is_masked(self):
    model = _model()
    batch = _two_histories()
    users = model(batch)
    for name, value in ((features.HISTORY_ITEM_XF, 11), (features.HISTORY_PLAY_RATE_XF, 0.7),
                        (features.HISTORY_INTENT_XF, 3)):
      changed = model(_with(batch, name, row=0, column=4, value=value))
      self.assertAllClose(changed[0], users[0], msg=name)
    # A real position does change the user vector.
    changed = model(_with(batch, features.HISTORY_ITEM_XF, row=0, column=1, value=11))
    self.assertNotAllClose(changed[0], users[0])

  def test_future_positions_are_masked(self):
    model = _model()
    batch = _two_histories()
    outputs = model.sequence_outputs(batch)
    changed = model.sequence_outputs(_with(batch, features.HISTORY_ITEM_XF, row=1, column=3, value=11))
    self.assertAllClose(changed[1, :3], outputs[1, :3])
    self.assertNotAllClose(changed[1, 3:], outputs[1, 3:])

  def test_last_mode_takes_the_last_real_position_and_mean_mode_averages(self):
    batch = _two_histories()
    model = _model()
    outputs = model.sequence_outputs(batch).numpy()
    self.assertAllClose(model(batch), [outputs[0, 2], outputs[1, 5]])
    mean_model = _model(HPARAMS.replace(user_vector='mean'))
    outputs = mean_model.sequence_outputs(batch).numpy()
    self.assertAllClose(mean_model(batch), [outputs[0, :3].mean(0), outputs[1].mean(0)], rtol=1e-5)

  def test_empty_history_gives_the_learned_empty_vector(self):
    model = _model()
    batch = _batch([[0] * L, [3] + [0] * (L - 1)], [[0.] * L, [1.] + [0.] * (L - 1)],
                   [[0] * L, [1] + [0] * (L - 1)], [0, 1])
    users = model(batch).numpy()
    self.assertTrue(np.all(np.isfinite(users)))
    self.assertAllClose(users[0], model.empty_history_vector.numpy()[0])
    self.assertNotAllClose(users[1], users[0])

  def test_target_user_vectors_are_the_empty_vector_then_each_position(self):
    model = _model()
    batch = _two_histories()
    targets = model.target_user_vectors(batch)
    self.assertEqual(targets.shape, [2, L + 1, 8])
    self.assertAllClose(targets[:, 0], tf.tile(model.empty_history_vector, [2, 1]))
    self.assertAllClose(targets[:, 1:], model.sequence_outputs(batch))

  def test_positions_count_back_from_the_most_recent_play(self):
    self.assertAllEqual(model_lib.plays_before_most_recent(tf.constant([3, 0, 4]), 4),
                        [[2, 1, 0, 0], [0, 0, 0, 0], [3, 2, 1, 0]])
    # In a history of 3 plays the oldest has position id 2: row 2 changes the output at the
    # oldest play (and, through attention, every later one).
    model = _model(HPARAMS.replace(dropout=0.0))
    batch = _two_histories()
    outputs = model.sequence_outputs(batch)
    # (Not a constant row: the input layer normalisation would remove it.)
    model.position_embedding.assign(
        model.position_embedding + tf.one_hot([2], L)[0][:, None] * tf.range(8.0)[None, :])
    changed = model.sequence_outputs(batch)
    self.assertNotAllClose(changed[0, 0], outputs[0, 0])

  def test_each_weight_starts_from_its_own_seed(self):
    model = _model()
    starts = {name: weight.numpy().ravel()[:8] for name, weight in (
        ('play_rate_vector', model.play_rate_vector), ('empty', model.empty_history_vector),
        ('position', model.position_embedding), ('intent', model.intent_embedding),
        ('item', model.item_embedding))}
    names = sorted(starts)
    for i, first in enumerate(names):
      for second in names[i + 1:]:
        self.assertNotAllClose(starts[first], starts[second], msg=(first, second))
    rebuilt = _model()
    self.assertAllClose(rebuilt.item_embedding, model.item_embedding)

  def test_feedback_features_only_with_variants_b_and_c(self):
    batch = _two_histories()
    for variant, uses_feedback in (('a', False), ('b', True), ('c', True)):
      model = _model(HPARAMS.replace(variant=variant))
      users = model(batch)
      changed = model(_with(batch, features.HISTORY_PLAY_RATE_XF, row=0, column=1, value=0.95))
      self.assertEqual(not np.allclose(users[0], changed[0]), uses_feedback, msg=variant)
      self.assertEqual(hasattr(model, 'intent_embedding'), uses_feedback, msg=variant)

  def test_dropout_only_in_training(self):
    model = _model()
    batch = _two_histories()
    self.assertAllClose(model(batch), model(batch))
    self.assertNotAllClose(model(batch, training=True), model(batch, training=True))

  def test_checkpoint_restores_into_a_fresh_model(self):
    model = _model()
    model.item_bias_table.assign(tf.random.normal([NUM_ITEMS, 1]))
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    path = tf.train.Checkpoint(model=model).write(os.path.join(directory, 'ckpt'))
    restored = model_lib.build_model(HPARAMS, NUM_ITEMS, NUM_INTENTS)
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    batch = _two_histories()
    self.assertAllClose(restored(batch), model(batch))
    self.assertAllClose(restored.all_item_bias(), model.all_item_bias())


class RepeatBonusTest(tf.test.TestCase):

  def _model_with_bonus_weights(self, hparams=HPARAMS):
    model = _model(hparams)
    bonus = model.repeat_bonus
    bonus.recency.assign([0.5, 0.25, 0.125, 0.0, 0.0, -1.0])
    bonus.context.assign(tf.reshape(tf.range(8, dtype=tf.float32) / 10.0, [8, 1]))
    if hparams.feedback_features:
      bonus.rate_weight.assign(2.0)
      bonus.intent_weight.assign([0.0, 1.0, 3.0, 0.0])
    return model

  def test_next_play_scores_add_each_history_play_weight_to_its_item(self):
    model = self._model_with_bonus_weights()
    batch = _batch(items=[[3, 7, 3, 0, 0, 0]], play_rates=[[1.0, 0.1, 0.9, 0, 0, 0]],
                   intents=[[0, 1, 2, 0, 0, 0]], lengths=[3])
    user = model(batch).numpy()[0]
    context = float(user @ (np.arange(8) / 10.0))
    # Plays 0, 1, 2 are 2, 1, 0 plays before the most recent: recency 0.125, 0.25, 0.5.
    weight = [0.125 + context + 2.0 * 1.0 + 0.0, 0.25 + context + 2.0 * 0.1 + 1.0,
              0.5 + context + 2.0 * 0.9 + 3.0]
    bias = model.all_item_bias().numpy()
    bias[3], bias[7] = -2.0, 1.5  # a rare song and a hit
    model.item_bias_table.assign(bias[:, np.newaxis])
    plain = user @ model.all_item_vectors().numpy().T + bias
    expected = plain.copy()
    # A new pick (exp(user . item + bias)) or a return to one of the item's plays (exp(w)).
    expected[3] = np.log(np.exp(plain[3]) + np.exp(weight[0]) + np.exp(weight[2]))
    expected[7] = np.log(np.exp(plain[7]) + np.exp(weight[1]))
    self.assertAllClose(model.scores(batch)[0], expected, atol=1e-5)

  def test_variant_a_bonus_has_no_feedback_weights(self):
    hparams = HPARAMS.replace(variant='a')
    model = self._model_with_bonus_weights(hparams)
    self.assertFalse(hasattr(model.repeat_bonus, 'rate_weight'))
    batch = _batch(items=[[4, 4, 0, 0, 0, 0]], play_rates=[[1.0, 0.1, 0, 0, 0, 0]],
                   intents=[[0, 2, 0, 0, 0, 0]], lengths=[2])
    user = model(batch).numpy()[0]
    context = float(user @ (np.arange(8) / 10.0))
    plain = user @ model.all_item_vectors().numpy().T + model.all_item_bias().numpy()
    self.assertAllClose(model.scores(batch)[0, 4],
                        np.log(np.exp(plain[4]) + np.exp(0.25 + context) + np.exp(0.5 + context)),
                        atol=1e-5)

  def test_affinity_weighs_a_return_by_how_the_song_suits_the_moment(self):
    model = self._model_with_bonus_weights(HPARAMS.replace(variant='a'))
    model.repeat_bonus.affinity.assign(0.5 * np.eye(8))
    batch = _batch(items=[[4, 0, 0, 0, 0, 0]], play_rates=[[1.0, 0, 0, 0, 0, 0]],
                   intents=[[0] * 6], lengths=[1])
    user = model(batch).numpy()[0]
    vectors = model.all_item_vectors().numpy()
    context = float(user @ (np.arange(8) / 10.0))
    weight = 0.5 + context + 0.5 * float(user @ vectors[4])
    plain = user @ vectors[4] + model.all_item_bias().numpy()[4]
    self.assertAllClose(model.scores(batch)[0, 4], np.logaddexp(plain, weight), atol=1e-5)

  def test_oov_and_padding_add_nothing_to_scores_without_their_column(self):
    model = self._model_with_bonus_weights()
    batch = _batch(items=[[NUM_ITEMS - 1, 2, 0, 0, 0, 0]], play_rates=[[1.0, 1.0, 0, 0, 0, 0]],
                   intents=[[0, 0, 0, 0, 0, 0]], lengths=[2])
    user = model(batch)
    plain = tf.zeros([1, NUM_ITEMS - 1])  # the OOV id's column left out, as serving does
    scored = model.history_scores(batch, user, plain).numpy()[0]
    self.assertEqual(np.count_nonzero(scored), 1)  # item 2 only; padding item 0 gets nothing
    self.assertNotEqual(scored[2], 0.0)

  def test_sequence_weights_are_causal_and_count_plays_between(self):
    model = self._model_with_bonus_weights(HPARAMS.replace(variant='a'))
    batch = _batch(items=[[3, 7, 3, 0, 0, 0]], play_rates=[[1.0] * 3 + [0] * 3],
                   intents=[[0] * 6], lengths=[3])
    users = tf.zeros([1, L + 1, 8])  # no context or affinity term: recency alone
    weights = model.repeat_bonus.sequence_weights(
        batch, users, model.history_item_vectors(batch)).numpy()[0]  # [L + 1, L]
    recency = [0.5, 0.25, 0.125, 0.0, 0.0, -1.0]
    for q in range(L + 1):
      for j in range(L):
        expected = recency[q - 1 - j] if j < min(q, 3) else model_lib.NO_REPEAT
        self.assertAllClose(weights[q, j], expected, msg=f'play {q}, history play {j}')

  def test_replays_weigh_each_play_by_how_often_its_song_was_seen(self):
    model = self._model_with_bonus_weights(HPARAMS.replace(variant='a'))
    model.repeat_bonus.replays.assign([0.0, 1.5, 4.0, 0.0, 0.0])  # seen once, twice, three times
    batch = _batch(items=[[3, 7, 3, 3, 0, 0]], play_rates=[[1.0] * 4 + [0] * 2],
                   intents=[[0] * 6], lengths=[4])
    users = tf.zeros([1, L + 1, 8])  # no context or affinity term: recency and replays alone
    weights = model.repeat_bonus.sequence_weights(
        batch, users, model.history_item_vectors(batch)).numpy()[0]  # [L + 1, L]
    recency = [0.5, 0.25, 0.125, 0.0, 0.0, -1.0]
    # Play q sees plays 0..q-1: song 3 is seen once before play 2, twice before play 3 and three
    # times after; song 7 once.
    replays = {1: [0.0], 2: [0.0, 0.0], 3: [1.5, 0.0, 1.5], 4: [4.0, 0.0, 4.0, 4.0],
               5: [4.0, 0.0, 4.0, 4.0], 6: [4.0, 0.0, 4.0, 4.0]}
    for q in range(L + 1):
      for j in range(L):
        expected = (recency[q - 1 - j] + replays[q][j] if j < min(q, 4)
                    else model_lib.NO_REPEAT)
        self.assertAllClose(weights[q, j], expected, msg=f'play {q}, history play {j}')
    self.assertAllClose(
        model_lib.replays_seen(tf.constant([[5, 6, 5, 0]]),
                               tf.constant([[[True, True, True, False]]])), [[[2, 1, 2, 0]]])

  def test_repeat_log_mass_sums_exp_weights_of_equal_items(self):
    weights = tf.constant([[[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]]])  # [1, 2, 3]
    history = tf.constant([[5, 6, 5]], tf.int64)
    none = model_lib.NO_REPEAT
    shared = model_lib.repeat_log_mass(weights, history, tf.constant([5, 6, 9], tf.int64))
    self.assertAllClose(shared, [[[np.logaddexp(1.0, 4.0), 2.0, none],
                                  [np.logaddexp(8.0, 32.0), 16.0, none]]])
    per_query = model_lib.repeat_log_mass(weights, history, tf.constant([[[6], [5]]], tf.int64))
    self.assertAllClose(per_query, [[[2.0], [np.logaddexp(8.0, 32.0)]]])

  def test_plays_that_do_not_count_add_no_mass(self):
    weights = tf.constant([[[1.0, model_lib.NO_REPEAT, model_lib.NO_REPEAT]]])
    history = tf.constant([[5, 6, 5]], tf.int64)
    got = model_lib.repeat_log_mass(weights, history, tf.constant([5, 6], tf.int64))
    self.assertAllClose(got, [[[1.0, model_lib.NO_REPEAT]]])

  def test_repeat_offsets_mix_a_new_pick_and_a_return(self):
    # log repeat masses, and base logits (user . item + bias)
    got = model_lib.repeat_offsets(tf.constant([0.0, 3.0, model_lib.NO_REPEAT]),
                                   tf.constant([0.0, -4.0, 2.0]))
    self.assertAllClose(got, [np.log(2.0), np.log(np.exp(-4.0) + np.exp(3.0)) + 4.0, 0.0])


if __name__ == '__main__':
  tf.test.main()
