"""Daily operation: ingestion cost as days accumulate, and warm against cold start on a new day.

  TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/daily.py --days 6 --seeds 0,1,2
  ... benchmarks/daily.py --days 9 --window 7 --plays_per_day 1000000 --skip ingestion \
      --skip warm_start                # the partition cache at 1M plays a day
  ... benchmarks/daily.py --quick      # a smoke run: tiny days, one seed, a few steps

With the project's real code (the executors TFX runs; Beam's DirectRunner):
  1. datagen.generate writes --days daily partitions (YYYY-MM-DD/), songs released and fading.
  2. Ingestion: the days arrive one at a time. After each arrival PlayLogExampleGen runs with the
     rolling window (--window partitions) and, interleaved with it in the same process, with
     every day so far (the reference: what the pipeline did before partitions). Each is timed
     --repeats times; the table gives the median seconds with their range and the plays read.
  3. The partition cache: the days arrive again, one at a time. After each arrival, interleaved,
     PlayLogExampleGen runs over the window without the cache, over the window with the cache
     (the earlier days' validated plays cached by the runs before; the new day's entry is
     deleted before each repeat, so every timed run parses the new day, as a daily run does),
     and over the newest day alone (the reference: what a run should cost). The table gives
     the cached run's time as a multiple of the one-day run's (goal: at most 1.5 from day 3
     on) and whether its examples are byte for byte those of the run without the cache.
  4. Warm against cold, on day 3 (for each trainer seed): a model is trained cold on the window
     ending on day 2 (the base, as the pipeline's latest blessed model); on the window ending on
     day 3 one model trains cold for --train_steps and one warm-starts from the base for as many
     steps. POS@50 is measured on the day-3 window's eval split at every --checkpoint_steps; the
     warm run's figure is the training time at its first checkpoint reaching the cold run's final
     POS@50, as a share of the cold run's training time (goal: at most 1/3).

The load average is printed at the start and beside each table; figures taken above a load of 1
are marked not for publishing.
"""

import argparse
import glob
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from benchmarks import quality
from benchmarks.train_speed import load_average_text, publication_warning
from contract import settings
from datagen import generate as generate_lib

# Users play about this many songs a day in the generated log (heavy users more).
PLAYS_PER_USER_PER_DAY = 20
WARM_START_DAY = 3
SECTIONS = ('ingestion', 'cache', 'warm_start')
# The goal of the partition cache: from this day on, a run over the window costs at most
# CACHE_GOAL times a run over the newest day alone.
CACHE_GOAL_FROM_DAY, CACHE_GOAL = 3, 1.5
# --quick: the fewest days the warm start needs, tiny days, one seed, Beam in this process.
QUICK_SETTINGS = {'days': WARM_START_DAY, 'plays_per_day': 600, 'num_items': 200, 'repeats': 1,
                  'seeds': '0', 'train_steps': 20, 'checkpoint_steps': 10}
QUICK_BEAM_PIPELINE_ARGS = ['--direct_num_workers=1', '--direct_running_mode=in_memory']
# --quick's model: small enough for seconds, and fewer sampled negatives than its ~150 items.
QUICK_HPARAMS = {'batch_size': 32, 'num_sampled': 32, 'hidden_dim': 16, 'item_embedding_dim': 8,
                 'num_layers': 1, 'num_heads': 2, 'ffn_dim': 32}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--days', type=int, default=6, help='days generated and ingested (>= 5)')
  parser.add_argument('--window', type=int, default=2, help='window_partitions (days)')
  parser.add_argument('--plays_per_day', type=int, default=40_000)
  parser.add_argument('--num_items', type=int, default=5_000)
  parser.add_argument('--repeats', type=int, default=3, help='timed ExampleGen runs per day')
  parser.add_argument('--seeds', default='0,1,2', help='trainer seeds of the warm/cold runs')
  parser.add_argument('--train_steps', type=int, default=1500,
                      help='steps of each cold run, and the warm run\'s budget')
  parser.add_argument('--checkpoint_steps', type=int, default=100)
  parser.add_argument('--skip', choices=SECTIONS, action='append', default=[],
                      help='leave a measurement out (may be given more than once)')
  parser.add_argument('--work_dir', default=None, help='default: a temp dir, deleted after')
  parser.add_argument('--quick', action='store_true',
                      help='tiny days, one seed, a few steps, Beam in this process: checks the '
                      'command, not the figures (overrides the settings above and, unless '
                      'given, the Beam args)')
  parser.add_argument('beam_pipeline_args', nargs='*',
                      help='Beam pipeline args after "--" (default: the DirectRunner in one '
                      'process per core, as the local runner)')
  args = parser.parse_args(argv)
  args.hparams = {}  # the Trainer's defaults, but for --quick's
  if args.quick:
    vars(args).update(QUICK_SETTINGS, hparams=QUICK_HPARAMS)
    args.beam_pipeline_args = args.beam_pipeline_args or QUICK_BEAM_PIPELINE_ARGS
  if args.days < WARM_START_DAY:
    parser.error(f'--days must be >= {WARM_START_DAY} (the warm start is measured on day 3)')
  args.seeds = [int(seed) for seed in args.seeds.split(',') if seed]
  args.beam_pipeline_args = args.beam_pipeline_args or list(settings.BEAM_PIPELINE_ARGS)
  # What quality.py's stages read: the split is the default (the latest tenth of the plays).
  args.eval_plays_per_user = None
  return args


def progress(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def generate_days(out_dir: str, args: argparse.Namespace) -> List[str]:
  # The generator spreads the plays over a span longer than the days it writes.
  events = args.plays_per_day * (args.days + generate_lib.DAILY_LEAD_IN_DAYS
                                 + generate_lib.DAILY_TAIL_DAYS)
  summary = generate_lib.generate(
      out_dir, num_events=events, num_users=max(1, args.plays_per_day // PLAYS_PER_USER_PER_DAY),
      num_items=args.num_items, seed=0, days=args.days, overwrite=True)
  progress(f'  {summary["events"]:,} plays written over {args.days} days')
  return sorted(name for name in os.listdir(out_dir) if not name.startswith('_'))


def example_gen(out_dir: str, data_dir: str, args: argparse.Namespace, window: Optional[int],
                cache_dir: Optional[str] = None) -> Dict[str, float]:
  """Runs PlayLogExampleGen's executor over the partitions (the newest `window` of them, or
  all), with the partition cache in cache_dir (None: no cache); returns its seconds, the plays
  it read and the partitions it took from the cache."""
  shutil.rmtree(out_dir, ignore_errors=True)
  cache = ({'partition_cache': False} if cache_dir is None
           else {'partition_cache_dir': cache_dir})
  started = time.perf_counter()
  examples = quality.run_example_gen(out_dir, data_dir, args,
                                     partition_pattern=settings.DAILY_PARTITION_PATTERN,
                                     window_partitions=window, **cache)
  return {'seconds': time.perf_counter() - started,
          'plays': examples.get_int_custom_property('rows_read'),
          'from_cache': examples.get_int_custom_property('partitions_from_cache')}


def examples_digest(out_dir: str) -> str:
  """SHA-256 of the examples' split files (names and bytes), as example_gen wrote them."""
  digest = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(out_dir, 'examples', 'Split-*', '*'))):
    digest.update(os.path.relpath(path, out_dir).encode() + b'\0')
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 24), b''):
        digest.update(block)
  return digest.hexdigest()


def measure_ingestion(work_dir: str, days: List[str], args: argparse.Namespace) -> List[Dict]:
  data_dir = os.path.join(work_dir, 'arrived')
  os.makedirs(data_dir, exist_ok=True)
  rows = []
  for number, day in enumerate(days, start=1):
    shutil.copytree(os.path.join(work_dir, 'generated', day), os.path.join(data_dir, day))
    times = {'window': [], 'all': []}
    plays = {}
    for _ in range(args.repeats):
      for variant, window in (('window', args.window), ('all', None)):  # interleaved
        result = example_gen(os.path.join(work_dir, 'ingest', variant), data_dir, args, window)
        times[variant].append(result['seconds'])
        plays[variant] = result['plays']
    rows.append({'day': number, 'name': day, 'load': load_average_text(), **{
        f'{variant}_{key}': value for variant in times for key, value in (
            ('seconds', times[variant]), ('plays', plays[variant]))}})
    progress(f'  day {number}: window {statistics.median(times["window"]):.1f} s '
             f'({plays["window"]:,} plays), all days {statistics.median(times["all"]):.1f} s '
             f'({plays["all"]:,} plays)')
  return rows


# The runs of the cache comparison: (name, window: 'one' day or the 'window', cached).
CACHE_VARIANTS = (('one_day', 'one', False), ('window', 'window', False),
                  ('cached', 'window', True))


def measure_cache(work_dir: str, days: List[str], args: argparse.Namespace) -> List[Dict]:
  data_dir = os.path.join(work_dir, 'arrived-cache')
  cache_dir = os.path.join(work_dir, 'partition_cache')
  os.makedirs(data_dir, exist_ok=True)
  rows = []
  for number, day in enumerate(days, start=1):
    shutil.copytree(os.path.join(work_dir, 'generated', day), os.path.join(data_dir, day))
    times = {name: [] for name, _, _ in CACHE_VARIANTS}
    results = {}
    for _ in range(args.repeats):
      for name, window, cached in CACHE_VARIANTS:  # interleaved
        if cached:  # the new day is parsed in every timed run, as in a daily run
          shutil.rmtree(os.path.join(cache_dir, day), ignore_errors=True)
        results[name] = example_gen(os.path.join(work_dir, 'cache', name), data_dir, args,
                                    1 if window == 'one' else args.window,
                                    cache_dir if cached else None)
        times[name].append(results[name]['seconds'])
    identical = (examples_digest(os.path.join(work_dir, 'cache', 'cached'))
                 == examples_digest(os.path.join(work_dir, 'cache', 'window')))
    rows.append({'day': number, 'name': day, 'load': load_average_text(),
                 'identical': identical, 'from_cache': results['cached']['from_cache'],
                 **{f'{name}_seconds': times[name] for name in times},
                 **{f'{name}_plays': results[name]['plays'] for name in times}})
    progress(f'  day {number}: one day {statistics.median(times["one_day"]):.1f} s, window '
             f'{statistics.median(times["window"]):.1f} s, cached '
             f'{statistics.median(times["cached"]):.1f} s; identical: {identical}')
  return rows


def train(out_dir: str, transform_dir: str, args: argparse.Namespace, seed: int,
          base_model: Optional[str] = None) -> List[Dict[str, float]]:
  """Trains (warm from base_model's Model artifact directory when given) through the Trainer's
  executor and run_fn; returns the POS@50 curve of time_to_quality."""
  shutil.rmtree(out_dir, ignore_errors=True)
  quality.run_trainer(out_dir, transform_dir,
                      {**args.hparams, 'train_steps': args.train_steps, 'seed': seed,
                       'steps_per_checkpoint': args.checkpoint_steps,
                       'steps_per_log': args.checkpoint_steps},
                      args.train_steps, base_model)
  return quality.time_to_quality(os.path.join(out_dir, 'model_run'))


def window_transform(work_dir: str, days: List[str], last_day: int,
                     args: argparse.Namespace) -> str:
  """ExampleGen and Transform over the window ending on day last_day (1-based); their dir."""
  data_dir = os.path.join(work_dir, f'window-{last_day}', 'data')
  for day in days[max(0, last_day - args.window):last_day]:
    shutil.copytree(os.path.join(work_dir, 'generated', day), os.path.join(data_dir, day))
  out_dir = os.path.join(work_dir, f'window-{last_day}')
  example_gen(os.path.join(out_dir, 'example_gen'), data_dir, args, args.window)
  quality.run_transform(out_dir, os.path.join(out_dir, 'example_gen', 'examples'), args)
  return out_dir


def measure_warm_start(work_dir: str, days: List[str], args: argparse.Namespace) -> List[Dict]:
  before = window_transform(work_dir, days, WARM_START_DAY - 1, args)
  today = window_transform(work_dir, days, WARM_START_DAY, args)
  rows = []
  for seed in args.seeds:
    runs = os.path.join(work_dir, f'seed-{seed}')
    progress(f'  seed {seed}: the base (cold, window to day {WARM_START_DAY - 1})')
    train(os.path.join(runs, 'base'), before, args, seed)
    progress(f'  seed {seed}: cold and warm on the window to day {WARM_START_DAY}')
    cold = train(os.path.join(runs, 'cold'), today, args, seed)
    warm = train(os.path.join(runs, 'warm'), today, args, seed,
                 base_model=os.path.join(runs, 'base', 'model'))
    target = cold[-1]['pos_at_50']
    reached = quality.seconds_to_reach(warm, target)
    rows.append({'seed': seed, 'load': load_average_text(), 'cold_pos_at_50': target,
                 'cold_seconds': cold[-1]['seconds'], 'warm_first_pos_at_50': warm[0]['pos_at_50'],
                 'warm_final_pos_at_50': warm[-1]['pos_at_50'], 'warm_seconds_to_cold': reached,
                 'share_of_cold_time': reached / cold[-1]['seconds']})
    progress(f'  seed {seed}: cold POS@50 {target:.4f} in {cold[-1]["seconds"]:.0f} s; warm '
             f'reaches it in {reached:.0f} s ({rows[-1]["share_of_cold_time"]:.2f} of it)')
  return rows


def _spread(values: Sequence[float]) -> str:
  return f'{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})'


def print_ingestion(rows: List[Dict], args: argparse.Namespace) -> None:
  print(f'\nIngestion (PlayLogExampleGen, {args.repeats} interleaved runs per cell; median s '
        f'(min-max))')
  print('| day | window of ' + str(args.window) + ' days: s | plays | every day so far: s | plays '
        '| load 1/5/15 min |')
  print('|---|---|---|---|---|---|')
  for row in rows:
    print(f'| {row["day"]} ({row["name"]}) | {_spread(row["window_seconds"])} | '
          f'{row["window_plays"]:,} | {_spread(row["all_seconds"])} | {row["all_plays"]:,} | '
          f'{row["load"]} |')


def print_cache(rows: List[Dict], args: argparse.Namespace) -> None:
  print(f'\nPartition cache (PlayLogExampleGen, {args.repeats} interleaved runs per cell; median '
        f's (min-max)); window of {args.window} days')
  print('| day | newest day alone: s | plays | window, no cache: s | window, cached: s | plays '
        '| partitions from the cache | cached / newest day alone | examples identical | '
        'load 1/5/15 min |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for row in rows:
    ratio = (statistics.median(row['cached_seconds'])
             / statistics.median(row['one_day_seconds']))
    print(f'| {row["day"]} ({row["name"]}) | {_spread(row["one_day_seconds"])} | '
          f'{row["one_day_plays"]:,} | {_spread(row["window_seconds"])} | '
          f'{_spread(row["cached_seconds"])} | {row["cached_plays"]:,} | {row["from_cache"]} | '
          f'{ratio:.2f} | {"yes" if row["identical"] else "NO"} | {row["load"]} |')
  held = [row for row in rows if row['day'] >= CACHE_GOAL_FROM_DAY]
  worst = max((statistics.median(row['cached_seconds'])
               / statistics.median(row['one_day_seconds']) for row in held), default=None)
  if worst is not None:
    print(f'cached / newest day alone from day {CACHE_GOAL_FROM_DAY} on: at most {worst:.2f} '
          f'(goal <= {CACHE_GOAL})')


def print_warm_start(rows: List[Dict]) -> None:
  print(f'\nWarm against cold start on day {WARM_START_DAY} (one row per trainer seed)')
  print('| seed | cold POS@50 (final) | cold s | warm POS@50 at its 1st checkpoint | warm final '
        '| warm s to cold POS@50 | share of cold time | load 1/5/15 min |')
  print('|---|---|---|---|---|---|---|---|')
  for row in rows:
    print(f'| {row["seed"]} | {row["cold_pos_at_50"]:.4f} | {row["cold_seconds"]:.0f} | '
          f'{row["warm_first_pos_at_50"]:.4f} | {row["warm_final_pos_at_50"]:.4f} | '
          f'{row["warm_seconds_to_cold"]:.0f} | {row["share_of_cold_time"]:.2f} | {row["load"]} |')
  shares = [row['share_of_cold_time'] for row in rows]
  mean, error = quality.mean_and_error(shares)
  print(f'share of the cold run\'s time: mean {mean:.2f} +- {error:.2f} (standard error over '
        f'{len(shares)} seeds); goal <= 0.33')


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  warning = publication_warning(os.getloadavg()[0], args.train_steps)
  print(f'load average at the start: {load_average_text()}')
  work_dir = args.work_dir or tempfile.mkdtemp(prefix='playrecall-daily-')
  try:
    progress('generating the days')
    days = generate_days(os.path.join(work_dir, 'generated'), args)
    if 'ingestion' not in args.skip:
      progress('ingestion, day by day')
      print_ingestion(measure_ingestion(work_dir, days, args), args)
    if 'cache' not in args.skip:
      progress('the partition cache, day by day')
      print_cache(measure_cache(work_dir, days, args), args)
    if 'warm_start' not in args.skip:
      progress('warm against cold start')
      print_warm_start(measure_warm_start(work_dir, days, args))
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  print(f'\nload average at the end: {load_average_text()}')
  if warning:
    print(warning)
  if args.quick:
    print('(--quick: a smoke run; the figures are not meaningful)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
