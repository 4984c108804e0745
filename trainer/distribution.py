"""The parameter-server cluster: this process's task in TF_CONFIG, the servers, the strategy.

With a TF_CONFIG naming chief, worker and ps tasks, every task runs the same command: the chief
trains under a ParameterServerStrategy with a ClusterCoordinator, with the item tables sharded
over hparams.num_shards parameter-server variables; worker and ps tasks start a
tf.distribute.Server and serve until they are stopped. Without TF_CONFIG there is no cluster and
training runs in one process under the default strategy.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

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


def training_strategy(task: Optional[ClusterTask], hparams: settings.HParams,
                      num_items: int) -> Tuple[tf.distribute.Strategy, Optional[
                          tf.distribute.experimental.coordinator.ClusterCoordinator]]:
  """The chief's (strategy, coordinator): the cluster's, or the default strategy and None."""
  if task is None:
    return tf.distribute.get_strategy(), None
  return parameter_server_strategy(hparams, num_items)
