"""The gate through the real TFX CLI: a first model worse than most-popular is not pushed.

On a first run there is no baseline model, so before the popularity comparison any model that
cleared the absolute floor and ceiling was pushed. Here the floor and ceiling let everything
through and the model trains one step: only most-popular, counted from the same run's training
plays and measured on the same eval targets, stands between it and TF Serving.
"""

import copy
import subprocess
import sys

import pytest

from evaluation import metrics
from evaluation import report
from tests.e2e.cli_workspace import REPO_ROOT, SMALL_CONFIG, Workspace

CONFIG = copy.deepcopy(SMALL_CONFIG)
CONFIG['train']['train_steps'] = 1
CONFIG['gate'].update(pos_floor=0.0, neg_ceiling=1.0, popularity_margin=0.1)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  ws = Workspace(tmp_path_factory.mktemp('gate'))
  ws.write_config(CONFIG)
  ws.generate('day1', seed=31, events=12000)
  ws.create_pipeline()
  return ws


@pytest.fixture(scope='module')
def first_run(workspace):
  return workspace.run_pipeline()


def test_the_one_step_model_is_below_most_popular(first_run):
  """The premise of the tests below, measured rather than assumed: on the eval targets the
  one-step model's POS@10 is below most-popular's itself, not only short of the margin
  (popularity_margin) the gate asks on top."""
  overall = report.load_run(first_run.output('Evaluator', 'evaluation').uri).model.by_slice[
      report.OVERALL]
  model, popular = overall['pos_at_10'], overall[metrics.POPULARITY_PREFIX + 'pos_at_10']
  assert model < popular, (model, popular)


def test_a_first_model_worse_than_most_popular_is_not_blessed_nor_pushed(first_run, workspace):
  assert not first_run.blessed()
  assert workspace.pushed_versions() == []
  validation = first_run.validation()
  failed = {t.metric_key.name for f in validation.metric_validations_per_slice
            for t in f.failures}
  assert 'pos_lift_over_popularity_at_10' in failed, failed
  assert not {'pos_at_10', 'neg_at_10'} & failed  # the floor and ceiling let it through


def test_the_summary_shows_the_model_beside_most_popular(first_run, workspace):
  result = subprocess.run([sys.executable, '-m', 'pipeline.summary'], env=workspace.env,
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
  assert 'Gate: NOT BLESSED (no baseline model in this run' in result.stdout
  assert 'failed: pos_lift_over_popularity_at_10 [Overall]' in result.stdout
  header = next(line for line in result.stdout.splitlines() if line.startswith('slice'))
  assert header.split()[2:7] == ['model', 'popular', 'repeat', 'baseline', 'change']
