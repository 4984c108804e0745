"""Non-learned recall baselines with exact target ranks over the whole item vocabulary.

Items are model ids 0..V-1 of Transform's item vocabulary, which is ordered by descending training
play count, so an id *is* its popularity rank; V is the out-of-vocabulary id. Like the learned
model's target-rank signature, each ranker returns for each target its 0-based rank among all V
items (OOV targets get V), so evaluation.hit_rate turns them into POS@N and NEG@N the same way.

  most popular      every user gets the vocabulary in popularity order.
  co-occurrence     items ordered by how often they followed the history's last item as a
                    positive play in training, ties (including all never-seen pairs) broken by
                    popularity; an empty or OOV history falls back to most popular.
  repeat            the user's own history: the items the history played through (label
                    positive) by how often, ties by the most recent, then every other item by
                    popularity. Listening is repetitive, so this per-user popularity is the
                    baseline a music recall model must beat besides the global one.
"""

from typing import Sequence

import numpy as np


def popularity_ranks(target_ids, vocabulary_size: int) -> np.ndarray:
  """Exact rank of each target when items are ordered by popularity: the id itself."""
  targets = _check_ids('target_ids', target_ids, vocabulary_size)
  return np.minimum(targets, vocabulary_size)


class CooccurrenceRanker:
  """Ranks items by count(previous item -> item), then popularity."""

  def __init__(self, vocabulary_size: int, previous_ids, next_ids):
    """Counts the (previous, next) pairs; OOV ids on either side are not counted.

    Args:
      vocabulary_size: V; ids in [0, V) are items, V is OOV.
      previous_ids: the last history item of each training example whose target was played well.
      next_ids: that example's target item.
    """
    if vocabulary_size < 1:
      raise ValueError(f'vocabulary_size must be >= 1, got {vocabulary_size}')
    previous = _check_ids('previous_ids', previous_ids, vocabulary_size)
    following = _check_ids('next_ids', next_ids, vocabulary_size)
    if previous.shape != following.shape:
      raise ValueError(f'{previous.size} previous ids but {following.size} next ids')
    known = (previous < vocabulary_size) & (following < vocabulary_size)
    self._size = vocabulary_size
    # Pairs as sorted keys previous * V + next: a previous item's row is a contiguous run.
    self._keys, self._counts = np.unique(previous[known] * vocabulary_size + following[known],
                                         return_counts=True)

  def row(self, previous_id: int):
    """(next ids ascending, counts) of the pairs starting at previous_id."""
    if not 0 <= previous_id < self._size:
      return np.empty(0, np.int64), np.empty(0, np.int64)
    start, end = np.searchsorted(self._keys, [previous_id * self._size,
                                              (previous_id + 1) * self._size])
    return self._keys[start:end] - previous_id * self._size, self._counts[start:end]

  def top_items(self, previous_id: int, k: int) -> np.ndarray:
    """The k first ids of this ranking for previous_id: the items seen after it, most often
    first (ties: more popular first), then the rest by popularity."""
    items, counts = self.row(previous_id)
    followed = items[np.lexsort((items, -counts))][:k]
    return np.concatenate([followed, _by_popularity_without(followed, k - followed.size,
                                                            self._size)])

  def ranks(self, previous_ids, target_ids) -> np.ndarray:
    """Exact rank of each target among all V items for its previous item (OOV target: V)."""
    previous = _check_ids('previous_ids', previous_ids, self._size)
    targets = _check_ids('target_ids', target_ids, self._size)
    if previous.shape != targets.shape:
      raise ValueError(f'{previous.size} previous ids but {targets.size} target ids')
    ranks = np.empty(targets.shape, np.int64)
    for i, (p, t) in enumerate(zip(previous.tolist(), targets.tolist())):
      ranks[i] = self._rank(p, t)
    return ranks

  def _rank(self, previous_id: int, target_id: int) -> int:
    if target_id >= self._size:
      return self._size
    items, counts = self.row(previous_id)
    position = np.searchsorted(items, target_id)
    if position < items.size and items[position] == target_id:
      count = counts[position]
      # Items seen more often after previous_id, then equally often but more popular.
      return int(np.sum(counts > count) + np.sum((counts == count) & (items < target_id)))
    # Unseen pair: behind every seen item, then by popularity among the unseen ones.
    return int(items.size + target_id - position)


def repeat_ranks(history_ids: Sequence, history_played: Sequence, target_ids,
                 vocabulary_size: int) -> np.ndarray:
  """Exact rank of each target under the repeat baseline of its own history (OOV target: V).

  Args:
    history_ids: B histories, each a sequence of item ids (oldest first; V for OOV plays, which
      are not items and never ranked).
    history_played: B sequences of the same lengths, True where the play was played through
      (label positive).
    target_ids: [B] the targets' item ids.
    vocabulary_size: V.

  Returns:
    [B] int64: the number of items ahead of the target. Played-through history items come first,
    the one played most often first and, among equally often played ones, the one played last;
    then the rest of the vocabulary in popularity (id) order.
  """
  targets = _check_ids('target_ids', target_ids, vocabulary_size)
  if not len(history_ids) == len(history_played) == targets.size:
    raise ValueError(f'{len(history_ids)} histories, {len(history_played)} played flags and '
                     f'{targets.size} targets: each target needs one history')
  ranks = np.empty(targets.shape, np.int64)
  for i, (history, played, target) in enumerate(zip(history_ids, history_played,
                                                      targets.tolist())):
    ranks[i] = _repeat_rank(_repeated_items(i, history, played, vocabulary_size), target,
                            vocabulary_size)
  return ranks


def repeat_top_items(history, played, k: int, vocabulary_size: int) -> np.ndarray:
  """The k first ids of the repeat baseline's ranking of one history (the order repeat_ranks
  counts): its played-through items by how often, ties by the most recent, then the rest of
  the vocabulary by popularity."""
  items, counts, last = _repeated_items(0, history, played, vocabulary_size)
  repeated = items[np.lexsort((-last, -counts))][:k]
  return np.concatenate([repeated, _by_popularity_without(repeated, k - repeated.size,
                                                          vocabulary_size)])


def _by_popularity_without(taken: np.ndarray, k: int, vocabulary_size: int) -> np.ndarray:
  """The k most popular ids (lowest first) not in taken."""
  candidates = np.arange(min(vocabulary_size, max(k, 0) + taken.size), dtype=np.int64)
  return candidates[~np.isin(candidates, taken)][:max(k, 0)]


def _repeated_items(index: int, history, played, vocabulary_size: int):
  """(items ascending, play counts, last position) of one history's played-through items."""
  items = _check_ids(f'history_ids[{index}]', history, vocabulary_size)
  played = np.asarray(played, bool).reshape(-1)
  if played.shape != items.shape:
    raise ValueError(f'history {index}: {items.size} item ids but {played.size} played flags')
  kept = items[played & (items < vocabulary_size)]
  repeated, counts = np.unique(kept, return_counts=True)
  # np.unique of the reversed history finds each item's last play first.
  _, from_end = np.unique(kept[::-1], return_index=True)
  return repeated, counts, kept.size - 1 - from_end


def _repeat_rank(repeated, target_id: int, vocabulary_size: int) -> int:
  if target_id >= vocabulary_size:
    return vocabulary_size
  items, counts, last = repeated
  position = np.searchsorted(items, target_id)
  if position < items.size and items[position] == target_id:
    count, latest = counts[position], last[position]
    return int(np.sum(counts > count) + np.sum((counts == count) & (last > latest)))
  # Not played through: behind every repeated item, then by popularity among the others.
  return int(items.size + target_id - position)


def _check_ids(name: str, ids, vocabulary_size: int) -> np.ndarray:
  values = np.asarray(ids).reshape(-1)
  if values.size and not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f'{name} must be integer item ids, got dtype {values.dtype}')
  values = values.astype(np.int64)
  bad = (values < 0) | (values > vocabulary_size)
  if bad.any():
    index = int(np.flatnonzero(bad)[0])
    raise ValueError(f'{name}[{index}] = {values[index]} is outside [0, {vocabulary_size}] '
                     f'(V = {vocabulary_size} is the OOV id)')
  return values
