"""The Evaluator's EvalConfig: POS@N / NEG@N on the target-rank signature, sliced by intent, gated.

The gate (DESIGN section 6) on each gated N, on the overall slice:
  POS@N >= pos_floor                                   NEG@N <= neg_ceiling
  POS@N >= (1 + popularity_margin) x most-popular's    NEG@N <= most-popular's
  POS@N >= (1 + popularity_margin) x repeat's
  POS@N >= baseline's - (k standard errors + pos_tolerance)
  NEG@N <= baseline's + (k standard errors + neg_tolerance)
with k = noise_standard_errors and the standard error that of the paired difference on these
eval targets (evaluation/metrics.py). Repeat is the user's own history (played-through items by
play count, then most-popular; evaluation/baseline_ranks.py): with both lifts gated, POS@N must
beat the better of the two non-learned baselines by the margin. NEG@N stays held to
most-popular's only (no more skips hit than a popularity count); the repeat baseline's NEG@N is
reported beside it. Every one is a value threshold on a metric of the candidate,
so a first run (no baseline: the drop and rise metrics are 0) is gated on the floor, the
ceiling and the two baselines, and a model worse than a popularity count is never pushed.

The config holds a single, unnamed ModelSpec. TFX's Evaluator copies it into a 'baseline' spec
(and names this one 'candidate') when its baseline_model channel carries a model
(tfma.utils.update_eval_config_with_defaults(has_baseline=..., rubber_stamp=True));
`config_for_run` applies that same step for runs outside the Evaluator.

Intent slices are reported, not gated: a small slice's noise must not block a release.
"""

import json
from typing import Optional

import tensorflow_model_analysis as tfma

from contract import features
from contract import settings

METRICS_MODULE = 'evaluation.metrics'


def make_eval_config(gate: settings.GateConfig) -> tfma.EvalConfig:
  """The EvalConfig for the Evaluator, from the pipeline's gate settings (checked when they
  were built: every gated N among the computed ones, thresholds fractions)."""
  metrics = [tfma.MetricConfig(class_name='ExampleCount')]
  for n in gate.ns:
    gated = n in gate.gated_ns
    metrics.append(_metric('PosAtN', n, _value_threshold(lower=gate.pos_floor) if gated else None))
    metrics.append(_metric('NegAtN', n, _value_threshold(upper=gate.neg_ceiling) if gated else None))
    metrics.append(_metric('PopularityPosAtN', n))
    metrics.append(_metric('PopularityNegAtN', n))
    metrics.append(_metric('RepeatPosAtN', n))
    metrics.append(_metric('RepeatNegAtN', n))
  for n in gate.gated_ns:
    metrics.append(_metric('PosLiftOverPopularity', n,
                           _value_threshold(lower=gate.popularity_margin)))
    metrics.append(_metric('PosLiftOverRepeat', n,
                           _value_threshold(lower=gate.popularity_margin)))
    metrics.append(_metric('NegExcessOverPopularity', n, _value_threshold(upper=0.0)))
    metrics.append(_metric('PosDropBeyondNoise', n, _value_threshold(upper=gate.pos_tolerance),
                           standard_errors=gate.noise_standard_errors))
    metrics.append(_metric('NegRiseBeyondNoise', n, _value_threshold(upper=gate.neg_tolerance),
                           standard_errors=gate.noise_standard_errors))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=features.TARGET_RANK_SIGNATURE,
                                  label_key=features.LABEL,
                                  prediction_key=features.TARGET_RANK)],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.INTENT])],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


def config_for_run(eval_config: tfma.EvalConfig, has_baseline: bool) -> tfma.EvalConfig:
  """The config as TFX's Evaluator runs it: baseline spec added, or change thresholds dropped."""
  return tfma.utils.update_eval_config_with_defaults(eval_config, has_baseline=has_baseline,
                                                     rubber_stamp=True)


def _metric(class_name: str, n: int, threshold: Optional[tfma.MetricThreshold] = None,
            **config) -> tfma.MetricConfig:
  """One metric of evaluation.metrics at N, gated on the overall slice when given a threshold."""
  metric = tfma.MetricConfig(class_name=class_name, module=METRICS_MODULE,
                             config=json.dumps(dict(top_n=n, **config)))
  if threshold is not None:
    metric.per_slice_thresholds.append(
        tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold))
  return metric


def _value_threshold(lower: Optional[float] = None,
                     upper: Optional[float] = None) -> tfma.MetricThreshold:
  bounds = {}
  if lower is not None:
    bounds['lower_bound'] = {'value': lower}
  if upper is not None:
    bounds['upper_bound'] = {'value': upper}
  return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(**bounds))
