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


# A history of V = 10 items, oldest first: 3 played through three times, 5 twice, 7 once; 2 was
# skipped (not played through) and the OOV id 10 is no item.
HISTORY = [3, 5, 3, 2, 7, 10, 5, 3]
PLAYED = [True, True, True, False, True, True, True, True]


def test_repeat_ranks_by_hand():
  # Order: 3, 5, 7 (by play count), then 0, 1, 2, 4, 6, 8, 9 by popularity; OOV target: V.
  targets = [3, 5, 7, 0, 2, 4, 9, 10]
  ranks = baselines.repeat_ranks([HISTORY] * len(targets), [PLAYED] * len(targets), targets, 10)
  np.testing.assert_array_equal(ranks, [0, 1, 2, 3, 5, 6, 9, 10])


def test_repeat_ties_go_to_the_most_recent_play():
  # 4 and 1 are played twice each, 1 last: order 1, 4, then 0, 2, 3, 5, 6, ... (6 was skipped).
  history, played = [4, 1, 4, 6, 1], [True, True, True, False, True]
  ranks = baselines.repeat_ranks([history] * 5, [played] * 5, [1, 4, 0, 2, 6], 10)
  np.testing.assert_array_equal(ranks, [0, 1, 2, 3, 6])


def test_repeat_without_played_history_is_most_popular():
  ranks = baselines.repeat_ranks([[], [4, 2]], [[], [False, False]], [6, 6], 10)
  np.testing.assert_array_equal(ranks, [6, 6])


def test_repeat_ranks_match_brute_force():
  rng = np.random.default_rng(8)
  histories = [rng.integers(0, V + 1, size=int(rng.integers(0, 30))) for _ in range(200)]
  played = [rng.random(h.size) < 0.6 for h in histories]
  targets = rng.integers(0, V + 1, size=200)
  expected = []
  for history, kept, target in zip(histories, played, targets):
    # count * (L + 1) + last position + 1: more plays first, then the later last play.
    scores = np.zeros(V)
    for position, item in enumerate(history):
      if kept[position] and item < V:
        scores[item] = np.sum((history == item) & kept) * (len(history) + 1) + position + 1
    expected.append(_brute_force_rank(scores, target))
  np.testing.assert_array_equal(baselines.repeat_ranks(histories, played, targets, V), expected)


def test_repeat_bad_input_is_named():
  with pytest.raises(ValueError, match='2 histories, 2 played flags and 1 targets'):
    baselines.repeat_ranks([[1], [2]], [[True], [True]], [1], V)
  with pytest.raises(ValueError, match='history 0: 2 item ids but 1 played flags'):
    baselines.repeat_ranks([[1, 2]], [[True]], [1], V)
  with pytest.raises(ValueError, match=r'history_ids\[0\]\[1\] = 41 is outside'):
    baselines.repeat_ranks([[1, V + 1]], [[True, True]], [1], V)
