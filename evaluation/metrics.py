"""POS@N and NEG@N as TFMA custom metrics, computed with evaluation.hit_rate.

The model's prediction is the exact rank of the target item among the whole vocabulary (the
TARGET_RANK output of the TARGET_RANK_SIGNATURE) and the label is features.LABEL. Configure them
in an EvalConfig as, e.g.,

  tfma.MetricConfig(class_name='PosAtN', module='evaluation.metrics', config='{"top_n": 50}')

which yields a metric named 'pos_at_50' (NegAtN gives 'neg_at_50').

The gate's comparisons are metrics of the candidate too, computed from two rankings of the same
targets (evaluation.hit_rate.PairedHits):
  popularity_pos_at_N, popularity_neg_at_N   most-popular's POS@N / NEG@N: the POPULARITY_RANK
      output (the target's rank by training plays) counted like the model's own rank;
  repeat_pos_at_N, repeat_neg_at_N           the repeat baseline's (the user's own played-through
      history by play count, then most-popular): the REPEAT_RANK output, counted the same way;
  pos_lift_over_popularity_at_N              POS@N / most-popular's POS@N - 1;
  pos_lift_over_repeat_at_N                  POS@N / the repeat baseline's POS@N - 1 (both lifts
      at least the margin: the lift over the better of the two baselines);
  neg_excess_over_popularity_at_N            NEG@N - most-popular's NEG@N;
  pos_drop_beyond_noise_at_N                 how far POS@N fell below the baseline model's
      beyond `standard_errors` standard errors of the paired difference (0 within the noise,
      when it rose, and with no baseline);
  neg_rise_beyond_noise_at_N                 the same for a rise of NEG@N.
They are computed for the candidate only (an older baseline export need not have the popularity
or repeat outputs), so their thresholds are value thresholds.

Labels are read straight from the extracts on purpose: TFMA's generic label preparation
(metric_util.to_label_prediction_example_weight) turns an all -1 label into a one-hot of zeros,
which would count every LABEL_NEITHER target as a negative. Targets are counted unweighted.
"""

import dataclasses
import math
from typing import Any, Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.utils import model_util

from contract import features
from evaluation import hit_rate

POPULARITY_PREFIX = 'popularity_'
REPEAT_PREFIX = 'repeat_'
POS_LIFT_OVER_POPULARITY = 'pos_lift_over_popularity'
POS_LIFT_OVER_REPEAT = 'pos_lift_over_repeat'
NEG_EXCESS_OVER_POPULARITY = 'neg_excess_over_popularity'
POS_DROP_BEYOND_NOISE = 'pos_drop_beyond_noise'
NEG_RISE_BEYOND_NOISE = 'neg_rise_beyond_noise'
# The targets each comparison counts.
_COMPARED_LABEL = {POS_LIFT_OVER_POPULARITY: features.LABEL_POSITIVE,
                   POS_LIFT_OVER_REPEAT: features.LABEL_POSITIVE,
                   NEG_EXCESS_OVER_POPULARITY: features.LABEL_NEGATIVE,
                   POS_DROP_BEYOND_NOISE: features.LABEL_POSITIVE,
                   NEG_RISE_BEYOND_NOISE: features.LABEL_NEGATIVE}
# The candidate's output each comparison with a non-learned baseline reads; the other
# comparisons are with the baseline model.
_BASELINE_RANK = {POS_LIFT_OVER_POPULARITY: features.POPULARITY_RANK,
                  NEG_EXCESS_OVER_POPULARITY: features.POPULARITY_RANK,
                  POS_LIFT_OVER_REPEAT: features.REPEAT_RANK}


class PosAtN(metric_types.Metric):
  """POS@N: fraction of positive targets whose exact rank is < top_n."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_pos_at_n_computations, top_n=top_n,
                     name=name or hit_rate.pos_metric_name(top_n))

  @property
  def compute_confidence_interval(self) -> bool:
    return False


class NegAtN(metric_types.Metric):
  """NEG@N: fraction of negative targets whose exact rank is < top_n."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_neg_at_n_computations, top_n=top_n,
                     name=name or hit_rate.neg_metric_name(top_n))

  @property
  def compute_confidence_interval(self) -> bool:
    return False


class PopularityPosAtN(metric_types.Metric):
  """Most-popular's POS@N on the same targets, from the candidate's POPULARITY_RANK output."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_baseline_computations, top_n=top_n, label_value=features.LABEL_POSITIVE,
                     rank_key=features.POPULARITY_RANK,
                     name=name or POPULARITY_PREFIX + hit_rate.pos_metric_name(top_n))


class PopularityNegAtN(metric_types.Metric):
  """Most-popular's NEG@N on the same targets, from the candidate's POPULARITY_RANK output."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_baseline_computations, top_n=top_n, label_value=features.LABEL_NEGATIVE,
                     rank_key=features.POPULARITY_RANK,
                     name=name or POPULARITY_PREFIX + hit_rate.neg_metric_name(top_n))


class RepeatPosAtN(metric_types.Metric):
  """The repeat baseline's POS@N on the same targets, from the candidate's REPEAT_RANK output."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_baseline_computations, top_n=top_n, label_value=features.LABEL_POSITIVE,
                     rank_key=features.REPEAT_RANK,
                     name=name or REPEAT_PREFIX + hit_rate.pos_metric_name(top_n))


class RepeatNegAtN(metric_types.Metric):
  """The repeat baseline's NEG@N on the same targets, from the candidate's REPEAT_RANK output."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_baseline_computations, top_n=top_n, label_value=features.LABEL_NEGATIVE,
                     rank_key=features.REPEAT_RANK,
                     name=name or REPEAT_PREFIX + hit_rate.neg_metric_name(top_n))


class PosLiftOverPopularity(metric_types.Metric):
  """POS@N / most-popular's POS@N - 1: the gate asks for at least the popularity margin."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_comparison_computations, top_n=top_n, comparison=POS_LIFT_OVER_POPULARITY,
                     name=name or comparison_metric_name(POS_LIFT_OVER_POPULARITY, top_n))


class PosLiftOverRepeat(metric_types.Metric):
  """POS@N / the repeat baseline's POS@N - 1: the gate asks for at least the popularity margin
  here too, so the model must beat the better of the two baselines by it."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_comparison_computations, top_n=top_n, comparison=POS_LIFT_OVER_REPEAT,
                     name=name or comparison_metric_name(POS_LIFT_OVER_REPEAT, top_n))


class NegExcessOverPopularity(metric_types.Metric):
  """NEG@N - most-popular's NEG@N: the gate asks for no more than 0."""

  def __init__(self, top_n: int = 10, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_comparison_computations, top_n=top_n,
                     comparison=NEG_EXCESS_OVER_POPULARITY,
                     name=name or comparison_metric_name(NEG_EXCESS_OVER_POPULARITY, top_n))


class PosDropBeyondNoise(metric_types.Metric):
  """How far POS@N fell below the baseline model's beyond standard_errors standard errors."""

  def __init__(self, top_n: int = 10, standard_errors: float = 2.0, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_comparison_computations, top_n=top_n, comparison=POS_DROP_BEYOND_NOISE,
                     standard_errors=float(standard_errors),
                     name=name or comparison_metric_name(POS_DROP_BEYOND_NOISE, top_n))


class NegRiseBeyondNoise(metric_types.Metric):
  """How far NEG@N rose above the baseline model's beyond standard_errors standard errors."""

  def __init__(self, top_n: int = 10, standard_errors: float = 2.0, name: Optional[str] = None):
    top_n = _check_top_n(top_n)
    super().__init__(_comparison_computations, top_n=top_n, comparison=NEG_RISE_BEYOND_NOISE,
                     standard_errors=float(standard_errors),
                     name=name or comparison_metric_name(NEG_RISE_BEYOND_NOISE, top_n))


def comparison_metric_name(comparison: str, n: int) -> str:
  return f'{comparison}_at_{n}'


def _check_top_n(top_n: Any) -> int:
  return hit_rate.check_ns([top_n])[0]


def _pos_at_n_computations(top_n: int, name: str,
                           eval_config: Optional[tfma.EvalConfig] = None,
                           model_names: Optional[List[str]] = None,
                           output_names: Optional[List[str]] = None,
                           example_weighted: bool = False) -> metric_types.MetricComputations:
  return _hit_rate_computations(features.LABEL_POSITIVE, top_n, name, eval_config, model_names,
                                output_names, example_weighted)


def _neg_at_n_computations(top_n: int, name: str,
                           eval_config: Optional[tfma.EvalConfig] = None,
                           model_names: Optional[List[str]] = None,
                           output_names: Optional[List[str]] = None,
                           example_weighted: bool = False) -> metric_types.MetricComputations:
  return _hit_rate_computations(features.LABEL_NEGATIVE, top_n, name, eval_config, model_names,
                                output_names, example_weighted)


def _hit_rate_computations(label_value: int, top_n: int, name: str,
                           eval_config: Optional[tfma.EvalConfig],
                           model_names: Optional[List[str]],
                           output_names: Optional[List[str]],
                           example_weighted: bool) -> metric_types.MetricComputations:
  computations = []
  for model_name in model_names or ['']:
    for output_name in output_names or ['']:
      key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                   example_weighted=example_weighted)
      computations.append(metric_types.MetricComputation(
          keys=[key],
          preprocessors=None,
          combiner=_HitRateCombiner(key, label_value, top_n,
                                    _prediction_key(eval_config, model_name))))
  return computations


def _baseline_computations(top_n: int, label_value: int, rank_key: str, name: str,
                           eval_config: Optional[tfma.EvalConfig] = None,
                           model_names: Optional[List[str]] = None,
                           output_names: Optional[List[str]] = None,
                           example_weighted: bool = False) -> metric_types.MetricComputations:
  """A non-learned baseline's POS@N or NEG@N from the candidate's rank_key output."""
  return [metric_types.MetricComputation(
      keys=[key], preprocessors=None,
      combiner=_HitRateCombiner(key, label_value, top_n, rank_key))
          for key in _candidate_keys(name, eval_config, model_names, output_names,
                                     example_weighted)]


def _comparison_computations(top_n: int, comparison: str, name: str,
                             standard_errors: float = 0.0,
                             eval_config: Optional[tfma.EvalConfig] = None,
                             model_names: Optional[List[str]] = None,
                             output_names: Optional[List[str]] = None,
                             example_weighted: bool = False) -> metric_types.MetricComputations:
  baseline = model_util.get_baseline_model_spec(eval_config) if eval_config else None
  computations = []
  for key in _candidate_keys(name, eval_config, model_names, output_names, example_weighted):
    model = _RankSource(key.model_name, _prediction_key(eval_config, key.model_name))
    if comparison in _BASELINE_RANK:
      other = _RankSource(key.model_name, _BASELINE_RANK[comparison])
    elif baseline is not None:
      other = _RankSource(baseline.name, _prediction_key(eval_config, baseline.name))
    else:
      other = None  # no baseline (a first run): nothing to fall below
    computations.append(metric_types.MetricComputation(
        keys=[key], preprocessors=None,
        combiner=_PairedCombiner(key, comparison, top_n, model, other, standard_errors)))
  return computations


def _candidate_keys(name: str, eval_config: Optional[tfma.EvalConfig],
                    model_names: Optional[List[str]], output_names: Optional[List[str]],
                    example_weighted: bool) -> List[metric_types.MetricKey]:
  """The metric's keys for every model but the baseline."""
  baseline = model_util.get_baseline_model_spec(eval_config) if eval_config else None
  return [metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 example_weighted=example_weighted)
          for model_name in model_names or ['']
          if baseline is None or model_name != baseline.name
          for output_name in output_names or ['']]


def _prediction_key(eval_config: Optional[tfma.EvalConfig], model_name: str) -> str:
  """The ModelSpec's prediction_key for model_name, as TFMA's own metrics look it up."""
  if eval_config:
    for spec in eval_config.model_specs:
      spec_name = spec.name if len(eval_config.model_specs) > 1 else ''
      if spec_name == model_name and spec.prediction_key:
        return spec.prediction_key
  return features.TARGET_RANK


class _HitRateCombiner(beam.CombineFn):
  """Accumulates hit_rate.HitCounts for one N and outputs POS@N or NEG@N."""

  def __init__(self, key: metric_types.MetricKey, label_value: int, top_n: int,
               prediction_key: str):
    self._key = key
    self._label_value = label_value
    self._top_n = top_n
    self._prediction_key = prediction_key

  def create_accumulator(self) -> hit_rate.HitCounts:
    return hit_rate.HitCounts((self._top_n,))

  def add_input(self, accumulator: hit_rate.HitCounts,
                element: metric_types.StandardMetricInputs) -> hit_rate.HitCounts:
    target_rank, label = self._target_rank_and_label(element)
    return accumulator.merged(hit_rate.hit_counts(target_rank, label, (self._top_n,)))

  def merge_accumulators(self, accumulators: Iterable[hit_rate.HitCounts]) -> hit_rate.HitCounts:
    accumulators = iter(accumulators)
    result = next(accumulators)
    for accumulator in accumulators:
      result = result.merged(accumulator)
    return result

  def extract_output(self, accumulator: hit_rate.HitCounts) -> Dict[metric_types.MetricKey, float]:
    if self._label_value == features.LABEL_POSITIVE:
      return {self._key: accumulator.pos_rate(self._top_n)}
    return {self._key: accumulator.neg_rate(self._top_n)}

  def _target_rank_and_label(self, element: metric_types.StandardMetricInputs):
    return _ranks_and_labels(element, _RankSource(self._key.model_name, self._prediction_key),
                             self._key)


@dataclasses.dataclass(frozen=True)
class _RankSource:
  """Where a ranking is in the extracts: a model's output of target ranks."""
  model_name: str
  prediction_key: str


class _PairedCombiner(beam.CombineFn):
  """Accumulates hit_rate.PairedHits of the model and another ranking; outputs a comparison."""

  def __init__(self, key: metric_types.MetricKey, comparison: str, top_n: int,
               model: _RankSource, other: Optional[_RankSource], standard_errors: float):
    self._key = key
    self._comparison = comparison
    self._label_value = _COMPARED_LABEL[comparison]
    self._top_n = top_n
    self._model = model
    self._other = other
    self._standard_errors = standard_errors

  def create_accumulator(self) -> hit_rate.PairedHits:
    return hit_rate.PairedHits()

  def add_input(self, accumulator: hit_rate.PairedHits,
                element: metric_types.StandardMetricInputs) -> hit_rate.PairedHits:
    if self._other is None:
      return accumulator
    ranks, labels = _ranks_and_labels(element, self._model, self._key)
    other_ranks, _ = _ranks_and_labels(element, self._other, self._key)
    return accumulator.merged(hit_rate.paired_hits(ranks, other_ranks, labels,
                                                   self._label_value, self._top_n))

  def merge_accumulators(self, accumulators: Iterable[hit_rate.PairedHits]
                        ) -> hit_rate.PairedHits:
    result = hit_rate.PairedHits()
    for accumulator in accumulators:
      result = result.merged(accumulator)
    return result

  def extract_output(self, accumulator: hit_rate.PairedHits
                    ) -> Dict[metric_types.MetricKey, float]:
    return {self._key: _comparison_value(self._comparison, accumulator, self._standard_errors)}


def _comparison_value(comparison: str, hits: hit_rate.PairedHits, standard_errors: float) -> float:
  """The comparison's value; the model is the first ranking of hits, the other the second."""
  if comparison in (POS_LIFT_OVER_POPULARITY, POS_LIFT_OVER_REPEAT):
    model, baseline = hits.first_rate(), hits.second_rate()
    if not baseline > 0:  # no baseline hits (or no positives): any model hit is a lift
      return math.inf if model > 0 else 0.0
    return model / baseline - 1.0
  if comparison == NEG_EXCESS_OVER_POPULARITY:
    return hits.difference()
  allowance = standard_errors * hits.difference_standard_error()
  if comparison == POS_DROP_BEYOND_NOISE:
    return max(0.0, -hits.difference() - allowance)
  return max(0.0, hits.difference() - allowance)  # NEG_RISE_BEYOND_NOISE


def _ranks_and_labels(element: metric_types.StandardMetricInputs, source: _RankSource,
                      key: metric_types.MetricKey):
  """The target ranks [B] of one ranking in the extracts, and the labels [B]."""
  prediction = _select(element.prediction, source.model_name, 'prediction')
  prediction = _select(prediction, key.output_name, 'prediction')
  if isinstance(prediction, dict):
    if source.prediction_key not in prediction:
      raise ValueError(f'the model output has no {source.prediction_key!r} (outputs: '
                       f'{sorted(prediction)}); set ModelSpec.prediction_key to the target rank '
                       f'output of the {features.TARGET_RANK_SIGNATURE!r} signature')
    prediction = prediction[source.prediction_key]
  label = _select(element.label, source.model_name, 'label', optional=True)
  label = _select(label, key.output_name, 'label', optional=True)
  if label is None or prediction is None:
    raise ValueError(f'{key.name} needs a label ({features.LABEL}) and a target rank; got '
                     f'label={label!r}, prediction={prediction!r}. Check ModelSpec.label_key.')
  return np.asarray(prediction).reshape(-1), np.asarray(label).reshape(-1)


def _select(value: Any, key: str, what: str, optional: bool = False) -> Any:
  """value[key] for a multi-model or multi-output dict; value itself when not keyed."""
  if not key or not isinstance(value, dict):
    return value
  if key in value:
    return value[key]
  if optional:
    return value
  raise ValueError(f'the {what} has no entry for {key!r} (entries: {sorted(value)})')
