"""Non-learned baselines: exact ranks equal a brute-force ordering of the whole vocabulary."""

import numpy as np
import pytest

from evaluation import baselines

V = 40


def _brute_force_rank(scores_by_item, target):
  """Rank of target when items sort by score descending, then by id (popularity) ascending."""
  if target >= V:
    return V
  order = sorted(range(V), key=lambda item: (-scores_by_item[item], item))
  return order.index(target)


def test_popularity_rank_is_the_vocabulary_position():
  np.testing.assert_array_equal(baselines.popularity_ranks([0, 7, V - 1, V], V), [0, 7, V - 1, V])


def test_cooccurrence_ranks_match_brute_force():
  rng = np.random.default_rng(3)
  previous = rng.integers(0, V + 1, size=600)  # includes OOV previous items
  following = np.minimum(rng.zipf(1.6, size=600) - 1, V)  # skewed, includes OOV next items
  ranker = baselines.CooccurrenceRanker(V, previous, following)
  counts = np.zeros((V, V))
  for p, n in zip(previous, following):
    if p < V and n < V:
      counts[p, n] += 1
  query_previous = rng.integers(0, V + 1, size=300)
  query_targets = rng.integers(0, V + 1, size=300)
  expected = [_brute_force_rank(counts[p] if p < V else np.zeros(V), t)
              for p, t in zip(query_previous, query_targets)]
  np.testing.assert_array_equal(ranker.ranks(query_previous, query_targets), expected)


def test_cooccurrence_ranks_are_a_permutation_for_each_previous_item():
  rng = np.random.default_rng(4)
  ranker = baselines.CooccurrenceRanker(V, rng.integers(0, V, 300), rng.integers(0, V, 300))
  for previous in (0, 5, V):
    ranks = ranker.ranks(np.full(V, previous), np.arange(V))
    assert sorted(ranks) == list(range(V))


@pytest.mark.parametrize('previous, following, message', [
    ([1, 2], [1], '2 previous ids but 1 next ids'),
    ([1, V + 1], [1, 2], r'previous_ids\[1\] = 41 is outside'),
    ([1.0], [1], 'must be integer item ids'),
])
def test_bad_ids_are_named(previous, following, message):
  with pytest.raises(ValueError, match=message):
    baselines.CooccurrenceRanker(V, previous, following)
