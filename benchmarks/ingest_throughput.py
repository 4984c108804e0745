"""Ingestion throughput of PlayLogExampleGen and Transform on the local Beam runner.

Generates a synthetic play log (datagen), then times, on the same files:
  reference  pyarrow.csv.read_csv of every file (a fast columnar parse, no validation, no Beam):
             the floor of what reading the log costs
  executor   PlayLogExampleGen's executor end to end: parse + validate every row, group by user,
             sort, build the examples (train windows, eval targets), write gzipped TFRecords
  transform  Transform's executor on those examples (vocabularies, transformed examples)
Reference and executor run --repeats times, interleaved; each figure is the median events/s with
the spread (min-max) over the repeats. Transform runs once. It prints the slowdown against the
reference, the bytes written per event (the serialized tf.Examples, uncompressed, and the gzipped
files on disk), and the load average: a figure taken while other work shared the cores is not
the project's speed.

  python benchmarks/ingest_throughput.py --num_events 1000000
  python benchmarks/ingest_throughput.py --num_events 1000000 -- \
      --direct_num_workers=2 --direct_running_mode=multi_processing
  python benchmarks/ingest_throughput.py --quick    # a smoke run, seconds
Arguments after `--` are Beam pipeline args, passed through as the pipeline's would be.

One large file over workers: with --workers 1,2 the log is one CSV file (--single_file) and
PlayLogExampleGen runs on it with each number of DirectRunner worker processes, interleaved, the
file read in byte ranges of --range_bytes; the table gives each count's median seconds (min-max)
and its speed-up over the first (the goal: 2 workers at least 1.6 x 1 worker on 1 GB, about
19M events at ~53 bytes each):
  python benchmarks/ingest_throughput.py --num_events 19000000 --single_file \
      --workers 1,2 --skip_transform --repeats 3
"""

import argparse
import glob
import os
import resource
import shutil
import statistics
import tempfile
import time

import pyarrow.csv as pa_csv
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

from benchmarks import quality
from components.play_log_example_gen import artifacts
from components.play_log_example_gen import defaults
from components.play_log_example_gen import executor as executor_lib
from datagen import generate as generate_lib
from pipeline import beam_direct


# --quick: a few thousand events, one repeat, Beam in this process.
QUICK_EVENTS, QUICK_ITEMS = 3_000, 300
QUICK_BEAM_PIPELINE_ARGS = ['--direct_num_workers=1', '--direct_running_mode=in_memory']
QUICK_RANGE_BYTES = 32 << 10  # --quick's log (about 150 KB) in a few ranges


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_events', type=int, default=1_000_000)
  parser.add_argument('--num_users', type=int, default=None,
                      help='default: the generator default (num_events / its events per user)')
  parser.add_argument('--num_items', type=int, default=20_000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--repeats', type=int, default=3,
                      help='interleaved runs of the reference and the executor')
  parser.add_argument('--skip_transform', action='store_true',
                      help='time PlayLogExampleGen only')
  parser.add_argument('--single_file', action='store_true',
                      help='write the log as one CSV file (the generator writes a file per '
                      'million plays otherwise)')
  parser.add_argument('--workers', default=None,
                      help='worker process counts to compare on the log, e.g. 1,2 (implies '
                      '--single_file)')
  parser.add_argument('--range_bytes', type=int, default=defaults.RANGE_BYTES,
                      help='byte ranges a large file is read in')
  parser.add_argument('--work_dir', default=None,
                      help='where the log and outputs go (default: a temp dir, deleted after)')
  parser.add_argument('--quick', action='store_true',
                      help='a tiny log, one repeat, Beam in this process: checks the command, not '
                      'the speed (overrides the sizes above and, unless given, the Beam args)')
  parser.add_argument('beam_pipeline_args', nargs='*',
                      help='Beam pipeline args after "--", e.g. --direct_num_workers=2')
  args = parser.parse_args(argv)
  if args.quick:
    args.num_events, args.num_items, args.num_users, args.repeats = (
        QUICK_EVENTS, QUICK_ITEMS, None, 1)
    args.beam_pipeline_args = args.beam_pipeline_args or QUICK_BEAM_PIPELINE_ARGS
    # The worker comparison's code path, on threads in this process (no worker start-up).
    args.workers, args.range_bytes = args.workers or '1,2', QUICK_RANGE_BYTES
  args.workers = [int(n) for n in args.workers.split(',')] if args.workers else []
  args.single_file = args.single_file or bool(args.workers)
  return args


def workers_beam_args(workers, quick):
  """Beam args of a run on this many DirectRunner workers: processes, or with --quick threads."""
  mode = 'multi_threading' if quick else 'multi_processing'
  return [f'--direct_num_workers={workers}', f'--direct_running_mode={mode}']


def compare_workers(log_glob, out_dir, args, events):
  """{workers: [(events, wall s, cpu s)] per repeat}, the counts interleaved; each run must read
  every one of the log's events."""
  timings = {workers: [] for workers in args.workers}
  for repeat in range(args.repeats):
    for workers in args.workers:
      print(f'repeat {repeat + 1}/{args.repeats}: PlayLogExampleGen on {workers} worker(s) ...',
            flush=True)
      shutil.rmtree(out_dir, ignore_errors=True)
      timings[workers].append(time_executor(log_glob, out_dir,
                                            workers_beam_args(workers, args.quick)))
      assert timings[workers][-1][0] == events, (timings[workers][-1][0], events)
  return timings


def print_workers(timings, file_bytes, args):
  first = statistics.median(t[1] for t in timings[args.workers[0]])
  print(f'\nOne {file_bytes / 1e6:,.1f} MB CSV file in byte ranges of {args.range_bytes / 1e6:.3g} '
        f'MB ({-(-file_bytes // args.range_bytes)} ranges), {args.repeats} interleaved runs')
  print(f'{"workers":<8} {"wall s (min-max)":>22} {"events/s":>12} {"x speed":>8} {"cpu s":>7}')
  for workers, runs in timings.items():
    seconds = [s for _, s, _ in runs]
    median = statistics.median(seconds)
    spread = f'{median:.1f} ({min(seconds):.1f}-{max(seconds):.1f})'
    print(f'{workers:<8} {spread:>22} {runs[0][0] / median:>12,.0f} {first / median:>8.2f} '
          f'{statistics.median(c for _, _, c in runs):>7.1f}')
  load = os.getloadavg()
  print(f'load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) after these '
        f'runs, {os.cpu_count()} cores')


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
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=beam_direct.with_runner(beam_pipeline_args))
  started, started_cpu = time.time(), cpu_seconds()
  executor_lib.Executor(context).Do(
      {}, {'examples': [examples], 'quarantine': [quarantine]},
      {'input_base': log_glob, 'input_format': 'csv'})
  return (examples.get_int_custom_property('rows_read'), time.time() - started,
          cpu_seconds() - started_cpu)


def time_transform(examples_uri, out_dir, beam_pipeline_args):
  started, started_cpu = time.time(), cpu_seconds()
  quality.run_transform(out_dir, examples_uri, argparse.Namespace(
      beam_pipeline_args=beam_direct.with_runner(beam_pipeline_args)))
  return time.time() - started, cpu_seconds() - started_cpu


def bytes_written(examples_uri):
  """(serialized record bytes, gzipped file bytes) of every split under examples_uri."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(examples_uri, 'Split-*', '*.gz')))
  records = sum(len(record) for record in tf.data.TFRecordDataset(
      files, compression_type='GZIP').as_numpy_iterator())
  return records, sum(os.path.getsize(path) for path in files)


def main(argv=None):
  args = parse_args(argv)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix='ingest_throughput_')
  try:
    log_dir = os.path.join(work_dir, 'log')
    print(f'generating {args.num_events:,} events into {log_dir} ...', flush=True)
    summary = generate_lib.generate(log_dir, num_events=args.num_events, num_users=args.num_users,
                                    num_items=args.num_items, seed=args.seed, fmt='csv',
                                    num_shards=1 if args.single_file else None, overwrite=True)
    files = sorted(glob.glob(os.path.join(log_dir, 'plays-*.csv')))
    print(f'  {summary["events"]:,} events, {summary["users"]:,} users, {len(files)} file(s) '
          f'in {summary["seconds"]:.1f} s', flush=True)

    out_dir = os.path.join(work_dir, 'out')
    defaults.RANGE_BYTES = args.range_bytes  # read where the executor plans its byte ranges
    if args.workers:
      print_workers(compare_workers(os.path.join(log_dir, 'plays-*.csv'), out_dir, args,
                                    summary['events']),
                    sum(os.path.getsize(path) for path in files), args)
    reference, executor = [], []
    for repeat in range(args.repeats):
      print(f'repeat {repeat + 1}/{args.repeats}: pyarrow.csv.read_csv, then PlayLogExampleGen on '
            f'Beam {args.beam_pipeline_args or "(defaults)"} ...', flush=True)
      reference.append(time_reference(files))
      shutil.rmtree(out_dir, ignore_errors=True)
      executor.append(time_executor(os.path.join(log_dir, 'plays-*.csv'), out_dir,
                                    args.beam_pipeline_args))
      assert executor[-1][0] == reference[-1][0] == summary['events'], (
          executor[-1][0], reference[-1][0], summary['events'])
    rows = summary['events']
    timings = [('reference: pyarrow.csv.read_csv', reference),
               ('PlayLogExampleGen executor (DirectRunner)', executor)]
    written = {'PlayLogExampleGen': bytes_written(os.path.join(out_dir, 'examples'))}
    if not args.skip_transform:
      print('transform: Transform executor ...', flush=True)
      transform_dir = os.path.join(work_dir, 'transform')
      shutil.rmtree(transform_dir, ignore_errors=True)
      transform_seconds, transform_cpu = time_transform(
          os.path.join(out_dir, 'examples'), transform_dir, args.beam_pipeline_args)
      timings.append(('Transform executor (DirectRunner)',
                      [(rows, transform_seconds, transform_cpu)]))
      median_executor = sorted(executor, key=lambda t: t[1])[len(executor) // 2]
      timings.append(('PlayLogExampleGen (median) + Transform',
                      [(rows, median_executor[1] + transform_seconds,
                        median_executor[2] + transform_cpu)]))
      written['Transform'] = bytes_written(os.path.join(transform_dir, 'transformed'))

    # Wall time suffers from other load on the machine; CPU time shows the work itself.
    print()
    print(f'{"stage":<40} {"events":>10} {"runs":>4} {"wall s":>7} {"events/s (min-max)":>26} '
          f'{"x ref":>6} {"cpu s":>7} {"x ref":>6}')
    ref_seconds = statistics.median(t[1] for t in reference)
    ref_cpu = statistics.median(t[2] for t in reference)
    for name, runs in timings:
      rates = [n / s for n, s, _ in runs]
      seconds = statistics.median(s for _, s, _ in runs)
      cpu = statistics.median(c for _, _, c in runs)
      spread = f'{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})'
      print(f'{name:<40} {rows:>10,} {len(runs):>4} {seconds:>7.1f} {spread:>26} '
            f'{seconds / ref_seconds:>6.0f} {cpu:>7.1f} {cpu / ref_cpu:>6.0f}')
    print()
    print(f'{"output":<44} {"records bytes/event":>20} {"gzipped bytes/event":>20}')
    for name, (record_bytes, file_bytes) in written.items():
      print(f'{name:<44} {record_bytes / rows:>20,.1f} {file_bytes / rows:>20,.1f}')
    load = os.getloadavg()
    print(f'\nload average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)')
    if args.quick:
      print('(--quick: a smoke run; the figures are not meaningful)')
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == '__main__':
  main()
