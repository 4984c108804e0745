"""POS@N and NEG@N as TFMA custom metrics, computed with evaluation.hit_rate.

The model's prediction is the exact rank of the target item among the whole vocabulary (the
TARGET_RANK output of the TARGET_RANK_SIGNATURE) and the label is features.LABEL. Configure them
in an EvalConfig as, e.g.,

  tfma.MetricConfig(class_name='PosAtN', module='evaluation.metrics', config='{"top_n": 50}')

which yields a metric named 'pos_at_50' (NegAtN gives 'neg_at_50').

Labels are read straight from the extracts on purpose: TFMA's generic label preparation
(metric_util.to_label_prediction_example_weight) turns an all -1 label into a one-hot of zeros,
which would count every LABEL_NEITHER target as a negative. Targets are counted unweighted.
"""

from typing import Any, Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from contract import features
from evaluation import hit_rate


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
    prediction = _select(element.prediction, self._key.model_name, 'prediction')
    prediction = _select(prediction, self._key.output_name, 'prediction')
    if isinstance(prediction, dict):
      if self._prediction_key not in prediction:
        raise ValueError(f'the model output has no {self._prediction_key!r} (outputs: '
                         f'{sorted(prediction)}); set ModelSpec.prediction_key to the target rank '
                         f'output of the {features.TARGET_RANK_SIGNATURE!r} signature')
      prediction = prediction[self._prediction_key]
    label = _select(element.label, self._key.model_name, 'label', optional=True)
    label = _select(label, self._key.output_name, 'label', optional=True)
    if label is None or prediction is None:
      raise ValueError(f'{self._key.name} needs a label ({features.LABEL}) and a target rank; got '
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
