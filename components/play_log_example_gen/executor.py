"""Executor of PlayLogExampleGen: a Beam pipeline from play-log files to split tf.Examples."""

import dataclasses
import json
import os
import time
from typing import (Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union,
                    get_type_hints)

from absl import logging
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.play_log_example_gen import beam_stages
from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import defaults
from components.play_log_example_gen import input_files
from components.play_log_example_gen import partition_cache
from components.play_log_example_gen import play_log_reader
from components.play_log_example_gen import user_examples
from contract import features
from contract import settings

EXAMPLES_KEY = 'examples'
QUARANTINE_KEY = 'quarantine'
COUNTS_FILE = 'ingestion_counts.json'
EVAL_START_FILE = 'eval_start_ts.json'
EVAL_USERS_FILE = 'eval_users.json'  # users with eval plays before the eval sample (null: none)
QUARANTINE_PREFIX = 'quarantine'
# Properties of the examples of a partitioned input (besides TFX's own `span`).
PARTITIONS_PROPERTY = 'partitions'
PARTITIONS_OUTSIDE_WINDOW_PROPERTY = 'partitions_outside_window'
# The incomplete partitions the window skipped (incomplete_partitions 'skip'): JSON
# {name: why}.
PARTITIONS_INCOMPLETE_PROPERTY = 'partitions_incomplete'


INGEST_CONFIG_KEY = 'ingest_config'
# Set by the driver: JSON {path: content digest} of the input files it found.
INPUT_DIGESTS_KEY = 'input_digests'


def validate_ingest(values: Union[settings.IngestConfig, Mapping[str, Any], None]
                    ) -> settings.IngestConfig:
  """The ingest settings (the pipeline config's `ingest`) from an IngestConfig or its fields;
  raises ValueError (contract.typed.SettingError) naming the first bad one."""
  ingest = (values if isinstance(values, settings.IngestConfig)
            else settings.IngestConfig.from_dict(dict(values or {})))
  column_mapping_lib.parse_column_mapping(ingest.column_mapping)
  return ingest


def ingest_json(ingest: settings.IngestConfig) -> str:
  """The component's one ingest parameter: the settings as JSON (keys sorted: a stable cache
  key)."""
  return json.dumps(dataclasses.asdict(ingest), sort_keys=True)


_INGEST_TYPES = get_type_hints(settings.IngestConfig)


def ingest_settings(exec_properties: Mapping[str, Any]) -> settings.IngestConfig:
  """The ingest settings of the component's exec properties (the driver's and the executor's
  view of them are one): the JSON of `ingest_config`, as the component gives it. A caller that
  drives the executor directly (benchmarks/quality.py) may give the IngestConfig fields as
  properties of their own instead; not both."""
  given = exec_properties.get(INGEST_CONFIG_KEY)
  flat = _ingest_parameters(exec_properties)
  if given in (None, ''):
    return validate_ingest(flat)
  if flat:
    raise ValueError(f'PlayLogExampleGen: {sorted(flat)} given both in {INGEST_CONFIG_KEY} and '
                     'as properties of their own; give the settings once, in '
                     f'{INGEST_CONFIG_KEY}')
  return validate_ingest(json.loads(given) if isinstance(given, str) else given)


def _ingest_parameters(exec_properties: Mapping[str, Any]) -> Dict[str, Any]:
  """The IngestConfig fields given as properties of their own; integer ones as int, since
  Kubeflow can deliver an integer parameter as a float."""
  parameters = {}
  for name, kind in _INGEST_TYPES.items():
    value = exec_properties.get(name)
    if value not in (None, ''):
      parameters[name] = int(value) if kind in (int, Optional[int]) else value
  return parameters


def record_example_settings(examples: types.Artifact, ingest: settings.IngestConfig) -> None:
  """Records the settings that shaped the examples on them: custom properties, and
  features.EXAMPLE_SETTINGS_FILE at their root (which the Trainer reads beside its files)."""
  recorded = example_settings(ingest)
  examples.set_int_custom_property(features.EXAMPLE_HISTORY_LENGTH,
                                   recorded[features.EXAMPLE_HISTORY_LENGTH])
  for key in (features.EXAMPLE_POS_THRESHOLD, features.EXAMPLE_NEG_THRESHOLD):
    examples.set_float_custom_property(key, recorded[key])
  if ingest.eval_max_users is not None:  # a property cannot hold None: absent means no bound
    examples.set_int_custom_property(features.EXAMPLE_EVAL_MAX_USERS, ingest.eval_max_users)
  with FileSystems.create(os.path.join(examples.uri, features.EXAMPLE_SETTINGS_FILE)) as f:
    f.write(json.dumps(recorded, sort_keys=True).encode('utf-8'))


def example_settings(ingest: settings.IngestConfig) -> Dict[str, Any]:
  return {features.EXAMPLE_HISTORY_LENGTH: ingest.history_length,
          features.EXAMPLE_POS_THRESHOLD: ingest.pos_threshold,
          features.EXAMPLE_NEG_THRESHOLD: ingest.neg_threshold,
          features.EXAMPLE_EVAL_MAX_USERS: ingest.eval_max_users}


def driver_digests(exec_properties: Mapping[str, Any]) -> Dict[str, str]:
  """The content digests the driver took of the input files ({path: digest}); empty when the
  executor runs without the driver (the benchmarks, tests)."""
  given = exec_properties.get(INPUT_DIGESTS_KEY)
  return json.loads(given) if given else {}


def file_sizes(files: Sequence[str]) -> Dict[str, int]:
  return {m.path: m.size_in_bytes
          for result in FileSystems.match(list(files)) for m in result.metadata_list}


def num_user_buckets(sizes: Mapping[str, int]) -> int:
  """Returns how many buckets of users to build examples in, from the input's size (a gzipped
  file counted at 4x: play logs compress about that much)."""
  total = sum(size * (4 if path.endswith('.gz') else 1) for path, size in sizes.items())
  return max(defaults.MIN_USER_BUCKETS, total // defaults.INPUT_BYTES_PER_USER_BUCKET)


SPLITTABLE_FORMATS = ('csv', 'jsonl')  # read by lines; a Parquet file is read whole


def _read_tasks(file_index: int, path: str, size: int, input_format: str,
                entry: Optional[str] = None, relative_path: str = ''
                ) -> List[beam_stages.ReadTask]:
  """The readers' tasks of one file: byte ranges of about RANGE_BYTES for a large CSV or JSON
  lines file that is not gzipped (one file then spreads over workers), else the whole file."""
  ranges = [(0, None)]
  if (input_format in SPLITTABLE_FORMATS and size > defaults.RANGE_BYTES
      and not input_files.is_gzipped(path)):
    ranges = input_files.byte_ranges(size, defaults.RANGE_BYTES)
  return [beam_stages.ReadTask(file_index, path, start, end, entry, relative_path)
          for start, end in ranges]


class ReadPlan(NamedTuple):
  """What a run reads: files (or byte ranges) to parse, pieces of cache entries, and the
  entries its readers write ({folder: (key, number of pieces)})."""
  tasks: List[beam_stages.ReadTask]
  cached_pieces: List[Tuple[int, str, str, Dict[str, Any]]]
  entries: Dict[str, Tuple[Dict[str, Any], int]]
  partitions_from_cache: List[str]
  partitions_parsed: List[str]


def read_plan(found: input_files.InputFiles, sizes: Mapping[str, int],
              ingest: settings.IngestConfig, ts_bound_ms: int, cache_dir: Optional[str],
              known_digests: Optional[Mapping[str, str]] = None) -> ReadPlan:
  """Which partitions come from the cache (cache_dir; None: no cache) and what is parsed. The
  entries are keyed by the files' content digests: those in known_digests (the driver's) as
  they are, the others taken here."""
  index = {path: i for i, path in enumerate(found.data)}
  if cache_dir is None:
    tasks = [task for i, path in enumerate(found.data)
             for task in _read_tasks(i, path, sizes[path], ingest.input_format)]
    return ReadPlan(tasks, [], {}, [], [p.name for p in found.partitions])
  # The driver found these files with the same settings and hashed them moments ago; its digest
  # of a path is reused rather than reading every input byte twice. A file it did not see (one
  # delivered in between) is hashed here. A file rewritten in between is keyed by the content
  # the driver saw, the content the run's fingerprint (and MLMD) records as its input: hashing
  # it again here would narrow that gap, not close it (the readers read it later still).
  digests = input_files.content_digests(found.data, known_digests)
  plan = ReadPlan([], [], {}, [], [])
  for name, paths in found.partition_files().items():
    partition_digest = input_files.files_digest({path: digests[path] for path in paths},
                                                found.root)
    key = partition_cache.entry_key(name, partition_digest, ingest)
    directory = partition_cache.entry_dir(cache_dir, key)
    manifest = partition_cache.reusable_manifest(directory, key, ts_bound_ms)
    if manifest is not None:
      plan.partitions_from_cache.append(name)
      for piece in manifest['pieces']:
        path = found.root + piece['file']
        plan.cached_pieces.append((index[path], path, directory, piece))
      continue
    plan.partitions_parsed.append(name)
    tasks = [task for path in paths for task in _read_tasks(
        index[path], path, sizes[path], ingest.input_format, directory, path[len(found.root):])]
    plan.tasks.extend(tasks)
    plan.entries[directory] = (key, len(tasks))
  return plan


def partition_cache_dir(ingest: settings.IngestConfig) -> Optional[str]:
  """Where this run caches partitions; None: it does not (no partitions, cache off, or no
  folder: the pipeline gives one under its root, a caller of the executor alone may not)."""
  if not (ingest.partition_pattern and ingest.partition_cache):
    return None
  if ingest.partition_cache_dir is None:
    logging.warning('PlayLogExampleGen: partition_cache is on but no partition_cache_dir is '
                    'given (the pipeline sets one under its root); partitions are not cached')
  return ingest.partition_cache_dir


# --- Executor ---------------------------------------------------------------------------------

def _check_counts(counts: Mapping[str, Any], max_bad_fraction: float, input_base: str,
                  quarantine_uri: str) -> None:
  """Asserts read == used + quarantined and that every used row is written once (in a train
  window or as a validation or eval target); raises when no row was read, the bad fraction passes the limit,
  or no row is left."""
  read, used, bad = counts['rows_read'], counts['rows_used'], counts['rows_quarantined']
  if read != used + bad:
    raise AssertionError(f'rows read ({read}) != rows used ({used}) + rows quarantined ({bad})')
  train_plays, examples = counts['train_plays'], counts['examples']
  valid_examples, eval_examples = examples[user_examples.VALID], examples[user_examples.EVAL]
  left_out = counts['eval_plays_left_out']
  if train_plays + valid_examples + eval_examples + left_out != used:
    raise AssertionError(f'plays in train windows ({train_plays}) + validation examples '
                         f'({valid_examples}) + eval examples ({eval_examples}) + eval plays '
                         f'outside the eval sample ({left_out}) != rows used ({used})')
  if not read:
    raise RuntimeError(
        f'PlayLogExampleGen: no rows in the {counts["files_read"]} file(s) under input_base '
        f'{input_base!r} (empty or header-only); nothing to train on')
  fraction = bad / read
  if fraction > max_bad_fraction:
    top = sorted(counts[beam_stages.QUARANTINED].items(), key=lambda kv: -kv[1]['count'])[:5]
    reasons = '; '.join(f'{reason}: {entry["count"]} (e.g. {", ".join(entry["examples"])})'
                        for reason, entry in top)
    raise RuntimeError(
        f'PlayLogExampleGen: {bad} of {read} rows ({fraction:.2%}) were quarantined, more than '
        f'max_bad_fraction={max_bad_fraction:g} ({max_bad_fraction:.2%}). Top reasons: {reasons}. '
        f'Every quarantined row, with its reason, is in {quarantine_uri}')
  if not used:
    raise RuntimeError(
        f'PlayLogExampleGen: all {read} rows read were quarantined; nothing to train on. Every '
        f'quarantined row, with its reason, is in {quarantine_uri}')


def _check_splits(examples: Mapping[str, int], config: user_examples.ExampleConfig,
                  eval_start_ts: Optional[int]) -> None:
  """Raises when a time cut leaves a split empty: nothing to train on, or nothing to judge the
  model by (Transform or the Evaluator would fail later, less clearly). An empty valid split
  (no user with 2 x valid_plays_per_user plays before the eval split) is allowed: the Trainer
  then exports its last step."""
  if config.eval_plays_per_user is not None:
    return  # each user's last plays: an empty eval split is what eval_plays_per_user=0 asks
  for split, side in ((user_examples.TRAIN, 'before'), (user_examples.EVAL, 'at or after')):
    if not examples[split]:
      raise RuntimeError(
          f'PlayLogExampleGen: the {split} split is empty: no play is {side} the cut time '
          f'eval_start_ts={eval_start_ts}; choose another eval_start_ts or eval_fraction')


def _split_rule(config: user_examples.ExampleConfig, eval_fraction: Optional[float]) -> str:
  if eval_fraction is not None:
    return f'the latest {eval_fraction:g} of the plays, from one cut time on'
  if config.eval_start_ts is not None:
    return f'every play at or after eval_start_ts={config.eval_start_ts}'
  return f"each user's last {config.eval_plays_per_user} plays"


# Counts of the run that are not summed over its stages.
RUN_COUNTS = ('files_ignored', 'partitions_from_cache', 'partitions_parsed')


def _record_counts(artifact: types.Artifact, counts: Mapping[str, Any]) -> None:
  for name in beam_stages.COUNTERS + RUN_COUNTS:
    artifact.set_int_custom_property(name, counts[name])
  artifact.set_string_custom_property(
      'quarantined_by_reason',
      json.dumps({r: e['count'] for r, e in sorted(counts[beam_stages.QUARANTINED].items())}))
  artifact.set_string_custom_property('ignored_files', json.dumps(counts['ignored_files']))
  for split, count in counts['examples'].items():
    artifact.set_int_custom_property(f'{split}_examples', count)


def _partition_names(partitions: Sequence[input_files.Partition]) -> str:
  names = [p.name for p in partitions]
  return ', '.join(names) if len(names) <= 6 else f'{names[0]} ... {names[-1]} ({len(names)})'


def _record_partitions(examples: types.Artifact, found: input_files.InputFiles) -> None:
  """Records the partitions read on the examples: the newest one's span as the artifact's
  `span` (TFX's Examples property), all of them by name, and how many were left out."""
  examples.span = found.partitions[-1].span
  examples.set_string_custom_property(
      PARTITIONS_PROPERTY, json.dumps([p.name for p in found.partitions]))
  examples.set_int_custom_property(PARTITIONS_OUTSIDE_WINDOW_PROPERTY,
                                   len(found.partitions_outside_window))
  examples.set_string_custom_property(
      PARTITIONS_INCOMPLETE_PROPERTY,
      json.dumps({p.name: why for p, why in found.partitions_incomplete}))


def partition_days(found: input_files.InputFiles, pattern: Optional[str],
                   margin_ms: int) -> Dict[int, beam_stages.PartitionDay]:
  """{file index: its date partition's day} (UTC, widened by margin_ms on each side) for the
  files of date partitions; empty for span partitions and unpartitioned input."""
  if not pattern or settings.SPAN_PLACEHOLDER in pattern:
    return {}
  day_ms = 24 * 3600 * 1000
  by_name = {p.name: p for p in found.partitions}
  days = {}
  for index, path in enumerate(found.data):
    # The partition is a folder (or file) on the path; the last such name, as the input base's
    # own path may hold a date too.
    names = [part for part in path.split('/') if part in by_name]
    if names:
      partition = by_name[names[-1]]
      days[index] = beam_stages.PartitionDay(partition.name, partition.span * day_ms - margin_ms,
                                             (partition.span + 1) * day_ms + margin_ms)
  return days


def format_counts(counts: Mapping[str, Any]) -> str:
  by_reason = ', '.join(f'{r}={e["count"]}'
                        for r, e in sorted(counts[beam_stages.QUARANTINED].items()))
  notes = [f'{name.replace("_", " ")}={counts[name]}'
           for name in ('files_ignored', 'blank_lines', 'tied_plays', 'capped_play_rates',
                        'default_play_rates', 'unknown_intents', 'off_day_plays',
                        'eval_plays_left_out')
           if counts.get(name)]
  if counts.get('partitions_from_cache') or counts.get('partitions_parsed'):
    notes.append(f'partitions read from cache={counts["partitions_from_cache"]} '
                 f'parsed={counts["partitions_parsed"]}')
  return (f'rows read={counts["rows_read"]} used={counts["rows_used"]} '
          f'quarantined={counts["rows_quarantined"]} ({by_reason or "none"}); examples '
          + ' '.join(f'{s}={n}' for s, n in counts['examples'].items())
          + f'; train plays={counts["train_plays"]}'
          + (f'; {", ".join(notes)}' if notes else ''))


def _remove_examples(examples: types.Artifact) -> None:
  """Deletes whatever the failed run wrote into the examples' splits."""
  for split in user_examples.SPLITS:
    split_uri = artifact_utils.get_split_uri([examples], split)
    if FileSystems.exists(split_uri):
      FileSystems.delete([split_uri])
  settings_file = os.path.join(examples.uri, features.EXAMPLE_SETTINGS_FILE)
  if FileSystems.exists(settings_file):
    FileSystems.delete([settings_file])


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads and validates play logs; writes Split-train/-valid/-eval gzipped tf.Example TFRecords.

  When the run fails (a file that cannot be read, no rows, too many bad rows) it leaves no
  examples behind; the quarantine stays, since the error message points at it.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
    examples.split_names = artifact_utils.encode_split_names(list(user_examples.SPLITS))
    try:
      self._ingest(examples, quarantine, exec_properties)
    except BaseException:
      _remove_examples(examples)
      raise

  def _ingest(self, examples: types.Artifact, quarantine: types.Artifact,
              exec_properties: Dict[str, Any]) -> None:
    ingest = ingest_settings(exec_properties)
    input_format, column_mapping = ingest.input_format, ingest.column_mapping
    max_bad_fraction = ingest.max_bad_fraction
    config = user_examples.ExampleConfig(
        history_length=ingest.history_length, pos_threshold=ingest.pos_threshold,
        neg_threshold=ingest.neg_threshold, eval_plays_per_user=ingest.eval_plays_per_user,
        eval_start_ts=ingest.eval_start_ts, valid_plays_per_user=ingest.valid_plays_per_user)
    timestamps = play_log_reader.TimestampRule(
        min_ms=ingest.min_ts_ms,
        max_ms=(int(time.time() * 1000) + settings.MAX_FUTURE_MS if ingest.max_ts_ms is None
                else ingest.max_ts_ms),
        unit=ingest.ts_unit)
    eval_fraction = ingest.eval_fraction
    if (ingest.eval_plays_per_user, ingest.eval_start_ts, eval_fraction) == (None, None, None):
      eval_fraction = settings.EVAL_FRACTION
    input_base = exec_properties['input_base']
    found = input_files.find_input_files(input_base, ingest.partition_pattern,
                                         ingest.window_partitions,
                                         input_files.Completeness.of(ingest))
    for path in found.ignored:
      logging.info('PlayLogExampleGen ignores %s (a name starting with "." or "_", or a copy in '
                   'progress (%s)%s)', path, ' '.join(settings.IN_PROGRESS_SUFFIXES),
                   f', or in no partition named {ingest.partition_pattern!r}'
                   if ingest.partition_pattern else '')
    if ingest.partition_pattern:
      skipped = ''.join(f'; skipped {p.name}: not complete yet ({why})'
                        for p, why in found.partitions_incomplete)
      print(f'PlayLogExampleGen: partitions {_partition_names(found.partitions)} '
            f'({len(found.partitions_outside_window)} older outside the window of '
            f'{ingest.window_partitions or "all"}){skipped}', flush=True)
    off_day = beam_stages.OffDayRule(
        partition_days(found, ingest.partition_pattern, ingest.off_day_margin_ms),
        quarantine=ingest.off_day_plays == 'quarantine')
    sizes = file_sizes(found.data)
    num_buckets = num_user_buckets(sizes)
    cache_dir = partition_cache_dir(ingest)
    plan = read_plan(found, sizes, ingest, timestamps.max_ms, cache_dir,
                     driver_digests(exec_properties))
    if cache_dir is not None:
      print(f'PlayLogExampleGen: partitions read from the cache in {cache_dir}: '
            f'{len(plan.partitions_from_cache)}; parsed: {len(plan.partitions_parsed)}'
            + (f' ({", ".join(plan.partitions_parsed)})' if plan.partitions_parsed else ''),
            flush=True)
    logging.info('PlayLogExampleGen reading %d %s file(s) (%d read tasks, %d cached pieces) with '
                 'column mapping %s into %d user buckets; eval split: %s', len(found.data),
                 input_format, len(plan.tasks), len(plan.cached_pieces), column_mapping,
                 num_buckets, _split_rule(config, eval_fraction))
    counts_path = os.path.join(quarantine.uri, COUNTS_FILE)

    with self._make_beam_pipeline() as pipeline:
      range_facts = (
          pipeline
          | 'ByteRanges' >> beam.Create([t for t in plan.tasks if (t.start, t.end) != (0, None)])
          | 'RangeFacts' >> beam_stages.RangeFactsByRange(input_format, column_mapping))
      parsed = (
          pipeline
          | 'ReadTasks' >> beam.Create(plan.tasks)
          | 'SpreadReads' >> beam.Reshuffle()
          | 'ReadFiles' >> beam.ParDo(beam_stages.ReadPlayLogFile(
              input_format, column_mapping, timestamps, num_buckets, off_day),
              range_facts=beam.pvalue.AsSingleton(range_facts)).with_outputs(
                  beam_stages.QUARANTINED, beam_stages.COUNTS, beam_stages.PIECES, main='plays'))
      cached = (
          pipeline
          | 'CachedPieces' >> beam.Create(plan.cached_pieces)
          | 'SpreadCached' >> beam.Reshuffle()
          | 'ReadCache' >> beam.ParDo(beam_stages.ReadCachedPiece(num_buckets)).with_outputs(
              beam_stages.QUARANTINED, beam_stages.COUNTS, main='plays'))
      if plan.entries:
        _ = parsed[beam_stages.PIECES] | 'CommitCache' >> beam_stages.CommitCacheEntries(
            plan.entries)
      plays = (parsed.plays, cached.plays) | 'AllPlays' >> beam.Flatten()
      if eval_fraction is None:  # a given cut time, or each user's last plays
        eval_start = pipeline | 'EvalStart' >> beam.Create([config.eval_start_ts])
      else:
        eval_start = plays | 'EvalCutTime' >> beam_stages.EvalCutTime(eval_fraction)
      if ingest.eval_max_users is None:
        eval_sample = pipeline | 'NoEvalSample' >> beam.Create([(None, None)])
      else:
        eval_sample = plays | 'EvalSample' >> beam_stages.EvalUserSample(
            ingest.eval_max_users, eval_start, config.eval_plays_per_user)
      built = (
          plays
          | 'GroupByUserBucket' >> beam.GroupByKey()
          | 'BuildExamples' >> beam.ParDo(
              beam_stages.BuildBucketExamples(config, found.data,
                                              beam_stages.num_shuffle_groups(num_buckets)),
              eval_start_ts=beam.pvalue.AsSingleton(eval_start),
              eval_sample=beam.pvalue.AsSingleton(eval_sample)).with_outputs(
                  beam_stages.QUARANTINED, beam_stages.COUNTS, *user_examples.SPLITS))
      _ = (eval_sample
           | 'EvalUsersToJson' >> beam.Map(lambda sample: json.dumps(sample[1]))
           | 'WriteEvalUsers' >> beam.io.WriteToText(
               os.path.join(quarantine.uri, EVAL_USERS_FILE), shard_name_template='',
               num_shards=1))
      _ = (eval_start
           | 'EvalStartToJson' >> beam.Map(json.dumps)
           | 'WriteEvalStart' >> beam.io.WriteToText(
               os.path.join(quarantine.uri, EVAL_START_FILE), shard_name_template='',
               num_shards=1))
      for split in user_examples.SPLITS:
        # As TFX's write_split.WriteSplit: shuffled, then gzipped TFRecords under Split-<name>.
        _ = (built[split]
             | f'Shuffle[{split}]' >> beam_stages.ShuffleExamples()
             | f'WriteSplit[{split}]' >> beam_stages.WriteGzippedTFRecords(
                 os.path.join(artifact_utils.get_split_uri([examples], split),
                              write_split.DEFAULT_TF_RECORD_FILE_NAME)))
      _ = ((parsed[beam_stages.QUARANTINED], cached[beam_stages.QUARANTINED],
            built[beam_stages.QUARANTINED])
           | 'AllQuarantined' >> beam.Flatten()
           | 'WriteQuarantine' >> beam.io.WriteToText(
               os.path.join(quarantine.uri, QUARANTINE_PREFIX), file_name_suffix='.jsonl'))
      _ = ((parsed[beam_stages.COUNTS], cached[beam_stages.COUNTS], built[beam_stages.COUNTS])
           | 'AllCounts' >> beam.Flatten()
           | 'SumCounts' >> beam.CombineGlobally(beam_stages.CountsCombineFn())
           | 'CountsToJson' >> beam.Map(lambda counts: json.dumps(counts, indent=1))
           | 'WriteCounts' >> beam.io.WriteToText(counts_path, shard_name_template='',
                                                  num_shards=1))

    with FileSystems.open(counts_path) as f:
      counts = json.loads(f.read().decode('utf-8'))
    with FileSystems.open(os.path.join(quarantine.uri, EVAL_START_FILE)) as f:
      eval_start_ts = json.loads(f.read().decode('utf-8'))
    if eval_start_ts is not None:
      examples.set_int_custom_property('eval_start_ts', eval_start_ts)
    with FileSystems.open(os.path.join(quarantine.uri, EVAL_USERS_FILE)) as f:
      eval_users = json.loads(f.read().decode('utf-8'))
    if eval_users is not None:  # users with eval plays, before the sample
      examples.set_int_custom_property(features.EXAMPLE_EVAL_USERS_BEFORE_SAMPLE, eval_users)
      examples.set_int_custom_property(features.EXAMPLE_EVAL_USERS,
                                       min(eval_users, ingest.eval_max_users))
    if cache_dir is not None:
      partition_cache.forget_partitions(cache_dir,
                                        [p.name for p in found.partitions_outside_window])
    counts['files_ignored'] = len(found.ignored)
    counts['partitions_from_cache'] = len(plan.partitions_from_cache)
    counts['partitions_parsed'] = len(plan.partitions_parsed)
    counts['ignored_files'] = found.ignored[:beam_stages.EXAMPLE_LOCATIONS_PER_REASON * 10]
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME,
                                        write_split.to_file_format_str(
                                            example_gen_pb2.FORMAT_TFRECORDS_GZIP))
    for artifact in (examples, quarantine):
      _record_counts(artifact, counts)
    if found.partitions:
      _record_partitions(examples, found)
    record_example_settings(examples, ingest)
    summary = format_counts(counts)
    logging.info('PlayLogExampleGen: %s; quarantine in %s', summary, quarantine.uri)
    print(f'PlayLogExampleGen: {summary}; quarantine in {quarantine.uri}', flush=True)
    _check_counts(counts, max_bad_fraction, input_base, quarantine.uri)
    _check_splits(counts['examples'], config, eval_start_ts)
