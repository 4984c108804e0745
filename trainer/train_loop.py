"""One custom training loop for one process and for a parameter-server cluster.

The loop is written once against a tf.distribute strategy: the same step function runs each
batch through `strategy.run`. In one process (the default strategy) the loop calls it directly;
under tf.distribute.ParameterServerStrategy the chief's ClusterCoordinator schedules it on the
workers, each of which reads its own dataset (coordinator.create_per_worker_dataset). When a
worker dies, the coordinator runs its pending steps on the others; when a parameter server dies,
the variables are gone and the job fails with a ClusterError: restart every task and training
resumes from the last checkpoint.

The chief (the only process that runs this loop) writes the checkpoints (model, optimizer and
the step, which is the optimizer's iteration count), the TensorBoard summaries and the progress
lines. With an evaluate function, it also keeps the weights of the checkpoint that scored best
on the validation split so far (BestCheckpoint): a model that starts to memorise its training
plays is exported as it was at its best, not as it ended.
"""

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from contract import settings
from trainer import checkpoint_eval
from trainer import checkpoints
from trainer import losses as losses_lib
from trainer import optimizers

SUMMARY_DIR = 'train'
_CHECKPOINTS_KEPT = 3

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]
# loss_fn(model, batch) -> losses.compute_losses' scalars: the losses and the targets trained.
LossFn = Callable[[tf_keras.Model, Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]


# What a lost parameter server (or the chief's link to it) raises, from a step, a read or a save.
_CLUSTER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                   tf.errors.InternalError, tf.errors.NotFoundError)


class ClusterError(RuntimeError):
  """The parameter-server cluster failed in a way training cannot ride out."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
  start_step: int  # the step restored from a checkpoint (0 for a fresh start)
  final_step: int
  checkpoint_path: str
  # The weights (model only) of the checkpoint with the best validation score, and its step;
  # None without an evaluate function.
  best_checkpoint_path: Optional[str]
  best_step: Optional[int]
  examples_per_second: float  # over this run's steps, checkpoint time included
  targets_per_second: float  # plays in a loss (from every position of every example) per second


def train(strategy: tf.distribute.Strategy,
          build_model: Callable[[], tf_keras.Model],
          dataset_fn: DatasetFn,
          loss_fn: LossFn,
          hparams: settings.HParams,
          model_dir: str,
          checkpoint_dir: Optional[str] = None,
          coordinator: Optional[tf.distribute.experimental.coordinator.ClusterCoordinator] = None,
          log: Callable[[str], None] = logging.info,
          optimizer_fn: Callable[[settings.HParams], tf_keras.optimizers.Optimizer] = None,
          evaluate: Optional[checkpoint_eval.Evaluate] = None,
          initial_weights: Optional[str] = None) -> TrainResult:
  """Trains until the step reaches hparams.train_steps, resuming from the newest valid checkpoint.

  Args:
    strategy: the default strategy (one process) or a ParameterServerStrategy.
    build_model: returns the model with its variables created; called inside strategy.scope().
    dataset_fn: builds one input pipeline (per worker under a parameter-server strategy) with
      batches of hparams.batch_size examples, repeated forever.
    loss_fn: the losses of a batch.
    hparams: train_steps, steps_per_checkpoint, steps_per_log, batch_size, learning_rate.
    model_dir: summaries go to model_dir/train.
    checkpoint_dir: where checkpoints are written and resumed from (checkpoints.py); default
      model_dir/checkpoints.
    coordinator: the ClusterCoordinator of a ParameterServerStrategy; None in one process.
    log: where the progress lines go.
    optimizer_fn: makes the optimizer (default optimizers.make_optimizer, from hparams); called
      inside strategy.scope().
    evaluate: called with the model after every checkpoint (checkpoint_eval.make_evaluate); its
      metrics go to the progress lines and TensorBoard ('eval/<name>') beside the training
      seconds so far ('training_seconds'), and its time is not counted as training time.
    initial_weights: a model-only checkpoint (warm_start.py) the model starts from when there
      is no checkpoint to resume; None starts from the model's own initial weights.
  """
  with strategy.scope():
    model = build_model()
    optimizer = (optimizer_fn or optimizers.make_optimizer)(hparams)
    # Slots must exist before the first step: a parameter-server step runs on a worker, which
    # cannot create variables.
    optimizer.build(model.trainable_variables)
    loss_means = {name: tf_keras.metrics.Mean(name) for name in losses_lib.LOSS_NAMES}
    targets_trained = tf_keras.metrics.Sum(losses_lib.TARGETS)
  for name, shapes in sharded_variables(model).items():
    log(f'{name} is sharded in {len(shapes)}: ' + ' '.join(str(shape) for shape in shapes))

  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  checkpoint_dir = checkpoint_dir or os.path.join(model_dir, checkpoints.CHECKPOINT_DIR)
  restored = checkpoints.restore_newest_valid(checkpoint, checkpoint_dir, log)
  if restored:
    log(f'resuming from {restored} at step {int(optimizer.iterations.numpy())}')
  else:
    log(f'no checkpoint in {checkpoint_dir}: starting at step 0'
        + (f' from the weights in {initial_weights}' if initial_weights else ''))
    if initial_weights:
      tf.train.Checkpoint(model=model).read(initial_weights).assert_existing_objects_matched()
  # Created after the restore, which rewrote the state file this manager reads.
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=_CHECKPOINTS_KEPT,
                                       checkpoint_name=checkpoints.CHECKPOINT_PREFIX)
  start_step = int(optimizer.iterations.numpy())
  best = BestCheckpoint(checkpoint_dir, log) if evaluate else None

  @tf.function
  def train_step(iterator):

    def replica_step(batch):
      with tf.GradientTape() as tape:
        losses = loss_fn(model, batch)
      variables = model.trainable_variables
      optimizer.apply_gradients(zip(tape.gradient(losses['loss'], variables), variables))
      for name, mean in loss_means.items():
        mean.update_state(losses[name])
      targets_trained.update_state(losses[losses_lib.TARGETS])

    strategy.run(replica_step, args=(next(iterator),))

  runner = _StepRunner(strategy, coordinator, dataset_fn)
  writer = tf.summary.create_file_writer(os.path.join(model_dir, SUMMARY_DIR))
  step = start_step
  run_started = time.time()
  evaluating_seconds = 0.0
  targets_before_log = 0.0
  with writer.as_default():
    try:
      while step < hparams.train_steps:
        # Schedule up to the next log or checkpoint boundary, then wait for those steps to finish.
        boundary = min(_next_multiple(step, hparams.steps_per_log),
                       _next_multiple(step, hparams.steps_per_checkpoint), hparams.train_steps)
        started = time.time()
        runner.run(train_step, boundary - step)
        # A step a lost worker had applied but not reported runs again, so count what was applied.
        done_step = int(optimizer.iterations.numpy())
        last = boundary == hparams.train_steps
        if boundary % hparams.steps_per_log == 0 or last:
          seconds = time.time() - started
          targets = float(targets_trained.result().numpy())
          _report(done_step, loss_means, (done_step - step) * hparams.batch_size / seconds,
                  (targets - targets_before_log) / seconds, log)
          targets_before_log = targets
        step = max(done_step, boundary)
        if boundary % hparams.steps_per_checkpoint == 0 or last:
          manager.save(checkpoint_number=done_step)
          if evaluate:
            metrics, seconds = _evaluate(evaluate, model, done_step,
                                         time.time() - run_started - evaluating_seconds, log)
            evaluating_seconds += seconds
            best.offer(model, done_step, metrics)
    except _CLUSTER_ERRORS as error:
      if coordinator is None:
        raise
      raise ClusterError(
          f'training stopped after step {step}: the cluster lost state it cannot rebuild '
          f'(a parameter server died or is unreachable): {type(error).__name__}: '
          f'{checkpoints.first_line(error)}. The last checkpoint is {manager.latest_checkpoint or "none"}; '
          'restart every task and training resumes from it.') from error
  writer.flush()
  if not manager.latest_checkpoint:  # train_steps 0 and nothing to restore: the export needs one
    manager.save(checkpoint_number=step)
  elapsed = max(time.time() - run_started - evaluating_seconds, 1e-9)
  examples_per_second = (step - start_step) * hparams.batch_size / elapsed
  targets_per_second = float(targets_trained.result().numpy()) / elapsed
  log(f'trained to step {step} ({step - start_step} steps this run, '
      f'{examples_per_second:.0f} examples/s, {targets_per_second:.0f} targets/s); checkpoint '
      f'{manager.latest_checkpoint}')
  return TrainResult(start_step=start_step, final_step=step,
                     checkpoint_path=manager.latest_checkpoint,
                     best_checkpoint_path=best.path if best else None,
                     best_step=best.step if best else None,
                     examples_per_second=examples_per_second,
                     targets_per_second=targets_per_second)


def _evaluate(evaluate: checkpoint_eval.Evaluate, model: tf_keras.Model, step: int,
              training_seconds: float, log: Callable[[str], None]) -> Tuple[Dict[str, float], float]:
  """Evaluates the model, logs and writes the metrics; returns them and the seconds it took."""
  started = time.time()
  metrics = evaluate(model)
  for name, value in metrics.items():
    tf.summary.scalar(f'eval/{name}', value, step=step)
  tf.summary.scalar('training_seconds', training_seconds, step=step)
  log(f'step {step} eval: ' + ' '.join(f'{name}={value:.4f}' for name, value in metrics.items())
      + f' after {training_seconds:.0f} s of training')
  return metrics, time.time() - started


class BestCheckpoint:
  """The model weights of the evaluated checkpoint with the highest SELECTION_METRIC so far.

  Kept in <checkpoint_dir>/best: the weights of that one checkpoint (model only) and best.json
  with its step and metrics, written after the weights, so a resumed run compares against the
  best of the runs before it. The numbered checkpoints rotate; this one is kept until beaten.
  """

  DIR = 'best'
  STATE_FILE = 'best.json'

  def __init__(self, checkpoint_dir: str, log: Callable[[str], None]):
    self._dir = os.path.join(checkpoint_dir, self.DIR)
    self._log = log
    self.step: Optional[int] = None
    self.value = float('-inf')
    state_path = os.path.join(self._dir, self.STATE_FILE)
    if tf.io.gfile.exists(state_path):
      with tf.io.gfile.GFile(state_path) as f:
        state = json.load(f)
      self.step, self.value = state['step'], state['metrics'][settings.SELECTION_METRIC]

  @property
  def path(self) -> Optional[str]:
    """The weights' checkpoint prefix, or None before the first evaluation."""
    return None if self.step is None else os.path.join(self._dir, f'model-{self.step}')

  def offer(self, model: tf_keras.Model, step: int, metrics: Dict[str, float]) -> None:
    """Keeps the model's weights if metrics beat the best so far (ties keep the earlier)."""
    value = metrics[settings.SELECTION_METRIC]
    if not value > self.value:
      return
    previous = self.path
    self.step, self.value = step, value
    tf.train.Checkpoint(model=model).write(self.path)
    with tf.io.gfile.GFile(os.path.join(self._dir, self.STATE_FILE), 'w') as f:
      json.dump({'step': step, 'metrics': metrics}, f, indent=1)
    if previous:
      for stale in tf.io.gfile.glob(previous + '.*'):
        tf.io.gfile.remove(stale)
    self._log(f'step {step} is the best so far on validation {settings.SELECTION_METRIC}='
              f'{value:.4f}')


def read_summaries(model_dir: str) -> Dict[str, List[Tuple[int, float]]]:
  """The scalars train() wrote to model_dir's TensorBoard summaries: {tag: [(step, value)]}."""
  scalars: Dict[str, List[Tuple[int, float]]] = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(model_dir, SUMMARY_DIR, 'events.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, float(tf.make_ndarray(value.tensor))))
  return scalars


def sharded_variables(model: tf_keras.Model) -> Dict[str, List[List[int]]]:
  """The shard shapes of each variable a partitioner split, by the variable's name."""
  shards: Dict[str, List[List[int]]] = {}
  for variable in model.variables:
    name, part, _ = variable.name.rpartition('/part_')
    if part:
      shards.setdefault(name, []).append(variable.shape.as_list())
  return shards


def _next_multiple(step: int, interval: int) -> int:
  return (step // interval + 1) * interval


def _report(step: int, loss_means: Dict[str, tf_keras.metrics.Mean], examples_per_second: float,
            targets_per_second: float, log: Callable[[str], None]) -> None:
  values = {name: float(mean.result().numpy()) for name, mean in loss_means.items()}
  for name, value in values.items():
    tf.summary.scalar(name, value, step=step)
    loss_means[name].reset_state()
  tf.summary.scalar('examples_per_second', examples_per_second, step=step)
  tf.summary.scalar('targets_per_second', targets_per_second, step=step)
  losses = ' '.join(f'{name}={value:.4f}' for name, value in values.items())
  log(f'step {step}: {losses} examples/s={examples_per_second:.0f} '
      f'targets/s={targets_per_second:.0f}')


class _StepRunner:
  """Runs the step function here (one process) or schedules it on the workers (cluster)."""

  def __init__(self, strategy, coordinator, dataset_fn: DatasetFn):
    self._coordinator = coordinator
    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    if coordinator is None:
      self._iterator = iter(distributed)
    else:
      self._iterator = iter(coordinator.create_per_worker_dataset(distributed))

  def run(self, step_fn, num_steps: int) -> None:
    if self._coordinator is None:
      for _ in range(num_steps):
        step_fn(self._iterator)
      return
    for _ in range(num_steps):
      self._coordinator.schedule(step_fn, args=(self._iterator,))
    self._coordinator.join()

