"""Training speed of the DeepMatch trainer on synthetic Zipf-popular batches.

Measures, in one run and on the same batches, training examples per second of the default
configuration (the reference) and of variations of it: the unique-ids gather off, and each
sampler in turn. Two more tables time the parts the unique gather acts on, alone (forward and
backward): the history's item lookup and projection, and the positive loss. Every row reports
its ratio to the reference row of its table.

With --parameter-servers N the training steps run under tf.distribute.ParameterServerStrategy
on an in-process cluster (one worker, N parameter servers on loopback gRPC ports) with the item
tables sharded N ways, so the lookups cross the RPC layer as they do in distributed training.

  python benchmarks/train_speed.py                          # default sizes, one process
  python benchmarks/train_speed.py --parameter-servers 2    # the same under a PS cluster
  python benchmarks/train_speed.py --quick                  # a smoke run
"""

import argparse
import os
import time
from typing import Callable, Dict, List, Tuple

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tf_keras

from trainer import hparams as hparams_lib
from trainer import losses
from trainer import model as model_lib
from trainer import samplers
from transform import features

NUM_INTENTS = len(features.INTENTS) + features.NUM_OOV_BUCKETS


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--num-items', type=int, default=100_000,
                      help='item vocabulary size V (the OOV bucket is added)')
  parser.add_argument('--zipf-exponent', type=float, default=1.0,
                      help='item popularity is proportional to 1 / rank^exponent')
  parser.add_argument('--batch-size', type=int, default=hparams_lib.HParams.batch_size)
  parser.add_argument('--steps', type=int, default=30, help='timed training steps per row')
  parser.add_argument('--warmup-steps', type=int, default=3,
                      help='untimed steps per row (tracing and first-touch costs)')
  parser.add_argument('--repeats', type=int, default=3,
                      help='timed passes per row, interleaved across rows; the best pass counts')
  parser.add_argument('--parameter-servers', type=int, default=0,
                      help='run the training steps on an in-process cluster with this many '
                      'parameter servers (0: no cluster)')
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--quick', action='store_true',
                      help='small vocabulary and few steps: checks the command, not the speed')
  args = parser.parse_args(argv)
  if args.quick:
    args.num_items, args.steps, args.warmup_steps, args.repeats = 5_000, 3, 1, 1
  return args


def zipf_probabilities(num_items: int, exponent: float) -> np.ndarray:
  weights = 1.0 / np.arange(1, num_items + 1) ** exponent
  return weights / weights.sum()


def synthetic_batches(hparams: hparams_lib.HParams, num_items: int, exponent: float, batch_size: int,
                      num_batches: int, seed: int) -> List[Dict[str, tf.Tensor]]:
  """Model batches whose history and target ids follow Zipf popularity (id = popularity rank)."""
  rng = np.random.default_rng(seed)
  popularity = zipf_probabilities(num_items, exponent)
  length = hparams.history_length
  batches = []
  for _ in range(num_batches):
    history_length = rng.integers(0, length + 1, size=batch_size)
    real = np.arange(length)[np.newaxis, :] < history_length[:, np.newaxis]
    items = rng.choice(num_items, size=(batch_size, length), p=popularity) * real
    batches.append({
        features.HISTORY_ITEM_XF: tf.constant(items, tf.int64),
        features.HISTORY_PLAY_RATE_XF: tf.constant(rng.random((batch_size, length)) * real, tf.float32),
        features.HISTORY_INTENT_XF: tf.constant(
            rng.integers(0, len(features.INTENTS), (batch_size, length)) * real, tf.int64),
        features.HISTORY_LENGTH: tf.constant(history_length, tf.int64),
        features.ITEM_XF: tf.constant(rng.choice(num_items, size=batch_size, p=popularity), tf.int64),
        # About the mix the generated play logs give: most targets positive, a fifth skipped.
        features.LABEL: tf.constant(rng.choice([1, 0, -1], size=batch_size, p=[0.6, 0.25, 0.15]),
                                    tf.int64),
    })
  return batches


def real_history_ids(batch: Dict[str, tf.Tensor]) -> np.ndarray:
  items = batch[features.HISTORY_ITEM_XF].numpy()
  real = np.arange(items.shape[1])[np.newaxis, :] < batch[features.HISTORY_LENGTH].numpy()[:, np.newaxis]
  return items[real]


def train_step_fn(hparams: hparams_lib.HParams, num_items: int, counts: np.ndarray,
                  coordinator=None) -> Callable[[Dict[str, tf.Tensor]], tf.Tensor]:
  """A compiled training step (forward, both losses, backward, Adam update) of a fresh model.

  With a ClusterCoordinator, the step is scheduled on the cluster's worker and the returned
  callable waits for it, so that timing it times the remote step.
  """
  strategy = coordinator.strategy if coordinator else tf.distribute.get_strategy()
  tf_keras.utils.set_random_seed(hparams.seed)
  with strategy.scope():
    model = model_lib.build_model(hparams, num_items, NUM_INTENTS)
    optimizer = tf_keras.optimizers.Adam(hparams.learning_rate)
  sampler = samplers.make_sampler(hparams.sampler, num_items, counts, hparams.num_sampled,
                                  seed=hparams.seed)

  def replica_step(batch):
    with tf.GradientTape() as tape:
      loss = losses.compute_losses(model, batch, hparams, sampler)['loss']
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  # No autograph: the step has no tensor-dependent Python control flow to convert.
  @tf.function(autograph=False)
  def step(batch):
    return strategy.run(replica_step, args=(batch,))

  if coordinator is None:
    return step

  def remote_step(batch):
    return tf.constant(coordinator.schedule(step, args=(batch,)).fetch())

  return remote_step


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
  # Shards tables of at least 1 MB (the item table and the optimizer's slots of it); the
  # attention weights stay whole.
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=1 << 20, max_shards=num_ps)
  strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  coordinator.servers = servers  # They serve as long as the coordinator lives.
  return coordinator


def history_lookup_step_fn(hparams: hparams_lib.HParams, num_items: int,
                           counts: np.ndarray) -> Callable[[Dict[str, tf.Tensor]], tf.Tensor]:
  """The history's item lookup and projection alone, forward and backward."""
  del counts  # No sampler here.
  tf_keras.utils.set_random_seed(hparams.seed)
  model = model_lib.build_model(hparams, num_items, NUM_INTENTS)

  @tf.function
  def step(batch):
    with tf.GradientTape() as tape:
      vectors = model.item_vectors(batch[features.HISTORY_ITEM_XF], unique=hparams.unique_gather)
      loss = tf.reduce_sum(vectors ** 2)
    return loss + _gradient_sum(tape.gradient(loss, [model.item_embedding,
                                                     model.item_projection.kernel]))

  return step


def positive_loss_step_fn(hparams: hparams_lib.HParams, num_items: int,
                          counts: np.ndarray) -> Callable[[Dict[str, tf.Tensor]], tf.Tensor]:
  """The positive loss alone, forward and backward, on fixed user vectors."""
  tf_keras.utils.set_random_seed(hparams.seed)
  model = model_lib.build_model(hparams, num_items, NUM_INTENTS)
  sampler = samplers.make_sampler(hparams.sampler, num_items, counts, hparams.num_sampled,
                                  seed=hparams.seed)
  users = tf.random.normal([1, hparams.hidden_dim], seed=hparams.seed)

  @tf.function
  def step(batch):
    targets = batch[features.ITEM_XF]
    user_vectors = tf.tile(users, [tf.shape(targets)[0], 1])
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(losses.positive_loss(
          model, user_vectors, targets, tf.ones_like(targets, tf.float32), sampler(targets),
          unique_gather=hparams.unique_gather))
    gradients = tape.gradient(loss, [model.item_embedding, model.item_bias_table,
                                     model.item_projection.kernel])
    return loss + _gradient_sum(gradients)

  return step


def _gradient_sum(gradients) -> tf.Tensor:
  """A number that depends on every gradient, without densifying the sparse table ones."""
  return tf.add_n([tf.reduce_sum(g.values if isinstance(g, tf.IndexedSlices) else g)
                   for g in gradients])


def time_rows(rows: List[Tuple[str, Callable]], batches, steps: int, warmup_steps: int,
              repeats: int, batch_size: int) -> Dict[str, float]:
  """Examples per second of each row: the best of `repeats` passes, passes interleaved across rows."""
  for name, step in rows:
    print(f'  warming up {name}', flush=True)
    for i in range(warmup_steps):
      step(batches[i % len(batches)]).numpy()
  best = {name: 0.0 for name, _ in rows}
  for repeat in range(repeats):
    for name, step in rows:
      start = time.perf_counter()
      for i in range(steps):
        loss = step(batches[i % len(batches)])
      loss.numpy()
      rate = steps * batch_size / (time.perf_counter() - start)
      best[name] = max(best[name], rate)
      print(f'  pass {repeat + 1}/{repeats} {name}: {rate:,.0f} examples/s', flush=True)
  return best


def print_table(title: str, rates: Dict[str, float], reference: str) -> None:
  width = max(len(name) for name in rates)
  print(f'\n{title}')
  print(f'{"configuration":<{width}}  {"examples/s":>12}  {"vs reference":>12}')
  for name, rate in rates.items():
    print(f'{name:<{width}}  {rate:>12,.0f}  {rate / rates[reference]:>11.2f}x')


def main(argv=None) -> None:
  args = parse_args(argv)
  tf.random.set_seed(args.seed)
  default = hparams_lib.HParams(batch_size=args.batch_size, seed=args.seed)
  num_items = args.num_items + features.NUM_OOV_BUCKETS
  counts = np.round(zipf_probabilities(args.num_items, args.zipf_exponent) * 1e7) + 1
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, '
        f'{tf.config.threading.get_intra_op_parallelism_threads() or "default"} intra-op threads')
  print(f'V={args.num_items:,} items (Zipf exponent {args.zipf_exponent}), batch {args.batch_size}, '
        f'history_length {default.history_length}, E={default.item_embedding_dim}, '
        f'H={default.hidden_dim}, {default.num_layers} layers, num_sampled {default.num_sampled}, '
        f'variant {default.variant}')
  batches = synthetic_batches(default, args.num_items, args.zipf_exponent, args.batch_size,
                              num_batches=8, seed=args.seed)
  ids = real_history_ids(batches[0])
  print(f'one batch: {ids.size:,} history ids, {np.unique(ids).size:,} distinct '
        f'({ids.size / max(np.unique(ids).size, 1):.1f} occurrences per id)')

  reference = f'default ({default.sampler}, unique gather)'
  variations = {
      reference: default,
      'unique gather off': default.replace(unique_gather=False),
  }
  for sampler in hparams_lib.SAMPLERS:
    if sampler != default.sampler:
      variations[f'sampler {sampler}'] = default.replace(sampler=sampler)

  coordinator = None
  where = 'in this process'
  if args.parameter_servers:
    coordinator = in_process_cluster(args.parameter_servers)
    where = f'on 1 worker and {args.parameter_servers} parameter servers (in-process cluster)'
  print(f'\ntraining step (forward, both losses, backward, Adam) {where}:', flush=True)
  train_rates = time_rows([(name, train_step_fn(hparams, num_items, counts, coordinator))
                           for name, hparams in variations.items()],
                          batches, args.steps, args.warmup_steps, args.repeats, args.batch_size)
  unique_rows = {'unique gather': default, 'unique gather off': default.replace(unique_gather=False)}
  part_rates = {}
  for part, step_fn in (('history item lookup + projection', history_lookup_step_fn),
                        ('positive loss', positive_loss_step_fn)):
    print(f'\n{part} alone (forward and backward):', flush=True)
    part_rates[part] = time_rows([(name, step_fn(hparams, num_items, counts))
                                  for name, hparams in unique_rows.items()],
                                 batches, args.steps * 4, args.warmup_steps, args.repeats,
                                 args.batch_size)

  print_table(f'Training examples per second, {where}', train_rates, reference)
  for part, rates in part_rates.items():
    print_table(f'{part.capitalize()} alone, examples per second', rates, 'unique gather')
  if args.quick:
    print('\n(--quick: a smoke run; the figures are not meaningful)')


if __name__ == '__main__':
  main()
