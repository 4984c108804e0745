"""Scale of the DeepMatch trainer: one process vs parameter-server clusters, and catalogue size.

Every configuration runs the project's training loop (trainer.train_loop with the real model,
losses and sampler) in fresh processes: one process, or a real local cluster (separate chief,
worker and parameter-server processes on loopback gRPC ports, item tables sharded over the
parameter servers). Batches are synthetic and Zipf-popular, generated on each worker, so the
figures are the training step's cost, not input parsing. While each configuration runs, the
peak resident memory of every process is sampled.

Table 1 compares, at --num-items (default 1M), examples/s and peak memory of: one process,
1 PS + 1 worker, 2 PS + 2 workers (ratios to one process). Table 2 runs one process at each of
--catalogues (default 100k and 1M) with the default optimizer (Adam) and with Adagrad, and
projects 10M from a linear fit of step time and memory in the catalogue size.

  python benchmarks/scale.py                  # about 10 minutes on 2 cores
  python benchmarks/scale.py --quick          # a smoke run with a small catalogue
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainer import cluster as cluster_lib  # pylint: disable=g-import-not-at-top

_SAMPLE_SECONDS = 0.25


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--num-items', type=int, default=1_000_000,
                      help='catalogue size of the strategy comparison')
  parser.add_argument('--catalogues', type=int, nargs='+', default=[100_000, 1_000_000],
                      help='catalogue sizes of the cost-vs-catalogue table (one process)')
  parser.add_argument('--project', type=int, default=10_000_000,
                      help='catalogue size to project from the measured ones')
  parser.add_argument('--steps', type=int, default=30, help='timed steps per configuration')
  parser.add_argument('--warmup-steps', type=int, default=10,
                      help='untimed first steps (tracing, first touch of the tables)')
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--quick', action='store_true', help='10k items, few steps: checks the command')
  parser.add_argument('--child', help=argparse.SUPPRESS)  # JSON settings of one measured run
  args = parser.parse_args(argv)
  if args.quick:
    args.num_items, args.catalogues, args.steps, args.warmup_steps = 10_000, [5_000, 10_000], 5, 2
  return args


# --- One measured training run (a child process; the chief when on a cluster) -----------------

def _child(settings: Dict) -> None:
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  from trainer import hparams as hparams_lib  # pylint: disable=g-import-not-at-top
  from trainer import losses
  from trainer import model as model_lib
  from trainer import run
  from trainer import samplers
  from trainer import train_loop
  from transform import features

  num_items = settings['num_items']
  num_intents = len(features.INTENTS) + features.NUM_OOV_BUCKETS
  hparams = hparams_lib.HParams(
      batch_size=settings['batch_size'], train_steps=settings['warmup'] + settings['steps'],
      steps_per_log=settings['warmup'], steps_per_checkpoint=10**9,
      num_shards=max(settings['num_ps'], 1))
  if settings['num_ps']:
    strategy, coordinator = run.parameter_server_strategy(hparams, num_items)
  else:
    strategy, coordinator = tf.distribute.get_strategy(), None
  sampler = samplers.make_sampler(hparams.sampler, num_items, num_sampled=hparams.num_sampled,
                                  seed=hparams.seed)

  def dataset_fn(_):
    return tf.data.Dataset.from_tensors(0).repeat().map(
        lambda _: zipf_batch(hparams, num_items, num_intents))

  optimizer_fn = None
  if settings['optimizer'] == 'adagrad':
    optimizer_fn = lambda h: tf_keras.optimizers.Adagrad(learning_rate=0.05)
  lines = []
  result = train_loop.train(
      strategy, lambda: model_lib.build_model(hparams, num_items, num_intents), dataset_fn,
      lambda model, batch: losses.compute_losses(model, batch, hparams, sampler), hparams,
      settings['model_dir'], coordinator=coordinator, log=lines.append, optimizer_fn=optimizer_fn)
  rates = [float(line.split('examples/s=')[1]) for line in lines if line.startswith('step ')]
  print('RESULT ' + json.dumps({'examples_per_second': sum(rates[1:]) / max(len(rates) - 1, 1),
                                'final_step': result.final_step}), flush=True)


def zipf_batch(hparams, num_items: int, num_intents: int):
  """A random model batch whose item ids follow Zipf popularity (log-uniform over id ranks)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from transform import features  # pylint: disable=g-import-not-at-top

  b, length = hparams.batch_size, hparams.history_length

  def ids(shape):
    draws = tf.exp(tf.random.uniform(shape) * tf.math.log(float(num_items + 1)))
    return tf.clip_by_value(tf.cast(draws, tf.int64) - 1, 0, num_items - 1)

  return {
      features.HISTORY_ITEM_XF: ids([b, length]),
      features.HISTORY_PLAY_RATE_XF: tf.random.uniform([b, length]),
      features.HISTORY_INTENT_XF: tf.random.uniform([b, length], 0, num_intents, tf.int64),
      features.HISTORY_LENGTH: tf.random.uniform([b], 1, length + 1, tf.int64),
      features.ITEM_XF: ids([b]),
      features.LABEL: tf.random.uniform([b], -1, 2, tf.int64),
  }


# --- The parent: starts each configuration's processes and samples their memory ---------------

def measure(label: str, num_items: int, num_ps: int, num_workers: int, args, optimizer='adam'
            ) -> Dict:
  """Runs one configuration; returns its examples/s and the peak RSS of each process (MB)."""
  print(f'[{label}] {num_items:,} items, {num_ps} ps, {num_workers} workers, {optimizer} ...',
        flush=True)
  with tempfile.TemporaryDirectory() as model_dir:
    settings = dict(num_items=num_items, num_ps=num_ps, batch_size=args.batch_size,
                    steps=args.steps, warmup=args.warmup_steps, optimizer=optimizer,
                    model_dir=model_dir)
    command = [sys.executable, os.path.abspath(__file__), '--child', json.dumps(settings)]
    started = time.time()
    if num_ps:
      with cluster_lib.LocalCluster(num_ps, num_workers, log_dir=os.path.join(model_dir, 'logs')
                                    ) as cluster:
        chief = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 env=cluster_lib.task_environment(cluster.cluster, 'chief', 0),
                                 text=True)
        cluster.processes[('chief', 0)] = chief
        peaks = _sample_peaks(cluster.processes)
        output = chief.stdout.read()
    else:
      env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CONFIG='')
      env['PYTHONPATH'] = os.pathsep.join(filter(None, [cluster_lib._PACKAGE_ROOT,
                                                        env.get('PYTHONPATH')]))
      chief = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               text=True)
      peaks = _sample_peaks({('chief', 0): chief})
      output = chief.stdout.read()
    if chief.returncode:
      raise RuntimeError(f'[{label}] the training process failed ({chief.returncode}):\n{output}')
  [result_line] = [line for line in output.splitlines() if line.startswith('RESULT ')]
  result = json.loads(result_line[len('RESULT '):])
  result.update(label=label, num_items=num_items, num_ps=num_ps, num_workers=num_workers,
                optimizer=optimizer, peak_mb=peaks, wall_seconds=time.time() - started)
  print(f'[{label}] {result["examples_per_second"]:.0f} examples/s; peak MB '
        + ', '.join(f'{role}: {mb:.0f}' for role, mb in peaks.items()), flush=True)
  return result


def _sample_peaks(processes: Dict) -> Dict[str, float]:
  """Polls RSS of every process (children included) until the chief exits; peak MB per task."""
  chief = processes[('chief', 0)]
  peaks = {f'{task}-{index}': 0.0 for task, index in processes}
  handles = {f'{task}-{index}': psutil.Process(p.pid) for (task, index), p in processes.items()}
  while chief.poll() is None:
    for name, handle in handles.items():
      try:
        rss = sum(p.memory_info().rss for p in [handle] + handle.children(recursive=True))
      except psutil.Error:
        continue
      peaks[name] = max(peaks[name], rss / 2**20)
    time.sleep(_SAMPLE_SECONDS)
  return peaks


def _table_mb(num_items: int, optimizer: str) -> float:
  from trainer import hparams as hparams_lib  # pylint: disable=g-import-not-at-top

  copies = 3 if optimizer == 'adam' else 2
  return num_items * (hparams_lib.HParams.item_embedding_dim + 1) * 4 * copies / 2**20


def _fit_and_project(xs: List[float], ys: List[float], x: float) -> float:
  """The line through the smallest and largest measurements at x; flat when it does not rise.

  A cost that did not grow with the catalogue (Adagrad's sparse step) is projected as the larger
  measurement rather than extrapolated from noise.
  """
  slope = max((ys[-1] - ys[0]) / (xs[-1] - xs[0]), 0.0)
  return max(ys) if slope == 0.0 else ys[0] + slope * (x - xs[0])


def print_tables(strategies: List[Dict], catalogue: List[Dict], project: int) -> None:
  reference = strategies[0]['examples_per_second']
  print('\nTable 1: strategies at %s items (batch examples/s; peak resident MB per process)'
        % f'{strategies[0]["num_items"]:,}')
  print(f'{"configuration":<26}{"examples/s":>12}{"ratio":>8}  peak MB per process')
  for row in strategies:
    peaks = ', '.join(f'{k} {v:.0f}' for k, v in row['peak_mb'].items())
    print(f'{row["label"]:<26}{row["examples_per_second"]:>12.0f}'
          f'{row["examples_per_second"] / reference:>8.2f}  {peaks}')

  print('\nTable 2: one process vs catalogue size (ms per step; peak resident MB)')
  print(f'{"optimizer":<10}{"items":>12}{"examples/s":>12}{"ms/step":>10}{"peak MB":>10}'
        f'{"table MB":>10}')
  for optimizer in sorted({row['optimizer'] for row in catalogue}):
    rows = sorted((r for r in catalogue if r['optimizer'] == optimizer), key=lambda r: r['num_items'])
    for row in rows:
      row['ms_per_step'] = 1000 * row['batch_size'] / row['examples_per_second']
      print(f'{optimizer:<10}{row["num_items"]:>12,}{row["examples_per_second"]:>12.0f}'
            f'{row["ms_per_step"]:>10.1f}{row["peak_mb"]["chief-0"]:>10.0f}'
            f'{_table_mb(row["num_items"], optimizer):>10.0f}')
    if len(rows) >= 2:
      xs = [r['num_items'] for r in rows]
      ms = _fit_and_project(xs, [r['ms_per_step'] for r in rows], project)
      mb = _fit_and_project(xs, [r['peak_mb']['chief-0'] for r in rows], project)
      print(f'{optimizer:<10}{project:>12,}{rows[0]["batch_size"] * 1000 / ms:>12.0f}'
            f'{ms:>10.1f}{mb:>10.0f}{_table_mb(project, optimizer):>10.0f}  (projected, linear)')
  print('table MB: the item embedding and bias with their optimizer slots (Adam keeps 2 per '
        'weight, Adagrad 1), 4 bytes each, default item_embedding_dim; split over the parameter '
        'servers when sharded.')


def main(argv: Optional[List[str]] = None) -> None:
  args = parse_args(argv)
  if args.child:
    _child(json.loads(args.child))
    return
  strategies = [
      measure('one process', args.num_items, 0, 0, args),
      measure('1 PS + 1 worker', args.num_items, 1, 1, args),
      measure('2 PS + 2 workers', args.num_items, 2, 2, args),
  ]
  catalogue = [row for row in strategies if row['num_ps'] == 0]
  for num_items in args.catalogues:
    for optimizer in ('adam', 'adagrad'):
      if optimizer == 'adam' and num_items == args.num_items:
        continue  # measured above
      catalogue.append(measure(f'one process, {optimizer}', num_items, 0, 0, args, optimizer))
  for row in strategies + catalogue:
    row['batch_size'] = args.batch_size
  print_tables(strategies, catalogue, args.project)


if __name__ == '__main__':
  main()
