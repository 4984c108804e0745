"""The Evaluator's EvalConfig: POS@N / NEG@N on the target-rank signature, sliced by intent, gated.

The gate (DESIGN section 6) on each gated N, on the overall slice:
  POS@N >= pos_floor           and POS@N(candidate) - POS@N(baseline) >= -pos_tolerance;
  NEG@N <= neg_ceiling         and NEG@N(candidate) - NEG@N(baseline) <= +neg_tolerance.

The config holds a single, unnamed ModelSpec. TFX's Evaluator copies it into a 'baseline' spec
(and names this one 'candidate') when its baseline_model channel carries a model; when it carries
none (first run), the Evaluator drops the change thresholds and gates on the floor and ceiling
only (tfma.utils.update_eval_config_with_defaults(has_baseline=..., rubber_stamp=True)).
`config_for_run` applies that same step for runs outside the Evaluator.

Intent slices are reported, not gated: a small slice's noise must not block a release.
"""

import json
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
    metrics.append(_hit_rate_metric('PosAtN', n, _pos_threshold(gate) if gated else None))
    metrics.append(_hit_rate_metric('NegAtN', n, _neg_threshold(gate) if gated else None))
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


def _hit_rate_metric(class_name: str, n: int, threshold) -> tfma.MetricConfig:
  metric = tfma.MetricConfig(class_name=class_name, module=METRICS_MODULE,
                             config=json.dumps({'top_n': n}))
  if threshold is not None:
    metric.per_slice_thresholds.append(
        tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold))
  return metric


def _pos_threshold(gate: settings.GateConfig) -> tfma.MetricThreshold:
  return tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': gate.pos_floor}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -gate.pos_tolerance}))


def _neg_threshold(gate: settings.GateConfig) -> tfma.MetricThreshold:
  return tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(upper_bound={'value': gate.neg_ceiling}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.LOWER_IS_BETTER,
          absolute={'value': gate.neg_tolerance}))
