"""Ingestion throughput of PlayLogExampleGen on the local Beam runner.

Generates a synthetic play log (datagen), then times, on the same files:
  reference  pyarrow.csv.read_csv of every file (a fast columnar parse, no validation, no Beam)
  executor   PlayLogExampleGen's executor end to end: parse + validate every row, group by user,
             sort, build one tf.Example per play with its history, write gzipped TFRecords
and prints events/s for each and the executor's slowdown against the reference.

  python benchmarks/ingest_throughput.py --num_events 1000000
  python benchmarks/ingest_throughput.py --num_events 1000000 -- \
      --direct_num_workers=2 --direct_running_mode=multi_processing
Arguments after `--` are Beam pipeline args, passed through as the pipeline's would be.
"""

import argparse
import glob
import os
import resource
import shutil
import tempfile
import time

import pyarrow.csv as pa_csv
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

from components.play_log_example_gen import artifacts
from components.play_log_example_gen import executor as executor_lib
from datagen import generate as generate_lib


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_events', type=int, default=1_000_000)
  parser.add_argument('--num_users', type=int, default=None,
                      help='default: the generator default (num_events / its events per user)')
  parser.add_argument('--num_items', type=int, default=20_000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--work_dir', default=None,
                      help='where the log and outputs go (default: a temp dir, deleted after)')
  parser.add_argument('beam_pipeline_args', nargs='*',
                      help='Beam pipeline args after "--", e.g. --direct_num_workers=2')
  return parser.parse_args()


def cpu_seconds():
  """CPU time of this process and its finished children (multi_processing workers)."""
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return time.process_time() + children.ru_utime + children.ru_stime


def time_reference(files):
  started, started_cpu = time.time(), cpu_seconds()
  rows = sum(pa_csv.read_csv(path).num_rows for path in files)
  return rows, time.time() - started, cpu_seconds() - started_cpu


def time_executor(log_glob, out_dir, beam_pipeline_args):
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(out_dir, 'examples')
  quarantine = artifacts.Quarantine()
  quarantine.uri = os.path.join(out_dir, 'quarantine')
  context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_pipeline_args)
  started, started_cpu = time.time(), cpu_seconds()
  executor_lib.Executor(context).Do(
      {}, {'examples': [examples], 'quarantine': [quarantine]},
      {'input_base': log_glob, 'input_format': 'csv'})
  return (examples.get_int_custom_property('rows_read'), time.time() - started,
          cpu_seconds() - started_cpu)


def main():
  args = parse_args()
  work_dir = args.work_dir or tempfile.mkdtemp(prefix='ingest_throughput_')
  try:
    log_dir = os.path.join(work_dir, 'log')
    print(f'generating {args.num_events:,} events into {log_dir} ...', flush=True)
    summary = generate_lib.generate(log_dir, num_events=args.num_events, num_users=args.num_users,
                                    num_items=args.num_items, seed=args.seed, fmt='csv',
                                    overwrite=True)
    files = sorted(glob.glob(os.path.join(log_dir, 'plays-*.csv')))
    print(f'  {summary["events"]:,} events, {summary["users"]:,} users, {len(files)} file(s) '
          f'in {summary["seconds"]:.1f} s', flush=True)

    print('reference: pyarrow.csv.read_csv ...', flush=True)
    ref_rows, ref_seconds, ref_cpu = time_reference(files)
    print(f'executor: PlayLogExampleGen on Beam {args.beam_pipeline_args or "(defaults)"} ...',
          flush=True)
    out_dir = os.path.join(work_dir, 'out')
    shutil.rmtree(out_dir, ignore_errors=True)
    rows, seconds, cpu = time_executor(os.path.join(log_dir, 'plays-*.csv'), out_dir,
                                  args.beam_pipeline_args)
    assert rows == ref_rows == summary['events'], (rows, ref_rows, summary['events'])

    # Wall time suffers from other load on the machine; CPU time shows the work itself.
    print()
    print(f'{"stage":<44} {"events":>10} {"wall s":>8} {"events/s":>10} {"x ref":>7} '
          f'{"cpu s":>8} {"events/cpu s":>13} {"x ref":>7}')
    for name, n, s, c in (
        ('reference: pyarrow.csv.read_csv', ref_rows, ref_seconds, ref_cpu),
        ('PlayLogExampleGen executor (DirectRunner)', rows, seconds, cpu)):
      print(f'{name:<44} {n:>10,} {s:>8.1f} {n / s:>10,.0f} {s / ref_seconds:>7.0f} '
            f'{c:>8.1f} {n / c:>13,.0f} {c / ref_cpu:>7.0f}')
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
