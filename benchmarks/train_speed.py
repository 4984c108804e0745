"""Training speed of the project's trainer against a plain tf_keras reference trainer.

What is measured. In one process, on the same synthetic batches (benchmarks/synthetic_batches.py:
8 batches of Zipf-popular play sequences, cycled), each row trains a fresh model:

  project (LazyAdam)       the project's training step as trainer/train_loop.py runs it:
                           model.build_model, losses.compute_losses (every play of each sequence
                           is a target), backward, optimizers.make_optimizer's LazyAdam.
  project (tf_keras Adam)  the same with hparams optimizer='adam': the difference between the two
                           rows is the optimizer's share (Adam updates the whole item table).
  reference                the plain tf_keras trainer the issue asks the project to be compared
                           with: the SAME architecture and sizes (HParams defaults), written below
                           from stock tf_keras layers, trained the way a plain trainer does: ONE
                           target per sequence (its last play): tf.nn.sampled_softmax_loss over an
                           untied V x H output table when it is positive, a sigmoid loss when it
                           is negative (as the project's variant c), and stock tf_keras Adam.
  --variations             also the project with the unique gather off, and with each other
                           sampler.

How. Each row first runs --warmup-steps untimed steps. Then come --repeats passes; in each pass
every row runs --steps consecutive steps (completion forced by reading the last loss), the rows
one after the other, their order rotated from pass to pass, so that a slow spell of the machine
hits every row alike. Per row the table gives ms/step, examples/s (sequences) and targets/s, each
the median over the passes of (work of the pass / time of the pass), with the min-max over the
passes; and the ratio of each row's targets/s to the reference's. A target is a play in a loss
(positive, or negative: variant c): for the project, every such play of each sequence (what
compute_losses and the training loop count); for the reference, each sequence's last play when it
is one. 'Neither' plays are in no loss and not counted.

GFLOP/s: the analytic floating-point operations of a step (matmuls only: item projections of the
looked-up rows, the Q/K/V/O projections, attention scores and weighted sums, the FFN, the sampled
softmax logits and the negative scores; training counted as 3x the forward) per second, and as a
fraction of the machine's float32 matmul speed (tf.matmul of two 2048 x 2048 matrices, median of
several runs), printed at the start.

Catalogue scaling: give --num-items several sizes and every row is measured at each; a last table
gives each row's ms/step per size and the ratio of the largest catalogue's to the smallest's (the
goal for the project with LazyAdam: within 1.2x).

The load average is printed at the start, around the timed passes and with every table. Figures
taken while anything else uses the cores are not fit to publish: the script warns when the
1-minute load average exceeds 0.5 at the start.

With --parameter-servers N the rows run under tf.distribute.ParameterServerStrategy on an
in-process cluster (one worker, N parameter servers on loopback gRPC ports); tables of at least
1 MB (the item tables and their optimizer slots) are sharded N ways, so their lookups and updates
cross the RPC layer as in distributed training.

From the repository root (about 20 minutes per catalogue size on 2 cores at the defaults):

  TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/train_speed.py   # figures to publish
  ... benchmarks/train_speed.py --num-items 100000 1000000              # catalogue scaling
  ... benchmarks/train_speed.py --parameter-servers 2                   # on an in-process cluster
  ... benchmarks/train_speed.py --quick                                 # a smoke run
"""

import argparse
import dataclasses
import gc
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tf_keras

from benchmarks import synthetic_batches
from contract import features
from contract import settings
from trainer import losses
from trainer import model as model_lib
from trainer import optimizers
from trainer import samplers

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Enough distinct batches that no row is timed on one batch's cache-warm ids.
_NUM_BATCHES = 8
_SGEMM_SIZE = 2048
_SGEMM_REPEATS = 10
_QUIET_LOAD = 0.5  # 1-minute load average above which the machine is not quiet enough
_PUBLISHED_STEPS = 100  # fewer steps per pass are too short a time to publish
_SCALING_GOAL = 1.2  # LazyAdam's ms/step at the largest catalogue vs the smallest
_PROJECT = 'project (LazyAdam)'
_REFERENCE = 'reference (plain tf_keras)'

Batch = synthetic_batches.Batch
# Runs `steps` consecutive training steps on the cycled batches; returns once all have completed.
StepsRunner = Callable[[List[Batch], int], None]


def build_parser() -> argparse.ArgumentParser:
  default = settings.HParams()
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--num-items', type=int, nargs='+', default=[100_000],
                      help='item vocabulary sizes V (the model adds the OOV bucket); with several, '
                      'every row is measured at each and a last table compares them')
  parser.add_argument('--zipf-exponent', type=float, default=1.0,
                      help='item popularity is proportional to 1 / rank^exponent')
  parser.add_argument('--batch-size', type=int, default=default.batch_size,
                      help='sequences per training step')
  parser.add_argument('--steps', type=int, default=100,
                      help='consecutive timed steps of each row in each pass (at least 100 for '
                      'published figures)')
  parser.add_argument('--warmup-steps', type=int, default=10,
                      help='untimed first steps of each row (tracing, first touch of the tables); '
                      'at least 1')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed passes; each row reports the median over them and their min-max')
  parser.add_argument('--variations', action='store_true',
                      help='also time the project with the unique gather off and with each other '
                      'sampler')
  parser.add_argument('--parameter-servers', type=int, default=0,
                      help='run every row on an in-process cluster of one worker and this many '
                      'parameter servers (0: no cluster)')
  parser.add_argument('--seed', type=int, default=default.seed,
                      help='seed of the batches, the weights and the samplers')
  parser.add_argument('--quick', action='store_true',
                      help='tiny catalogues and batches, few steps: checks the command, not the '
                      'speed (overrides the sizes and step counts above)')
  return parser


def parse_args(argv=None) -> argparse.Namespace:
  parser = build_parser()
  args = parser.parse_args(argv)
  if min(args.steps, args.warmup_steps, args.repeats) < 1:
    parser.error('--steps, --warmup-steps and --repeats must be at least 1')
  if args.quick:
    args.num_items, args.batch_size = [2_000, 5_000], 32
    args.steps, args.warmup_steps, args.repeats = 3, 1, 2
  return args


def reproducing_command(args: argparse.Namespace) -> str:
  """The command that repeats this run, every setting explicit (--quick spelt out)."""
  words = ['TF_USE_LEGACY_KERAS=1', 'PYTHONPATH=.', 'python', 'benchmarks/train_speed.py',
           '--num-items', *map(str, args.num_items)]
  for name in ('zipf_exponent', 'batch_size', 'steps', 'warmup_steps', 'repeats',
               'parameter_servers', 'seed'):
    words += ['--' + name.replace('_', '-'), str(getattr(args, name))]
  if args.variations:
    words.append('--variations')
  return ' '.join(words)


def code_version() -> str:
  """The git revision of the code measured, marked -dirty when the tree has changes."""
  try:
    return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=_REPO_ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (not a git checkout)'


def load_average_text() -> str:
  """The 1, 5 and 15-minute load averages."""
  return '{:.2f} / {:.2f} / {:.2f}'.format(*os.getloadavg())


def publication_warning(one_minute_load: float, timed: int, minimum: int = _PUBLISHED_STEPS,
                        unit: str = 'steps') -> Optional[str]:
  """Why this run's figures must not be published, or None: a busy machine, or passes of fewer
  than minimum timed units (steps here; calls for the serving benchmark)."""
  reasons = []
  if one_minute_load > _QUIET_LOAD:
    reasons.append(f'the 1-minute load average was {one_minute_load:.2f} (> {_QUIET_LOAD}) at the '
                   'start: other work shares the cores')
  if timed < minimum:
    reasons.append(f'passes of {timed} {unit} (< {minimum})')
  if not reasons:
    return None
  return f'WARNING: {"; ".join(reasons)}. DO NOT PUBLISH these figures.'


def sgemm_gflops() -> float:
  """The machine's float32 matmul speed: the median of _SGEMM_REPEATS timed 2048^2 products."""
  a = tf.random.normal([_SGEMM_SIZE, _SGEMM_SIZE], seed=1)
  b = tf.random.normal([_SGEMM_SIZE, _SGEMM_SIZE], seed=2)
  tf.matmul(a, b)[0, 0].numpy()  # Thread pools and first-touch memory, untimed.
  seconds = []
  for _ in range(_SGEMM_REPEATS):
    start = time.perf_counter()
    tf.matmul(a, b)[0, 0].numpy()
    seconds.append(time.perf_counter() - start)
  return 2 * _SGEMM_SIZE**3 / statistics.median(seconds) / 1e9


# --- Analytic FLOPs of one training step (matmuls; multiply and add count 2) -------------------

def encoder_forward_flops(hparams: settings.HParams, batch_size: int) -> float:
  """The encoder's forward matmuls on [B, L] positions; padded positions are computed too."""
  h, length = hparams.hidden_dim, hparams.history_length
  positions = batch_size * length
  projections = 4 * 2 * positions * h * h  # query, key, value and output
  attention = 2 * 2 * batch_size * length * length * h  # scores and weighted sums, all heads
  ffn = 2 * 2 * positions * h * hparams.ffn_dim
  return hparams.num_layers * (projections + attention + ffn)


def real_play_ids(batch: Batch, label: int) -> np.ndarray:
  """Item ids of the batch's real plays with this label (its targets of that label)."""
  labels = batch[features.SEQUENCE_LABEL].numpy()
  real = (np.arange(labels.shape[1])[np.newaxis, :]
          < batch[features.SEQUENCE_LENGTH].numpy()[:, np.newaxis])
  return batch[features.SEQUENCE_ITEM_XF].numpy()[real & (labels == label)]


def project_step_flops(hparams: settings.HParams, batch: Batch) -> float:
  """Training FLOPs of one project step on the batch (variant c): 3x its forward matmuls."""
  history = batch[features.HISTORY_ITEM_XF].numpy()
  positives = real_play_ids(batch, features.LABEL_POSITIVE)
  negatives = real_play_ids(batch, features.LABEL_NEGATIVE)
  if hparams.unique_gather:
    # One projected row per distinct id; the candidates' count is an upper bound (a sample may
    # equal a positive target).
    projected = (np.unique(history).size + np.unique(positives).size + hparams.num_sampled
                 + np.unique(negatives).size)
  else:
    projected = history.size + positives.size + hparams.num_sampled + negatives.size
  projection = 2 * projected * hparams.item_embedding_dim * hparams.hidden_dim
  logits = 2 * (positives.size * (hparams.num_sampled + 1) + negatives.size) * hparams.hidden_dim
  return 3 * (encoder_forward_flops(hparams, history.shape[0]) + projection + logits)


def reference_step_flops(hparams: settings.HParams, batch: Batch) -> float:
  """Training FLOPs of one reference step: every history position projected, one target each."""
  history = batch[features.HISTORY_ITEM_XF].numpy()
  last = batch[features.LABEL].numpy()
  positives = np.sum(last == features.LABEL_POSITIVE)
  negatives = np.sum(last == features.LABEL_NEGATIVE)
  projection = 2 * history.size * hparams.item_embedding_dim * hparams.hidden_dim
  logits = 2 * (positives * (hparams.num_sampled + 1) + negatives) * hparams.hidden_dim
  return 3 * (encoder_forward_flops(hparams, history.shape[0]) + projection + logits)


# --- The reference: a plain tf_keras trainer of the same architecture --------------------------

class ReferenceModel(tf_keras.Model):
  """DeepMatch's architecture and sizes from stock tf_keras layers; untied output item vectors.

  Each history position sums the item (a V x E Embedding and an E -> H Dense without bias), a
  learned position embedding of L rows (indexed by absolute position, as a stock model does; the
  project counts back from the most recent play), the play rate times a learned vector and the
  intent embedding; then LayerNormalization and num_layers blocks of MultiHeadAttention (causal and
  padding masks) and a gelu FFN, each with dropout, a residual and LayerNormalization. The user
  vector is the output at the last real position (the project's learned empty-history vector has
  no stock counterpart: an empty history reads position 0). Output item vectors and biases are a
  V x H and a V table of their own, the form tf.nn.sampled_softmax_loss takes (it gathers the
  rows it needs).
  """

  def __init__(self, hparams: settings.HParams, num_items: int, num_intents: int, **kwargs):
    super().__init__(**kwargs)
    h = hparams.hidden_dim
    self.num_items = num_items
    self.history_length = hparams.history_length
    self.item_embedding = tf_keras.layers.Embedding(num_items, hparams.item_embedding_dim)
    self.item_projection = tf_keras.layers.Dense(h, use_bias=False)
    self.position_embedding = tf_keras.layers.Embedding(hparams.history_length, h)
    self.play_rate_vector = tf_keras.layers.Dense(h, use_bias=False)  # applied to [..., 1] rates
    self.intent_embedding = tf_keras.layers.Embedding(num_intents, h)
    self.input_norm = tf_keras.layers.LayerNormalization()
    self.input_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.blocks = [_ReferenceBlock(hparams) for _ in range(hparams.num_layers)]
    self.output_weights = self.add_weight(
        name='output_weights', shape=[num_items, h],
        initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))
    self.output_bias = self.add_weight(name='output_bias', shape=[num_items], initializer='zeros')

  def call(self, batch: Batch, training=False) -> tf.Tensor:
    """User vectors [B, H] of a model batch."""
    length = tf.cast(batch[features.HISTORY_LENGTH], tf.int32)
    x = self.item_projection(self.item_embedding(batch[features.HISTORY_ITEM_XF]))
    x += self.position_embedding(tf.range(self.history_length))
    x += self.play_rate_vector(batch[features.HISTORY_PLAY_RATE_XF][:, :, tf.newaxis])
    x += self.intent_embedding(batch[features.HISTORY_INTENT_XF])
    x = self.input_dropout(self.input_norm(x), training=training)
    real_keys = tf.sequence_mask(length, self.history_length)[:, tf.newaxis, :]
    for block in self.blocks:
      x = block(x, real_keys, training=training)
    return tf.gather(x, tf.maximum(length - 1, 0), batch_dims=1)


class _ReferenceBlock(tf_keras.layers.Layer):
  """MultiHeadAttention and a gelu FFN, each with dropout, a residual and LayerNormalization."""

  def __init__(self, hparams: settings.HParams, **kwargs):
    super().__init__(**kwargs)
    h = hparams.hidden_dim
    self.attention = tf_keras.layers.MultiHeadAttention(
        num_heads=hparams.num_heads, key_dim=h // hparams.num_heads, dropout=hparams.dropout)
    self.attention_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.attention_norm = tf_keras.layers.LayerNormalization()
    self.ffn_hidden = tf_keras.layers.Dense(hparams.ffn_dim, activation='gelu')
    self.ffn_output = tf_keras.layers.Dense(h)
    self.ffn_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.ffn_norm = tf_keras.layers.LayerNormalization()

  def call(self, x, real_keys, training=False):
    attended = self.attention(x, x, attention_mask=real_keys, use_causal_mask=True,
                              training=training)
    x = self.attention_norm(x + self.attention_dropout(attended, training=training))
    transformed = self.ffn_output(self.ffn_hidden(x))
    return self.ffn_norm(x + self.ffn_dropout(transformed, training=training))


def reference_loss(model: ReferenceModel, batch: Batch, hparams: settings.HParams) -> tf.Tensor:
  """Mean loss of the sequences' last plays: sampled softmax if positive, sigmoid if negative."""
  users = model(batch, training=True)
  items, labels = batch[features.ITEM_XF], batch[features.LABEL]
  positive = tf.equal(labels, features.LABEL_POSITIVE)
  positive_losses = tf.nn.sampled_softmax_loss(
      weights=table_parts(model.output_weights), biases=table_parts(model.output_bias),
      labels=tf.boolean_mask(items, positive)[:, tf.newaxis],
      inputs=tf.boolean_mask(users, positive), num_sampled=hparams.num_sampled,
      num_classes=model.num_items, seed=hparams.seed)
  negative = tf.equal(labels, features.LABEL_NEGATIVE)
  negative_items = tf.boolean_mask(items, negative)
  # embedding_lookup rather than tf.gather: it also reads tables sharded over parameter servers.
  negative_logits = (
      tf.reduce_sum(tf.boolean_mask(users, negative)
                    * tf.nn.embedding_lookup(model.output_weights, negative_items), axis=-1)
      + tf.nn.embedding_lookup(model.output_bias, negative_items))
  negative_losses = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.zeros_like(negative_logits), logits=negative_logits)
  trained = tf.reduce_sum(tf.cast(positive, tf.float32) + tf.cast(negative, tf.float32))
  total = tf.reduce_sum(positive_losses) + tf.reduce_sum(negative_losses)
  return total / tf.maximum(trained, 1.0)


def table_parts(table: tf.Variable) -> List[tf.Variable]:
  """A table as tf.nn.sampled_softmax_loss takes a partitioned one: the list of its shards.

  The parameter-server strategy shards in the loss's default 'div' order; a ShardedVariable
  passed whole would be read whole (its shards concatenated) at every step.
  """
  return list(getattr(table, 'variables', [table]))


# --- Training steps and rows -------------------------------------------------------------------

def training_step(strategy: tf.distribute.Strategy, model: tf_keras.Model,
                  optimizer: tf_keras.optimizers.Optimizer,
                  loss_fn: Callable[[Batch], tf.Tensor]) -> Callable[[Batch], tf.Tensor]:
  """The compiled step of train_loop.py's replica_step: forward, loss, backward, update."""

  def replica_step(batch):
    with tf.GradientTape() as tape:
      loss = loss_fn(batch)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  @tf.function
  def step(batch):
    return strategy.run(replica_step, args=(batch,))

  return step


def project_step(hparams: settings.HParams, num_items: int, unigram_counts: np.ndarray,
                 strategy: tf.distribute.Strategy) -> Callable[[Batch], tf.Tensor]:
  tf_keras.utils.set_random_seed(hparams.seed)
  with strategy.scope():
    model = model_lib.build_model(hparams, num_items, synthetic_batches.NUM_INTENTS)
    optimizer = optimizers.make_optimizer(hparams)
    # A parameter-server step runs on a worker, which cannot create the slots.
    optimizer.build(model.trainable_variables)
  sampler = samplers.make_sampler(hparams.sampler, num_items, unigram_counts,
                                  num_sampled=hparams.num_sampled, seed=hparams.seed)
  return training_step(strategy, model, optimizer,
                       lambda batch: losses.compute_losses(model, batch, hparams, sampler)['loss'])


def reference_step(hparams: settings.HParams, num_items: int,
                   strategy: tf.distribute.Strategy) -> Callable[[Batch], tf.Tensor]:
  tf_keras.utils.set_random_seed(hparams.seed)
  with strategy.scope():
    model = ReferenceModel(hparams, num_items, synthetic_batches.NUM_INTENTS, name='reference')
    model(model_lib.dummy_batch(hparams))
    optimizer = tf_keras.optimizers.Adam(learning_rate=hparams.learning_rate)
    optimizer.build(model.trainable_variables)
  return training_step(strategy, model, optimizer,
                       lambda batch: reference_loss(model, batch, hparams))


def steps_runner(step: Callable[[Batch], tf.Tensor], coordinator) -> StepsRunner:
  """Runs steps here, or schedules them on the cluster's worker and waits for them."""

  def run_here(batches, steps):
    for i in range(steps):
      loss = step(batches[i % len(batches)])
    loss.numpy()  # Waits for every queued op of the steps.

  def run_on_cluster(batches, steps):
    for i in range(steps):
      loss = coordinator.schedule(step, args=(batches[i % len(batches)],))
    coordinator.join()
    loss.fetch()

  return run_here if coordinator is None else run_on_cluster


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  run_steps: StepsRunner
  targets: List[int]  # plays each batch's step trains
  flops: List[float]  # FLOPs of each batch's step


def project_variants(default: settings.HParams, variations: bool
                     ) -> Dict[str, settings.HParams]:
  """The project's rows by name: LazyAdam, tf_keras Adam and, with variations, the others."""
  variants = {_PROJECT: default, 'project (tf_keras Adam)': default.replace(optimizer='adam')}
  if variations:
    variants['project, unique gather off'] = default.replace(unique_gather=False)
    for sampler in settings.SAMPLERS:
      if sampler != default.sampler:
        variants[f'project, {sampler} sampler'] = default.replace(sampler=sampler)
  return variants


def make_rows(default: settings.HParams, vocabulary_size: int, batches: List[Batch],
              counts: List[synthetic_batches.BatchCounts], args: argparse.Namespace,
              coordinator) -> List[Row]:
  """The rows, each with a fresh model: the project's variants, then the reference."""
  strategy = coordinator.strategy if coordinator else tf.distribute.get_strategy()
  num_items = synthetic_batches.model_num_items(vocabulary_size)
  # fixed_unigram only needs relative counts: the popularity the batches are drawn from.
  unigram_counts = synthetic_batches.zipf_probabilities(vocabulary_size, args.zipf_exponent)
  rows = [Row(name, steps_runner(project_step(hparams, num_items, unigram_counts, strategy),
                                 coordinator),
              targets=[c.positive_plays + c.negative_plays for c in counts],
              flops=[project_step_flops(hparams, batch) for batch in batches])
          for name, hparams in project_variants(default, args.variations).items()]
  rows.append(Row(_REFERENCE, steps_runner(reference_step(default, num_items, strategy),
                                           coordinator),
                  targets=[c.last_positive + c.last_negative for c in counts],
                  flops=[reference_step_flops(default, batch) for batch in batches]))
  return rows


def in_process_cluster(num_ps: int):
  """A ClusterCoordinator over one worker and num_ps parameter servers in this process."""
  import portpicker  # pylint: disable=g-import-not-at-top

  os.environ['GRPC_FAIL_FAST'] = 'use_caller'
  cluster = tf.train.ClusterSpec({
      'worker': [f'localhost:{portpicker.pick_unused_port()}'],
      'ps': [f'localhost:{portpicker.pick_unused_port()}' for _ in range(num_ps)]})
  servers = [tf.distribute.Server(cluster, job_name=job, task_index=index, protocol='grpc')
             for job in ('worker', 'ps') for index in range(cluster.num_tasks(job))]
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer='grpc')
  # A size rule rather than the trainer's ItemTablePartitioner (which needs the catalogue size):
  # one strategy serves every catalogue of the run, and only the item tables and their optimizer
  # slots reach 1 MB.
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=1 << 20, max_shards=num_ps)
  strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  coordinator.servers = servers  # They serve as long as the coordinator lives.
  return coordinator


# --- Timing ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Spread:
  """A rate's median over the passes, with the lowest and highest pass."""
  median: float
  low: float
  high: float

  @classmethod
  def of(cls, values: Sequence[float]) -> 'Spread':
    return cls(statistics.median(values), min(values), max(values))

  def text(self, scale: float = 1.0, digits: int = 0) -> str:
    return (f'{self.median / scale:,.{digits}f} '
            f'({self.low / scale:,.{digits}f}-{self.high / scale:,.{digits}f})')


@dataclasses.dataclass(frozen=True)
class RowSpeed:
  ms_per_step: float  # median over the passes
  examples: Spread  # sequences per second
  targets: Spread  # trained plays per second
  flops: Spread  # FLOP/s


def timed_passes(rows: List[Row], batches: List[Batch], steps: int,
                 repeats: int) -> Dict[str, List[float]]:
  """Seconds of each row's passes; rows interleaved within a pass, their order rotated."""
  seconds = {row.name: [] for row in rows}
  for repeat in range(repeats):
    shift = repeat % len(rows)
    for row in rows[shift:] + rows[:shift]:
      start = time.perf_counter()
      row.run_steps(batches, steps)
      seconds[row.name].append(time.perf_counter() - start)
      print(f'  pass {repeat + 1}/{repeats} {row.name}: '
            f'{1000 * seconds[row.name][-1] / steps:.1f} ms/step', flush=True)
  return seconds


def work_per_pass(per_batch: Sequence[float], steps: int) -> float:
  """A pass's total of a per-batch quantity: step i trains on batch i mod the number of batches."""
  return sum(per_batch[i % len(per_batch)] for i in range(steps))


def row_speed(row: Row, seconds: List[float], steps: int, batch_size: int) -> RowSpeed:
  targets, flops = work_per_pass(row.targets, steps), work_per_pass(row.flops, steps)
  return RowSpeed(ms_per_step=1000 * statistics.median(seconds) / steps,
                  examples=Spread.of([steps * batch_size / s for s in seconds]),
                  targets=Spread.of([targets / s for s in seconds]),
                  flops=Spread.of([flops / s for s in seconds]))


# --- Reports -----------------------------------------------------------------------------------

def print_batches(counts: List[synthetic_batches.BatchCounts]) -> None:
  sequences = sum(c.sequences for c in counts)
  plays = sum(c.plays for c in counts)
  print(f'  {len(counts)} batches of {counts[0].sequences} sequences, cycled: '
        f'{plays / sequences:.1f} real plays per sequence '
        f'({sum(c.positive_plays for c in counts) / plays:.0%} positive, '
        f'{sum(c.negative_plays for c in counts) / plays:.0%} negative); last play positive in '
        f'{sum(c.last_positive for c in counts) / sequences:.0%} of sequences, negative in '
        f'{sum(c.last_negative for c in counts) / sequences:.0%}', flush=True)


def print_speed_table(title: str, speeds: Dict[str, RowSpeed], sgemm: float,
                      loads: Dict[str, str], warning: Optional[str]) -> None:
  reference = speeds[_REFERENCE].targets.median
  cells = [('row', 'ms/step', 'examples/s (min-max)', 'targets/s (min-max)', 'targets vs ref',
            'GFLOP/s', 'of sgemm')]
  for name, speed in speeds.items():
    cells.append((name, f'{speed.ms_per_step:.1f}', speed.examples.text(), speed.targets.text(),
                  f'{speed.targets.median / reference:.2f}x', speed.flops.text(1e9, 1),
                  f'{speed.flops.median / 1e9 / sgemm:.0%}'))
  widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
  print(f'\n{title}')
  if warning:
    print(warning)
  for when, load in loads.items():
    print(f'  load average (1/5/15 min) {when}: {load}')
  for row in cells:
    print('  '.join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))


def print_target_notes() -> None:
  print("targets: plays in a loss (positive, or negative with variant c's skip loss; 'neither' "
        "plays are in none): the project trains every such play of each sequence, the reference "
        "each sequence's last play when it is one.")


def print_scaling_table(results: Dict[int, Dict[str, RowSpeed]]) -> None:
  sizes = sorted(results)
  smallest, largest = sizes[0], sizes[-1]
  print('\nCatalogue scaling: ms per step (median over the passes) by catalogue size')
  name_width = max(len(name) for name in results[smallest])
  print(' '.join(['row'.ljust(name_width)] + [f'{size:>12,}' for size in sizes]
                 + [f'{"largest/smallest":>17}']))
  for name in results[smallest]:
    growth = results[largest][name].ms_per_step / results[smallest][name].ms_per_step
    goal = ''
    if name == _PROJECT:
      goal = (f'  (goal <= {_SCALING_GOAL:.1f}x: '
              f'{"met" if growth <= _SCALING_GOAL else "NOT met"})')
    print(' '.join([name.ljust(name_width)]
                   + [f'{results[size][name].ms_per_step:>12.1f}' for size in sizes]
                   + [f'{growth:>16.2f}x' + goal]))


def measure_catalogue(vocabulary_size: int, args: argparse.Namespace, coordinator, sgemm: float,
                      start_load: str, warning: Optional[str]) -> Dict[str, RowSpeed]:
  """Every row's speed at one catalogue size, printed as a table."""
  default = settings.HParams(batch_size=args.batch_size, seed=args.seed)
  print(f'\n== {vocabulary_size:,} items ==', flush=True)
  batches = synthetic_batches.training_batches(default, vocabulary_size, _NUM_BATCHES, args.seed,
                                               args.zipf_exponent)
  counts = [synthetic_batches.batch_counts(batch) for batch in batches]
  print_batches(counts)
  rows = make_rows(default, vocabulary_size, batches, counts, args, coordinator)
  for row in rows:
    print(f'  warming up {row.name}', flush=True)
    row.run_steps(batches, args.warmup_steps)
  loads = {'at the start': start_load, 'before the timed passes': load_average_text()}
  print(f'  load average (1/5/15 min) before the timed passes: {loads["before the timed passes"]}',
        flush=True)
  seconds = timed_passes(rows, batches, args.steps, args.repeats)
  loads['after the timed passes'] = load_average_text()
  print(f'  load average (1/5/15 min) after the timed passes: {loads["after the timed passes"]}')
  speeds = {row.name: row_speed(row, seconds[row.name], args.steps, args.batch_size)
            for row in rows}
  where = (f'on 1 worker and {args.parameter_servers} parameter servers (in-process cluster)'
           if coordinator else 'in this process')
  print_speed_table(f'Training speed at {vocabulary_size:,} items, {where}: median over '
                    f'{args.repeats} passes of {args.steps} steps (min-max over the passes)',
                    speeds, sgemm, loads, warning)
  print_target_notes()
  return speeds


def main(argv=None) -> None:
  args = parse_args(argv)
  start_load = load_average_text()
  warning = publication_warning(os.getloadavg()[0], args.steps)
  print('command: ' + ' '.join(shlex.quote(word) for word in [sys.executable] + sys.argv))
  print(f'reproduce: {reproducing_command(args)}   (code {code_version()})')
  print(f'load average (1/5/15 min) at the start: {start_load}')
  if warning:
    print(f'\n{"!" * 100}\n{warning}\n{"!" * 100}\n', flush=True)
  default = settings.HParams(batch_size=args.batch_size, seed=args.seed)
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; batch {default.batch_size}, '
        f'history_length {default.history_length}, E={default.item_embedding_dim}, '
        f'H={default.hidden_dim}, {default.num_layers} layers, {default.num_heads} heads, '
        f'FFN {default.ffn_dim}, num_sampled {default.num_sampled} ({default.sampler}), '
        f'variant {default.variant}, Zipf exponent {args.zipf_exponent}')
  sgemm = sgemm_gflops()
  print(f'sgemm: {sgemm:.1f} GFLOP/s (float32 tf.matmul {_SGEMM_SIZE}x{_SGEMM_SIZE}, median of '
        f'{_SGEMM_REPEATS})', flush=True)
  coordinator = in_process_cluster(args.parameter_servers) if args.parameter_servers else None
  results = {}
  for vocabulary_size in args.num_items:
    results[vocabulary_size] = measure_catalogue(vocabulary_size, args, coordinator, sgemm,
                                                 start_load, warning)
    # The models of one catalogue (GBs of tables and slots at millions of items) are reference
    # cycles: free them before the next catalogue's are built.
    gc.collect()
  if len(results) > 1:
    print_scaling_table(results)
  if warning:
    print(f'\n{warning}')
  if args.quick:
    print('\n(--quick: a smoke run; the figures are not meaningful)')


if __name__ == '__main__':
  main()
