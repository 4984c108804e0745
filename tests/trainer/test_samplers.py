"""Checks each sampler's draws and expected counts against its stated probabilities."""

import numpy as np
import tensorflow as tf

from trainer import samplers

NUM_ITEMS = 12
# Vocabulary counts of NUM_ITEMS - 1 items; the OOV bucket comes last.
COUNTS = np.array([40., 25., 12., 9., 6., 3., 2., 1., 1., 1., 1.])


class SamplersTest(tf.test.TestCase):

  def test_draw_frequencies_match_probabilities(self):
    for name in ('log_uniform', 'uniform', 'mixed', 'fixed_unigram', 'learned_unigram'):
      with self.subTest(name):
        draws = 40000
        sample = samplers.make_sampler(name, NUM_ITEMS, COUNTS, num_sampled=draws, seed=3,
                                       unique=False)
        sampled_ids, _, sampled_expected_count = sample(tf.constant([0], tf.int64))
        frequencies = np.bincount(sampled_ids.numpy(), minlength=NUM_ITEMS) / draws
        # learned_unigram has seen no true ids yet when it draws.
        seen = None if name == 'learned_unigram' else COUNTS
        probabilities = samplers.sampling_probabilities(name, NUM_ITEMS, seen)
        self.assertAllClose(frequencies, probabilities, atol=0.01)
        # Without unique sampling the expected count is exactly draws x probability.
        self.assertAllClose(sampled_expected_count.numpy(), draws * probabilities[sampled_ids.numpy()],
                            rtol=1e-4)

  def test_unique_expected_counts_match_inclusion_frequencies(self):
    # The reported expected counts approximate the inclusion probabilities of unique sampling.
    # The approximation overstates them for ids drawn often (a batch that drew a popular id
    # repeatedly needed more draws, which the formula credits to every id), so the comparison is
    # over the ids whose expected count is small.
    num_items, num_sampled = 200, 10
    counts = 1000.0 / np.arange(1, num_items)
    all_ids = tf.range(num_items, dtype=tf.int64)
    for name in ('log_uniform', 'uniform', 'fixed_unigram'):
      with self.subTest(name):
        sample = samplers.make_sampler(name, num_items, counts, num_sampled=num_sampled, seed=5)
        probabilities = samplers.sampling_probabilities(name, num_items, counts)
        inclusions = np.zeros(num_items)
        expected = np.zeros(num_items)
        calls = 1500
        for _ in range(calls):
          sampled_ids, true_expected_count, _ = sample(all_ids)
          ids = sampled_ids.numpy()
          self.assertLen(set(ids), num_sampled)
          inclusions[ids] += 1
          true_expected_count = true_expected_count.numpy().ravel()
          expected += true_expected_count
          # One number of draws explains every id's expected count: the sampler uses these
          # probabilities.
          num_tries = _num_tries(true_expected_count[-1], probabilities[-1], num_sampled)
          self.assertAllClose(
              true_expected_count, samplers.expected_count(probabilities, num_tries, num_sampled),
              rtol=1e-3)
        rare = expected / calls < 0.3
        self.assertGreater(rare.sum(), 150)
        self.assertAllClose(inclusions[rare] / calls, expected[rare] / calls, atol=0.03)

  def test_mixed_expected_counts_add_the_two_halves(self):
    # Without unique sampling a half of n draws expects n x p of each id: the candidates'
    # counts are 5 x p_log(id) + 5 / 200, whichever half drew them.
    num_items, num_sampled = 200, 10
    sample = samplers.make_sampler('mixed', num_items, num_sampled=num_sampled, seed=5,
                                   unique=False)
    true_ids = np.array([0, 7, 150])
    sampled_ids, true_expected_count, sampled_expected_count = sample(tf.constant(true_ids))
    log_p = samplers.sampling_probabilities('log_uniform', num_items)
    self.assertAllClose(true_expected_count.numpy().ravel(), 5 * log_p[true_ids] + 5 / 200)
    ids = sampled_ids.numpy()
    self.assertLen(ids, num_sampled)
    self.assertAllClose(sampled_expected_count.numpy(), 5 * log_p[ids] + 5 / 200)
    # The halves are drawn independently: the uniform half is not the log-uniform half's
    # random numbers turned into ids another way.
    self.assertNotAllEqual(np.argsort(ids[:5]), np.argsort(ids[5:]))
    with self.assertRaisesRegex(ValueError, 'num_sampled=1: the mixed sampler'):
      samplers.make_sampler('mixed', num_items, num_sampled=1)

  def test_learned_unigram_learns_true_ids_and_starts_uniform(self):
    sample = samplers.make_sampler('learned_unigram', NUM_ITEMS, num_sampled=2, seed=1, unique=False)
    seen = np.zeros(NUM_ITEMS)
    for true_ids in ([0, 0, 1], [0, 3], [5, 0, 0, 0]):
      _, true_expected_count, _ = sample(tf.constant(true_ids, tf.int64))
      probabilities = samplers.sampling_probabilities('learned_unigram', NUM_ITEMS, seen)
      self.assertAllClose(true_expected_count.numpy().ravel(), 2 * probabilities[true_ids])
      np.add.at(seen, true_ids, 1)

  def test_fixed_unigram_needs_counts_of_the_vocabulary(self):
    with self.assertRaisesRegex(ValueError, 'needs unigram_counts'):
      samplers.make_sampler('fixed_unigram', NUM_ITEMS, num_sampled=2)
    with self.assertRaisesRegex(ValueError, '3 unigram counts for 12 ids'):
      samplers.make_sampler('fixed_unigram', NUM_ITEMS, [1., 2., 3.], num_sampled=2)

  def test_rejects_unknown_sampler_and_too_many_samples(self):
    with self.assertRaisesRegex(ValueError, "unknown sampler 'zipf'"):
      samplers.make_sampler('zipf', NUM_ITEMS, num_sampled=2)
    with self.assertRaisesRegex(ValueError, 'cannot draw that many distinct ids'):
      samplers.make_sampler('uniform', NUM_ITEMS, num_sampled=NUM_ITEMS + 1)


def _num_tries(reported_expected_count, probability, num_sampled):
  if np.isclose(reported_expected_count, probability * num_sampled, rtol=1e-5):
    return num_sampled
  return int(round(np.log1p(-reported_expected_count) / np.log1p(-probability)))


if __name__ == '__main__':
  tf.test.main()
