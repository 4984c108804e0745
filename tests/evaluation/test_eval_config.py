"""The EvalConfig from the pipeline's gate settings, before and after the Evaluator's defaults."""

import dataclasses

import pytest
import tensorflow_model_analysis as tfma

from contract import features
from contract import settings
from evaluation import eval_config as eval_config_lib


def _thresholds_by_metric(eval_config):
  result = {}
  for metric in eval_config.metrics_specs[0].metrics:
    name = metric.class_name + metric.config
    result[name] = [t.threshold for t in metric.per_slice_thresholds]
  return result


def test_model_spec_reads_the_target_rank_signature():
  config = eval_config_lib.make_eval_config(settings.GateConfig())
  tfma.utils.verify_eval_config(config)
  (spec,) = config.model_specs
  assert spec.signature_name == features.TARGET_RANK_SIGNATURE
  assert spec.label_key == features.LABEL
  assert spec.prediction_key == features.TARGET_RANK
  assert [list(s.feature_keys) for s in config.slicing_specs] == [[], [features.INTENT]]


def test_only_the_gated_n_carries_thresholds_on_the_overall_slice():
  gate = settings.GateConfig(ns=(10, 50, 100), gate_n=50, pos_floor=0.1, pos_tolerance=0.02,
                            neg_ceiling=0.4, neg_tolerance=0.03)
  thresholds = _thresholds_by_metric(eval_config_lib.make_eval_config(gate))
  gated = {name: t for name, t in thresholds.items() if t}
  assert sorted(gated) == ['NegAtN{"top_n": 50}', 'PosAtN{"top_n": 50}']
  (pos,), (neg,) = gated['PosAtN{"top_n": 50}'], gated['NegAtN{"top_n": 50}']
  assert pos.value_threshold.lower_bound.value == pytest.approx(0.1)
  assert pos.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
  assert pos.change_threshold.absolute.value == pytest.approx(-0.02)
  assert neg.value_threshold.upper_bound.value == pytest.approx(0.4)
  assert neg.change_threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
  assert neg.change_threshold.absolute.value == pytest.approx(0.03)


def test_several_n_can_be_gated():
  gate = dataclasses.replace(settings.GateConfig(), gate_n=(10, 100))
  thresholds = _thresholds_by_metric(eval_config_lib.make_eval_config(gate))
  assert sorted(name for name, t in thresholds.items() if t) == [
      'NegAtN{"top_n": 100}', 'NegAtN{"top_n": 10}', 'PosAtN{"top_n": 100}', 'PosAtN{"top_n": 10}']


def test_first_run_drops_change_thresholds_and_later_runs_add_the_baseline():
  config = eval_config_lib.make_eval_config(settings.GateConfig())
  first = eval_config_lib.config_for_run(config, has_baseline=False)
  assert not tfma.utils.has_change_threshold(first)
  assert [s.name for s in first.model_specs] == ['']
  later = eval_config_lib.config_for_run(config, has_baseline=True)
  assert tfma.utils.has_change_threshold(later)
  assert [(s.name, s.is_baseline) for s in later.model_specs] == [
      (tfma.CANDIDATE_KEY, False), (tfma.BASELINE_KEY, True)]
  assert later.model_specs[1].signature_name == features.TARGET_RANK_SIGNATURE


@pytest.mark.parametrize('change, message', [
    ({'gate_n': 20}, r'gate_n: 20 is not allowed; choose one of \[10, 50, 100\]'),
    ({'gate_n': (10, 20)}, r'gate_n: 20 is not allowed; choose one of \[10, 50, 100\]'),
    ({'pos_floor': 1.5}, r'pos_floor: 1.5 is not allowed; must be in \[0.0, 1.0\]'),
    ({'neg_tolerance': -0.1}, r'neg_tolerance: -0.1 is not allowed; must be in \[0.0, 1.0\]'),
    ({'ns': (10, 0)}, r'ns: \[10, 0\] is not allowed; must be distinct Ns >= 1'),
])
def test_bad_gate_settings_are_named_before_an_eval_config_is_made(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(settings.GateConfig(), **change)
