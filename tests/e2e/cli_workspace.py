"""What the end-to-end tests share: a workspace driving the real TFX CLI, and the runs it records
in MLMD."""

import json
import os
import shutil
import subprocess
import sys

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from contract import settings
from pipeline import local_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER_FILES = {'local': 'local_runner.py', 'beam': 'beam_runner.py'}
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
  """A PLAYRECALL_HOME of its own, the environment the CLI runs in, and the CLI's engine."""

  def __init__(self, root, engine: str = 'local'):
    self.root = str(root)
    self.engine = engine
    self.data = str(root / 'data')
    self.config_path = str(root / 'config.json')
    self.env = dict(os.environ, PLAYRECALL_HOME=str(root / 'home'), PLAYRECALL_DATA=self.data,
                    PLAYRECALL_CONFIG=self.config_path, LOCAL_HOME=str(root / 'cli'),
                    BEAM_HOME=str(root / 'cli'),
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

  def generate_days(self, days, seed, events):
    """Generates a daily log of `days` partitions (YYYY-MM-DD/) to ship one at a time; returns
    their names, oldest first. `events` are generated over the generator's whole span, of which
    the days hold about days / (days + 75)."""
    out_dir = os.path.join(self.root, 'generated-days')
    subprocess.run([sys.executable, '-m', 'datagen.generate', '--out_dir', out_dir,
                    '--num_events', str(events), '--num_users', '300',
                    '--num_items', str(NUM_ITEMS), '--seed', str(seed), '--days', str(days),
                    '--quiet'], check=True, env=self.env, cwd=REPO_ROOT)
    return sorted(name for name in os.listdir(out_dir) if not name.startswith('_'))

  def ship_day(self, name):
    """Adds a generated day's partition to the data directory, as a log shipper would."""
    shutil.copytree(os.path.join(self.root, 'generated-days', name),
                    os.path.join(self.data, name))

  def cli(self, *args):
    result = subprocess.run([TFX_CLI, *args], env=self.env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, f'tfx {" ".join(args)} failed:\n{result.stdout[-5000:]}' \
                                   f'\n{result.stderr[-10000:]}'
    return result

  def create_pipeline(self):
    self.cli('pipeline', 'create', '--engine', self.engine, '--pipeline_path',
             os.path.join(REPO_ROOT, RUNNER_FILES[self.engine]))

  def run_pipeline(self):
    self.cli('run', 'create', '--engine', self.engine, '--pipeline_name', PIPELINE)
    return self.latest_run()

  def latest_run(self):
    return latest_run(metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            self.paths.metadata_path)))

  def pushed_versions(self):
    serving = self.paths.serving_model_dir
    return sorted(int(v) for v in os.listdir(serving) if v.isdigit()) if os.path.isdir(
        serving) else []


class Run:
  """What one pipeline run recorded in MLMD: each node's execution state and outputs."""

  def __init__(self, states, outputs, inputs):
    self.states = states  # {node id: Execution.State}
    self.outputs = outputs  # {(node id, output key): [Artifact]}
    self.inputs = inputs  # {(node id, input key): [Artifact]}

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
  events = store.get_events_by_execution_ids(list(run_executions))
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  by_type = {metadata_store_pb2.Event.OUTPUT: {}, metadata_store_pb2.Event.INPUT: {}}
  for event in events:
    if event.type in by_type:
      key = (node_of[event.execution_id], event.path.steps[0].key)
      by_type[event.type].setdefault(key, []).append(artifacts[event.artifact_id])
  return Run(states, by_type[metadata_store_pb2.Event.OUTPUT],
             by_type[metadata_store_pb2.Event.INPUT])
