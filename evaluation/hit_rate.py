"""POS@N and NEG@N from exact target ranks: the one implementation behind TFMA and the benchmarks.

A target's rank is its 0-based position when the model orders the *whole* item vocabulary by
score (0 = best); an out-of-vocabulary target has rank V and so is never a hit.

  POS@N = fraction of positive targets (LABEL_POSITIVE) with rank < N; higher is better.
  NEG@N = fraction of negative targets (LABEL_NEGATIVE) with rank < N; lower is better.

Targets labelled LABEL_NEITHER are in neither fraction.
"""

import dataclasses
import math
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from contract import features
from contract import settings

_KNOWN_LABELS = (features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER)


def pos_metric_name(n: int) -> str:
  return f'pos_at_{n}'


def neg_metric_name(n: int) -> str:
  return f'neg_at_{n}'


@dataclasses.dataclass
class HitCounts:
  """Additive counts from which POS@N and NEG@N follow; what a Beam combiner accumulates.

  pos_hits[i] / neg_hits[i] count positive / negative targets ranked below ns[i].
  """
  ns: Tuple[int, ...]
  num_positive: int = 0
  num_negative: int = 0
  pos_hits: np.ndarray = None
  neg_hits: np.ndarray = None

  def __post_init__(self):
    self.ns = check_ns(self.ns)
    if self.pos_hits is None:
      self.pos_hits = np.zeros(len(self.ns), np.int64)
    if self.neg_hits is None:
      self.neg_hits = np.zeros(len(self.ns), np.int64)

  def merged(self, other: 'HitCounts') -> 'HitCounts':
    if other.ns != self.ns:
      raise ValueError(f'cannot merge hit counts for N={other.ns} into N={self.ns}')
    return HitCounts(self.ns, self.num_positive + other.num_positive,
                     self.num_negative + other.num_negative,
                     self.pos_hits + other.pos_hits, self.neg_hits + other.neg_hits)

  def pos_rate(self, n: int) -> float:
    return _fraction(self.pos_hits[self.ns.index(n)], self.num_positive)

  def neg_rate(self, n: int) -> float:
    return _fraction(self.neg_hits[self.ns.index(n)], self.num_negative)

  def rates(self) -> Dict[str, float]:
    """{'pos_at_N': POS@N, 'neg_at_N': NEG@N} for every N; NaN when there are no such targets."""
    result = {}
    for n in self.ns:
      result[pos_metric_name(n)] = self.pos_rate(n)
      result[neg_metric_name(n)] = self.neg_rate(n)
    return result


def check_ns(ns: Iterable[int]) -> Tuple[int, ...]:
  """The cut-offs as a sorted tuple of distinct positive ints; raises naming a bad one."""
  checked = []
  for n in ns:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f'N must be a positive integer, got {n!r} in {list(ns)!r}')
    checked.append(int(n))
  if not checked:
    raise ValueError('at least one N is needed')
  return tuple(sorted(set(checked)))


def hit_counts(target_ranks, labels, ns: Sequence[int] = settings.METRIC_NS) -> HitCounts:
  """Counts of positive and negative targets and of those ranked within each N."""
  ranks = np.asarray(target_ranks).reshape(-1)
  label_values = np.asarray(labels).reshape(-1)
  if ranks.shape != label_values.shape:
    raise ValueError(f'{ranks.size} target ranks but {label_values.size} labels; '
                     'each target needs exactly one rank and one label')
  if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
    raise ValueError(f'target ranks must be integers, got dtype {ranks.dtype}')
  if ranks.size and ranks.min() < 0:
    raise ValueError(f'target ranks must be >= 0, got {ranks.min()} at index {int(ranks.argmin())}')
  unknown = ~np.isin(label_values, _KNOWN_LABELS)
  if unknown.any():
    index = int(np.flatnonzero(unknown)[0])
    raise ValueError(f'label {label_values[index]!r} at index {index} is none of {_KNOWN_LABELS}')
  checked_ns = check_ns(ns)
  cut_offs = np.asarray(checked_ns)[:, None]
  positive = label_values == features.LABEL_POSITIVE
  negative = label_values == features.LABEL_NEGATIVE
  return HitCounts(
      checked_ns,
      num_positive=int(positive.sum()),
      num_negative=int(negative.sum()),
      pos_hits=(ranks[positive][None, :] < cut_offs).sum(axis=1),
      neg_hits=(ranks[negative][None, :] < cut_offs).sum(axis=1))


def hit_rates(target_ranks, labels, ns: Sequence[int] = settings.METRIC_NS) -> Dict[str, float]:
  """{'pos_at_N': POS@N, 'neg_at_N': NEG@N} for each N in ns (NaN where a label has no targets)."""
  return hit_counts(target_ranks, labels, ns).rates()


@dataclasses.dataclass
class PairedHits:
  """Hits at one N of two rankers on the same targets of one label: a paired comparison.

  first_only / second_only count the targets only the first / only the second ranks below N;
  both counts those both do. Each target gives d = hit(first) - hit(second) in {-1, 0, 1}, so the
  difference of the two hit rates is mean(d), and its standard error sqrt(var(d) / n) counts
  only the targets on which the rankers disagree: two similar models have a small one even on
  a small eval set, where two independent samples' errors would add up.
  """
  num_targets: int = 0
  both: int = 0
  first_only: int = 0
  second_only: int = 0

  def merged(self, other: 'PairedHits') -> 'PairedHits':
    return PairedHits(self.num_targets + other.num_targets, self.both + other.both,
                      self.first_only + other.first_only, self.second_only + other.second_only)

  def first_rate(self) -> float:
    return _fraction(self.both + self.first_only, self.num_targets)

  def second_rate(self) -> float:
    return _fraction(self.both + self.second_only, self.num_targets)

  def difference(self) -> float:
    """first's hit rate minus second's (0 without targets)."""
    return (self.first_only - self.second_only) / self.num_targets if self.num_targets else 0.0

  def difference_standard_error(self) -> float:
    """The standard error of difference() (0 without targets)."""
    if not self.num_targets:
      return 0.0
    mean_square = (self.first_only + self.second_only) / self.num_targets
    return math.sqrt(max(mean_square - self.difference() ** 2, 0.0) / self.num_targets)


def paired_hits(first_ranks, second_ranks, labels, label: int, n: int) -> PairedHits:
  """PairedHits of two rankers' target ranks at cut-off n, over the targets with this label."""
  first = np.asarray(first_ranks).reshape(-1)
  second = np.asarray(second_ranks).reshape(-1)
  label_values = np.asarray(labels).reshape(-1)
  if not first.shape == second.shape == label_values.shape:
    raise ValueError(f'{first.size} and {second.size} target ranks but {label_values.size} '
                     'labels; both rankers need a rank for every target')
  selected = label_values == label
  first_hit, second_hit = first[selected] < n, second[selected] < n
  return PairedHits(int(selected.sum()), int((first_hit & second_hit).sum()),
                    int((first_hit & ~second_hit).sum()), int((~first_hit & second_hit).sum()))


def _fraction(hits, total) -> float:
  return float(hits) / total if total else float('nan')
