"""Executor of PlayLogExampleGen: a Beam pipeline from play-log files to split tf.Examples."""

import json
import os
import random
import time
import zlib
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

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

from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import defaults
from components.play_log_example_gen import play_log_reader
from components.play_log_example_gen import user_examples

EXAMPLES_KEY = 'examples'
QUARANTINE_KEY = 'quarantine'
COUNTS_FILE = 'ingestion_counts.json'
QUARANTINE_PREFIX = 'quarantine'
# Locations kept per quarantine reason for the counts and the failure message.
EXAMPLE_LOCATIONS_PER_REASON = 3

_QUARANTINED = 'quarantined'
_COUNTS = 'counts'


def validate_parameters(*, input_format: str, column_mapping: str, history_length: int,
                        pos_threshold: float, neg_threshold: float, eval_plays_per_user: int,
                        max_bad_fraction: float) -> None:
  """Raises ValueError naming the first bad parameter."""
  if input_format not in defaults.INPUT_FORMATS:
    raise ValueError(f'input_format must be one of {defaults.INPUT_FORMATS}, got {input_format!r}')
  column_mapping_lib.parse_column_mapping(column_mapping)
  if history_length < 0:
    raise ValueError(f'history_length must be >= 0, got {history_length}')
  if not 0.0 <= neg_threshold < pos_threshold <= 1.0:
    raise ValueError(f'need 0 <= neg_threshold < pos_threshold <= 1, got neg_threshold='
                     f'{neg_threshold}, pos_threshold={pos_threshold}')
  if eval_plays_per_user < 0:
    raise ValueError(f'eval_plays_per_user must be >= 0, got {eval_plays_per_user}')
  if not 0.0 <= max_bad_fraction <= 1.0:
    raise ValueError(f'max_bad_fraction must be in [0, 1], got {max_bad_fraction}')


def input_files(input_base: str) -> List[str]:
  """Returns the sorted files of a directory (skipping '.'/'_' names) or of a glob."""
  is_dir = (os.path.isdir(input_base) if FileSystems.get_scheme(input_base) is None
            else input_base.endswith('/'))
  pattern = FileSystems.join(input_base, '*') if is_dir else input_base
  files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list
                 if not os.path.basename(m.path).startswith(('.', '_')))
  if not files:
    raise ValueError(f'input_base {input_base!r} matches no files')
  return files


# --- Counts -----------------------------------------------------------------------------------

def empty_counts() -> Dict[str, Any]:
  return {'rows_read': 0, 'rows_used': 0, 'rows_quarantined': 0,
          'examples': {split: 0 for split in user_examples.SPLITS}, 'train_plays': 0,
          _QUARANTINED: {}}


def _add_quarantined(counts: Dict[str, Any], reason: str, count: int,
                     locations: Iterable[str]) -> None:
  entry = counts[_QUARANTINED].setdefault(reason, {'count': 0, 'examples': []})
  entry['count'] += count
  room = EXAMPLE_LOCATIONS_PER_REASON - len(entry['examples'])
  entry['examples'].extend(list(locations)[:max(0, room)])
  counts['rows_quarantined'] += count


class CountsCombineFn(beam.CombineFn):
  """Sums counts dicts; keeps the first few quarantined row locations per reason."""

  def create_accumulator(self):
    return empty_counts()

  def add_input(self, accumulator, counts):
    return self.merge_accumulators([accumulator, counts])

  def merge_accumulators(self, accumulators):
    merged = empty_counts()
    for counts in accumulators:
      merged['rows_read'] += counts['rows_read']
      merged['rows_used'] += counts['rows_used']
      for split, count in counts['examples'].items():
        merged['examples'][split] += count
      merged['train_plays'] += counts['train_plays']
      for reason, entry in counts[_QUARANTINED].items():
        _add_quarantined(merged, reason, entry['count'], entry['examples'])
    return merged

  def extract_output(self, accumulator):
    return accumulator


def _location(row: play_log_reader.QuarantinedRow) -> str:
  return f'{row.source}:{row.line}'


# --- Beam stages ------------------------------------------------------------------------------

class ReadPlayLogFile(beam.DoFn):
  """(file_index, path) -> (user_id, [play, ...]) chunks; quarantined rows and counts tagged."""

  def __init__(self, input_format: str, column_mapping: str, min_ts: int, max_ts: int):
    self._input_format = input_format
    self._column_mapping = column_mapping
    self._min_ts = min_ts
    self._max_ts = max_ts

  def setup(self):
    self._mapping = column_mapping_lib.parse_column_mapping(self._column_mapping)

  def process(self, indexed_path: Tuple[int, str]):
    file_index, path = indexed_path
    counts = empty_counts()
    by_user: Dict[str, List[play_log_reader.Play]] = {}
    in_chunk = 0
    for item in play_log_reader.read_plays(path, file_index, self._input_format, self._mapping,
                                           self._min_ts, self._max_ts):
      counts['rows_read'] += 1
      if isinstance(item, play_log_reader.QuarantinedRow):
        _add_quarantined(counts, item.reason, 1, [_location(item)])
        yield beam.pvalue.TaggedOutput(_QUARANTINED, item.to_json())
        continue
      user_id, play = item
      plays = by_user.get(user_id)
      if plays is None:
        by_user[user_id] = [play]
      else:
        plays.append(play)
      in_chunk += 1
      if in_chunk >= defaults.ROWS_PER_CHUNK:
        yield from by_user.items()
        by_user, in_chunk = {}, 0
    yield from by_user.items()
    logging.info('PlayLogExampleGen read %d rows from %s (%d quarantined)', counts['rows_read'],
                 path, counts['rows_quarantined'])
    yield beam.pvalue.TaggedOutput(_COUNTS, counts)


class BuildUserExamples(beam.DoFn):
  """(user_id, chunks of plays) -> serialized tf.Examples tagged by split.

  Each example is an element of its own, so that the shuffle after it can put each train window
  among other users' windows (a batch of one user's examples would stay together). That is few
  enough elements for Beam's per-element overhead: one per history_length + 1 train plays, and
  one per eval play. Duplicate rows and counts are tagged outputs too.
  """

  def __init__(self, config: user_examples.ExampleConfig, files: Sequence[str]):
    self._config = config
    self._files = list(files)

  def process(self, user_chunks: Tuple[str, Iterable[Sequence[play_log_reader.Play]]]):
    user_id, chunks = user_chunks
    plays, duplicates = user_examples.ordered_unique_plays(chunks)
    counts = empty_counts()
    counts['rows_used'] = len(plays)
    if duplicates:
      rows = [user_examples.duplicate_row(user_id, play, self._files) for play in duplicates]
      _add_quarantined(counts, play_log_reader.DUPLICATE_EVENT, len(rows),
                       [_location(row) for row in rows])
      for row in rows:
        yield beam.pvalue.TaggedOutput(_QUARANTINED, row.to_json())
    for example in user_examples.user_examples(user_id, plays, self._config):
      counts['examples'][example.split] += 1
      if example.split == user_examples.TRAIN:
        counts['train_plays'] += example.plays
      yield beam.pvalue.TaggedOutput(example.split, example.serialized)
    yield beam.pvalue.TaggedOutput(_COUNTS, counts)


def _shuffled_group(keyed_group: Tuple[int, Iterable[bytes]]) -> List[bytes]:
  """The group's examples in an order that depends on their contents only (same input, same
  files), not on the order the runner delivered them in."""
  key, examples = keyed_group
  examples = sorted(examples)
  random.Random(key).shuffle(examples)
  return examples


def _group_of(example: bytes, num_groups: int) -> int:
  return zlib.crc32(example) % num_groups


class ShuffleExamples(beam.PTransform):
  """Puts serialized examples in random order, on every runner.

  beam.Reshuffle (what TFX's own ExampleGens shuffle with) does not: it gives every element a
  random key and groups, but the DirectRunner emits the groups in order of first appearance, so
  the examples keep their order, each user's together. Here they are dealt to random groups of
  about EXAMPLES_PER_SHUFFLE_GROUP (the group count follows the split's size, so a group fits in
  memory however large the split), and each group is shuffled in memory: then whatever order the
  runner emits the groups in, the examples come out in random order. Groups and shuffles are
  seeded by the examples' bytes, so the same input gives the same groups.
  """

  def expand(self, examples):
    num_groups = (
        examples
        | 'Count' >> beam.combiners.Count.Globally()
        | 'NumGroups' >> beam.Map(lambda n: max(1, n // defaults.EXAMPLES_PER_SHUFFLE_GROUP)))
    return (examples
            | 'DealToGroups' >> beam.Map(lambda example, n: (_group_of(example, n), example),
                                         n=beam.pvalue.AsSingleton(num_groups))
            | 'Group' >> beam.GroupByKey()
            | 'ShuffleEachGroup' >> beam.FlatMap(_shuffled_group))


# --- Executor ---------------------------------------------------------------------------------

def _check_counts(counts: Mapping[str, Any], max_bad_fraction: float,
                  quarantine_uri: str) -> None:
  """Asserts read == used + quarantined and that every used row is written once (in a train
  window or as an eval target); raises when the bad fraction passes the limit."""
  read, used, bad = counts['rows_read'], counts['rows_used'], counts['rows_quarantined']
  if read != used + bad:
    raise AssertionError(f'rows read ({read}) != rows used ({used}) + rows quarantined ({bad})')
  train_plays, eval_examples = counts['train_plays'], counts['examples'][user_examples.EVAL]
  if train_plays + eval_examples != used:
    raise AssertionError(f'plays in train windows ({train_plays}) + eval examples '
                         f'({eval_examples}) != rows used ({used})')
  fraction = bad / read if read else 0.0
  if fraction > max_bad_fraction:
    top = sorted(counts[_QUARANTINED].items(), key=lambda kv: -kv[1]['count'])[:5]
    reasons = '; '.join(f'{reason}: {entry["count"]} (e.g. {", ".join(entry["examples"])})'
                        for reason, entry in top)
    raise RuntimeError(
        f'PlayLogExampleGen: {bad} of {read} rows ({fraction:.2%}) were quarantined, more than '
        f'max_bad_fraction={max_bad_fraction:g} ({max_bad_fraction:.2%}). Top reasons: {reasons}. '
        f'Every quarantined row, with its reason, is in {quarantine_uri}')


def _record_counts(artifact: types.Artifact, counts: Mapping[str, Any]) -> None:
  artifact.set_int_custom_property('rows_read', counts['rows_read'])
  artifact.set_int_custom_property('rows_used', counts['rows_used'])
  artifact.set_int_custom_property('rows_quarantined', counts['rows_quarantined'])
  artifact.set_string_custom_property(
      'quarantined_by_reason',
      json.dumps({r: e['count'] for r, e in sorted(counts[_QUARANTINED].items())}))
  for split, count in counts['examples'].items():
    artifact.set_int_custom_property(f'{split}_examples', count)
  artifact.set_int_custom_property('train_plays', counts['train_plays'])


def format_counts(counts: Mapping[str, Any]) -> str:
  by_reason = ', '.join(f'{r}={e["count"]}' for r, e in sorted(counts[_QUARANTINED].items()))
  return (f'rows read={counts["rows_read"]} used={counts["rows_used"]} '
          f'quarantined={counts["rows_quarantined"]} ({by_reason or "none"}); examples '
          + ' '.join(f'{s}={n}' for s, n in counts['examples'].items())
          + f'; train plays={counts["train_plays"]}')


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads and validates play logs; writes Split-train/Split-eval gzipped tf.Example TFRecords."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    input_format = exec_properties.get('input_format') or defaults.DEFAULT_INPUT_FORMAT
    column_mapping = exec_properties.get('column_mapping') or defaults.DEFAULT_COLUMN_MAPPING
    eval_start_ts = exec_properties.get('eval_start_ts')
    config = user_examples.ExampleConfig(
        history_length=int(exec_properties.get('history_length', defaults.HISTORY_LENGTH)),
        pos_threshold=float(exec_properties.get('pos_threshold', defaults.POS_THRESHOLD)),
        neg_threshold=float(exec_properties.get('neg_threshold', defaults.NEG_THRESHOLD)),
        eval_plays_per_user=int(exec_properties.get('eval_plays_per_user',
                                                    defaults.EVAL_PLAYS_PER_USER)),
        eval_start_ts=None if eval_start_ts is None else int(eval_start_ts))
    max_bad_fraction = float(exec_properties.get('max_bad_fraction', defaults.MAX_BAD_FRACTION))
    validate_parameters(input_format=input_format, column_mapping=column_mapping,
                        history_length=config.history_length,
                        pos_threshold=config.pos_threshold, neg_threshold=config.neg_threshold,
                        eval_plays_per_user=config.eval_plays_per_user,
                        max_bad_fraction=max_bad_fraction)
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    quarantine = artifact_utils.get_single_instance(output_dict[QUARANTINE_KEY])
    files = input_files(exec_properties['input_base'])
    logging.info('PlayLogExampleGen reading %d %s file(s) with column mapping %s', len(files),
                 input_format, column_mapping)
    max_ts = int(time.time() * 1000) + defaults.MAX_FUTURE_MS
    counts_path = os.path.join(quarantine.uri, COUNTS_FILE)
    examples.split_names = artifact_utils.encode_split_names(list(user_examples.SPLITS))

    with self._make_beam_pipeline() as pipeline:
      parsed = (
          pipeline
          | 'InputFiles' >> beam.Create(list(enumerate(files)))
          | 'SpreadFiles' >> beam.Reshuffle()
          | 'ReadFiles' >> beam.ParDo(ReadPlayLogFile(
              input_format, column_mapping, defaults.MIN_TS_MS, max_ts)).with_outputs(
                  _QUARANTINED, _COUNTS, main='plays'))
      built = (
          parsed.plays
          | 'GroupByUser' >> beam.GroupByKey()
          | 'BuildExamples' >> beam.ParDo(BuildUserExamples(config, files)).with_outputs(
              _QUARANTINED, _COUNTS, *user_examples.SPLITS))
      for split in user_examples.SPLITS:
        # As TFX's write_split.WriteSplit: shuffled, then gzipped TFRecords under Split-<name>.
        _ = (built[split]
             | f'Shuffle[{split}]' >> ShuffleExamples()
             | f'WriteSplit[{split}]' >> beam.io.WriteToTFRecord(
                 os.path.join(artifact_utils.get_split_uri([examples], split),
                              write_split.DEFAULT_TF_RECORD_FILE_NAME),
                 file_name_suffix='.gz'))
      _ = ((parsed[_QUARANTINED], built[_QUARANTINED])
           | 'AllQuarantined' >> beam.Flatten()
           | 'WriteQuarantine' >> beam.io.WriteToText(
               os.path.join(quarantine.uri, QUARANTINE_PREFIX), file_name_suffix='.jsonl'))
      _ = ((parsed[_COUNTS], built[_COUNTS])
           | 'AllCounts' >> beam.Flatten()
           | 'SumCounts' >> beam.CombineGlobally(CountsCombineFn())
           | 'CountsToJson' >> beam.Map(lambda counts: json.dumps(counts, indent=1))
           | 'WriteCounts' >> beam.io.WriteToText(counts_path, shard_name_template='',
                                                  num_shards=1))

    with FileSystems.open(counts_path) as f:
      counts = json.loads(f.read().decode('utf-8'))
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME,
                                        write_split.to_file_format_str(
                                            example_gen_pb2.FORMAT_TFRECORDS_GZIP))
    for artifact in (examples, quarantine):
      _record_counts(artifact, counts)
    summary = format_counts(counts)
    logging.info('PlayLogExampleGen: %s; quarantine in %s', summary, quarantine.uri)
    print(f'PlayLogExampleGen: {summary}; quarantine in {quarantine.uri}', flush=True)
    _check_counts(counts, max_bad_fraction, quarantine.uri)
