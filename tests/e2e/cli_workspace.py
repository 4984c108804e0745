"""What the end-to-end tests share: a workspace driving the real TFX CLI, the runs it records in
MLMD, daily play logs to ship into it, and a way to ask a pushed model as TF Serving would."""

import copy
import glob
import json
import os
import shutil
import subprocess
import sys
from typing import List, Sequence, Tuple

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from contract import features
from contract import settings
from datagen import generate as datagen_generate
from pipeline import local_paths
from trainer import checkpoints

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER_FILES = {'local': 'local_runner.py', 'beam': 'beam_runner.py'}
TFX_CLI = os.path.join(os.path.dirname(sys.executable), 'tfx')
PIPELINE = settings.PIPELINE_NAME
NUM_ITEMS = 400
NUM_USERS = 600
DAYS = 3
WINDOW = 2
# The generator runs its model over a lead-in of DAILY_LEAD_IN_DAYS before the written days and,
# by default, DAILY_TAIL_DAYS after them, of which the days hold about 1/25. The tests end the
# span soon after the days instead, so that most plays generated are written.
SPAN_DAYS = datagen_generate.DAILY_LEAD_IN_DAYS + DAYS + 3
# Generated over that span: about 5,500 plays a day written (about 9 a user), 400 songs.
EVENTS = 120_000

# Date-partitioned, a rolling window of two days, warm start: a daily job from the first run.
# Gated at POS@50, as the demo is: on a few hundred eval targets the trained model is within
# noise of the repeat baseline (the user's own history) at POS@10, which the gate asks it to beat
# by popularity_margin, so a gate at POS@10 blesses or not by chance.
SMALL_CONFIG = {
    'ingest': {'history_length': 20, 'eval_plays_per_user': 2,
               'partition_pattern': settings.DAILY_PARTITION_PATTERN,
               'window_partitions': WINDOW},
    'train': {'train_steps': 300, 'eval_steps': 5, 'warm_start': True, 'warm_start_steps': 300,
              'hparams': {'batch_size': 128, 'hidden_dim': 32, 'item_embedding_dim': 16,
                          'num_layers': 1, 'num_sampled': 64, 'steps_per_checkpoint': 300,
                          'steps_per_log': 100, 'top_k': 20}},
    'gate': {'ns': [10, 50], 'gate_n': 50, 'pos_floor': 0.05, 'pos_tolerance': 0.02,
             'neg_ceiling': 0.6, 'neg_tolerance': 0.05},
}
GATE_N = SMALL_CONFIG['gate']['gate_n']
TOP_K = SMALL_CONFIG['train']['hparams']['top_k']
CACHED = metadata_store_pb2.Execution.CACHED
COMPLETE = metadata_store_pb2.Execution.COMPLETE


def config(**changes) -> dict:
  """SMALL_CONFIG with some sections' settings changed: config(train={'train_steps': 1})."""
  changed = copy.deepcopy(SMALL_CONFIG)
  for section, values in changes.items():
    for key, value in values.items():
      if isinstance(value, dict):
        changed[section][key].update(value)
      else:
        changed[section][key] = value
  return changed


def generate_days(out_dir: str, seed: int) -> List[str]:
  """Generates DAYS days of play logs (one YYYY-MM-DD/ partition a day) to ship one at a time;
  returns their names, oldest first."""
  subprocess.run([sys.executable, '-m', 'datagen.generate', '--out_dir', out_dir,
                  '--num_events', str(EVENTS), '--num_users', str(NUM_USERS),
                  '--num_items', str(NUM_ITEMS), '--seed', str(seed), '--days', str(DAYS),
                  '--set', f'span_days={SPAN_DAYS}',
                  '--set', f'mean_session_gap_hours={24 * SPAN_DAYS}', '--quiet'],
                 check=True, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  return sorted(name for name in os.listdir(out_dir) if not name.startswith('_'))


def plays_in(directory: str) -> int:
  """The play rows of the CSV files under a generated day's partition."""
  rows = 0
  for path in glob.glob(os.path.join(directory, '*.csv')):
    with open(path) as f:
      rows += sum(1 for _ in f) - 1  # the header
  return rows


class Workspace:
  """A PLAYRECALL_HOME of its own, the environment the CLI runs in, and the CLI's engine."""

  def __init__(self, root, engine: str = 'local'):
    self.root = str(root)
    self.engine = engine
    self.data = os.path.join(self.root, 'data')
    self.config_path = os.path.join(self.root, 'config.json')
    self.env = dict(os.environ, PLAYRECALL_HOME=os.path.join(self.root, 'home'),
                    PLAYRECALL_DATA=self.data, PLAYRECALL_CONFIG=self.config_path,
                    LOCAL_HOME=os.path.join(self.root, 'cli'),
                    BEAM_HOME=os.path.join(self.root, 'cli'),
                    TF_USE_LEGACY_KERAS='1', PYTHONPATH=REPO_ROOT)

  @property
  def paths(self) -> local_paths.LocalPaths:
    return local_paths.LocalPaths.from_env(PIPELINE, self.env)

  def write_config(self, config_dict):
    with open(self.config_path, 'w') as f:
      json.dump(config_dict, f)

  def ship_day(self, generated_dir: str, name: str):
    """Adds a generated day's partition to the data directory, as a log shipper would."""
    shutil.copytree(os.path.join(generated_dir, name), os.path.join(self.data, name))

  def cli(self, *args):
    result = subprocess.run([TFX_CLI, *args], env=self.env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, f'tfx {" ".join(args)} failed:\n{result.stdout[-5000:]}' \
                                   f'\n{result.stderr[-10000:]}'
    return result

  def run_args(self) -> List[str]:
    return [TFX_CLI, 'run', 'create', '--engine', self.engine, '--pipeline_name', PIPELINE]

  def create_pipeline(self):
    self.cli('pipeline', 'create', '--engine', self.engine, '--pipeline_path',
             os.path.join(REPO_ROOT, RUNNER_FILES[self.engine]))

  def run_pipeline(self) -> 'Run':
    result = self.cli(*self.run_args()[1:])
    run = self.latest_run()
    run.log = result.stdout + result.stderr
    runs = len([name for name in os.listdir(self.root) if name.startswith('run-')])
    with open(os.path.join(self.root, f'run-{runs + 1}.log'), 'w') as f:
      f.write(run.log)  # for a look after a failure
    return run

  def start_run(self, log_path: str) -> subprocess.Popen:
    """`tfx run create` in a process group of its own (the CLI, the runner it starts, and theirs),
    its output into log_path."""
    with open(log_path, 'w') as log:
      return subprocess.Popen(self.run_args(), env=self.env, cwd=REPO_ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)

  def summary(self) -> str:
    """What `python -m pipeline.summary` prints about the latest run."""
    result = subprocess.run([sys.executable, '-m', 'pipeline.summary'], env=self.env,
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout

  def latest_run(self) -> 'Run':
    return latest_run(metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            self.paths.metadata_path)))

  def pushed_versions(self) -> List[int]:
    serving = self.paths.serving_model_dir
    return sorted(int(v) for v in os.listdir(serving) if v.isdigit()) if os.path.isdir(
        serving) else []

  def checkpoint_steps(self, directory: str) -> List[int]:
    """The steps of the checkpoints in one training's checkpoint directory, newest first."""
    return [step for step, _ in checkpoints.numbered_checkpoints(directory)]


class Run:
  """What one pipeline run recorded in MLMD: each node's execution state and outputs."""

  def __init__(self, states, outputs, inputs):
    self.states = states  # {node id: Execution.State}
    self.outputs = outputs  # {(node id, output key): [Artifact]}
    self.inputs = inputs  # {(node id, input key): [Artifact]}
    self.log = ''  # what the CLI printed, when the run was started through run_pipeline

  def output(self, node, key):
    (artifact,) = self.outputs[(node, key)]
    return artifact

  def blessed(self) -> bool:
    return self.output('Evaluator', 'blessing').custom_properties['blessed'].int_value == 1

  def baseline_model_id(self) -> int:
    """The id of the model the Evaluator compared the candidate against (on the blessing)."""
    return self.output('Evaluator', 'blessing').custom_properties[
        'baseline_model_id'].int_value

  def validation(self):
    return tfma.load_validation_result(self.output('Evaluator', 'evaluation').uri)

  def failed_checks(self) -> set:
    return {t.metric_key.name for f in self.validation().metric_validations_per_slice
            for t in f.failures}

  def pushed(self) -> bool:
    return self.output('Pusher', 'pushed_model').custom_properties['pushed'].int_value == 1


def latest_run(store) -> Run:
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


History = Sequence[Tuple[str, float, str]]  # (item id, play rate, intent), oldest first


def serve(version_dir: str, histories: Sequence[History]):
  """Asks a pushed SavedModel's default signature, as TF Serving would, for top-K items."""
  model = tf.saved_model.load(version_dir)
  examples = [history_example(h).SerializeToString() for h in histories]
  outputs = model.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(examples)})
  return outputs[features.TOP_ITEM_IDS].numpy(), outputs[features.TOP_SCORES].numpy()


def history_example(history: History) -> tf.train.Example:
  feature = {
      features.HISTORY_ITEM_ID: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[i.encode() for i, _, _ in history])),
      features.HISTORY_PLAY_RATE: tf.train.Feature(
          float_list=tf.train.FloatList(value=[r for _, r, _ in history])),
      features.HISTORY_INTENT: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[n.encode() for _, _, n in history])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))
