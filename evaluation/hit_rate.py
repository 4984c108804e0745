"""POS@N and NEG@N from exact target ranks: the one implementation behind TFMA and the benchmarks.

A target's rank is its 0-based position when the model orders the *whole* item vocabulary by
score (0 = best); an out-of-vocabulary target has rank V and so is never a hit.

  POS@N = fraction of positive targets (LABEL_POSITIVE) with rank < N; higher is better.
  NEG@N = fraction of negative targets (LABEL_NEGATIVE) with rank < N; lower is better.

Targets labelled LABEL_NEITHER are in neither fraction.
"""

import dataclasses
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


def _fraction(hits, total) -> float:
  return float(hits) / total if total else float('nan')
