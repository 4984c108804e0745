"""Serving speed: the exported SavedModel's serving_default vs the numpy floor and the ANN index.

What is built, per catalogue size V (--num-items), with the project's own code:
  1. plays from the synthetic generator's genre model (datagen.model: users who love a few
     genres and skip another, Zipf popularity), --num-plays of them over V songs;
  2. PlayLogExampleGen's example builder cuts them into train windows and one eval example per
     user (each user's last play);
  3. Transform (transform.preprocessing_fn, tft_beam) analyses the train windows plus a sweep of
     the whole catalogue, so that the item vocabulary holds exactly V songs: over 1M songs, many
     are never played in --num-plays plays. The sweep only adds one play of each song to the
     vocabulary's counts; it is not trained on;
  4. the Trainer's loop (trainer.train_loop, losses, LazyAdam: the pipeline's default HParams)
     trains --train-steps steps on the transformed windows. The item vectors are thus trained,
     but only as far as those plays reach: songs never in a training play keep vectors close to
     their initial ones (the share that were played is printed);
  5. trainer.export.export_serving_model writes the serving SavedModel and assets.extra/, and
     trainer.export.build_ann_index builds the ScaNN index over assets.extra's item vectors. It
     is built without a recall floor, so that an index the export would refuse (recall@top_k
     below HParams.ann_min_recall) is still measured; whether the export would keep it is
     printed, from the index's own check (item vectors as queries).

What is timed, in one process, on the eval examples as requests (history features only, as a
client sends them), for each batch size (--batch-sizes):
  serving_default    the loaded SavedModel's signature, called as TF Serving calls it: a string
                     tensor of serialized tf.Examples in; item ids and scores (top_k) read out.
  user_vector        the user_vector signature on the same requests: the encoder's share, and
                     what an ANN-served stack calls before searching.
  numpy floor        user_vectors @ item_vectors.T + item_bias, np.argpartition top-k and a sort
                     of the k, on the same requests' user vectors (from user_vector, untimed).
  ANN (ScaNN)        the index searched with [user_vector, 1.0]: search_batched for a batch,
                     search for one request.
Each row first runs --warmup-calls untimed calls. Then come --repeats passes; in each, every row
makes --calls consecutive calls, each timed on its own, the rows one after the other and their
order rotated from pass to pass (A, B, C, D, then B, C, D, A, ...), so that a slow spell of the
machine hits every row alike. Per row: p50 and p99 latency of the pass's calls and queries/s
(requests of the pass / time of its calls), each the median over the passes with the min-max
over them; the ratio serving_default / floor; floor / ANN; and the ANN index's recall@top_k
against the exact top-k of the same user vectors. The load average is printed before and after
every table; the numpy floor and TF use every core, ScaNN's search one.

The issue's goals, checked in the summary: serving_default within 1.5x of the floor at batch 64
over 1M items; the ANN index at least 10x faster than the floor at recall@100 >= 0.95.

From the repository root (2 cores: expected 30-40 minutes at the defaults, two thirds of it the
1M catalogue; the peak memory so far is printed after each stage):

  TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/serving.py --out serving.json  # to publish
  ... benchmarks/serving.py --quick                                                  # a smoke run
"""

import argparse
import dataclasses
import gc
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import apache_beam as beam
import numpy as np
import pyarrow as pa
import scann
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from benchmarks.train_speed import Spread, code_version, load_average_text, publication_warning
from components.play_log_example_gen import user_examples
from contract import features
from contract import settings
from datagen import generate as datagen_generate
from datagen import ground_truth
from datagen import model as datagen_model
from datagen.random_streams import Streams
from trainer import dataset
from trainer import export
from trainer import losses
from trainer import model as model_lib
from trainer import samplers
from trainer import train_loop
from trainer import vocabulary
from transform import preprocessing
# pylint: enable=g-import-not-at-top

_PUBLISHED_CALLS = 100  # fewer timed calls per pass give no p99 worth publishing
_TRANSFORMED_SHARDS = 4  # files, as Transform writes several: the trainer's reader interleaves them
# The rows of the tables: the two signatures by their contract names, then the references.
SERVING, ENCODER = features.SERVING_SIGNATURE, features.USER_VECTOR_SIGNATURE
FLOOR, ANN = 'numpy floor', 'ANN (ScaNN)'
# The goals.
_GOAL_BATCH = 64
_GOAL_SERVING_OVER_FLOOR = 1.5
_GOAL_FLOOR_OVER_ANN = 10.0
_GOAL_RECALL = 0.95

# One call of a row on request batch i; returns once its answer is in host memory.
Call = Callable[[int], None]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter):
  """The module's text as written, and every option's default."""


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
  parser.add_argument('--num-items', type=int, nargs='+', default=[100_000, 1_000_000],
                      help='catalogue sizes V: each gets its own plays, Transform output, model, '
                      'SavedModel and index')
  parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, _GOAL_BATCH],
                      help='requests per call')
  parser.add_argument('--calls', type=int, default=_PUBLISHED_CALLS,
                      help=f'timed calls of each row per pass (at least {_PUBLISHED_CALLS} for '
                      'published figures)')
  parser.add_argument('--warmup-calls', type=int, default=10,
                      help='untimed first calls of each row at each batch size')
  parser.add_argument('--repeats', type=int, default=3,
                      help='timed passes; each figure is the median over them, with the min-max')
  parser.add_argument('--num-requests', type=int, default=512,
                      help='distinct requests (eval examples), cycled by the calls; a multiple '
                      'of every batch size')
  parser.add_argument('--num-plays', type=int, default=3_000_000,
                      help='generated plays per catalogue (users: one per 100 plays)')
  parser.add_argument('--train-steps', type=int, default=settings.HParams.train_steps,
                      help='training steps per catalogue (the pipeline default)')
  parser.add_argument('--seed', type=int, default=0, help='seed of the plays and the requests')
  parser.add_argument('--out', help='also write every figure, per pass, to this JSON file')
  parser.add_argument('--quick', action='store_true',
                      help='a small catalogue, few plays, steps and calls: checks the command, '
                      'not the speed (overrides the sizes and counts above)')
  args = parser.parse_args(argv)
  if args.quick:
    args.num_items, args.num_plays, args.train_steps = [5_000], 30_000, 20
    args.num_requests = 256  # of the ~300 eval examples (one per user) of its plays
    args.calls, args.warmup_calls, args.repeats = 20, 2, 2
  if min(args.calls, args.warmup_calls, args.repeats, args.train_steps) < 1:
    parser.error('--calls, --warmup-calls, --repeats and --train-steps must be at least 1')
  unfit = [size for size in args.batch_sizes if size < 1 or args.num_requests % size]
  if unfit:
    parser.error(f'--num-requests {args.num_requests} is not a multiple of batch sizes {unfit}')
  return args


def reproducing_command(args: argparse.Namespace) -> str:
  """The command that repeats this run, every setting explicit (--quick spelt out)."""
  words = ['TF_USE_LEGACY_KERAS=1', 'PYTHONPATH=.', 'python', 'benchmarks/serving.py',
           '--num-items', *map(str, args.num_items), '--batch-sizes', *map(str, args.batch_sizes)]
  for name in ('calls', 'warmup_calls', 'repeats', 'num_requests', 'num_plays', 'train_steps',
               'seed'):
    words += ['--' + name.replace('_', '-'), str(getattr(args, name))]
  return ' '.join(words)


def peak_memory_gb() -> float:
  """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Stages:
  """Prints each build stage with its time and the peak memory so far; keeps the seconds."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  def run(self, name: str, function, *args):
    print(f'  {name} ...', flush=True)
    started = time.perf_counter()
    result = function(*args)
    self.seconds[name] = time.perf_counter() - started
    print(f'  {name}: {self.seconds[name]:.1f} s (peak memory so far {peak_memory_gb():.1f} GB)',
          flush=True)
    return result


# --- The catalogue: plays, examples, Transform, training, export -------------------------------

def generated_plays(num_items: int, num_plays: int, seed: int) -> pa.Table:
  """Plays from the generator's model (docs/data_generator.md) as PlayLogExampleGen reads them
  (play_log_reader.PLAYS_SCHEMA): one file, no seq column, rows in the generator's order."""
  num_users = max(1, num_plays // datagen_generate.DEFAULT_EVENTS_PER_USER)
  config = datagen_model.GeneratorConfig(num_events=num_plays, num_users=num_users,
                                         num_items=num_items, seed=seed)
  config.validate()
  streams = Streams(seed)
  catalogue = datagen_model.make_catalogue(config, streams)
  users = datagen_model.make_users(config, streams, catalogue)
  plays = datagen_model.generate_chunk(config, streams, catalogue, users, 0, num_users)
  rows = len(plays['user'])
  return pa.table({
      'user_id': _ids(ground_truth.user_id, num_users).take(pa.array(plays['user'])),
      'item_id': item_ids(num_items).take(pa.array(plays['item'])),
      'ts': pa.array(plays['ts']),
      'play_rate': pa.array(plays['play_rate']),
      'intent': pa.array(datagen_model.INTENT_NAMES).take(pa.array(plays['intent'])),
      'seq': pa.array(np.zeros(rows, np.int64)),
      'file_index': pa.array(np.zeros(rows, np.int32)),
      'line': pa.array(np.arange(1, rows + 1, dtype=np.int64)),
  })


def item_ids(num_items: int) -> pa.Array:
  """The generator's item id strings; entry i is item i."""
  return _ids(ground_truth.item_id, num_items)


def _ids(name_of: Callable[[int, int], str], count: int) -> pa.Array:
  return pa.array([name_of(index, count) for index in range(count)], pa.string())


def play_examples(plays: pa.Table, hparams: settings.HParams) -> Tuple[List[bytes], List[bytes]]:
  """(train windows, eval examples) as PlayLogExampleGen writes them; eval: each user's last play,
  its history the plays before it (a request as a client would send it, plus its target)."""
  config = user_examples.ExampleConfig(
      history_length=hparams.history_length, pos_threshold=settings.POS_THRESHOLD,
      neg_threshold=settings.NEG_THRESHOLD, eval_plays_per_user=1)
  built = user_examples.bucket_examples(plays, config, files=['generated'])
  by_split = {split: [] for split in user_examples.SPLITS}
  for example in built.examples:
    by_split[example.split].append(example.serialized)
  return by_split[user_examples.TRAIN], by_split[user_examples.EVAL]


def catalogue_sweep(num_items: int, hparams: settings.HParams) -> List[bytes]:
  """Raw examples that together name every item once (history_length + 1 a piece), for the
  vocabulary analysis only: with them every song of the catalogue gets an id, as if played once
  more. Labelled 'neither' with a play rate between the thresholds: no feedback either way."""
  names = item_ids(num_items).to_pylist()
  coder = tft.coders.ExampleProtoCoder(schema_utils.schema_from_feature_spec(
      features.raw_feature_spec()))
  play_rate = (settings.POS_THRESHOLD + settings.NEG_THRESHOLD) / 2
  window = hparams.history_length + 1
  sweep = []
  for start in range(0, num_items, window):
    *history, target = names[start:start + window]
    sweep.append(coder.encode({
        features.USER_ID: 'catalogue', features.TS: 0,
        features.HISTORY_ITEM_ID: history, features.HISTORY_PLAY_RATE: [play_rate] * len(history),
        features.HISTORY_INTENT: [features.DEFAULT_INTENT] * len(history),
        features.HISTORY_TS: [0] * len(history),
        features.HISTORY_LABEL: [features.LABEL_NEITHER] * len(history),
        features.ITEM_ID: target, features.PLAY_RATE: play_rate,
        features.INTENT: features.DEFAULT_INTENT, features.LABEL: features.LABEL_NEITHER}))
  return sweep


def run_transform(train: List[bytes], sweep: List[bytes], root: str) -> Tuple[str, str]:
  """Transform as the pipeline's component runs it: preprocessing_fn analysed over the train
  windows (and the sweep), the train windows transformed and written as gzipped TFRecords.
  Returns (Transform's output directory, the transformed train files' glob)."""
  schema = schema_utils.schema_from_feature_spec(features.raw_feature_spec())
  source = tfxio.TFExampleBeamRecord(physical_format='inmem', telemetry_descriptors=['benchmark'],
                                     schema=schema)
  transform_dir = os.path.join(root, 'transform_graph')
  examples_prefix = os.path.join(root, 'transformed_examples', 'Split-train', 'examples')
  with beam.Pipeline() as pipeline:
    with tft_beam.Context(temp_dir=os.path.join(root, 'tft_tmp'), force_tf_compat_v1=False):
      raw_train = pipeline | 'Train' >> beam.Create(train) | 'DecodeTrain' >> source.BeamSource()
      raw_sweep = pipeline | 'Sweep' >> beam.Create(sweep) | 'DecodeSweep' >> source.BeamSource()
      analysed = (raw_train, raw_sweep) | beam.Flatten()
      transform_fn = ((analysed, source.TensorAdapterConfig())
                      | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn))
      transformed, transformed_metadata = (
          ((raw_train, source.TensorAdapterConfig()), transform_fn)
          | tft_beam.TransformDataset(output_record_batches=False))
      _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
      coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
      _ = (transformed
           | 'Encode' >> beam.Map(coder.encode)
           | 'Write' >> beam.io.WriteToTFRecord(examples_prefix, file_name_suffix='.gz',
                                                num_shards=_TRANSFORMED_SHARDS))
  # As TFX's Transform component does, so that raw_feature_spec() answers (the export needs it).
  metadata_io.write_metadata(
      tft.DatasetMetadata(schema),
      os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
  return transform_dir, examples_prefix + '*'


def trained_model(tf_transform_output: tft.TFTransformOutput, train_files: str,
                  hparams: settings.HParams, model_dir: str) -> model_lib.DeepMatch:
  """The model trained as the Trainer's run_fn trains it in one process (no checkpoint eval),
  restored unsharded for the export."""
  num_items = vocabulary.num_items(tf_transform_output)
  num_intents = vocabulary.num_intents(tf_transform_output)
  counts = (vocabulary.item_counts(tf_transform_output)
            if hparams.sampler == 'fixed_unigram' else None)
  sampler = samplers.make_sampler(hparams.sampler, num_items, unigram_counts=counts,
                                  num_sampled=hparams.num_sampled, seed=hparams.seed)
  result = train_loop.train(
      tf.distribute.get_strategy(),
      lambda: model_lib.build_model(hparams, num_items, num_intents),
      lambda context: dataset.make_dataset(train_files, tf_transform_output, hparams,
                                           hparams.batch_size, input_context=context),
      lambda model, batch: losses.compute_losses(model, batch, hparams, sampler, training=True),
      hparams, model_dir, log=lambda line: print(f'    {line}', flush=True))
  return export.restore_unsharded_model(hparams, num_items, num_intents, result.checkpoint_path)


def exported_model(model: model_lib.DeepMatch, tf_transform_output: tft.TFTransformOutput,
                   hparams: settings.HParams, export_dir: str) -> str:
  # The index is built by the benchmark itself (ann_index), once, and kept whatever its recall:
  # the export, which would build it from ann_min_items on, is told the catalogue is below that.
  num_vocabulary = vocabulary.num_vocabulary_items(tf_transform_output)
  return export.export_serving_model(model, tf_transform_output,
                                     hparams.replace(ann_min_items=num_vocabulary + 1), export_dir)


def ann_index(export_dir: str, hparams: settings.HParams) -> export.AnnIndexReport:
  """The export's ANN index over assets.extra, built with no recall floor so it is always kept;
  its report holds the export's own recall check (item vectors as queries)."""
  return export.build_ann_index(os.path.join(export_dir, export.ANN_DIR), hparams.top_k,
                                min_recall=0.0, seed=hparams.seed)


def played_share(plays: pa.Table, num_items: int) -> float:
  """The share of the catalogue's items in at least one train play: the items whose vectors
  training moved from their initial values (sampled negatives aside). Every play but each user's
  last (the eval example's target) is in a train window; the plays are grouped by user, in time
  order."""
  users = _codes(plays['user_id'])
  trained = np.ones(plays.num_rows, bool)
  trained[np.flatnonzero(np.diff(users) != 0)] = False
  trained[-1] = False
  return len(np.unique(_codes(plays['item_id'])[trained])) / num_items


def _codes(column: pa.ChunkedArray) -> np.ndarray:
  return column.combine_chunks().dictionary_encode().indices.to_numpy()


# --- Requests and the timed rows ---------------------------------------------------------------

def serving_requests(eval_examples: List[bytes], count: int, seed: int) -> List[bytes]:
  """count eval examples drawn at random, each with only what a client sends: the history."""
  if count > len(eval_examples):
    raise ValueError(f'{count} requests asked for, but the plays give {len(eval_examples)} eval '
                     'examples (one per user): raise --num-plays or lower --num-requests')
  chosen = np.random.default_rng(seed).choice(len(eval_examples), count, replace=False)
  return [_history_only(eval_examples[i]) for i in chosen]


def _history_only(serialized: bytes) -> bytes:
  """The example without its target, user and timestamps."""
  example = tf.train.Example.FromString(serialized)
  for name in list(example.features.feature):
    if name not in features.SERVING_FEATURES:
      del example.features.feature[name]
  return example.SerializeToString()


def brute_force_top_k(user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray,
                      k: int) -> np.ndarray:
  """The floor: item rows [B, k] of the exact top k, best first, by numpy."""
  scores = user_vectors @ item_vectors.T + item_bias
  top = np.argpartition(scores, -k, axis=1)[:, -k:]
  order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
  return np.take_along_axis(top, order, axis=1)


def ann_queries(user_vectors: np.ndarray) -> np.ndarray:
  """[user_vector, 1.0]: its inner product with [item_vector, item_bias] is the model's score."""
  ones = np.ones([len(user_vectors), 1], np.float32)
  return np.concatenate([user_vectors, ones], axis=1)


@dataclasses.dataclass(frozen=True)
class Deployment:
  """What one catalogue's rows call: the loaded SavedModel, the exported item vectors, the
  index, and every request with its user vector."""
  saved_model: object  # tf.saved_model.load's; its signatures need it alive
  item_vectors: np.ndarray  # [V, H] float32, assets.extra's
  item_bias: np.ndarray  # [V] float32
  searcher: object  # scann's searcher
  top_k: int
  requests: List[bytes]
  user_vectors: np.ndarray  # [requests, H], from the user_vector signature


def deploy(export_dir: str, index_dir: str, requests: List[bytes], top_k: int) -> Deployment:
  loaded = tf.saved_model.load(export_dir)
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  encode = loaded.signatures[features.USER_VECTOR_SIGNATURE]
  return Deployment(
      saved_model=loaded, top_k=top_k, requests=requests,
      item_vectors=np.load(os.path.join(ann_dir, export.ITEM_VECTORS_FILE)),
      item_bias=np.load(os.path.join(ann_dir, export.ITEM_BIAS_FILE)),
      searcher=scann.scann_ops_pybind.load_searcher(index_dir),
      user_vectors=encode(**{features.SIGNATURE_INPUT: tf.constant(requests)}
                          )[features.USER_VECTOR].numpy())


def timed_rows(deployment: Deployment, batch_size: int) -> Dict[str, Call]:
  """The four rows' calls on request batch i (of the requests cut into batches of batch_size)."""
  starts = range(0, len(deployment.requests), batch_size)
  batches = [tf.constant(deployment.requests[i:i + batch_size]) for i in starts]
  vectors = [deployment.user_vectors[i:i + batch_size] for i in starts]
  queries = [ann_queries(v) for v in vectors]
  serve = deployment.saved_model.signatures[features.SERVING_SIGNATURE]
  encode = deployment.saved_model.signatures[features.USER_VECTOR_SIGNATURE]
  searcher = deployment.searcher

  def serving(i):
    # TF Serving turns both outputs into the response: read both back.
    outputs = serve(**{features.SIGNATURE_INPUT: batches[i]})
    outputs[features.TOP_ITEM_IDS].numpy()
    outputs[features.TOP_SCORES].numpy()

  def user_vector(i):
    encode(**{features.SIGNATURE_INPUT: batches[i]})[features.USER_VECTOR].numpy()

  def floor(i):
    brute_force_top_k(vectors[i], deployment.item_vectors, deployment.item_bias,
                      deployment.top_k)

  def ann(i):
    if batch_size == 1:
      searcher.search(queries[i][0])
    else:
      searcher.search_batched(queries[i])

  return {SERVING: serving, ENCODER: user_vector, FLOOR: floor, ANN: ann}


def exact_top_k(deployment: Deployment) -> np.ndarray:
  """The floor's answer [requests, top_k] for every request, in batches: all requests' scores and
  argpartition indices at once would take 12 bytes x requests x V (6 GB at 512 x 1M)."""
  return np.concatenate([
      brute_force_top_k(deployment.user_vectors[start:start + _GOAL_BATCH],
                        deployment.item_vectors, deployment.item_bias, deployment.top_k)
      for start in range(0, len(deployment.requests), _GOAL_BATCH)])


def ann_recall(deployment: Deployment, exact: np.ndarray) -> float:
  """Mean recall@top_k of the index against the exact top k [requests, top_k]."""
  found, _ = deployment.searcher.search_batched(ann_queries(deployment.user_vectors))
  return export.recall_at_k(np.asarray(found), exact)


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
  """Near 1: the users' vectors point one way, and the model ranks nearly alike for everyone."""
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  total = np.square(unit.sum(axis=0)).sum()  # the sum of every pair's cosine, both orders, + n
  return float((total - len(unit)) / (len(unit) * (len(unit) - 1)))


def timed_passes(rows: Dict[str, Call], num_batches: int, calls: int, repeats: int
                 ) -> Dict[str, List[np.ndarray]]:
  """Seconds [calls] of every call of each row's passes; rows interleaved within a pass, their
  order rotated; successive calls take successive request batches, cycling."""
  seconds = {name: [] for name in rows}
  names = list(rows)
  for repeat in range(repeats):
    shift = repeat % len(names)
    for name in names[shift:] + names[:shift]:
      call = rows[name]
      times = np.empty(calls)
      for j in range(calls):
        started = time.perf_counter()
        call((repeat * calls + j) % num_batches)
        times[j] = time.perf_counter() - started
      seconds[name].append(times)
      print(f'    pass {repeat + 1}/{repeats} {name}: p50 {1000 * np.median(times):.2f} ms',
            flush=True)
  return seconds


@dataclasses.dataclass(frozen=True)
class RowFigures:
  """One row's figures: each the median over the passes with their min-max."""
  p50_ms: Spread
  p99_ms: Spread
  queries_per_second: Spread

  @classmethod
  def of(cls, passes: List[np.ndarray], batch_size: int) -> 'RowFigures':
    return cls(p50_ms=Spread.of([1000 * np.percentile(times, 50) for times in passes]),
               p99_ms=Spread.of([1000 * np.percentile(times, 99) for times in passes]),
               queries_per_second=Spread.of([len(times) * batch_size / times.sum()
                                             for times in passes]))


def measure_batch_size(deployment: Deployment, batch_size: int, args: argparse.Namespace
                       ) -> Tuple[Dict[str, RowFigures], Dict[str, List[List[float]]], str]:
  """Every row's figures at one batch size; also the per-pass seconds and the load around them."""
  rows = timed_rows(deployment, batch_size)
  num_batches = len(deployment.requests) // batch_size
  for call in rows.values():
    for i in range(args.warmup_calls):
      call(i % num_batches)
  load_before = load_average_text()
  seconds = timed_passes(rows, num_batches, args.calls, args.repeats)
  load = f'{load_before} -> {load_average_text()}'
  figures = {name: RowFigures.of(passes, batch_size) for name, passes in seconds.items()}
  per_pass = {name: [times.tolist() for times in passes] for name, passes in seconds.items()}
  return figures, per_pass, load


# --- One catalogue, the reports, the command ---------------------------------------------------

@dataclasses.dataclass
class CatalogueResult:
  num_items: int
  played_share: float  # items in at least one train play
  stage_seconds: Dict[str, float]
  peak_memory_gb: float  # of the process so far, after this catalogue
  index_check_recall: float  # build_ann_index's own check: item vectors as queries
  recall: float  # the index on these requests' user vectors, against the floor's exact top k
  distinct_top_items: int  # items in the union of the requests' exact top k
  user_vector_cosine: float  # mean over pairs of requests
  figures: Dict[int, Dict[str, RowFigures]]  # by batch size, by row
  seconds_per_call: Dict[int, Dict[str, List[List[float]]]]  # by batch size, row, pass
  loads: Dict[int, str]  # load average (1/5/15 min) before -> after each batch size's passes


def measure_catalogue(num_items: int, args: argparse.Namespace, root: str) -> CatalogueResult:
  hparams = settings.HParams(train_steps=args.train_steps)
  print(f'\n== {num_items:,} items ==', flush=True)
  stages = Stages()
  plays = stages.run('generating plays', generated_plays, num_items, args.num_plays, args.seed)
  train, evaluation = stages.run('cutting examples (PlayLogExampleGen)', play_examples, plays,
                                 hparams)
  sweep = stages.run('sweeping the catalogue', catalogue_sweep, num_items, hparams)
  transform_dir, train_files = stages.run('Transform', run_transform, train, sweep,
                                          os.path.join(root, 'transform'))
  tf_transform_output = tft.TFTransformOutput(transform_dir)
  num_vocabulary = vocabulary.num_vocabulary_items(tf_transform_output)
  if num_vocabulary != num_items:
    raise RuntimeError(f'the item vocabulary has {num_vocabulary} items, not {num_items}')
  share = played_share(plays, num_items)
  print(f'  {plays.num_rows:,} plays, {len(train):,} train windows, {len(evaluation):,} eval '
        f'examples; {share:.1%} of the {num_items:,} items are in a train play', flush=True)
  model = stages.run(f'training {hparams.train_steps} steps', trained_model, tf_transform_output,
                     train_files, hparams, os.path.join(root, 'model'))
  export_dir = stages.run('exporting', exported_model, model, tf_transform_output, hparams,
                          os.path.join(root, 'serving'))
  report = stages.run('building the ANN index', ann_index, export_dir, hparams)
  verdict = 'keep' if report.recall_at_k >= hparams.ann_min_recall else 'refuse'
  print(f'  index check (build_ann_index: {report.num_queries} item vectors as queries): '
        f'recall@{report.num_neighbors} {report.recall_at_k:.4f}; the export would {verdict} '
        f'the index (ann_min_recall {hparams.ann_min_recall:g})', flush=True)
  deployment = deploy(export_dir, report.index_dir,
                  serving_requests(evaluation, args.num_requests, args.seed), hparams.top_k)
  exact = exact_top_k(deployment)
  recall = ann_recall(deployment, exact)
  result = CatalogueResult(
      num_items, share, stages.seconds, peak_memory_gb=0.0,
      index_check_recall=report.recall_at_k, recall=recall,
      distinct_top_items=len(np.unique(exact)),
      user_vector_cosine=mean_pairwise_cosine(deployment.user_vectors),
      figures={}, seconds_per_call={}, loads={})
  print(f'  ANN recall@{hparams.top_k} on the {args.num_requests} requests\' user vectors: '
        f'{recall:.4f}. Their exact top {hparams.top_k} hold {result.distinct_top_items:,} '
        f'distinct items; mean pairwise cosine of the user vectors '
        f'{result.user_vector_cosine:.2f} (few items and a cosine near 1: the model ranks nearly '
        'alike for everyone, and any index finds those items)', flush=True)
  for batch_size in args.batch_sizes:
    print(f'  batch {batch_size}:', flush=True)
    figures, per_pass, load = measure_batch_size(deployment, batch_size, args)
    result.figures[batch_size] = figures
    result.seconds_per_call[batch_size] = per_pass
    result.loads[batch_size] = load
    print_table(result, batch_size, args)
  result.peak_memory_gb = peak_memory_gb()
  return result


def print_table(result: CatalogueResult, batch_size: int, args: argparse.Namespace) -> None:
  figures = result.figures[batch_size]
  floor = figures[FLOOR]
  print(f'\n{result.num_items:,} items, batch {batch_size}: median over {args.repeats} passes of '
        f'{args.calls} calls (min-max over the passes); load average (1/5/15 min) before -> '
        f'after: {result.loads[batch_size]}')
  cells = [('row', 'p50 ms', 'p99 ms', 'queries/s', 'p50 / floor')]
  for name, row in figures.items():
    cells.append((name, _ms_text(row.p50_ms), _ms_text(row.p99_ms),
                  row.queries_per_second.text(), f'{row.p50_ms.median / floor.p50_ms.median:.2f}x'))
  widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
  for row in cells:
    print('  '.join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
  print(f'{SERVING} / floor: {_ratio(figures, SERVING, FLOOR):.2f}x (p50); floor / ANN: '
        f'{_ratio(figures, FLOOR, ANN):.1f}x (p50) at recall@{settings.HParams.top_k} '
        f'{result.recall:.4f}\n', flush=True)


def _ms_text(milliseconds: Spread) -> str:
  """Three significant digits or more: ANN searches take tens of microseconds."""
  digits = 3 if milliseconds.median < 1 else 2 if milliseconds.median < 100 else 1
  return milliseconds.text(digits=digits)


def _ratio(figures: Dict[str, RowFigures], numerator: str, denominator: str) -> float:
  return figures[numerator].p50_ms.median / figures[denominator].p50_ms.median


def print_summary(results: Sequence[CatalogueResult], warning: Optional[str]) -> None:
  k = settings.HParams.top_k
  print(f'\nSummary: p50 latency in ms (median over the passes); top {k}')
  if warning:
    print(warning)
  header = (f'{"items":>10} {"batch":>5} {SERVING:>15} {ENCODER:>11} {"floor":>9} {"ANN":>8} '
            f'{"serving/floor":>13} {"floor/ANN":>9} {"recall@" + str(k):>10} {"peak GB":>7}')
  print(header)
  for result in results:
    for batch_size, figures in result.figures.items():
      p50 = {name: row.p50_ms.median for name, row in figures.items()}
      print(f'{result.num_items:>10,} {batch_size:>5} {p50[SERVING]:>15.2f} '
            f'{p50[ENCODER]:>11.2f} {p50[FLOOR]:>9.2f} {p50[ANN]:>8.3f} '
            f'{_ratio(figures, SERVING, FLOOR):>12.2f}x {_ratio(figures, FLOOR, ANN):>8.1f}x '
            f'{result.recall:>10.4f} {result.peak_memory_gb:>7.1f}')
  for result in results:
    for batch_size in result.figures:
      print(f'{result.num_items:,} items, batch {batch_size}: '
            + '; '.join(goals(result, batch_size)))


def goals(result: CatalogueResult, batch_size: int) -> List[str]:
  """The issue's goals, met or not, for one catalogue and batch size."""
  figures, recall = result.figures[batch_size], result.recall
  checks = []
  if batch_size == _GOAL_BATCH:
    serving = _ratio(figures, SERVING, FLOOR)
    checks.append(f'{SERVING} <= {_GOAL_SERVING_OVER_FLOOR}x floor: '
                  f'{"met" if serving <= _GOAL_SERVING_OVER_FLOOR else "NOT met"} '
                  f'({serving:.2f}x)')
  speed_up = _ratio(figures, FLOOR, ANN)
  met = speed_up >= _GOAL_FLOOR_OVER_ANN and recall >= _GOAL_RECALL
  # The recall means little when every user gets nearly the same items: say how many there are.
  checks.append(f'ANN >= {_GOAL_FLOOR_OVER_ANN:g}x faster than the floor at recall >= '
                f'{_GOAL_RECALL}: {"met" if met else "NOT met"} ({speed_up:.1f}x, recall '
                f'{recall:.4f} over {result.distinct_top_items:,} distinct top items)')
  return checks


def write_json(path: str, results: Sequence[CatalogueResult], header: Dict[str, str]) -> None:
  with open(path, 'w') as f:
    json.dump(dict(header, catalogues=[dataclasses.asdict(result) for result in results]), f,
              indent=1)
  print(f'wrote {path}')


def main(argv=None) -> None:
  args = parse_args(argv)
  # TF's Python warnings here are about the project's code, repeated at every trace (Transform's
  # no-op frequency_threshold, the subclassed model's config at export): they bury the figures.
  tf.get_logger().setLevel('ERROR')
  header = {'command': ' '.join(shlex.quote(word) for word in [sys.executable] + sys.argv),
            'reproduce': reproducing_command(args), 'code': code_version(),
            'load_at_start': load_average_text()}
  warning = publication_warning(os.getloadavg()[0], args.calls, _PUBLISHED_CALLS, 'calls')
  print(f'command: {header["command"]}')
  print(f'reproduce: {header["reproduce"]}   (code {header["code"]})')
  print(f'load average (1/5/15 min) at the start: {header["load_at_start"]}')
  if warning:
    print(f'\n{"!" * 100}\n{warning}\n{"!" * 100}\n', flush=True)
  hparams = settings.HParams()
  print(f'TensorFlow {tf.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs; model: '
        f'variant {hparams.variant}, H={hparams.hidden_dim}, history_length '
        f'{hparams.history_length}, top_k {hparams.top_k}', flush=True)
  results = []
  with tempfile.TemporaryDirectory() as root:
    for num_items in args.num_items:
      results.append(measure_catalogue(num_items, args, os.path.join(root, str(num_items))))
      gc.collect()  # One catalogue's model, vectors and index before the next one's.
  header['load_at_end'] = load_average_text()
  print_summary(results, warning)
  print(f'load average (1/5/15 min) at the start: {header["load_at_start"]}, at the end: '
        f'{header["load_at_end"]}')
  if args.out:
    write_json(args.out, results, header)
  if warning:
    print(f'\n{warning}')
  if args.quick:
    print('\n(--quick: a smoke run; the figures are not meaningful)')


if __name__ == '__main__':
  main()
