"""Scale of the DeepMatch trainer: one process vs parameter-server clusters, and catalogue size.

Every configuration runs the project's training loop (trainer.train_loop with the real model,
losses, sampler and optimizer) in fresh processes: one process, or a real local cluster
(separate chief, worker and parameter-server processes on loopback gRPC ports, item tables
sharded over the parameter servers). Each worker cycles the same 8 synthetic batches of
Zipf-popular play sequences (benchmarks/synthetic_batches.py, as train_speed.py uses), so the
figures are the training step's cost, not input parsing. While each configuration runs, the peak
resident memory of every process is sampled.

Rates follow train_speed.py's rule: the training loop logs every --steps steps (each log waits for
its steps to finish); the first --steps steps are the untimed warm-up, the next --repeats intervals
are the timed passes, and each rate is the median over them of (work / time of the pass), with
the min-max over the passes. examples/s counts sequences, targets/s the plays trained (the
training loop's count: every real play of each sequence). Configurations run one after the other
(each needs the whole machine), so they are not interleaved as train_speed.py's rows are: the
load average around each is printed, and a warning when the machine was not quiet at the start.

Table 1 compares, at --num-items (default 1M), one process, 1 PS + 1 worker and 2 PS + 2 workers
with the default optimizer (ratios to one process). Table 2 runs one process at each of
--catalogues (default 100k and 1M) with each optimizer of hparams.OPTIMIZERS (LazyAdam, whose
work follows the batch, and tf_keras Adam, whose work follows the catalogue) and projects
--project items from a linear fit of step time and memory in the catalogue size.

  TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/scale.py   # about 20 minutes on 2 cores
  ... benchmarks/scale.py --quick                                   # a smoke run, small catalogues
"""

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from benchmarks.train_speed import Spread, code_version, load_average_text, publication_warning
from contract import settings
from trainer import cluster as cluster_lib
# pylint: enable=g-import-not-at-top

_SAMPLE_SECONDS = 0.25
# Before each configuration: this many seconds in a row below this CPU use, waiting at most
# _SETTLE_MAX_SECONDS.
_SETTLE_IDLE_SECONDS = 3
_IDLE_CPU_PERCENT = 10.0
_SETTLE_MAX_SECONDS = 120.0
_NUM_BATCHES = 8
# The training loop's progress line, e.g. 'step 200: loss=... examples/s=512 targets/s=20480'.
_RATES = re.compile(r'^step \d+: .* examples/s=(\S+) targets/s=(\S+)$')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--num-items', type=int, default=1_000_000,
                      help='item vocabulary size of the strategy comparison (table 1)')
  parser.add_argument('--catalogues', type=int, nargs='+', default=[100_000, 1_000_000],
                      help='vocabulary sizes of the cost-vs-catalogue table (table 2, one process)')
  parser.add_argument('--project', type=int, default=10_000_000,
                      help='catalogue size to project from the measured ones')
  parser.add_argument('--steps', type=int, default=100,
                      help='steps per pass: the warm-up is one pass, then come the timed passes '
                      '(at least 100 for published figures)')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed passes per configuration; rates are their median and min-max')
  parser.add_argument('--batch-size', type=int, default=settings.HParams.batch_size,
                      help='sequences per step (per worker step on a cluster)')
  parser.add_argument('--seed', type=int, default=settings.HParams.seed,
                      help='seed of the batches, the weights and the sampler')
  parser.add_argument('--quick', action='store_true',
                      help='small catalogues and batches, few steps: checks the command, not the '
                      'speed (overrides the sizes and step counts above)')
  parser.add_argument('--child', help=argparse.SUPPRESS)  # JSON settings of one measured run
  args = parser.parse_args(argv)
  if min(args.steps, args.repeats) < 1:
    parser.error('--steps and --repeats must be at least 1')
  if args.quick:
    # One catalogue beside --num-items: both optimizers get a row there, and LazyAdam (measured
    # at --num-items in table 1) two sizes to project from; Adam's would cost a sixth process.
    args.num_items, args.catalogues, args.batch_size = 10_000, [5_000], 32
    args.steps, args.repeats = 5, 2
  return args


# --- One measured training run (a child process; the chief when on a cluster) -----------------

def _child(run: Dict) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from benchmarks import synthetic_batches  # pylint: disable=g-import-not-at-top
  from trainer import distribution
  from trainer import losses
  from trainer import model as model_lib
  from trainer import samplers
  from trainer import train_loop

  num_items = synthetic_batches.model_num_items(run['num_items'])
  steps = run['steps']
  hparams = settings.HParams(
      batch_size=run['batch_size'], seed=run['seed'], optimizer=run['optimizer'],
      train_steps=(run['repeats'] + 1) * steps, steps_per_log=steps,
      steps_per_checkpoint=10**9, num_shards=max(run['num_ps'], 1))
  if run['num_ps']:
    strategy, coordinator = distribution.parameter_server_strategy(hparams, num_items)
  else:
    strategy, coordinator = tf.distribute.get_strategy(), None
  sampler = samplers.make_sampler(hparams.sampler, num_items, num_sampled=hparams.num_sampled,
                                  seed=hparams.seed)
  batches = synthetic_batches.stacked(synthetic_batches.training_batches(
      hparams, run['num_items'], _NUM_BATCHES, hparams.seed))

  def dataset_fn(_):
    return tf.data.Dataset.from_tensor_slices(batches).repeat()

  lines = []
  train_loop.train(
      strategy,
      lambda: model_lib.build_model(hparams, num_items, synthetic_batches.NUM_INTENTS),
      dataset_fn, lambda model, batch: losses.compute_losses(model, batch, hparams, sampler),
      hparams, run['model_dir'], coordinator=coordinator, log=lines.append)
  rates = [match.groups() for match in map(_RATES.match, lines) if match]
  passes = rates[1:]  # The first interval is the warm-up.
  print('RESULT ' + json.dumps({'examples_per_second': [float(e) for e, _ in passes],
                                'targets_per_second': [float(t) for _, t in passes]}), flush=True)


# --- The parent: starts each configuration's processes and samples their memory ---------------

def wait_for_idle_cpu(max_seconds: float = _SETTLE_MAX_SECONDS) -> None:
  """Waits until the machine's CPUs are idle for a few seconds in a row (at most max_seconds).

  A cluster's processes can still be exiting after its run; the one-process run after the
  2 PS + 2 workers cluster measured 41.6 ms per step where a quiet start measured 31.8.
  """
  started, idle_seconds = time.time(), 0
  while idle_seconds < _SETTLE_IDLE_SECONDS:
    if time.time() - started > max_seconds:
      print(f'  (the CPUs were still busy after {max_seconds:.0f} s; measuring anyway)')
      return
    idle_seconds = idle_seconds + 1 if psutil.cpu_percent(interval=1.0) < _IDLE_CPU_PERCENT else 0


def measure(label: str, num_items: int, num_ps: int, num_workers: int, args,
            optimizer: str = settings.HParams.optimizer) -> Dict:
  """Runs one configuration; returns its rates, the load around it and each process's peak MB."""
  if not args.quick:  # a smoke run's figures mean nothing: no waiting for a quiet machine
    wait_for_idle_cpu()
  print(f'[{label}] {num_items:,} items, {num_ps} ps, {num_workers} workers, {optimizer} ...',
        flush=True)
  load_before = load_average_text()
  with tempfile.TemporaryDirectory() as model_dir, contextlib.ExitStack() as stack:
    run = dict(num_items=num_items, num_ps=num_ps, batch_size=args.batch_size,
                    steps=args.steps, repeats=args.repeats, seed=args.seed, optimizer=optimizer,
                    model_dir=model_dir)
    command = [sys.executable, os.path.abspath(__file__), '--child', json.dumps(run)]
    started = time.time()
    # The chief's stderr, shown when it fails (TensorFlow's logging is too long to print always).
    errors = stack.enter_context(tempfile.TemporaryFile('w+'))
    if num_ps:
      with cluster_lib.LocalCluster(num_ps, num_workers, log_dir=os.path.join(model_dir, 'logs')
                                    ) as cluster:
        chief = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors,
                                 env=cluster_lib.task_environment(cluster.cluster, 'chief', 0),
                                 text=True)
        cluster.processes[('chief', 0)] = chief
        peaks = _sample_peaks(cluster.processes)
        output = chief.stdout.read()
    else:
      env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CONFIG='')
      env['PYTHONPATH'] = os.pathsep.join(filter(None, [cluster_lib._PACKAGE_ROOT,
                                                        env.get('PYTHONPATH')]))
      chief = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env,
                               text=True)
      peaks = _sample_peaks({('chief', 0): chief})
      output = chief.stdout.read()
    if chief.returncode:
      errors.seek(0)
      raise RuntimeError(f'[{label}] the training process failed ({chief.returncode}):\n{output}'
                         f'\n{errors.read()[-5000:]}')
  [result_line] = [line for line in output.splitlines() if line.startswith('RESULT ')]
  passes = json.loads(result_line[len('RESULT '):])
  result = dict(label=label, num_items=num_items, num_ps=num_ps, num_workers=num_workers,
                optimizer=optimizer, peak_mb=peaks, wall_seconds=time.time() - started,
                examples=Spread.of(passes['examples_per_second']),
                targets=Spread.of(passes['targets_per_second']),
                load=f'{load_before} -> {load_average_text()}')
  print(f'[{label}] examples/s {result["examples"].text()}, targets/s {result["targets"].text()}; '
        'peak MB ' + ', '.join(f'{role}: {mb:.0f}' for role, mb in peaks.items())
        + f'; load average (1/5/15 min) {result["load"]}', flush=True)
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


def _table_mb(num_items: int) -> float:
  """The item embedding and bias with both Adam slots (either optimizer keeps two per weight)."""
  return num_items * (settings.HParams.item_embedding_dim + 1) * 4 * 3 / 2**20


def _fit_and_project(xs: List[float], ys: List[float], x: float) -> float:
  """The line through the smallest and largest measurements at x; flat when it does not rise.

  A cost that did not grow with the catalogue (LazyAdam's sparse step) is projected as the larger
  measurement rather than extrapolated from noise.
  """
  slope = max((ys[-1] - ys[0]) / (xs[-1] - xs[0]), 0.0)
  return max(ys) if slope == 0.0 else ys[0] + slope * (x - xs[0])


def _ms_per_step(row: Dict, batch_size: int) -> float:
  return 1000 * batch_size / row['examples'].median


def print_tables(strategies: List[Dict], catalogue: List[Dict], args,
                 warning: Optional[str]) -> None:
  header = (f'median over {args.repeats} passes of {args.steps} steps (min-max over the passes), '
            f'batch {args.batch_size}')
  reference = strategies[0]['examples'].median
  print(f'\nTable 1: strategies at {strategies[0]["num_items"]:,} items, '
        f'{strategies[0]["optimizer"]}; {header}')
  if warning:
    print(warning)
  print(f'{"configuration":<18}{"examples/s":>22}{"targets/s":>26}{"vs one":>8}  '
        'peak MB per process; load average 1/5/15 min before -> after')
  for row in strategies:
    peaks = ', '.join(f'{k} {v:.0f}' for k, v in row['peak_mb'].items())
    print(f'{row["label"]:<18}{row["examples"].text():>22}{row["targets"].text():>26}'
          f'{row["examples"].median / reference:>8.2f}  {peaks}; {row["load"]}')

  print(f'\nTable 2: one process vs catalogue size; {header}')
  if warning:
    print(warning)
  print(f'{"optimizer":<10}{"items":>12}{"examples/s":>22}{"targets/s":>26}{"ms/step":>9}'
        f'{"peak MB":>9}{"table MB":>10}  load average 1/5/15 min before -> after')
  for optimizer in settings.OPTIMIZERS:
    rows = sorted((r for r in catalogue if r['optimizer'] == optimizer),
                  key=lambda r: r['num_items'])
    for row in rows:
      print(f'{optimizer:<10}{row["num_items"]:>12,}{row["examples"].text():>22}'
            f'{row["targets"].text():>26}{_ms_per_step(row, args.batch_size):>9.1f}'
            f'{row["peak_mb"]["chief-0"]:>9.0f}{_table_mb(row["num_items"]):>10.0f}  {row["load"]}')
    if len(rows) >= 2:
      xs = [r['num_items'] for r in rows]
      ms = _fit_and_project(xs, [_ms_per_step(r, args.batch_size) for r in rows], args.project)
      mb = _fit_and_project(xs, [r['peak_mb']['chief-0'] for r in rows], args.project)
      print(f'{optimizer:<10}{args.project:>12,}{args.batch_size * 1000 / ms:>22.0f}{"":>26}'
            f'{ms:>9.1f}{mb:>9.0f}{_table_mb(args.project):>10.0f}  (projected, linear)')
  print('table MB: the item embedding and bias with their two Adam slots, 4 bytes each, default '
        'item_embedding_dim; split over the parameter servers when sharded.')


def main(argv: Optional[List[str]] = None) -> None:
  args = parse_args(argv)
  if args.child:
    _child(json.loads(args.child))
    return
  print('command: ' + ' '.join(shlex.quote(word) for word in [sys.executable] + sys.argv)
        + f'   (code {code_version()})')
  print(f'load average (1/5/15 min) at the start: {load_average_text()}')
  warning = publication_warning(os.getloadavg()[0], args.steps)
  if warning:
    print(f'\n{"!" * 100}\n{warning}\n{"!" * 100}\n', flush=True)
  strategies = [
      measure('one process', args.num_items, 0, 0, args),
      measure('1 PS + 1 worker', args.num_items, 1, 1, args),
      measure('2 PS + 2 workers', args.num_items, 2, 2, args),
  ]
  catalogue = [row for row in strategies if row['num_ps'] == 0]
  for num_items in args.catalogues:
    for optimizer in settings.OPTIMIZERS:
      if optimizer == settings.HParams.optimizer and num_items == args.num_items:
        continue  # measured above
      catalogue.append(measure(f'one process, {optimizer}', num_items, 0, 0, args, optimizer))
  print_tables(strategies, catalogue, args, warning)
  if args.quick:
    print('\n(--quick: a smoke run; the figures are not meaningful)')


if __name__ == '__main__':
  main()
