"""The whole pipeline through the real TFX CLI on the local engine, on generated play logs.

A module-scoped sequence of runs, each checked as it lands:
  1. first run: ingest -> transform -> train -> evaluate (no baseline yet) -> blessed -> pushed;
  2. the same inputs again: every component is served from the MLMD cache;
  3. more play logs: a new model, evaluated against the first one as the baseline;
  4. a deliberately broken candidate (one training step): NOT blessed, nothing new pushed.
"""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from contract import features
from contract import settings
from datagen import ground_truth
from pipeline import local_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TFX_CLI = os.path.join(os.path.dirname(sys.executable), 'tfx')
PIPELINE = settings.PIPELINE_NAME
NUM_ITEMS = 400

SMALL_CONFIG = {
    'ingest': {'history_length': 20, 'eval_plays_per_user': 2},
    'train': {'train_steps': 600, 'eval_steps': 5,
              'hparams': {'batch_size': 128, 'hidden_dim': 32, 'item_embedding_dim': 16,
                          'num_layers': 1, 'num_sampled': 64, 'steps_per_checkpoint': 300,
                          'steps_per_log': 100, 'top_k': 20}},
    'gate': {'ns': [10, 50], 'gate_n': 10, 'pos_floor': 0.05, 'pos_tolerance': 0.02,
             'neg_ceiling': 0.6, 'neg_tolerance': 0.05},
}
CACHED = metadata_store_pb2.Execution.CACHED


class Workspace:
  """A PLAYRECALL_HOME of its own and the environment the CLI runs in."""

  def __init__(self, root):
    self.root = str(root)
    self.data = str(root / 'data')
    self.config_path = str(root / 'config.json')
    self.env = dict(os.environ, PLAYRECALL_HOME=str(root / 'home'), PLAYRECALL_DATA=self.data,
                    PLAYRECALL_CONFIG=self.config_path, LOCAL_HOME=str(root / 'cli'),
                    TF_USE_LEGACY_KERAS='1', PYTHONPATH=REPO_ROOT)
    self.paths = local_paths.LocalPaths.from_env(PIPELINE, self.env)

  def write_config(self, config):
    with open(self.config_path, 'w') as f:
      json.dump(config, f)

  def generate(self, day, seed, events):
    """Adds a day of play logs to the data directory, as a log shipper would."""
    out_dir = os.path.join(self.root, 'generated', day)
    subprocess.run([sys.executable, '-m', 'datagen.generate', '--out_dir', out_dir,
                    '--num_events', str(events), '--num_users', '300',
                    '--num_items', str(NUM_ITEMS), '--seed', str(seed), '--quiet'],
                   check=True, env=self.env, cwd=REPO_ROOT)
    os.makedirs(self.data, exist_ok=True)
    for name in os.listdir(out_dir):
      if name.startswith('plays-'):
        shutil.copy(os.path.join(out_dir, name), os.path.join(self.data, f'{day}-{name}'))

  def cli(self, *args):
    result = subprocess.run([TFX_CLI, *args], env=self.env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, f'tfx {" ".join(args)} failed:\n{result.stdout[-5000:]}' \
                                   f'\n{result.stderr[-10000:]}'
    return result

  def run_pipeline(self):
    self.cli('run', 'create', '--engine', 'local', '--pipeline_name', PIPELINE)
    return latest_run(metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            self.paths.metadata_path)))

  def pushed_versions(self):
    serving = self.paths.serving_model_dir
    return sorted(int(v) for v in os.listdir(serving) if v.isdigit()) if os.path.isdir(
        serving) else []


class Run:
  """What one pipeline run recorded in MLMD: each node's execution state and outputs."""

  def __init__(self, states, outputs):
    self.states = states  # {node id: Execution.State}
    self.outputs = outputs  # {(node id, output key): [Artifact]}

  def output(self, node, key):
    (artifact,) = self.outputs[(node, key)]
    return artifact

  def blessed(self):
    return self.output('Evaluator', 'blessing').custom_properties['blessed'].int_value == 1

  def validation(self):
    return tfma.load_validation_result(self.output('Evaluator', 'evaluation').uri)


def latest_run(store):
  runs = store.get_contexts_by_type('pipeline_run')
  newest = max(runs, key=lambda c: c.create_time_since_epoch)
  run_executions = {e.id for e in store.get_executions_by_context(newest.id)}
  node_of = {}
  states = {}
  for node in store.get_contexts_by_type('node'):
    for execution in store.get_executions_by_context(node.id):
      if execution.id in run_executions:
        node_id = node.name.split('.', 1)[1]
        node_of[execution.id] = node_id
        states[node_id] = execution.last_known_state
  events = [e for e in store.get_events_by_execution_ids(list(run_executions))
            if e.type == metadata_store_pb2.Event.OUTPUT]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  outputs = {}
  for event in events:
    key = (node_of[event.execution_id], event.path.steps[0].key)
    outputs.setdefault(key, []).append(artifacts[event.artifact_id])
  return Run(states, outputs)


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
  ws.cli('pipeline', 'create', '--engine', 'local', '--pipeline_path',
         os.path.join(REPO_ROOT, 'local_runner.py'))
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
  assert any(name.startswith('pos_at_') for name in failed), failed
