"""Runs parameter-server training on a real local cluster: one process per task, on loopback ports.

  python -m trainer.cluster --num_ps 2 --num_workers 2 -- \\
      --train_files 'transform/Split-train/*' --transform_output transform \\
      --model_dir run --serving_model_dir serving --hparams '{"num_shards": 2}'

Everything after `--` goes to `python -m trainer.run`. The command starts each parameter server
and worker as `python -m trainer.run <args>` with its own TF_CONFIG (so each runs a
tf.distribute.Server), waits until they listen, runs the chief with the same arguments in the
foreground, and stops every process it started when the chief ends, fails or is interrupted.

On several machines the command is the same on each: set TF_CONFIG to that machine's task (the
same "cluster", its own "task") and run `python -m trainer.run <args>`; the chief trains, the
others serve. `--print_tf_config` prints the TF_CONFIG of every task of a local cluster.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, IO, List, Optional, Sequence, Tuple

import portpicker

CHIEF, WORKER, PS = 'chief', 'worker', 'ps'
HOST = 'localhost'
_STARTUP_TIMEOUT_SECONDS = 120.0
_STOP_TIMEOUT_SECONDS = 10.0
# Where `python -m trainer.run` is importable from: the directory holding the trainer package.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Task = Tuple[str, int]


def cluster_spec(num_ps: int, num_workers: int, host: str = HOST) -> Dict[str, List[str]]:
  """A chief, num_workers workers and num_ps parameter servers on free ports of host."""
  if num_ps < 1 or num_workers < 1:
    raise ValueError(f'a parameter-server cluster needs at least one ps and one worker; got '
                     f'num_ps={num_ps}, num_workers={num_workers}')

  def addresses(count):
    return [f'{host}:{portpicker.pick_unused_port()}' for _ in range(count)]

  return {CHIEF: addresses(1), WORKER: addresses(num_workers), PS: addresses(num_ps)}


def tf_config(cluster: Dict[str, List[str]], task_type: str, index: int) -> str:
  return json.dumps({'cluster': cluster, 'task': {'type': task_type, 'index': index},
                     'rpc_layer': 'grpc'})


def task_environment(cluster: Dict[str, List[str]], task_type: str, index: int,
                     base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of one task's process: its TF_CONFIG and the settings every task needs."""
  env = dict(os.environ if base is None else base)
  env['TF_CONFIG'] = tf_config(cluster, task_type, index)
  env['TF_USE_LEGACY_KERAS'] = '1'  # Keras 3 has no parameter-server support.
  env['GRPC_FAIL_FAST'] = 'use_caller'  # RPCs to a dead task fail instead of waiting forever.
  paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  env['PYTHONPATH'] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in paths if p != _PACKAGE_ROOT])
  return env


class LocalCluster:
  """Parameter servers and workers as local processes; the chief is started on demand.

  Use as a context manager: every process it started is stopped on exit, whatever happened.
  Each server's output goes to <log_dir>/<type>-<index>.log.
  """

  def __init__(self, num_ps: int, num_workers: int, trainer_args: Sequence[str] = (),
               log_dir: Optional[str] = None):
    self.cluster = cluster_spec(num_ps, num_workers)
    self.trainer_args = list(trainer_args)
    self.log_dir = log_dir or tempfile.mkdtemp(prefix='ps_cluster_')
    os.makedirs(self.log_dir, exist_ok=True)
    self.processes: Dict[Task, subprocess.Popen] = {}
    self._logs: List[IO] = []

  def __enter__(self) -> 'LocalCluster':
    try:
      self.start_servers()
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def command(self) -> List[str]:
    return [sys.executable, '-m', 'trainer.run'] + self.trainer_args

  def start_task(self, task_type: str, index: int, stdout=None) -> subprocess.Popen:
    """Starts (or restarts) one task's process; servers log to their file unless stdout given."""
    if stdout is None:
      stdout = open(os.path.join(self.log_dir, f'{task_type}-{index}.log'), 'ab')
      self._logs.append(stdout)
    process = subprocess.Popen(self.command(), env=task_environment(self.cluster, task_type, index),
                               stdout=stdout, stderr=subprocess.STDOUT)
    self.processes[(task_type, index)] = process
    return process

  def start_servers(self, timeout: float = _STARTUP_TIMEOUT_SECONDS) -> None:
    for task_type in (PS, WORKER):
      for index in range(len(self.cluster[task_type])):
        self.start_task(task_type, index)
    for task_type in (PS, WORKER):
      for index in range(len(self.cluster[task_type])):
        self.wait_until_listening(task_type, index, timeout)

  def wait_until_listening(self, task_type: str, index: int,
                           timeout: float = _STARTUP_TIMEOUT_SECONDS) -> None:
    """Returns once the task accepts connections (the chief fails fast on a task not yet up)."""
    address = self.cluster[task_type][index]
    host, port = address.rsplit(':', 1)
    deadline = time.time() + timeout
    while True:
      process = self.processes[(task_type, index)]
      if process.poll() is not None:
        raise RuntimeError(f'{task_type} {index} exited with code {process.returncode} before '
                           f'listening on {address}; see {self.log_path(task_type, index)}')
      with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return
      if time.time() > deadline:
        raise TimeoutError(f'{task_type} {index} did not listen on {address} within {timeout:.0f}s; '
                           f'see {self.log_path(task_type, index)}')
      time.sleep(0.2)

  def log_path(self, task_type: str, index: int) -> str:
    return os.path.join(self.log_dir, f'{task_type}-{index}.log')

  def start_chief(self, stdout=None) -> subprocess.Popen:
    """Starts the chief; its output goes to stdout (a file or PIPE), else to this process's."""
    return self.start_task(CHIEF, 0, stdout=stdout if stdout is not None else sys.stdout)

  def kill(self, task_type: str, index: int) -> None:
    """Kills one task at once (SIGKILL), as a machine failure would."""
    process = self.processes[(task_type, index)]
    process.kill()
    process.wait()

  def stop(self) -> None:
    """Stops every process this cluster started: SIGTERM, then SIGKILL after a grace period."""
    running = [p for p in self.processes.values() if p.poll() is None]
    for process in running:
      process.terminate()
    deadline = time.time() + _STOP_TIMEOUT_SECONDS
    for process in running:
      try:
        process.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for log in self._logs:
      log.close()
    self._logs.clear()


def _parse_args(argv: List[str]) -> Tuple[argparse.Namespace, List[str]]:
  if '--' in argv:
    split = argv.index('--')
    own, trainer_args = argv[:split], argv[split + 1:]
  else:
    own, trainer_args = argv, []
  parser = argparse.ArgumentParser(
      prog='python -m trainer.cluster',
      usage='%(prog)s [--num_ps N] [--num_workers M] [--log_dir DIR] -- <python -m trainer.run args>',
      description='Start N parameter servers and M workers as local processes (tf.distribute.Server '
      'on loopback ports), run the chief\'s training against them, and stop them all at the end. '
      'Arguments after -- go to `python -m trainer.run` (see its --help); set hparams num_shards '
      'to shard the item tables over the parameter servers.')
  parser.add_argument('--num_ps', type=int, default=2, help='parameter servers (default 2)')
  parser.add_argument('--num_workers', type=int, default=2, help='workers (default 2)')
  parser.add_argument('--log_dir', help='where each server writes <type>-<index>.log '
                      '(default: a new temporary directory)')
  parser.add_argument('--print_tf_config', action='store_true',
                      help='print the TF_CONFIG of every task and exit without starting anything')
  args = parser.parse_args(own)
  if not trainer_args and not args.print_tf_config:
    parser.error('give the training arguments after --, e.g. -- --train_files ... (see '
                 'python -m trainer.run --help)')
  return args, trainer_args


def _interrupt(signum, frame):
  raise KeyboardInterrupt(f'signal {signum}')


def main(argv: Optional[List[str]] = None) -> int:
  args, trainer_args = _parse_args(sys.argv[1:] if argv is None else argv)
  if args.print_tf_config:
    cluster = cluster_spec(args.num_ps, args.num_workers)
    for task_type in (CHIEF, WORKER, PS):
      for index in range(len(cluster[task_type])):
        print(f"TF_CONFIG='{tf_config(cluster, task_type, index)}'")
    return 0
  # SIGTERM (a scheduler stopping us) takes the same path as Ctrl-C: stop every task. SIGINT is
  # set too: a command started in the background by a shell without job control inherits it
  # ignored, and Python then keeps it ignored, so Ctrl-C (or a test's SIGINT) would do nothing.
  signal.signal(signal.SIGTERM, _interrupt)
  signal.signal(signal.SIGINT, _interrupt)
  try:
    with LocalCluster(args.num_ps, args.num_workers, trainer_args, args.log_dir) as cluster:
      print(f'started {len(cluster.cluster[PS])} parameter servers and '
            f'{len(cluster.cluster[WORKER])} workers (logs in {cluster.log_dir}); starting the '
            'chief', flush=True)
      code = cluster.start_chief().wait()
  except KeyboardInterrupt:
    print('interrupted: stopped the chief and every server', file=sys.stderr, flush=True)
    return 130
  if code:
    print(f'the chief failed with exit code {code}; server logs in {cluster.log_dir}',
          file=sys.stderr, flush=True)
  return code


if __name__ == '__main__':
  sys.exit(main())
