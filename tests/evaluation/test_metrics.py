"""POS@N / NEG@N through real TFMA runs of real SavedModels, and the gate they feed."""

import numpy as np
import pytest

from contract import features
from evaluation import hit_rate
from evaluation import metrics
from evaluation import report
from tests.evaluation import conftest
from tests.evaluation import rank_models


def _repeat_ranks(eval_data, items, ranker):
  return rank_models.repeat_ranks_by_hand(items, ranker.popularity, eval_data.histories,
                                          eval_data.history_play_rates, eval_data.targets)


def _expected(eval_data, items, ranker, intent=None):
  """The model's, most-popular's and the repeat baseline's POS@N and NEG@N, by hand."""
  ranks = rank_models.ranks_by_hand(items, ranker.scores, eval_data.targets)
  popular = rank_models.popularity_ranks_by_hand(items, ranker.popularity, eval_data.targets)
  repeat = _repeat_ranks(eval_data, items, ranker)
  labels = eval_data.labels
  if intent is not None:
    keep = eval_data.intents == intent
    ranks, popular, repeat, labels = ranks[keep], popular[keep], repeat[keep], labels[keep]
  expected = hit_rate.hit_rates(ranks, labels, conftest.GATE.ns)
  for prefix, baseline in ((metrics.POPULARITY_PREFIX, popular), (metrics.REPEAT_PREFIX, repeat)):
    for name, value in hit_rate.hit_rates(baseline, labels, conftest.GATE.ns).items():
      expected[prefix + name] = value
  return expected


def _paired(eval_data, items, first, second, label):
  """PairedHits at N=50 of two rankers, by hand."""
  return hit_rate.paired_hits(rank_models.ranks_by_hand(items, first.scores, eval_data.targets),
                              rank_models.ranks_by_hand(items, second.scores, eval_data.targets),
                              eval_data.labels, label, 50)


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


def test_good_model_without_baseline_is_blessed(good_alone, eval_data, items, rankers):
  run = report.load_run(good_alone)
  assert run.validation_ok, run.failures
  assert run.baseline is None  # first model: floor, ceiling and most-popular apply
  expected = _expected(eval_data, items, rankers['good'])
  overall = run.model.by_slice[report.OVERALL]
  assert overall['pos_lift_over_popularity_at_50'] == pytest.approx(
      expected['pos_at_50'] / expected['popularity_pos_at_50'] - 1)
  assert overall['pos_lift_over_repeat_at_50'] == pytest.approx(
      expected['pos_at_50'] / expected['repeat_pos_at_50'] - 1)
  assert overall['neg_excess_over_popularity_at_50'] == pytest.approx(
      expected['neg_at_50'] - expected['popularity_neg_at_50'])
  assert overall['pos_drop_beyond_noise_at_50'] == 0  # nothing to drop below


def test_model_below_floor_and_above_ceiling_is_not_blessed(bad_alone, eval_data, items, rankers):
  expected = _expected(eval_data, items, rankers['bad'])
  assert expected['pos_at_50'] < conftest.GATE.pos_floor
  assert expected['neg_at_50'] > conftest.GATE.neg_ceiling
  run = report.load_run(bad_alone)
  assert not run.validation_ok
  assert f'neg_at_50 [Overall] = {expected["neg_at_50"]:.4f}, must be <= 0.3' in run.failures
  assert f'pos_at_50 [Overall] = {expected["pos_at_50"]:.4f}, must be >= 0.2' in run.failures


def test_model_worse_than_most_popular_is_not_blessed_on_a_first_run(medium_alone, eval_data,
                                                                     items, rankers):
  expected = _expected(eval_data, items, rankers['medium'])
  # Premises: floor and ceiling cleared, most-popular not beaten by the margin.
  assert expected['pos_at_50'] >= conftest.GATE.pos_floor
  assert expected['neg_at_50'] <= conftest.GATE.neg_ceiling
  lift = expected['pos_at_50'] / expected['popularity_pos_at_50'] - 1
  assert lift < conftest.GATE.popularity_margin
  # Nor the repeat baseline, which on these histories ranks much like most-popular.
  repeat_lift = expected['pos_at_50'] / expected['repeat_pos_at_50'] - 1
  assert repeat_lift < conftest.GATE.popularity_margin
  run = report.load_run(medium_alone)
  _assert_metrics_equal(run.model.by_slice[report.OVERALL], expected)
  assert sorted(run.failures) == [
      f'pos_lift_over_popularity_at_50 [Overall] = {lift:.4f}, must be '
      f'>= {conftest.GATE.popularity_margin:g}',
      f'pos_lift_over_repeat_at_50 [Overall] = {repeat_lift:.4f}, must be '
      f'>= {conftest.GATE.popularity_margin:g}']


def test_model_worse_than_the_repeat_baseline_is_not_blessed(good_alone_on_repeat_data,
                                                             repeat_data, items, rankers):
  expected = _expected(repeat_data, items, rankers['good'])
  # Premises: the good model clears floor, ceiling and most-popular, and the repeat baseline is
  # better than most-popular (some positive targets' histories hold them only as skips).
  assert expected['pos_at_50'] >= conftest.GATE.pos_floor
  assert expected['neg_at_50'] <= conftest.GATE.neg_ceiling
  assert (expected['pos_at_50'] / expected['popularity_pos_at_50'] - 1
          >= conftest.GATE.popularity_margin)
  assert expected['neg_at_50'] <= expected['popularity_neg_at_50']
  assert expected['repeat_pos_at_50'] > expected['popularity_pos_at_50']
  lift = expected['pos_at_50'] / expected['repeat_pos_at_50'] - 1
  assert lift < conftest.GATE.popularity_margin
  run = report.load_run(good_alone_on_repeat_data)
  _assert_metrics_equal(run.model.by_slice[report.OVERALL], expected)
  assert run.failures == [f'pos_lift_over_repeat_at_50 [Overall] = {lift:.4f}, must be '
                          f'>= {conftest.GATE.popularity_margin:g}']


def test_model_worse_than_baseline_beyond_noise_is_not_blessed(medium_vs_good, eval_data,
                                                                items, rankers):
  medium = _expected(eval_data, items, rankers['medium'])
  good = _expected(eval_data, items, rankers['good'])
  pos = _paired(eval_data, items, rankers['medium'], rankers['good'], features.LABEL_POSITIVE)
  neg = _paired(eval_data, items, rankers['medium'], rankers['good'], features.LABEL_NEGATIVE)
  k = conftest.GATE.noise_standard_errors
  # Premises: POS@50 fell by more than the noise; NEG@50 rose, but within it.
  drop = -pos.difference() - k * pos.difference_standard_error()
  assert drop > 0
  assert 0 < neg.difference() <= k * neg.difference_standard_error()
  run = report.load_run(medium_vs_good)
  _assert_metrics_equal(run.model.by_slice[report.OVERALL], medium)
  # Most-popular and repeat are measured for the candidate only.
  _assert_metrics_equal(run.baseline.by_slice[report.OVERALL],
                        {name: value for name, value in good.items()
                         if not name.startswith((metrics.POPULARITY_PREFIX,
                                                 metrics.REPEAT_PREFIX))})
  assert not run.validation_ok
  assert f'pos_drop_beyond_noise_at_50 [Overall] = {drop:.4f}, must be <= 0' in run.failures
  assert not [f for f in run.failures if f.startswith('neg_rise_beyond_noise')]


def test_a_drop_within_the_noise_is_not_rejected(near_good_vs_good, eval_data, items, rankers):
  pos = _paired(eval_data, items, rankers['near_good'], rankers['good'], features.LABEL_POSITIVE)
  # Premise: POS@50 is lower than the baseline's (the old 0.02 tolerance would reject it), by
  # less than two standard errors of the paired difference.
  assert -pos.difference() > 0.02
  assert -pos.difference() < conftest.GATE.noise_standard_errors * pos.difference_standard_error()
  run = report.load_run(near_good_vs_good)
  assert run.validation_ok, run.failures
  assert run.model.by_slice[report.OVERALL]['pos_drop_beyond_noise_at_50'] == 0


def test_model_better_than_baseline_is_blessed(good_vs_medium):
  run = report.load_run(good_vs_medium)
  assert run.validation_ok, run.failures
  assert (run.model.by_slice[report.OVERALL]['pos_at_50']
          > run.baseline.by_slice[report.OVERALL]['pos_at_50'])


def test_ranks_by_hand_agree_with_the_saved_model(repeat_data, items, rankers):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serialized = [record.numpy() for record in tf.data.TFRecordDataset(repeat_data.path)]
  loaded = tf.saved_model.load(rankers['medium'].path)
  outputs = loaded.signatures[features.TARGET_RANK_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(serialized)})
  ranks = outputs[features.TARGET_RANK].numpy()
  np.testing.assert_array_equal(
      ranks, rank_models.ranks_by_hand(items, rankers['medium'].scores, repeat_data.targets))
  assert ranks.max() == len(items)  # the OOV targets
  repeat = outputs[features.REPEAT_RANK].numpy()
  np.testing.assert_array_equal(repeat, _repeat_ranks(repeat_data, items, rankers['medium']))
  assert (repeat == 0).mean() > 0.2  # many positive targets are their history's favourite
