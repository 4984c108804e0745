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


def _bounds(thresholds):
  """(lower, upper) of each gated metric's single value threshold; None where unbounded."""
  result = {}
  for name, (threshold,) in thresholds.items():
    value = threshold.value_threshold
    assert not threshold.HasField('change_threshold'), name
    result[name] = (value.lower_bound.value if value.HasField('lower_bound') else None,
                    value.upper_bound.value if value.HasField('upper_bound') else None)
  return result


def test_only_the_gated_n_carries_thresholds_on_the_overall_slice():
  gate = settings.GateConfig(ns=(10, 50, 100), gate_n=50, pos_floor=0.1, pos_tolerance=0.02,
                            neg_ceiling=0.4, neg_tolerance=0.03, popularity_margin=0.2,
                            noise_standard_errors=3.0)
  thresholds = _thresholds_by_metric(eval_config_lib.make_eval_config(gate))
  gated = {name: t for name, t in thresholds.items() if t}
  assert _bounds(gated) == {
      'PosAtN{"top_n": 50}': (pytest.approx(0.1), None),
      'NegAtN{"top_n": 50}': (None, pytest.approx(0.4)),
      'PosLiftOverPopularity{"top_n": 50}': (pytest.approx(0.2), None),
      # The same margin over the repeat baseline: the lift is over the better of the two.
      'PosLiftOverRepeat{"top_n": 50}': (pytest.approx(0.2), None),
      'NegExcessOverPopularity{"top_n": 50}': (None, 0.0),
      'PosDropBeyondNoise{"top_n": 50, "standard_errors": 3.0}': (None, pytest.approx(0.02)),
      'NegRiseBeyondNoise{"top_n": 50, "standard_errors": 3.0}': (None, pytest.approx(0.03)),
  }
  # Most-popular's and the repeat baseline's own POS@N / NEG@N are reported at every N.
  for baseline in ('Popularity', 'Repeat'):
    assert f'{baseline}PosAtN{{"top_n": 10}}' in thresholds
    assert f'{baseline}NegAtN{{"top_n": 100}}' in thresholds


def test_several_n_can_be_gated():
  gate = dataclasses.replace(settings.GateConfig(), gate_n=(10, 100))
  thresholds = _thresholds_by_metric(eval_config_lib.make_eval_config(gate))
  gated = sorted(name for name, t in thresholds.items() if t)
  assert len(gated) == 14
  assert {name.split('"top_n": ')[1].split('}')[0].split(',')[0] for name in gated} == {
      '10', '100'}


def test_every_gate_is_a_value_threshold_so_first_and_later_runs_check_the_same_metrics():
  config = eval_config_lib.make_eval_config(settings.GateConfig())
  first = eval_config_lib.config_for_run(config, has_baseline=False)
  assert not tfma.utils.has_change_threshold(first)
  assert [s.name for s in first.model_specs] == ['']
  later = eval_config_lib.config_for_run(config, has_baseline=True)
  assert not tfma.utils.has_change_threshold(later)
  assert [(s.name, s.is_baseline) for s in later.model_specs] == [
      (tfma.CANDIDATE_KEY, False), (tfma.BASELINE_KEY, True)]
  assert later.model_specs[1].signature_name == features.TARGET_RANK_SIGNATURE


@pytest.mark.parametrize('change, message', [
    ({'gate_n': 20}, r'gate_n: 20 is not allowed; choose one of \[10, 50, 100\]'),
    ({'gate_n': (10, 20)}, r'gate_n: 20 is not allowed; choose one of \[10, 50, 100\]'),
    ({'pos_floor': 1.5}, r'pos_floor: 1.5 is not allowed; must be in \[0.0, 1.0\]'),
    ({'neg_tolerance': -0.1}, r'neg_tolerance: -0.1 is not allowed; must be in \[0.0, 1.0\]'),
    ({'ns': (10, 0)}, r'ns: \[10, 0\] is not allowed; must be distinct Ns >= 1'),
    ({'noise_standard_errors': -1.0},
     r'noise_standard_errors: -1.0 is not allowed; must be in \[0.0, 10.0\]'),
    ({'popularity_margin': -2.0},
     r'popularity_margin: -2.0 is not allowed; must be in \[-1.0, 10.0\]'),
])
def test_bad_gate_settings_are_named_before_an_eval_config_is_made(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(settings.GateConfig(), **change)
