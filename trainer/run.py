"""The Trainer's entry point: run_fn for TFX, and the same training as a command.

  Trainer(run_fn='trainer.run.run_fn', custom_config={'hparams': {...}}, ...)

Without TF_CONFIG, run_fn trains in this process. With a TF_CONFIG naming chief, worker and ps
tasks, every task runs the same command: the chief trains under a ParameterServerStrategy with a
ClusterCoordinator, with the item tables sharded over hparams.num_shards parameter-server
variables; worker and ps tasks start a tf.distribute.Server and serve until they are stopped.

Either way the chief exports the model the same way: it rebuilds the model outside any strategy
(plain variables, which tf.saved_model.load and the Evaluator need), restores the trained weights
from the last checkpoint (a sharded table is saved as one full tensor, so it restores into an
unsharded one) and writes the serving SavedModel.

As a command (no TFX around it), for the local cluster, benchmarks and tests:

  python -m trainer.run --train_files 'transform/Split-train/*' --eval_files 'transform/Split-eval/*' \
      --transform_output transform --model_dir run --serving_model_dir serving \
      --hparams '{"train_steps": 1000, "num_shards": 2}'
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

from absl import logging
import tensorflow as tf

from contract import settings

TF_CONFIG = 'TF_CONFIG'
CHIEF, WORKER, PS = 'chief', 'worker', 'ps'
SERVER_ROLES = (WORKER, PS)


@dataclasses.dataclass(frozen=True)
class ClusterTask:
  """This process's task in the TF_CONFIG cluster."""
  type: str
  index: int
  cluster: Dict[str, List[str]]
  rpc_layer: str = 'grpc'


def cluster_task(environ=os.environ) -> Optional[ClusterTask]:
  """The task TF_CONFIG gives this process, or None when there is no cluster (one process).

  Raises:
    ValueError: if TF_CONFIG is malformed or describes no parameter-server cluster.
  """
  raw = environ.get(TF_CONFIG, '').strip()
  if not raw:
    return None
  try:
    config = json.loads(raw)
    cluster = config['cluster']
    task = config['task']
    task_type, index = task['type'], int(task.get('index', 0))
  except (ValueError, KeyError, TypeError) as error:
    raise ValueError(f'{TF_CONFIG} must be JSON with "cluster" and "task": {{"type", "index"}}; '
                     f'got {raw!r} ({error})') from None
  if not cluster:
    return None
  missing = [role for role in (CHIEF, WORKER, PS) if not cluster.get(role)]
  if missing:
    raise ValueError(f'{TF_CONFIG} cluster must name chief, worker and ps tasks for parameter-server '
                     f'training; it lacks {missing}: {cluster}')
  if task_type not in (CHIEF, WORKER, PS) or not 0 <= index < len(cluster[task_type]):
    raise ValueError(f'{TF_CONFIG} task {task} is not one of the cluster tasks {cluster}')
  return ClusterTask(task_type, index, cluster, config.get('rpc_layer') or 'grpc')


def serve(task: ClusterTask) -> None:
  """Runs this worker or parameter-server task until the process is stopped."""
  logging.info('%s %d serving at %s', task.type, task.index, task.cluster[task.type][task.index])
  server = tf.distribute.Server(tf.train.ClusterSpec(task.cluster), job_name=task.type,
                                task_index=task.index, protocol=task.rpc_layer, start=True)
  server.join()


class ItemTablePartitioner(tf.distribute.experimental.partitioners.Partitioner):
  """Shards the item tables (variables with a row per item) in num_shards; nothing else.

  Size-based partitioners would also cut dense kernels, or leave a small test catalogue whole;
  what must be split across parameter servers is whatever grows with the catalogue.
  """

  def __init__(self, num_items: int, num_shards: int):
    self._num_items = num_items
    self._shards = tf.distribute.experimental.partitioners.FixedShardsPartitioner(num_shards)

  def __call__(self, shape, dtype, axis=0):
    shape = tf.TensorShape(shape)
    if shape.rank and shape[0] is not None and shape[0] >= self._num_items:
      return self._shards(shape, dtype, axis)
    return [1] * shape.rank


def parameter_server_strategy(hparams: settings.HParams, num_items: int):
  """The (ParameterServerStrategy, ClusterCoordinator) of the TF_CONFIG cluster."""
  # Without it, an RPC to a dead task waits for the task to come back instead of failing.
  os.environ.setdefault('GRPC_FAIL_FAST', 'use_caller')
  partitioner = ItemTablePartitioner(num_items, hparams.num_shards) if hparams.num_shards > 1 else None
  strategy = tf.distribute.ParameterServerStrategy(
      tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner)
  return strategy, tf.distribute.coordinator.ClusterCoordinator(strategy)


def hparams_from_fn_args(fn_args) -> settings.HParams:
  config = fn_args.custom_config or {}
  hparams = settings.HParams.from_dict(config.get('hparams') or {})
  if fn_args.train_steps:
    hparams = hparams.replace(train_steps=int(fn_args.train_steps))
  return hparams


def run_fn(fn_args) -> None:
  """TFX Trainer entry point: trains (here or on the TF_CONFIG cluster) and exports the model."""
  task = cluster_task()
  if task and task.type in SERVER_ROLES:
    serve(task)
    return
  # Imported here so that worker and ps tasks start fast and light.
  import tensorflow_transform as tft

  from trainer import dataset
  from trainer import losses
  from trainer import model as model_lib
  from trainer import samplers
  from trainer import train_loop
  from trainer import vocabulary

  hparams = hparams_from_fn_args(fn_args)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  num_items = vocabulary.num_items(tf_transform_output)
  num_intents = vocabulary.num_intents(tf_transform_output)
  logging.info('training %s on %d items (%s)', 'a cluster' if task else 'one process', num_items,
               hparams.to_json())
  counts = vocabulary.item_counts(tf_transform_output) if hparams.sampler == 'fixed_unigram' else None
  sampler = samplers.make_sampler(hparams.sampler, num_items, unigram_counts=counts,
                                  num_sampled=hparams.num_sampled, seed=hparams.seed)
  if task:
    strategy, coordinator = parameter_server_strategy(hparams, num_items)
  else:
    strategy, coordinator = tf.distribute.get_strategy(), None

  def dataset_fn(input_context):
    return dataset.make_dataset(fn_args.train_files, tf_transform_output, hparams,
                                hparams.batch_size, input_context=input_context)

  def loss_fn(model, batch):
    return losses.compute_losses(model, batch, hparams, sampler, training=True)

  result = train_loop.train(
      strategy, lambda: model_lib.build_model(hparams, num_items, num_intents), dataset_fn,
      loss_fn, hparams, fn_args.model_run_dir, coordinator=coordinator, log=logging.info,
      evaluate=None if task else checkpoint_evaluate(fn_args, tf_transform_output, hparams))

  model = restore_unsharded_model(hparams, num_items, num_intents, result.checkpoint_path)
  from trainer import export
  export.export_serving_model(model, tf_transform_output, hparams, fn_args.serving_model_dir)
  logging.info('exported the serving model to %s', fn_args.serving_model_dir)


def checkpoint_evaluate(fn_args, tf_transform_output, hparams: settings.HParams):
  """POS@N / NEG@N on fn_args.eval_files (at most fn_args.eval_steps batches), or None without
  eval files. One process only: under a parameter-server strategy the chief would read every
  item-table shard at each checkpoint; the Evaluator measures the exported model either way."""
  if not fn_args.eval_files:
    return None
  from trainer import checkpoint_eval
  from trainer import dataset
  from trainer import vocabulary

  eval_dataset = dataset.make_dataset(fn_args.eval_files, tf_transform_output, hparams,
                                      hparams.batch_size, shuffle=False, repeat=False,
                                      sequence_targets=False)
  if fn_args.eval_steps:
    eval_dataset = eval_dataset.take(fn_args.eval_steps)
  return checkpoint_eval.make_evaluate(eval_dataset,
                                       vocabulary.num_vocabulary_items(tf_transform_output))


def restore_unsharded_model(hparams: settings.HParams, num_items: int, num_intents: int,
                            checkpoint_path: str):
  """The model rebuilt outside any strategy, with the weights of a (possibly sharded) checkpoint."""
  from trainer import model as model_lib

  with tf.distribute.get_strategy().scope():
    model = model_lib.build_model(hparams, num_items, num_intents)
  status = tf.train.Checkpoint(model=model).restore(checkpoint_path)
  # The optimizer's slots are in the checkpoint too; the model's own variables must all be there.
  status.expect_partial().assert_existing_objects_matched()
  return model


def _parse_args(argv: List[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m trainer.run',
      description='Train and export the DeepMatch model without TFX around it (TFX calls run_fn). '
      'With TF_CONFIG naming a chief/worker/ps cluster, run the same command on every task: the '
      'chief trains, workers and parameter servers serve.')
  parser.add_argument('--train_files', nargs='+', help="globs of Transform's training examples")
  parser.add_argument('--eval_files', nargs='*', default=[],
                      help="globs of Transform's eval examples: POS@N / NEG@N at each checkpoint")
  parser.add_argument('--transform_output', help="Transform's output directory (transform_fn/...)")
  parser.add_argument('--model_dir', help='checkpoints and TensorBoard summaries (resumes from it)')
  parser.add_argument('--serving_model_dir', help='where the serving SavedModel is written')
  parser.add_argument('--hparams', default='{}', help='JSON object of trainer.hparams.HParams fields')
  parser.add_argument('--train_steps', type=int, default=0, help='overrides hparams train_steps')
  return parser.parse_args(argv)


def fn_args_from_flags(args: argparse.Namespace):
  """The FnArgs TFX's Trainer would pass, from the command's flags."""
  from tfx.components.trainer.fn_args_utils import FnArgs

  missing = [flag for flag in ('train_files', 'transform_output', 'model_dir', 'serving_model_dir')
             if not getattr(args, flag)]
  if missing:
    raise SystemExit(f'the chief needs --{", --".join(missing)}')
  try:
    hparams = json.loads(args.hparams)
  except ValueError as error:
    raise SystemExit(f'--hparams is not JSON: {error}') from None
  if not isinstance(hparams, dict):
    raise SystemExit(f'--hparams must be a JSON object, got {args.hparams!r}')
  try:
    settings.HParams.from_dict(hparams)  # Fails here, naming the bad field, not deep in training.
  except (TypeError, ValueError) as error:
    raise SystemExit(f'--hparams: {error}') from None
  return FnArgs(train_files=args.train_files, eval_files=args.eval_files,
                transform_output=args.transform_output, transform_graph_path=args.transform_output,
                model_run_dir=args.model_dir, serving_model_dir=args.serving_model_dir,
                train_steps=args.train_steps or None, custom_config={'hparams': hparams})


def main(argv: Optional[List[str]] = None) -> None:
  logging.set_verbosity(logging.INFO)
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  task = cluster_task()
  if task and task.type in SERVER_ROLES:
    serve(task)
    return
  from trainer import train_loop
  try:
    run_fn(fn_args_from_flags(args))
  except train_loop.ClusterError as error:
    raise SystemExit(f'error: {error}') from None


if __name__ == '__main__':
  main()
