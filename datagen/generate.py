"""Generates synthetic music play logs with known ground truth.

  python -m datagen.generate --out_dir /tmp/plays --num_events 1000000 --format csv

Writes plays-NNNNN-of-MMMMM.<csv|jsonl|parquet>[.gz] in the canonical play-log schema
(user_id, item_id, ts, play_ms, duration_ms, intent) plus _ground_truth.json/.npz. The generative
model is described in docs/data_generator.md. Output is deterministic by seed and does not depend
on --chunk_events or on the number of shards (rows are the same; only file boundaries move).

  python -m datagen.generate --out_dir /tmp/plays --num_events 600000 --days 6

writes one partition a day instead, YYYY-MM-DD/plays-00000-of-00001.csv (the pipeline's
partition_pattern '{YYYY}-{MM}-{DD}'), with the catalogue drifting: songs released and fading
during the days (--set released_share=... faded_share=...; 0.1 each by default with --days).
"""

import argparse
import dataclasses
import datetime
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from contract import features
from contract import settings
from datagen import ground_truth
from datagen import model
from datagen import writers
from datagen.random_streams import Streams

DEFAULT_CHUNK_EVENTS = 250_000
DEFAULT_SHARD_EVENTS = 1_000_000
DEFAULT_EVENTS_PER_USER = 100
# With --days, the model runs in a steady state: users join over the first DAILY_LEAD_IN_DAYS,
# their sessions are spread over the whole span (the gap is bounded by the span, not by hours),
# and the written days are the DAILY_LEAD_IN_DAYS..+days after that, with DAILY_TAIL_DAYS more
# of span behind them, so that every written day has about as many plays. Songs are released
# and fade during the written days (DAILY_DRIFT, unless --set says otherwise).
DAILY_LEAD_IN_DAYS = 30
DAILY_TAIL_DAYS = 45
DAILY_DRIFT = {'released_share': 0.1, 'faded_share': 0.1}
_MS_PER_DAY = 86_400_000
_DAY_FOLDER = re.compile(r'\d{4}-\d{2}-\d{2}')


def _shard_user_bounds(num_events_per_user: np.ndarray, num_shards: int) -> List[int]:
  """User index boundaries splitting users into contiguous shards of about equal events."""
  event_end = np.cumsum(num_events_per_user)
  targets = event_end[-1] * np.arange(1, num_shards) / num_shards
  inner = np.searchsorted(event_end, targets, side='left') + 1
  bounds = sorted(set([0, *inner.tolist(), len(num_events_per_user)]))
  return bounds  # duplicates removed: a shard never comes out empty


def chunk_user_bounds(num_events_per_user: np.ndarray, first: int, end: int,
                      chunk_events: int) -> List[int]:
  """Consecutive user ranges of at most chunk_events plays (a bigger user gets a chunk alone)."""
  event_end = np.cumsum(num_events_per_user[first:end])
  bounds, done = [first], 0
  while bounds[-1] < end:
    step = int(np.searchsorted(event_end, done + chunk_events, side='right'))
    step = max(step, bounds[-1] - first + 1)
    bounds.append(first + min(step, end - first))
    done = int(event_end[bounds[-1] - first - 1])
  return bounds


class _Stats:
  """Counts of plays by intent x label and by affinity, for _ground_truth.json."""

  def __init__(self):
    self.by_intent_label = np.zeros((3, 3), dtype=np.int64)  # intent x (neg, neither, pos)
    self.by_affinity = np.zeros(3, dtype=np.int64)  # disliked, neutral, liked
    self.play_rate_by_affinity = np.zeros(3)

  def add(self, chunk: Dict[str, np.ndarray]) -> None:
    label = np.where(chunk['play_rate'] >= settings.POS_THRESHOLD, 2,
                     np.where(chunk['play_rate'] <= settings.NEG_THRESHOLD, 0, 1))
    self.by_intent_label += np.bincount(chunk['intent'] * 3 + label,
                                        minlength=9).reshape(3, 3)
    slot = chunk['affinity'] + 1
    self.by_affinity += np.bincount(slot, minlength=3)
    self.play_rate_by_affinity += np.bincount(slot, weights=chunk['play_rate'], minlength=3)

  def as_dict(self) -> Dict[str, Any]:
    total = max(int(self.by_intent_label.sum()), 1)
    per_intent = {}
    for code, name in enumerate(model.INTENT_NAMES):
      counts = self.by_intent_label[code]
      per_intent[name] = {
          'share_of_plays': round(counts.sum() / total, 4),
          'positive': round(counts[2] / max(counts.sum(), 1), 4),
          'negative': round(counts[0] / max(counts.sum(), 1), 4),
      }
    affinity_names = ('disliked', 'neutral', 'liked')
    return {
        'label_thresholds': {'positive_at_least': settings.POS_THRESHOLD,
                             'negative_at_most': settings.NEG_THRESHOLD},
        'positive_share': round(self.by_intent_label[:, 2].sum() / total, 4),
        'negative_share': round(self.by_intent_label[:, 0].sum() / total, 4),
        'by_intent': per_intent,
        'affinity_share': {n: round(self.by_affinity[i] / total, 4)
                           for i, n in enumerate(affinity_names)},
        'mean_play_rate_by_affinity': {
            n: round(self.play_rate_by_affinity[i] / max(self.by_affinity[i], 1), 4)
            for i, n in enumerate(affinity_names)},
    }


def _id_array(prefix: str, first: int, end: int, total: int) -> pa.Array:
  width = ground_truth.id_width(total)
  return pa.array([f'{prefix}{i:0{width}d}' for i in range(first, end)], type=pa.string())


def _previous_output(out_dir: str) -> List[str]:
  return sorted(name for name in os.listdir(out_dir)
                if name.startswith('plays-') or _DAY_FOLDER.fullmatch(name)
                or name in (ground_truth.JSON_NAME, ground_truth.NPZ_NAME))


def day_folder(epoch_day: int) -> str:
  """The partition of a day (UTC, counted from 1970-01-01) in a daily log:
  settings.DAILY_PARTITION_PATTERN."""
  return (datetime.date(1970, 1, 1) + datetime.timedelta(days=epoch_day)).strftime(
      settings.DAILY_PARTITION_FORMAT)


def _written_time_range(config: model.GeneratorConfig,
                        days: Optional[int]) -> Tuple[int, int]:
  """[first, end) epoch ms of the plays written: everything, or the days (whole UTC days)."""
  if not days:
    return 0, np.iinfo(np.int64).max
  first_day = config.start_ts_ms // _MS_PER_DAY + DAILY_LEAD_IN_DAYS
  return first_day * _MS_PER_DAY, (first_day + days) * _MS_PER_DAY


class _DayWriters:
  """Writes each play into the partition of its day, one file a day."""

  def __init__(self, out_dir: str, fmt: str, play_field: str, use_gzip: bool, gzip_level: int):
    self._out_dir = out_dir
    self._fmt, self._play_field, self._use_gzip, self._gzip_level = (fmt, play_field, use_gzip,
                                                                      gzip_level)
    self._writers: Dict[int, writers.ShardWriter] = {}

  def write(self, table: pa.Table) -> None:
    day = table.column(features.TS).to_numpy() // _MS_PER_DAY
    for d in np.unique(day).tolist():
      if d not in self._writers:
        folder = os.path.join(self._out_dir, day_folder(d))
        os.makedirs(folder)
        self._writers[d] = writers.ShardWriter(
            os.path.join(folder, writers.shard_name(0, 1, self._fmt, self._use_gzip)),
            self._fmt, self._play_field, self._use_gzip, self._gzip_level)
      self._writers[d].write(table.filter(pa.array(day == d)))

  def close(self) -> List[str]:
    for writer in self._writers.values():
      writer.close()
    return [self._writers[d].path for d in sorted(self._writers)]


def _progress(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def generate(out_dir: str,
             num_events: int = 100_000,
             num_users: Optional[int] = None,
             num_items: int = 20_000,
             seed: int = 0,
             fmt: str = 'csv',
             use_gzip: bool = False,
             gzip_level: int = 6,
             play_field: str = writers.PLAY_MS,
             num_shards: Optional[int] = None,
             chunk_events: int = DEFAULT_CHUNK_EVENTS,
             overwrite: bool = False,
             progress: bool = False,
             days: Optional[int] = None,
             **model_knobs) -> Dict[str, Any]:
  """Writes a synthetic play log and its ground truth into out_dir; returns a summary.

  Args:
    num_users: defaults to num_events / 100.
    fmt: 'csv', 'jsonl' or 'parquet'.
    use_gzip: gzip the csv/jsonl shards (parquet is compressed internally).
    play_field: 'play_ms' (canonical) or 'play_rate' (written instead of play_ms).
    num_shards: defaults to one shard per million plays.
    chunk_events: plays generated per step; bounds memory, never changes the output.
    overwrite: replace an earlier log in out_dir (otherwise that is an error).
    days: write one partition a day for this many days (YYYY-MM-DD/, num_shards ignored) from
      a steady state of the model, with the catalogue drifting (DAILY_* above); num_events are
      generated over the whole span, and only the plays of the days are written (about
      days / (days + 75) of them).
    **model_knobs: any other field of model.GeneratorConfig.

  Returns:
    dict with events, users, items, files, ground_truth, seconds, events_per_second, stats.
  """
  started = time.time()
  if fmt not in writers.FORMATS:
    raise ValueError(f'format must be one of {writers.FORMATS}, got {fmt!r}')
  if use_gzip and fmt == 'parquet':
    raise ValueError('gzip applies to csv and jsonl; parquet shards are compressed internally')
  if play_field not in writers.PLAY_FIELDS:
    raise ValueError(f'play_field must be one of {writers.PLAY_FIELDS}, got {play_field!r}')
  if chunk_events < 1:
    raise ValueError(f'chunk_events must be >= 1, got {chunk_events}')
  unknown = set(model_knobs) - {f.name for f in dataclasses.fields(model.GeneratorConfig)}
  if unknown:
    raise ValueError(f'unknown generator parameter(s): {sorted(unknown)}')
  if num_users is None:
    num_users = max(1, num_events // DEFAULT_EVENTS_PER_USER)
  if days is not None:
    if days < 1:
      raise ValueError(f'days must be >= 1, got {days}')
    model_knobs = {**DAILY_DRIFT, 'start_spread_days': float(DAILY_LEAD_IN_DAYS),
                   'span_days': float(DAILY_LEAD_IN_DAYS + days + DAILY_TAIL_DAYS),
                   'mean_session_gap_hours': 24.0 * (DAILY_LEAD_IN_DAYS + days + DAILY_TAIL_DAYS),
                   'drift_start_day': float(DAILY_LEAD_IN_DAYS), 'drift_days': float(days),
                   **model_knobs}
  config = model.GeneratorConfig(num_events=num_events, num_users=num_users,
                                 num_items=num_items, seed=seed, **model_knobs)
  config.validate()
  if num_shards is None:
    num_shards = max(1, math.ceil(num_events / DEFAULT_SHARD_EVENTS))
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}')

  os.makedirs(out_dir, exist_ok=True)
  previous = _previous_output(out_dir)
  if previous and not overwrite:
    raise FileExistsError(f'{out_dir} already holds a generated log ({previous[0]}, ...); '
                          'pass overwrite=True (--overwrite) to replace it')
  for name in previous:  # stale shards of another shard count would otherwise mix in
    path = os.path.join(out_dir, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

  streams = Streams(seed)
  catalogue = model.make_catalogue(config, streams)
  users = model.make_users(config, streams, catalogue)
  item_ids = _id_array('i', 0, num_items, num_items)
  intent_names = pa.array(model.INTENT_NAMES, type=pa.string())
  stats = _Stats()

  shard_bounds = _shard_user_bounds(users.num_events, 1 if days else num_shards)
  day_writers = _DayWriters(out_dir, fmt, play_field, use_gzip, gzip_level) if days else None
  first_ts_ms, end_ts_ms = _written_time_range(config, days)
  files, generated, written, out_of_catalogue, outside_days = [], 0, 0, 0, 0
  last_report = time.time()
  for shard in range(len(shard_bounds) - 1):
    path = os.path.join(out_dir, writers.shard_name(shard, len(shard_bounds) - 1, fmt, use_gzip))
    writer = day_writers or writers.ShardWriter(path, fmt, play_field, use_gzip, gzip_level)
    chunks = chunk_user_bounds(users.num_events, shard_bounds[shard], shard_bounds[shard + 1],
                               chunk_events)
    for first_user, end_user in zip(chunks[:-1], chunks[1:]):
      chunk = model.generate_chunk(config, streams, catalogue, users, first_user, end_user)
      generated += len(chunk['user'])
      alive = model.in_catalogue(catalogue, chunk['item'], chunk['ts'])
      in_days = (chunk['ts'] >= first_ts_ms) & (chunk['ts'] < end_ts_ms)
      out_of_catalogue += int((~alive & in_days).sum())
      outside_days += int((alive & ~in_days).sum())
      chunk = {name: values[alive & in_days] for name, values in chunk.items()}
      stats.add(chunk)
      table = writers.plays_table(chunk, _id_array('u', first_user, end_user, num_users),
                                  item_ids, intent_names, first_user, play_field)
      writer.write(table)
      written += len(chunk['user'])
      if progress and time.time() - last_report > 2:
        last_report = time.time()
        _progress(f'  {generated:,} / {num_events:,} plays generated '
                  f'({100 * generated / num_events:.0f}%), {written:,} written, '
                  f'{generated / (last_report - started):,.0f} plays/s')
    if not day_writers:
      writer.close()
      files.append(path)
  if day_writers:
    files = day_writers.close()

  output = {'format': fmt, 'gzip': use_gzip, 'play_field': play_field,
            'files': [os.path.relpath(p, out_dir) for p in files],
            'plays_of_songs_not_yet_released_or_faded': out_of_catalogue,
            'plays_outside_the_days': outside_days,
            'written_ts_ms': [int(first_ts_ms), int(end_ts_ms)]}
  gt_path = ground_truth.write(out_dir, config, streams, catalogue, users, output, stats.as_dict())
  seconds = time.time() - started
  return {
      'events': written, 'users': num_users, 'items': num_items, 'files': files,
      'ground_truth': gt_path, 'seconds': round(seconds, 3),
      'events_per_second': round(written / max(seconds, 1e-9)), 'stats': stats.as_dict(),
  }


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m datagen.generate',
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out_dir', required=True, help='directory for the shards and ground truth')
  parser.add_argument('--num_events', type=int, default=100_000,
                      help='plays in total (%(default)s)')
  parser.add_argument('--num_users', type=int, default=None,
                      help=f'users (default: num_events / {DEFAULT_EVENTS_PER_USER})')
  parser.add_argument('--num_items', type=int, default=20_000, help='songs (%(default)s)')
  parser.add_argument('--seed', type=int, default=0, help='random seed (%(default)s)')
  parser.add_argument('--format', dest='fmt', choices=writers.FORMATS, default='csv',
                      help='file format (%(default)s)')
  parser.add_argument('--gzip', dest='use_gzip', action='store_true',
                      help='gzip csv/jsonl shards (.gz)')
  parser.add_argument('--gzip_level', type=int, default=6, choices=range(1, 10), metavar='1-9',
                      help='gzip compression level (%(default)s)')
  parser.add_argument('--play_rate', dest='play_field', action='store_const',
                      const=features.PLAY_RATE, default=writers.PLAY_MS,
                      help='write a play_rate column (float in [0, 1]) instead of play_ms')
  parser.add_argument('--num_shards', type=int, default=None,
                      help=f'output files (default: one per {DEFAULT_SHARD_EVENTS:,} plays)')
  parser.add_argument('--chunk_events', type=int, default=DEFAULT_CHUNK_EVENTS,
                      help='plays generated per step; bounds memory, output unchanged '
                           '(%(default)s)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a log previously generated into --out_dir')
  parser.add_argument('--set', dest='knobs', action='append', default=[], metavar='NAME=VALUE',
                      help='any other model parameter, e.g. --set recommend_share=0.5 '
                           '(repeatable; names and defaults in docs/data_generator.md)')
  parser.add_argument('--days', type=int, default=None,
                      help='write one partition a day (YYYY-MM-DD/) for this many days, with '
                           'songs released and fading; --num_events are generated over a longer '
                           f'span and only the days\' plays written (about days / (days + '
                           f'{DAILY_LEAD_IN_DAYS + DAILY_TAIL_DAYS}) of them; default: one log, '
                           'no partitions)')
  parser.add_argument('--quiet', action='store_true', help='no progress output')
  return parser


def _parse_knobs(parser: argparse.ArgumentParser, assignments: List[str]) -> Dict[str, Any]:
  fields = {f.name: f for f in dataclasses.fields(model.GeneratorConfig)}
  reserved = {'num_events', 'num_users', 'num_items', 'seed'}
  knobs = {}
  for assignment in assignments:
    name, sep, value = assignment.partition('=')
    if not sep or name not in fields or name in reserved:
      parser.error(f'--set {assignment!r}: expected NAME=VALUE with NAME one of '
                   f'{sorted(set(fields) - reserved)}')
    try:
      knobs[name] = type(fields[name].default)(value)
    except ValueError:
      type_name = type(fields[name].default).__name__
      parser.error(f'--set {assignment!r}: {value!r} is not a {type_name}')
  return knobs


def main(argv: Optional[List[str]] = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  knobs = _parse_knobs(parser, args.knobs)
  try:
    summary = generate(args.out_dir, num_events=args.num_events, num_users=args.num_users,
                       num_items=args.num_items, seed=args.seed, fmt=args.fmt,
                       use_gzip=args.use_gzip, gzip_level=args.gzip_level,
                       play_field=args.play_field, num_shards=args.num_shards,
                       chunk_events=args.chunk_events, overwrite=args.overwrite,
                       progress=not args.quiet, days=args.days, **knobs)
  except (ValueError, FileExistsError) as e:
    parser.error(str(e))
  stats = summary['stats']
  print(f"events {summary['events']:,}  users {summary['users']:,}  items {summary['items']:,}  "
        f"files {len(summary['files'])}  seconds {summary['seconds']:.2f}  "
        f"({summary['events_per_second']:,} events/s)")
  print(f"positive {stats['positive_share']:.1%}  negative {stats['negative_share']:.1%}  "
        f"-> {args.out_dir} (ground truth: {os.path.basename(summary['ground_truth'])})")
  return 0


if __name__ == '__main__':
  sys.exit(main())
