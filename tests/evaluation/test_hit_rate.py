"""POS@N and NEG@N on hand-made ranks."""

import numpy as np
import pytest

from contract import features
from evaluation import hit_rate

POS, NEG, NEITHER = features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER


def test_rates_count_ranks_strictly_below_n_per_label():
  ranks = [0, 9, 10, 49, 99, 100, 5, 60, 3]
  labels = [POS, POS, POS, POS, POS, POS, NEG, NEG, NEITHER]
  rates = hit_rate.hit_rates(ranks, labels, ns=(10, 50, 100))
  # Positives ranked 0, 9 | 10, 49 | 99 | 100: rank N itself is outside the top N.
  assert rates['pos_at_10'] == pytest.approx(2 / 6)
  assert rates['pos_at_50'] == pytest.approx(4 / 6)
  assert rates['pos_at_100'] == pytest.approx(5 / 6)
  assert rates['neg_at_10'] == pytest.approx(1 / 2)
  assert rates['neg_at_50'] == pytest.approx(1 / 2)
  assert rates['neg_at_100'] == pytest.approx(2 / 2)


def test_neither_labels_change_nothing():
  ranks, labels = np.array([1, 20, 3]), np.array([POS, NEG, POS])
  with_neither = hit_rate.hit_rates(np.append(ranks, [0, 0]), np.append(labels, [NEITHER] * 2))
  assert with_neither == hit_rate.hit_rates(ranks, labels)


def test_missing_label_gives_nan_not_zero():
  rates = hit_rate.hit_rates([0, 1], [POS, POS], ns=(10,))
  assert rates['pos_at_10'] == 1.0
  assert np.isnan(rates['neg_at_10'])


def test_counts_merge_to_the_counts_of_the_whole():
  rng = np.random.default_rng(0)
  ranks = rng.integers(0, 300, size=500)
  labels = rng.choice([POS, NEG, NEITHER], size=500)
  merged = hit_rate.hit_counts(ranks[:123], labels[:123]).merged(
      hit_rate.hit_counts(ranks[123:], labels[123:]))
  assert merged.rates() == hit_rate.hit_rates(ranks, labels)


@pytest.mark.parametrize('ranks, labels, message', [
    ([1, 2], [POS], '2 target ranks but 1 labels'),
    ([1, -1], [POS, NEG], 'must be >= 0'),
    ([1.5], [POS], 'must be integers'),
    ([1, 2], [POS, 2], 'label 2 at index 1'),
])
def test_bad_input_is_named(ranks, labels, message):
  with pytest.raises(ValueError, match=message):
    hit_rate.hit_rates(ranks, labels)


@pytest.mark.parametrize('ns', [(0,), (10, -5), (2.5,), ()])
def test_bad_n_is_rejected(ns):
  with pytest.raises(ValueError, match='N'):
    hit_rate.hit_rates([0], [POS], ns=ns)


def test_paired_hits_count_agreement_and_disagreement_by_hand():
  P, N = features.LABEL_POSITIVE, features.LABEL_NEGATIVE
  first = [0, 5, 20, 1, 30, 2]
  second = [3, 40, 1, 25, 2, 0]
  labels = [P, P, P, P, N, P]
  # At N=10 over the five positives: both hit targets 0 and 5; only the first target 1 and 3;
  # only the second target 2.
  hits = hit_rate.paired_hits(first, second, labels, P, 10)
  assert hits == hit_rate.PairedHits(num_targets=5, both=2, first_only=2, second_only=1)
  assert hits.first_rate() == pytest.approx(4 / 5) and hits.second_rate() == pytest.approx(3 / 5)
  # d = [0, 1, -1, 1, 0]: mean 0.2, mean square 0.6, variance 0.56, standard error sqrt(0.56 / 5).
  assert hits.difference() == pytest.approx(0.2)
  assert hits.difference_standard_error() == pytest.approx(np.sqrt(0.56 / 5))
  halves = hit_rate.paired_hits(first[:3], second[:3], labels[:3], P, 10).merged(
      hit_rate.paired_hits(first[3:], second[3:], labels[3:], P, 10))
  assert halves == hits


def test_identical_rankers_differ_by_nothing_with_no_error():
  hits = hit_rate.paired_hits([1, 50, 3], [1, 50, 3], [1, 1, 0], features.LABEL_POSITIVE, 10)
  assert hits.difference() == 0 and hits.difference_standard_error() == 0
  assert hit_rate.PairedHits().difference_standard_error() == 0  # no targets at all
