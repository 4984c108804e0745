"""POS@N / NEG@N through real TFMA runs of real SavedModels, and the gate they feed."""

import numpy as np
import pytest

from contract import features
from evaluation import hit_rate
from evaluation import report
from tests.evaluation import conftest
from tests.evaluation import rank_models


def _expected(eval_data, items, ranker, intent=None):
  ranks = rank_models.ranks_by_hand(items, ranker.scores, eval_data.targets)
  labels = eval_data.labels
  if intent is not None:
    keep = eval_data.intents == intent
    ranks, labels = ranks[keep], labels[keep]
  return hit_rate.hit_rates(ranks, labels, conftest.GATE.ns)


def _assert_metrics_equal(actual, expected):
  for name, value in expected.items():
    assert actual[name] == pytest.approx(value, abs=1e-9), name


def test_metrics_equal_hit_rates_overall_and_per_intent(good_alone, eval_data, items, rankers):
  run = report.load_run(good_alone)
  assert run.baseline is None
  expected_slices = {report.OVERALL} | {f'{features.INTENT}:{i}' for i in features.INTENTS}
  assert set(run.model.by_slice) == expected_slices
  _assert_metrics_equal(run.model.by_slice[report.OVERALL],
                        _expected(eval_data, items, rankers['good']))
  for intent in features.INTENTS:
    _assert_metrics_equal(run.model.by_slice[f'{features.INTENT}:{intent}'],
                          _expected(eval_data, items, rankers['good'], intent))
  assert run.model.by_slice[report.OVERALL]['example_count'] == conftest.NUM_EXAMPLES


def test_neither_targets_are_not_counted_as_negatives(good_alone, eval_data, items, rankers):
  # The good model ranks every LABEL_NEITHER target anywhere; were they counted as negatives
  # (TFMA's generic label handling maps -1 labels to 0), NEG@100 would not be this exact value.
  neither = eval_data.labels == features.LABEL_NEITHER
  ranks = rank_models.ranks_by_hand(items, rankers['good'].scores, eval_data.targets)
  assert neither.any() and (ranks[neither] < 100).any()
  run = report.load_run(good_alone)
  assert run.model.by_slice[report.OVERALL]['neg_at_100'] == pytest.approx(
      _expected(eval_data, items, rankers['good'])['neg_at_100'])


def test_good_model_without_baseline_is_blessed(good_alone):
  run = report.load_run(good_alone)
  assert run.validation_ok, run.failures
  assert run.baseline is None  # first model: only the floor and the ceiling apply


def test_model_below_floor_and_above_ceiling_is_not_blessed(bad_alone, eval_data, items, rankers):
  expected = _expected(eval_data, items, rankers['bad'])
  assert expected['pos_at_50'] < conftest.GATE.pos_floor
  assert expected['neg_at_50'] > conftest.GATE.neg_ceiling
  run = report.load_run(bad_alone)
  assert not run.validation_ok
  assert sorted(run.failures) == [
      f'neg_at_50 [Overall] = {expected["neg_at_50"]:.4f}, must be <= 0.3',
      f'pos_at_50 [Overall] = {expected["pos_at_50"]:.4f}, must be >= 0.2',
  ]


def test_model_worse_than_baseline_beyond_tolerance_is_not_blessed(medium_vs_good, eval_data,
                                                                    items, rankers):
  medium = _expected(eval_data, items, rankers['medium'])
  good = _expected(eval_data, items, rankers['good'])
  # Premises: the medium model passes floor and ceiling, and only the change thresholds stop it.
  assert medium['pos_at_50'] >= conftest.GATE.pos_floor
  assert medium['neg_at_50'] <= conftest.GATE.neg_ceiling
  assert medium['pos_at_50'] - good['pos_at_50'] < -conftest.GATE.pos_tolerance
  assert medium['neg_at_50'] - good['neg_at_50'] > conftest.GATE.neg_tolerance
  run = report.load_run(medium_vs_good)
  _assert_metrics_equal(run.model.by_slice[report.OVERALL], medium)
  _assert_metrics_equal(run.baseline.by_slice[report.OVERALL], good)
  assert not run.validation_ok
  assert len(run.failures) == 2
  assert all('change vs baseline' in failure for failure in run.failures)
  assert {failure.split()[0] for failure in run.failures} == {'pos_at_50', 'neg_at_50'}


def test_model_better_than_baseline_is_blessed(good_vs_medium):
  run = report.load_run(good_vs_medium)
  assert run.validation_ok, run.failures
  assert (run.model.by_slice[report.OVERALL]['pos_at_50']
          > run.baseline.by_slice[report.OVERALL]['pos_at_50'])


def test_ranks_by_hand_agree_with_the_saved_model(eval_data, items, rankers):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serialized = [record.numpy() for record in tf.data.TFRecordDataset(eval_data.path)]
  loaded = tf.saved_model.load(rankers['medium'].path)
  ranks = loaded.signatures[features.TARGET_RANK_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(serialized)})[features.TARGET_RANK].numpy()
  np.testing.assert_array_equal(
      ranks, rank_models.ranks_by_hand(items, rankers['medium'].scores, eval_data.targets))
  assert ranks.max() == len(items)  # the OOV targets
