"""Eval data, three tiny target-rank models and real TFMA runs over them, shared by the tests."""

import dataclasses
import os
from typing import Optional

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from contract import features
from contract import settings
from evaluation import eval_config as eval_config_lib
from tests.evaluation import rank_models

NUM_ITEMS = 300
NUM_EXAMPLES = 240
# The good and medium models clear the floor and the ceiling and the bad one fails both; the
# good one beats most-popular by more than the margin and the medium one does not; against the
# good model, the medium one loses more POS@50 than the noise allows and the near-good one less
# (test_metrics checks these premises on the hand-computed values).
GATE = settings.GateConfig(ns=(10, 50, 100), gate_n=50, pos_floor=0.2, neg_ceiling=0.3,
                          popularity_margin=0.1, noise_standard_errors=2.0, pos_tolerance=0.0,
                          neg_tolerance=0.0)


@dataclasses.dataclass
class EvalData:
  path: str
  targets: list
  labels: np.ndarray
  intents: np.ndarray
  histories: list
  history_play_rates: list


@dataclasses.dataclass
class Ranker:
  path: str
  scores: np.ndarray
  popularity: np.ndarray  # each item's rank by play count


def _eval_examples(rng: np.random.Generator, items, repeats: bool = False):
  """Positives mostly among the best-quality items (low index), negatives among the worst.

  Histories hold 0 to 5 random items, played through (rate 0.9). With repeats, most positive
  targets are in their history too, played through twice, and a third of the history plays are
  skips (rate 0.1): data on which the repeat baseline is strong.
  """
  examples, targets, labels, intents, histories, history_rates = [], [], [], [], [], []
  for i in range(NUM_EXAMPLES):
    label = int(rng.choice([features.LABEL_POSITIVE, features.LABEL_NEGATIVE,
                            features.LABEL_NEITHER], p=[0.5, 0.3, 0.2]))
    if label == features.LABEL_POSITIVE:
      index = int(rng.integers(0, 70)) if rng.random() < 0.85 else int(rng.integers(0, NUM_ITEMS))
    elif label == features.LABEL_NEGATIVE:
      index = int(rng.integers(200, NUM_ITEMS)) if rng.random() < 0.9 else int(
          rng.integers(0, NUM_ITEMS))
    else:
      index = int(rng.integers(0, NUM_ITEMS))
    target = rank_models.OOV_ITEM if i % 40 == 0 else items[index]
    intent = features.INTENTS[int(rng.integers(len(features.INTENTS)))]
    history = [items[int(j)] for j in rng.integers(0, NUM_ITEMS, size=int(rng.integers(0, 6)))]
    rates = [0.9] * len(history)
    if repeats:
      rates = [0.1 if rng.random() < 1 / 3 else 0.9 for _ in history]
      if label == features.LABEL_POSITIVE and rng.random() < 0.85:
        history, rates = [target] + history + [target], [0.9] + rates + [0.9]
    play_rate = {features.LABEL_POSITIVE: 0.95, features.LABEL_NEGATIVE: 0.1}.get(label, 0.5)
    examples.append(rank_models.play_example(f'user_{i % 17}', history, target, play_rate,
                                             intent, label, ts=1_700_000_000_000 + i,
                                             history_play_rates=rates))
    targets.append(target)
    labels.append(label)
    intents.append(intent)
    histories.append(history)
    history_rates.append(rates)
  return (examples, targets, np.asarray(labels), np.asarray(intents), histories,
          history_rates)


@pytest.fixture(scope='session')
def eval_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp('evaluation'))


@pytest.fixture(scope='session')
def items():
  return rank_models.item_vocabulary(NUM_ITEMS)


def _eval_data(path: str, examples, *columns) -> EvalData:
  return EvalData(rank_models.write_examples(path, examples), *columns)


@pytest.fixture(scope='session')
def eval_data(eval_root, items):
  return _eval_data(os.path.join(eval_root, 'data', 'eval.tfrecord'),
                    *_eval_examples(np.random.default_rng(11), items))


@pytest.fixture(scope='session')
def repeat_data(eval_root, items):
  """Eval data on which the repeat baseline beats the good model."""
  return _eval_data(os.path.join(eval_root, 'data', 'repeat.tfrecord'),
                    *_eval_examples(np.random.default_rng(12), items, repeats=True))


def _ranker(eval_root, items, name: str, scores: np.ndarray, popularity: np.ndarray) -> Ranker:
  path = rank_models.save_ranker(os.path.join(eval_root, 'models', name), items, scores,
                                 popularity)
  return Ranker(path, scores, popularity)


@pytest.fixture(scope='session')
def rankers(eval_root, items):
  """good: scores follow item quality; near_good: the good scores slightly blurred; medium:
  quality blurred by much noise; bad: quality reversed. Play counts follow quality loosely."""
  rng = np.random.default_rng(5)
  quality = np.arange(NUM_ITEMS, 0, -1, dtype=np.float64)
  jitter = rng.permutation(NUM_ITEMS) * 1e-3  # distinct scores
  good = quality + 5.0 * rng.standard_normal(NUM_ITEMS) + jitter
  medium = quality + 90.0 * rng.standard_normal(NUM_ITEMS) + jitter
  near_good = good + 12.0 * np.random.default_rng(101).standard_normal(NUM_ITEMS)
  plays = quality + 100.0 * np.random.default_rng(23).standard_normal(NUM_ITEMS)
  popularity = np.argsort(np.argsort(-plays))
  scores = {'good': good, 'near_good': near_good, 'medium': medium, 'bad': -quality + jitter}
  return {name: _ranker(eval_root, items, name, value, popularity)
          for name, value in scores.items()}


def run_analysis(output_path: str, data_path: str, candidate: str,
                 baseline: Optional[str] = None) -> str:
  """A real TFMA run, configured exactly as TFX's Evaluator configures it."""
  eval_config = eval_config_lib.config_for_run(eval_config_lib.make_eval_config(GATE),
                                               has_baseline=baseline is not None)
  models = [tfma.default_eval_shared_model(
      eval_saved_model_path=candidate, eval_config=eval_config,
      model_name=tfma.CANDIDATE_KEY if baseline else '')]
  if baseline:
    models.append(tfma.default_eval_shared_model(
        eval_saved_model_path=baseline, eval_config=eval_config, model_name=tfma.BASELINE_KEY))
  tfma.run_model_analysis(eval_shared_model=models if baseline else models[0],
                          eval_config=eval_config, data_location=data_path,
                          output_path=output_path)
  return output_path


@pytest.fixture(scope='session')
def good_alone(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'good_alone'), eval_data.path,
                      rankers['good'].path)


@pytest.fixture(scope='session')
def bad_alone(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'bad_alone'), eval_data.path,
                      rankers['bad'].path)


@pytest.fixture(scope='session')
def medium_alone(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'medium_alone'), eval_data.path,
                      rankers['medium'].path)


@pytest.fixture(scope='session')
def good_alone_on_repeat_data(eval_root, repeat_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'good_alone_on_repeat_data'),
                      repeat_data.path, rankers['good'].path)


@pytest.fixture(scope='session')
def near_good_vs_good(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'near_good_vs_good'), eval_data.path,
                      rankers['near_good'].path, baseline=rankers['good'].path)


@pytest.fixture(scope='session')
def medium_vs_good(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'medium_vs_good'), eval_data.path,
                      rankers['medium'].path, baseline=rankers['good'].path)


@pytest.fixture(scope='session')
def good_vs_medium(eval_root, eval_data, rankers):
  return run_analysis(os.path.join(eval_root, 'runs', 'good_vs_medium'), eval_data.path,
                      rankers['good'].path, baseline=rankers['medium'].path)
