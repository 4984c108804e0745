"""Recall quality of DeepMatch variants a, b, c against non-learned baselines, on generated data.

  python benchmarks/quality.py --num_events 200000 --num_items 20000 --seeds 0,1,2
  python benchmarks/quality.py --quick     (tiny sizes, one seed, variant c: a minute; no results)

For each seed (the generator's and the trainer's), each step with the project's real code on the
local Beam runner:
  1. datagen.generate writes a synthetic play log (CSV) with known tastes, dislikes and skips;
  2. PlayLogExampleGen's executor builds the examples, split by time (each user's last
     --eval_plays_per_user plays are the eval split; the train split holds play windows);
  3. Transform's executor runs transform.preprocessing (item vocabulary from the train split);
  4. the Trainer's executor trains each variant (run_fn trainer.run.run_fn) and exports it; at
     every checkpoint (--checkpoint_steps) run_fn measures POS@N on the valid split (each user's
     plays just before the eval ones, never trained on), records it with the training seconds so
     far (the time-to-quality curve) and exports the best checkpoint;
  5. every method ranks each eval target exactly among the whole item vocabulary: the learned
     variants through their exported target-rank signature (what the Evaluator calls), the
     baselines (most popular; co-occurrence with the previous play; repeat: the user's own
     played-through history by play count, then most popular) in numpy;
  6. evaluation.hit_rate turns the ranks into POS@N and NEG@N. The table gives the mean over
     seeds with its standard error, and each method's share of the headroom over most popular
     on POS@N: (method - most popular) / (history-bounded oracle - most popular); it is printed
     and written, with the command and the stage times, to --results (docs/results.md).

Arguments after `--` are Beam pipeline args for the ExampleGen and Transform executors.
"""

import argparse
import dataclasses
import glob
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from contract import features
from contract import settings
from datagen import oracle as generator_oracle

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ('a', 'b', 'c')
MOST_POPULAR = 'most popular'
REPEAT = 'repeat (own history)'
# How datagen/oracle.py's benchmark_ranks names the history-bounded oracle's row (the variant
# knowing only the favourites in the history window): the bound of the headroom columns.
HISTORY_BOUNDED_ORACLE_PREFIX = 'oracle, favourites in last'
RUN_FN = 'trainer.run.run_fn'
PREPROCESSING_FN = 'transform.preprocessing.preprocessing_fn'
# --quick: sizes for a run of about a minute that still goes through every stage; arguments given
# on the command line win. Fewer sampled negatives than the tiny catalogue's items.
QUICK_DEFAULTS = {'num_events': 3_000, 'num_items': 300, 'seeds': '0', 'variants': 'c',
                  'train_steps': 30, 'checkpoint_steps': 10, 'hparams': '{"num_sampled": 64}',
                  'results': ''}
# Enough batches for the whole valid split, on which the Trainer picks the checkpoint it exports.
EVAL_BATCHES = 1_000_000


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_events', type=int, default=200_000)
  parser.add_argument('--num_users', type=int, default=None,
                      help='default: the generator default (num_events / 100)')
  parser.add_argument('--num_items', type=int, default=20_000)
  parser.add_argument('--seeds', default='0,1,2',
                      help='comma-separated seeds; each generates its own log and trains with it')
  parser.add_argument('--eval_plays_per_user', type=int, default=3,
                      help="each user's last this many plays form the eval split")
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help='comma-separated trainer variants to train (empty: baselines only)')
  parser.add_argument('--train_steps', type=int, default=2000,
                      help='training steps per variant (2000 steps of 32 windows: about 17 epochs '
                      'at 200k events; a seed with 3 variants takes about 17 min on 2 cores)')
  parser.add_argument('--checkpoint_steps', type=int, default=200,
                      help='steps between checkpoints, where POS@N is measured for the '
                      'time-to-quality curve')
  parser.add_argument('--target_pos_at_50', type=float, default=None,
                      help='also report the training seconds each variant needed to reach this '
                      'POS@50 (e.g. another trainer\'s final POS@50)')
  parser.add_argument('--hparams', default='{}',
                      help='JSON of extra trainer.hparams.HParams fields for every variant, '
                      'e.g. \'{"num_sampled": 512}\'')
  parser.add_argument('--generator', default='{}',
                      help='JSON of datagen.model.GeneratorConfig fields for the generated logs, '
                      'e.g. the feedback knobs off: \'{"skip_ends_session": 0, '
                      '"skip_leaves_genre": 0, "genre_request_switch": 0, '
                      '"recommend_disliked": 0}\'')
  parser.add_argument('--work_dir', default=None,
                      help='where the log, examples and models go (default: a temp dir, deleted '
                      'after the run)')
  parser.add_argument('--reuse', action='store_true',
                      help='reuse the stages already finished in --work_dir (same arguments)')
  parser.add_argument('--results', default=os.path.join(REPO_ROOT, 'docs', 'results.md'),
                      help='markdown file the table is written to (empty: do not write)')
  parser.add_argument('--quick', action='store_true',
                      help='tiny sizes for a smoke run: ' + ', '.join(
                          f'--{name} {value!r}' for name, value in QUICK_DEFAULTS.items())
                      + ' (so docs/results.md is not written)')
  parser.add_argument('beam_pipeline_args', nargs='*',
                      help='Beam pipeline args after "--", e.g. --direct_num_workers=2')
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(**QUICK_DEFAULTS)
    args = parser.parse_args(argv)
  args.variants = [v for v in args.variants.split(',') if v]
  try:
    args.seeds = [int(seed) for seed in args.seeds.split(',')]
  except ValueError:
    parser.error(f'--seeds: expected comma-separated integers, got {args.seeds!r}')
  unknown = sorted(set(args.variants) - set(VARIANTS))
  if unknown:
    parser.error(f'--variants: unknown {unknown}; choose from {list(VARIANTS)}')
  try:
    args.extra_hparams = json.loads(args.hparams)
  except json.JSONDecodeError as error:
    parser.error(f'--hparams is not JSON: {error}')
  if not isinstance(args.extra_hparams, dict):
    parser.error('--hparams must be a JSON object')
  args.generator_knobs = _generator_knobs(parser, args.generator)
  if args.reuse and not args.work_dir:
    parser.error('--reuse needs --work_dir')
  return args


def _generator_knobs(parser: argparse.ArgumentParser, text: str) -> Dict:
  """--generator's JSON object, its keys checked against the generator's knobs."""
  from datagen import model as generator_model  # pylint: disable=g-import-not-at-top
  try:
    knobs = json.loads(text)
  except json.JSONDecodeError as error:
    parser.error(f'--generator is not JSON: {error}')
  if not isinstance(knobs, dict):
    parser.error('--generator must be a JSON object')
  known = {f.name for f in dataclasses.fields(generator_model.GeneratorConfig)}
  reserved = {'num_events', 'num_users', 'num_items', 'seed'}
  unknown = sorted(set(knobs) - (known - reserved))
  if unknown:
    parser.error(f'--generator: unknown or reserved knob(s) {unknown}; known: '
                 f'{sorted(known - reserved)}')
  return knobs


def progress(message: str) -> None:
  print(message, flush=True)


class Stages:
  """Runs named stages once per work dir, timing them; with reuse, a finished stage is skipped
  and its time is the one recorded when it ran."""

  def __init__(self, work_dir: str, reuse: bool):
    self.work_dir = work_dir
    self.reuse = reuse
    self.seconds: Dict[str, float] = {}

  def run(self, name: str, fn, *args):
    marker = os.path.join(self.work_dir, f'.done-{name}')
    out_dir = os.path.join(self.work_dir, name)
    if self.reuse and os.path.exists(marker):
      with open(marker) as f:
        self.seconds[name] = float(f.read() or 'nan')  # the time it took when it ran
      progress(f'[{name}] reusing {out_dir}')
      return
    shutil.rmtree(out_dir, ignore_errors=True)
    progress(f'[{name}] ...')
    started = time.time()
    fn(out_dir, *args)
    self.seconds[name] = time.time() - started
    progress(f'[{name}] done in {self.seconds[name]:.0f} s')
    with open(marker, 'w') as f:
      f.write(str(self.seconds[name]))


# --- Pipeline stages: the components' own executors ----------------------------------------


def generate_log(out_dir: str, args: argparse.Namespace, seed: int) -> None:
  from datagen import generate as generate_lib  # pylint: disable=g-import-not-at-top
  summary = generate_lib.generate(out_dir, num_events=args.num_events, num_users=args.num_users,
                                  num_items=args.num_items, seed=seed, fmt='csv',
                                  overwrite=True, **args.generator_knobs)
  progress(f'  {summary["events"]:,} events, {summary["users"]:,} users, '
           f'{summary["items"]:,} items')


def artifact(artifact_type, uri: str):
  made = artifact_type()
  made.uri = uri
  return made


def examples_artifact(uri: str):
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  examples = artifact(standard_artifacts.Examples, uri)
  examples.split_names = artifact_utils.encode_split_names(list(features.SPLITS))
  return examples


def run_example_gen(out_dir: str, log_dir: str, args: argparse.Namespace, **properties):
  """Runs PlayLogExampleGen's executor on log_dir (with any other of its properties); returns the
  examples artifact."""
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.play_log_example_gen import artifacts  # pylint: disable=g-import-not-at-top
  from components.play_log_example_gen import executor  # pylint: disable=g-import-not-at-top
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=args.beam_pipeline_args, tmp_dir=os.path.join(out_dir, 'tmp'))
  examples = artifact(standard_artifacts.Examples, os.path.join(out_dir, 'examples'))
  executor.Executor(context).Do(
      {}, {'examples': [examples],
           'quarantine': [artifact(artifacts.Quarantine, os.path.join(out_dir, 'quarantine'))]},
      {'input_base': log_dir, 'input_format': 'csv',
       'eval_plays_per_user': args.eval_plays_per_user, **properties})
  return examples


def raw_schema():
  """The raw examples' schema as SchemaGen infers it (infer_feature_shape=True)."""
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  return schema_utils.schema_from_feature_spec(features.raw_feature_spec())


def run_transform(out_dir: str, examples_uri: str, args: argparse.Namespace) -> None:
  from tfx.components.transform import executor  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import io_utils  # pylint: disable=g-import-not-at-top
  schema_dir = os.path.join(out_dir, 'schema')
  io_utils.write_pbtxt_file(os.path.join(schema_dir, 'schema.pbtxt'), raw_schema())
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=args.beam_pipeline_args, tmp_dir=os.path.join(out_dir, 'tmp'))
  executor.Executor(context).Do(
      {'examples': [examples_artifact(examples_uri)],
       'schema': [artifact(standard_artifacts.Schema, schema_dir)]},
      {'transform_graph': [artifact(standard_artifacts.TransformGraph,
                                     os.path.join(out_dir, 'transform_graph'))],
       'transformed_examples': [examples_artifact(os.path.join(out_dir, 'transformed'))]},
      {'preprocessing_fn': PREPROCESSING_FN, 'custom_config': json.dumps({}),
       'force_tf_compat_v1': 0, 'disable_statistics': 1})


def train_variant(out_dir: str, variant: str, transform_dir: str, args: argparse.Namespace,
                  seed: int) -> None:
  hparams = dict(args.extra_hparams, variant=variant, train_steps=args.train_steps, seed=seed,
                 steps_per_checkpoint=args.checkpoint_steps)
  run_trainer(out_dir, transform_dir, hparams, args.train_steps)


def run_trainer(out_dir: str, transform_dir: str, hparams: Dict, train_steps: int,
                base_model: Optional[str] = None) -> None:
  """Runs the Trainer's executor (run_fn trainer.run.run_fn) on run_transform's output in
  transform_dir; with base_model (a Model artifact's directory), warm-starts from it and trains
  train_steps on top."""
  from tfx.components.trainer import executor  # pylint: disable=g-import-not-at-top
  from tfx.proto import trainer_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  inputs = {
      'examples': [examples_artifact(os.path.join(transform_dir, 'transformed'))],
      'transform_graph': [artifact(standard_artifacts.TransformGraph,
                                   os.path.join(transform_dir, 'transform_graph'))],
      'schema': [artifact(standard_artifacts.Schema, os.path.join(transform_dir, 'schema'))]}
  custom_config = {settings.TRAINER_HPARAMS_KEY: hparams}
  if base_model:
    inputs['base_model'] = [artifact(standard_artifacts.Model, base_model)]
    custom_config[settings.TRAINER_WARM_START_STEPS_KEY] = train_steps
  executor.GenericExecutor().Do(
      inputs,
      {'model': [artifact(standard_artifacts.Model, os.path.join(out_dir, 'model'))],
       'model_run': [artifact(standard_artifacts.ModelRun, os.path.join(out_dir, 'model_run'))]},
      {'run_fn': RUN_FN,
       'train_args': proto_utils.proto_to_json(trainer_pb2.TrainArgs(num_steps=train_steps)),
       'eval_args': proto_utils.proto_to_json(trainer_pb2.EvalArgs(
           splits=[features.VALID_SPLIT], num_steps=EVAL_BATCHES)),
       'custom_config': json.dumps(custom_config)})


# --- Reading examples and ranking ------------------------------------------------------------


@dataclasses.dataclass
class Split:
  serialized: List[bytes]
  target_ids: np.ndarray  # model ids, V for OOV
  last_history_ids: np.ndarray  # model id of the history's last item; V if empty or OOV
  labels: np.ndarray
  history_ids: List[np.ndarray]  # each example's history as model ids, oldest first
  history_played: List[np.ndarray]  # bool, the same shapes: the play's label is positive


def read_split(examples_uri: str, split: str, item_index: Dict[bytes, int]) -> Split:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(examples_uri, f'Split-{split}', '*.gz')))
  if not files:
    raise FileNotFoundError(f'no examples in {examples_uri}/Split-{split}')
  spec = {features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
          features.LABEL: tf.io.FixedLenFeature([], tf.int64),
          features.HISTORY_ITEM_ID: tf.io.VarLenFeature(tf.string),
          features.HISTORY_LABEL: tf.io.VarLenFeature(tf.int64)}
  serialized, targets, last, labels, history_ids, history_played = [], [], [], [], [], []
  oov = len(item_index)
  for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
    parsed = tf.io.parse_example(batch, spec)
    history = tf.RaggedTensor.from_sparse(parsed[features.HISTORY_ITEM_ID])
    history_ids.extend(np.asarray([item_index.get(item, oov) for item in items], np.int64)
                       for items in history.to_list())
    history_played.extend(np.asarray(history_labels) == features.LABEL_POSITIVE for history_labels
                          in tf.RaggedTensor.from_sparse(parsed[features.HISTORY_LABEL]).to_list())
    last_items = tf.where(history.row_lengths() > 0,
                          history.with_row_splits_dtype(tf.int64)[:, -1:].to_tensor(
                              default_value=b'', shape=[None, 1])[:, 0], b'')
    serialized.extend(batch.numpy().tolist())
    targets.extend(item_index.get(item, oov) for item in parsed[features.ITEM_ID].numpy())
    last.extend(item_index.get(item, oov) for item in last_items.numpy())
    labels.append(parsed[features.LABEL].numpy())
  return Split(serialized, np.asarray(targets, np.int64), np.asarray(last, np.int64),
               np.concatenate(labels), history_ids, history_played)


def positive_transitions(examples_uri: str, item_index: Dict[bytes, int]):
  """(previous ids, next ids) of every consecutive pair of plays in the train windows whose
  second play is positive: what the co-occurrence baseline counts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(examples_uri, 'Split-train', '*.gz')))
  spec = {features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
          features.LABEL: tf.io.FixedLenFeature([], tf.int64),
          features.HISTORY_ITEM_ID: tf.io.VarLenFeature(tf.string),
          features.HISTORY_LABEL: tf.io.VarLenFeature(tf.int64)}
  oov = len(item_index)
  previous, following = [], []
  for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
    parsed = tf.io.parse_example(batch, spec)
    items = tf.RaggedTensor.from_sparse(parsed[features.HISTORY_ITEM_ID]).to_list()
    labels = tf.RaggedTensor.from_sparse(parsed[features.HISTORY_LABEL]).to_list()
    for i, (window, window_labels) in enumerate(zip(items, labels)):
      window = window + [parsed[features.ITEM_ID][i].numpy()]
      window_labels = window_labels + [int(parsed[features.LABEL][i])]
      for j in range(1, len(window)):
        if window_labels[j] == features.LABEL_POSITIVE:
          previous.append(item_index.get(window[j - 1], oov))
          following.append(item_index.get(window[j], oov))
  return np.asarray(previous, np.int64), np.asarray(following, np.int64)


def time_to_quality(model_run_dir: str) -> List[Dict[str, float]]:
  """[{'step', 'seconds', 'pos_at_50', 'neg_at_50'}] at every checkpoint of a training run."""
  from trainer import train_loop  # pylint: disable=g-import-not-at-top
  scalars = train_loop.read_summaries(model_run_dir)
  seconds = dict(scalars['training_seconds'])
  pos, neg = dict(scalars['eval/pos_at_50']), dict(scalars['eval/neg_at_50'])
  return [{'step': step, 'seconds': seconds[step], 'pos_at_50': pos[step], 'neg_at_50': neg[step]}
          for step in sorted(seconds)]


def time_to_most_of_best(curve: List[Dict[str, float]], share: float = 0.9) -> float:
  """The share of a run's training seconds spent before its first checkpoint with at least
  `share` of the best checkpoint's POS@50 (the one exported)."""
  best = max(point['pos_at_50'] for point in curve)
  return seconds_to_reach(curve, share * best) / curve[-1]['seconds']


def seconds_to_reach(curve: List[Dict[str, float]], pos_at_50: float) -> float:
  """Training seconds at the first checkpoint whose POS@50 reaches pos_at_50 (inf if none)."""
  return next((point['seconds'] for point in curve if point['pos_at_50'] >= pos_at_50),
              float('inf'))


def item_vocabulary(transform_graph_dir: str) -> List[bytes]:
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  return tft.TFTransformOutput(transform_graph_dir).vocabulary_by_name(features.ITEM_VOCAB)


# Eval examples ranked per call of the exported model's signature.
EXAMPLES_PER_RANK_CALL = 512


def model_ranks(model_dir: str, serialized: List[bytes]) -> np.ndarray:
  """Target ranks from an exported model's target-rank signature, as the Evaluator gets them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serving_dirs = glob.glob(os.path.join(model_dir, 'Format-Serving'))
  model = tf.saved_model.load(serving_dirs[0] if serving_dirs else model_dir)
  signature = model.signatures[features.TARGET_RANK_SIGNATURE]
  ranks = []
  for start in range(0, len(serialized), EXAMPLES_PER_RANK_CALL):
    batch = tf.constant(serialized[start:start + EXAMPLES_PER_RANK_CALL])
    ranks.append(signature(**{features.SIGNATURE_INPUT: batch})[features.TARGET_RANK].numpy())
  return np.concatenate(ranks).astype(np.int64)


def data_facts(log_dir: str, examples_uri: str) -> List[str]:
  """What the eval split and the generator's ground truth say about the variants' inputs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from datagen import ground_truth  # pylint: disable=g-import-not-at-top
  truth = ground_truth.load(log_dir)
  spec = {name: tf.io.FixedLenFeature([], tf.string)
          for name in (features.ITEM_ID, features.USER_ID, features.INTENT)}
  spec[features.LABEL] = tf.io.FixedLenFeature([], tf.int64)
  spec[features.HISTORY_ITEM_ID] = tf.io.VarLenFeature(tf.string)
  spec[features.HISTORY_PLAY_RATE] = tf.io.VarLenFeature(tf.float32)
  files = sorted(glob.glob(os.path.join(examples_uri, 'Split-eval', '*.gz')))
  rows = []
  for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
    parsed = tf.io.parse_example(batch, spec)
    histories = tf.RaggedTensor.from_sparse(parsed[features.HISTORY_ITEM_ID]).to_list()
    rates = tf.RaggedTensor.from_sparse(parsed[features.HISTORY_PLAY_RATE]).to_list()
    for i, history in enumerate(histories):
      rows.append({'target': parsed[features.ITEM_ID][i].numpy().decode(),
                   'user': parsed[features.USER_ID][i].numpy().decode(),
                   'intent': parsed[features.INTENT][i].numpy().decode(),
                   'label': int(parsed[features.LABEL][i]),
                   'history': [item.decode() for item in history], 'rates': rates[i]})
  genre = truth.item_genre

  def same_genre_share(targets, pick):
    pairs = [(r['target'], pick(r)) for r in targets if pick(r)]
    items = truth.item_index([t for t, _ in pairs] + [p for _, p in pairs])
    return np.mean(genre[items[:len(pairs)]] == genre[items[len(pairs):]])

  def last_well_played(r):
    kept = [item for item, rate in zip(r['history'], r['rates']) if rate >= 0.8]
    return kept[-1] if kept else None

  positive = [r for r in rows if r['label'] == features.LABEL_POSITIVE]
  negative = [r for r in rows if r['label'] == features.LABEL_NEGATIVE]
  disliked = truth.affinity([r['user'] for r in negative], [r['target'] for r in negative]) == -1
  return [
      f'- Positive eval targets in the genre of the previous play: '
      f'{same_genre_share(positive, lambda r: r["history"][-1] if r["history"] else None):.0%}; '
      f'in the genre of the last *well-played* play (the last position of variant a\'s '
      f'filtered history): {same_genre_share(positive, last_well_played):.0%}. '
      f'{np.mean([bool(r["rates"]) and r["rates"][-1] <= 0.3 for r in positive]):.0%} of them '
      'follow a skip.',
      f'- Negative eval targets: {np.mean([r["intent"] == "recommend" for r in negative]):.0%} '
      f'are `recommend` plays, {np.mean(disliked):.0%} are songs the user dislikes (ground '
      f'truth), {np.mean([r["target"] in r["history"] for r in negative]):.0%} are already in '
      'the user\'s history.',
  ]


# --- Report ------------------------------------------------------------------------------------


# POS@N split by whether the target is among the history's items, at these N.
HISTORY_SPLIT_NS = (10, 50)


def targets_in_history(split: Split) -> np.ndarray:
  """bool [N]: each example's target item is one of its history's items (a return)."""
  return np.asarray([target in set(history.tolist())
                     for target, history in zip(split.target_ids, split.history_ids)])


def history_split_rates(ranks: np.ndarray, labels: np.ndarray,
                        in_history: np.ndarray) -> Dict[str, float]:
  """POS@N over the positive targets the history holds ('returns') and over the others
  ('new'), and the share of returns among positives: where a method's hits come from."""
  positive = labels == features.LABEL_POSITIVE
  rates = {'return_share': float(np.mean(in_history[positive]))}
  for n in HISTORY_SPLIT_NS:
    hits = ranks < n
    rates[f'pos_at_{n}_returns'] = float(np.mean(hits[positive & in_history]))
    rates[f'pos_at_{n}_new'] = float(np.mean(hits[positive & ~in_history]))
  return rates


def format_history_split(rates: Dict[int, Dict[str, Dict[str, float]]]) -> List[str]:
  """Markdown table of POS@N on returns and on new songs, mean ± standard error over seeds."""
  keys = [f'pos_at_{n}_{kind}' for kind in ('returns', 'new') for n in HISTORY_SPLIT_NS]
  share, share_error = mean_and_error([r[MOST_POPULAR]['return_share'] for r in rates.values()])
  lines = [f'Positive eval targets the history already holds (returns): {share:.1%} ± '
           f'{share_error:.1%}. POS@N on returns and on the others (new songs):', '',
           '| method | ' + ' | '.join(f'POS@{n} {kind}' for kind in ('returns', 'new')
                                     for n in HISTORY_SPLIT_NS) + ' |',
           '|' + '---|' * (len(keys) + 1)]
  for method in next(iter(rates.values())):
    cells = [mean_and_error([r[method][key] for r in rates.values()]) for key in keys]
    lines.append(f'| {method} | ' + ' | '.join(f'{m:.4f} ± {e:.4f}' for m, e in cells) + ' |')
  return lines


def mean_and_error(values: Sequence[float]):
  """The mean and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
  values = np.asarray(values, np.float64)
  error = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
  return float(values.mean()), float(error)


def format_table(rates: Dict[int, Dict[str, Dict[str, float]]]) -> str:
  """Markdown table of each method's mean ± standard error over the seeds, and, when the
  history-bounded oracle was ranked, its share of the headroom on each POS@N."""
  ns = settings.METRIC_NS
  columns = [f'POS@{n}' for n in ns] + [f'NEG@{n}' for n in ns]
  keys = [f'pos_at_{n}' for n in ns] + [f'neg_at_{n}' for n in ns]
  methods = list(next(iter(rates.values())))
  bound = history_bounded_oracle(methods)
  if bound:
    columns += [f'headroom POS@{n}' for n in ns]
  header = f'| method | {" | ".join(columns)} |'
  lines = [header, '|' + '---|' * (len(columns) + 1)]
  for method in methods:
    cells = []
    for key in keys:
      mean, error = mean_and_error([by_method[method][key] for by_method in rates.values()])
      cells.append(f'{mean:.4f} ± {error:.4f}')
    if bound:
      for n in ns:
        mean, error = mean_and_error([headroom_share(by_method, method, bound, f'pos_at_{n}')
                                      for by_method in rates.values()])
        cells.append(f'{mean:.1%} ± {error:.1%}')
    lines.append(f'| {method} | {" | ".join(cells)} |')
  return '\n'.join(lines)


def history_bounded_oracle(methods: Sequence[str]) -> Optional[str]:
  """The name of the history-bounded oracle's row (datagen/oracle.py names it), if ranked."""
  return next((m for m in methods if m.startswith(HISTORY_BOUNDED_ORACLE_PREFIX)), None)


def headroom_share(by_method: Dict[str, Dict[str, float]], method: str, bound: str,
                   key: str) -> float:
  """(method - most popular) / (bound - most popular) on one seed's metric key: 0 is most
  popular, 1 what the history allows."""
  popular = by_method[MOST_POPULAR][key]
  headroom = by_method[bound][key] - popular
  return (by_method[method][key] - popular) / headroom if headroom else float('nan')


def _paired(rates, first: str, second: str, key: str):
  """Mean and standard error over seeds of second's metric minus first's (paired by seed)."""
  return mean_and_error([r[second][key] - r[first][key] for r in rates.values()])


def _ratio(rates, numerator: str, denominator: str, key: str):
  return mean_and_error([r[numerator][key] / r[denominator][key] for r in rates.values()])


def findings(rates: Dict[int, Dict[str, Dict[str, float]]]) -> List[str]:
  """The published directions, checked on the seeds' numbers, with their noise."""
  methods = next(iter(rates.values()))
  lines = []
  if 'a' in methods and 'b' in methods:
    mean, error = _paired(rates, 'a', 'b', 'pos_at_50')
    within = abs(mean) < 2 * error
    lines.append(f'- b - a on POS@50: {mean:+.4f} ± {error:.4f} (paired by seed): '
                 + ('within noise (less than two standard errors).' if within else
                    f'b is {"above" if mean > 0 else "below"} a beyond two standard errors.'))
  reading, blind = generator_oracle.feedback_oracle_names()
  if reading in methods and blind in methods:
    mean, error = _paired(rates, blind, reading, 'pos_at_50')
    lines.append(f'- What skips and intents are worth to the oracle on POS@50: {mean:+.4f} ± '
                 f'{error:.4f} (paired by seed): the most feedback features can add (b - a).')
  if 'b' in methods and 'c' in methods:
    mean, error = _ratio(rates, 'c', 'b', 'pos_at_50')
    lines.append(f'- c / b on POS@50: {mean:.3f} ± {error:.3f} (target: at least 0.97).')
  if 'a' in methods and 'c' in methods:
    mean, error = _ratio(rates, 'c', 'a', 'neg_at_50')
    lines.append(f'- c / a on NEG@50: {mean:.3f} ± {error:.3f} (target: at most 0.7).')
  for variant in (v for v in VARIANTS if v in methods):
    mean, error = _paired(rates, REPEAT, variant, 'pos_at_10')
    lines.append(f'- {variant} - {REPEAT} on POS@10: {mean:+.4f} ± {error:.4f} (paired by '
                 'seed; target: above it).')
  return lines


def format_time_to_quality(curves: Dict[int, Dict[str, List[Dict[str, float]]]],
                           target: Optional[float]) -> List[str]:
  """Per variant: POS@50 against training seconds at each checkpoint (first seed), and the
  seconds to reach the target POS@50 over all seeds."""
  first_seed = next(iter(curves))
  lines = [f'Training seconds and POS@50 on the valid split at each checkpoint (seed '
           f'{first_seed}); the exported model is the best of them:', '',
           '| variant | ' + ' | '.join(f'step {p["step"]}' for p in
                                        next(iter(curves[first_seed].values()))) + ' |']
  lines.append('|' + '---|' * (len(lines[-1].split('|')) - 2))
  for variant, curve in curves[first_seed].items():
    lines.append(f'| {variant} | ' + ' | '.join(
        f'{p["seconds"]:.0f} s: {p["pos_at_50"]:.4f}' for p in curve) + ' |')
  lines += ['', 'Share of the training time each variant took to reach 90 % of the POS@50 of the '
            'checkpoint it exported (the best on the valid split), per seed:', '']
  for variant in curves[first_seed]:
    shares = [time_to_most_of_best(by_variant[variant]) for by_variant in curves.values()]
    lines.append(f'- {variant}: ' + ', '.join(f'{share:.0%}' for share in shares))
  if target is not None:
    lines += ['', f'Training seconds to reach POS@50 >= {target} (every seed):', '']
    for variant in curves[first_seed]:
      reached = [seconds_to_reach(by_variant[variant], target) for by_variant in curves.values()]
      lines.append(f'- {variant}: ' + ', '.join(f'{seconds:.0f} s' for seconds in reached))
  return lines


def reproducing_command(args: argparse.Namespace) -> str:
  """The command with every argument that changes the numbers (not where files go)."""
  parts = ['python benchmarks/quality.py', f'--num_events {args.num_events}',
           f'--num_items {args.num_items}', f'--seeds {",".join(map(str, args.seeds))}',
           f'--eval_plays_per_user {args.eval_plays_per_user}',
           f'--variants {",".join(args.variants) or shlex.quote("")}',
           f'--train_steps {args.train_steps}', f'--checkpoint_steps {args.checkpoint_steps}']
  if args.target_pos_at_50 is not None:
    parts.append(f'--target_pos_at_50 {args.target_pos_at_50}')
  if args.num_users:
    parts.append(f'--num_users {args.num_users}')
  if args.extra_hparams:
    parts.append(f'--hparams {shlex.quote(json.dumps(args.extra_hparams))}')
  if args.generator_knobs:
    parts.append(f'--generator {shlex.quote(json.dumps(args.generator_knobs))}')
  if args.beam_pipeline_args:
    parts += ['--'] + [shlex.quote(a) for a in args.beam_pipeline_args]
  return ' '.join(parts)


def write_results(path: str, args: argparse.Namespace, counts: Dict[str, int], table: str,
                  split_lines: List[str], finding_lines: List[str], curve_lines: List[str],
                  fact_lines: List[str],
                  stage_seconds: Dict[str, float], load: str) -> None:
  stages = ', '.join(f'{name} {seconds:.0f} s' for name, seconds in stage_seconds.items())
  text = f"""# Recall quality on generated data

POS@N: fraction of positive eval targets (played to the end) ranked in the top N; higher is
better. NEG@N: the same for negative targets (skipped early); lower is better. Ranks are exact over
the whole item vocabulary (V = {counts['vocabulary']:,} items from the train split of the first
seed; targets outside it count as misses). Eval split: each user's last
{args.eval_plays_per_user} plays ({counts['eval']:,} examples in the first seed:
{counts['positive']:,} positive, {counts['negative']:,} negative). Learned variants are ranked
through their exported `target_rank` signature, as the Evaluator does.

Command ({len(args.seeds)} seeds; each seed generates its own log and seeds the trainer):

    {reproducing_command(args)}

Data: {args.num_events:,} generated events, {args.num_items:,} items; {counts['train']:,} train
windows in the first seed. Training: {args.train_steps:,} steps per variant, hyper-parameters
{json.dumps(args.extra_hparams) if args.extra_hparams else 'the HParams defaults'}.
Stage times of the first seed on this machine (2 cores): {stages}. Load average {load}.

Each cell: mean over the seeds ± its standard error.

{table}

## Where the hits come from

{chr(10).join(split_lines)}

## Expected directions (original work: b > a on POS@N; c about b on POS@N, clearly lower NEG@N)

{chr(10).join(finding_lines) or '- (not all variants were trained)'}

## Time to quality

{chr(10).join(curve_lines)}

## Facts about the data behind them (eval split and the generator's ground truth, first seed)

{chr(10).join(fact_lines)}
"""
  with open(path, 'w') as f:
    f.write(text)


def run_seed(work_dir: str, seed: int, args: argparse.Namespace):
  """Runs every stage for one seed; returns (rates by method, curves by variant, stages, counts,
  facts)."""
  from evaluation import baselines  # pylint: disable=g-import-not-at-top
  from evaluation import hit_rate  # pylint: disable=g-import-not-at-top

  progress(f'=== seed {seed} ===')
  stages = Stages(work_dir, args.reuse)
  stages.run('log', generate_log, args, seed)
  stages.run('example_gen', run_example_gen, os.path.join(work_dir, 'log'), args)
  examples_uri = os.path.join(work_dir, 'example_gen', 'examples')
  stages.run('transform', run_transform, examples_uri, args)
  transform_dir = os.path.join(work_dir, 'transform')
  for variant in args.variants:
    stages.run(f'train_{variant}', train_variant, variant, transform_dir, args, seed)

  progress('[rank] reading examples and ranking the eval targets ...')
  vocabulary = item_vocabulary(os.path.join(transform_dir, 'transform_graph'))
  item_index = {item: i for i, item in enumerate(vocabulary)}
  train = read_split(examples_uri, 'train', item_index)
  evaluation = read_split(examples_uri, 'eval', item_index)
  size = len(vocabulary)
  cooccurrence = baselines.CooccurrenceRanker(size, *positive_transitions(examples_uri, item_index))
  ranks = {
      MOST_POPULAR: baselines.popularity_ranks(evaluation.target_ids, size),
      'co-occurrence (previous play)': cooccurrence.ranks(evaluation.last_history_ids,
                                                          evaluation.target_ids),
      REPEAT: baselines.repeat_ranks(evaluation.history_ids, evaluation.history_played,
                                     evaluation.target_ids, size),
  }
  ranks.update(generator_oracle.benchmark_ranks(os.path.join(work_dir, 'log'), examples_uri,
                                                vocabulary))
  curves = {}
  for variant in args.variants:
    train_dir = os.path.join(work_dir, f'train_{variant}')
    ranks[variant] = model_ranks(os.path.join(train_dir, 'model'), evaluation.serialized)
    curves[variant] = time_to_quality(os.path.join(train_dir, 'model_run'))
  rates = {method: hit_rate.hit_rates(r, evaluation.labels, settings.METRIC_NS)
           for method, r in ranks.items()}
  in_history = targets_in_history(evaluation)
  for method, r in ranks.items():
    rates[method].update(history_split_rates(r, evaluation.labels, in_history))
  counts = {'vocabulary': size, 'train': len(train.labels), 'eval': len(evaluation.labels),
            'positive': int(np.sum(evaluation.labels == features.LABEL_POSITIVE)),
            'negative': int(np.sum(evaluation.labels == features.LABEL_NEGATIVE))}
  facts = data_facts(os.path.join(work_dir, 'log'), examples_uri)
  return rates, curves, stages.seconds, counts, facts


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  # Transform's per-batch analyzer warnings would drown the progress lines.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  load_before = os.getloadavg()
  progress(f'load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}')

  work_dir = args.work_dir or tempfile.mkdtemp(prefix='quality_')
  os.makedirs(work_dir, exist_ok=True)
  rates, curves = {}, {}
  try:
    for seed in args.seeds:
      rates[seed], curves[seed], seconds, counts, facts = run_seed(
          os.path.join(work_dir, f'seed_{seed}'), seed, args)
      if seed == args.seeds[0]:
        first_seconds, first_counts, first_facts = seconds, counts, facts
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)

  load_after = os.getloadavg()
  load = (f'{load_before[0]:.2f} before, {load_after[0]:.2f} / {load_after[1]:.2f} / '
          f'{load_after[2]:.2f} (1 / 5 / 15 min) after')
  table = format_table(rates)
  curve_lines = format_time_to_quality(curves, args.target_pos_at_50) if args.variants else []
  print()
  if args.quick:
    print('(--quick: a smoke run; the figures are not meaningful)')
  print(table)
  print()
  split_lines = format_history_split(rates)
  for line in split_lines + [''] + findings(rates) + [''] + curve_lines + [''] + first_facts:
    print(line)
  print(f'\nload average {load}')
  if args.results:
    write_results(args.results, args, first_counts, table, split_lines, findings(rates),
                  curve_lines, first_facts, first_seconds, load)
    progress(f'\nwritten to {args.results}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
