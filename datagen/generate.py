"""Generates synthetic music play logs with known ground truth.

  python -m datagen.generate --out_dir /tmp/plays --num_events 1000000 --format csv

Writes plays-NNNNN-of-MMMMM.<csv|jsonl|parquet>[.gz] in the canonical play-log schema
(user_id, item_id, ts, play_ms, duration_ms, intent) plus _ground_truth.json/.npz. The generative
model is described in docs/data_generator.md. Output is deterministic by seed and does not depend
on --chunk_events or on the number of shards (rows are the same; only file boundaries move).
"""

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

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


def _shard_user_bounds(num_events_per_user: np.ndarray, num_shards: int) -> List[int]:
  """User index boundaries splitting users into contiguous shards of about equal events."""
  event_end = np.cumsum(num_events_per_user)
  targets = event_end[-1] * np.arange(1, num_shards) / num_shards
  inner = np.searchsorted(event_end, targets, side='left') + 1
  bounds = sorted(set([0, *inner.tolist(), len(num_events_per_user)]))
  return bounds  # duplicates removed: a shard never comes out empty


def _chunk_user_bounds(num_events_per_user: np.ndarray, first: int, end: int,
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
                if name.startswith('plays-')
                or name in (ground_truth.JSON_NAME, ground_truth.NPZ_NAME))


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
    os.remove(os.path.join(out_dir, name))

  streams = Streams(seed)
  catalogue = model.make_catalogue(config, streams)
  users = model.make_users(config, streams, catalogue)
  item_ids = _id_array('i', 0, num_items, num_items)
  intent_names = pa.array(model.INTENT_NAMES, type=pa.string())
  stats = _Stats()

  shard_bounds = _shard_user_bounds(users.num_events, num_shards)
  files, written, last_report = [], 0, time.time()
  for shard in range(len(shard_bounds) - 1):
    path = os.path.join(out_dir, writers.shard_name(shard, len(shard_bounds) - 1, fmt, use_gzip))
    writer = writers.ShardWriter(path, fmt, play_field, use_gzip, gzip_level)
    chunks = _chunk_user_bounds(users.num_events, shard_bounds[shard], shard_bounds[shard + 1],
                                chunk_events)
    for first_user, end_user in zip(chunks[:-1], chunks[1:]):
      chunk = model.generate_chunk(config, streams, catalogue, users, first_user, end_user)
      stats.add(chunk)
      writer.write(writers.plays_table(chunk, _id_array('u', first_user, end_user, num_users),
                                       item_ids, intent_names, first_user, play_field))
      written += len(chunk['user'])
      if progress and time.time() - last_report > 2:
        last_report = time.time()
        _progress(f'  {written:,} / {num_events:,} plays ({100 * written / num_events:.0f}%), '
                  f'{written / (last_report - started):,.0f} plays/s')
    writer.close()
    files.append(path)

  output = {'format': fmt, 'gzip': use_gzip, 'play_field': play_field,
            'files': [os.path.basename(p) for p in files]}
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
                       progress=not args.quiet, **knobs)
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
