"""The whole pipeline through the real TFX CLI on the local engine, on generated play logs.

A module-scoped sequence of runs, each checked as it lands:
  1. first run: ingest -> transform -> train -> evaluate (no baseline yet) -> blessed -> pushed;
  2. the same inputs again: every component is served from the MLMD cache;
  3. more play logs: a new model, evaluated against the first one as the baseline;
  4. a deliberately broken candidate (one training step): NOT blessed, nothing new pushed.
"""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from contract import features
from datagen import ground_truth
from tests.e2e.cli_workspace import CACHED, NUM_ITEMS, REPO_ROOT, SMALL_CONFIG, Workspace


def baseline_model_id(run):
  """The id of the model the Evaluator compared the candidate against (recorded on the blessing)."""
  return run.output('Evaluator', 'blessing').custom_properties['baseline_model_id'].int_value


def serve(version_dir, histories):
  """Asks the pushed SavedModel's default signature, as TF Serving would, for top-K items."""
  model = tf.saved_model.load(version_dir)
  examples = [_history_example(h).SerializeToString() for h in histories]
  outputs = model.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(examples)})
  return outputs[features.TOP_ITEM_IDS].numpy(), outputs[features.TOP_SCORES].numpy()


def _history_example(history):
  feature = {
      features.HISTORY_ITEM_ID: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[i.encode() for i, _, _ in history])),
      features.HISTORY_PLAY_RATE: tf.train.Feature(
          float_list=tf.train.FloatList(value=[r for _, r, _ in history])),
      features.HISTORY_INTENT: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[n.encode() for _, _, n in history])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  ws = Workspace(tmp_path_factory.mktemp('e2e'))
  ws.write_config(SMALL_CONFIG)
  ws.generate('day1', seed=11, events=12000)
  ws.create_pipeline()
  return ws


@pytest.fixture(scope='module')
def first_run(workspace):
  return workspace.run_pipeline()


@pytest.fixture(scope='module')
def cached_run(first_run, workspace):
  return workspace.run_pipeline()


@pytest.fixture(scope='module')
def second_data_run(cached_run, workspace):
  workspace.generate('day2', seed=12, events=6000)
  return workspace.run_pipeline()


@pytest.fixture(scope='module')
def broken_run(second_data_run, workspace):
  versions_before = workspace.pushed_versions()
  broken = copy.deepcopy(SMALL_CONFIG)
  broken['train']['train_steps'] = 1
  workspace.write_config(broken)
  run = workspace.run_pipeline()
  return run, versions_before


def test_first_run_ingests_trains_blesses_and_pushes(first_run, workspace):
  assert set(first_run.states) >= {
      'PlayLogExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform',
      'Trainer', 'latest_blessed_model_resolver', 'Evaluator', 'Pusher'}
  examples = first_run.output('PlayLogExampleGen', 'examples')
  counts = {k: v.int_value for k, v in examples.custom_properties.items()
            if k.startswith('rows_')}
  assert counts['rows_read'] == 12000
  assert counts['rows_read'] == counts['rows_used'] + counts['rows_quarantined']
  assert first_run.blessed()
  assert len(workspace.pushed_versions()) == 1


def test_summary_prints_counts_gate_and_pushed_model(first_run, workspace):
  result = subprocess.run([sys.executable, '-m', 'pipeline.summary'], env=workspace.env,
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
  assert 'rows_read = 12000' in result.stdout
  assert 'Gate: BLESSED' in result.stdout
  assert f'pushed_destination = {workspace.paths.serving_model_dir}' in result.stdout
  assert os.listdir(workspace.paths.reports_dir), 'the POS@N / NEG@N plot is written'


def test_pushed_model_answers_known_unknown_and_empty_histories(first_run, workspace):
  version_dir = os.path.join(workspace.paths.serving_model_dir,
                             str(workspace.pushed_versions()[-1]))
  known_items = [ground_truth.item_id(i, NUM_ITEMS) for i in range(3)]  # the most popular
  histories = [
      [(known_items[0], 1.0, 'on_demand'), (known_items[1], 0.1, 'recommend')],
      [('never-heard-of-it', 0.9, 'on_demand'), ('nor-this', 1.0, 'unknown_intent')],
      [],
  ]
  item_ids, scores = serve(version_dir, histories)
  k = SMALL_CONFIG['train']['hparams']['top_k']
  assert item_ids.shape == scores.shape == (3, k)
  assert np.all(np.isfinite(scores))
  assert np.all(np.diff(scores, axis=1) <= 0), 'top-K must come best first'
  for row in item_ids:
    assert len(set(row)) == k, 'no item twice in one answer'


def test_unchanged_inputs_are_served_from_the_cache(cached_run, first_run):
  for node in ('PlayLogExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform', 'Trainer'):
    assert cached_run.states[node] == CACHED, node
  # The Evaluator's inputs did change: the resolver now finds the first run's blessed model,
  # so the same model is evaluated again, this time against itself as the baseline.
  assert baseline_model_id(cached_run) == first_run.output('Trainer', 'model').id


def test_new_data_is_evaluated_against_the_first_model(second_data_run, first_run):
  assert second_data_run.states['Trainer'] != CACHED
  assert baseline_model_id(second_data_run) == first_run.output('Trainer', 'model').id


def test_broken_candidate_is_not_blessed_and_not_pushed(broken_run, workspace):
  run, versions_before = broken_run
  assert not run.blessed()
  assert workspace.pushed_versions() == versions_before
  validation = run.validation()
  assert not validation.validation_ok
  failed = {t.metric_key.name for f in validation.metric_validations_per_slice
            for t in f.failures}
  # One step of training falls below the first model by far more than the eval set's noise.
  assert 'pos_drop_beyond_noise_at_10' in failed, failed
