"""Reads play-log files (CSV, JSON lines, Parquet; gzip allowed) and validates every row.

Each row becomes either a play `(user_id, (ts, file_index, line, item_id, play_rate, intent))` or a
`BadRow` with a reason from REASONS. `line` is the physical line a CSV/JSON-lines record starts on
(header = line 1 for CSV), or the 1-based row number in a Parquet file.
"""

import csv
import dataclasses
import datetime
import gzip
import json
import math
from typing import Any, Iterator, Mapping, Sequence, Tuple, Union

from apache_beam.io.filesystems import FileSystems
import pyarrow as pa
import pyarrow.parquet as pq

from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import defaults
from transform import features

# Reasons a row is quarantined.
UNPARSEABLE_ROW = 'unparseable_row'  # wrong field count, bad JSON, not a JSON object
NON_UTF8 = 'non_utf8'
MISSING_USER_ID = 'missing_user_id'
MISSING_ITEM_ID = 'missing_item_id'
BAD_TYPE = 'bad_type'  # e.g. play_ms 'abc', user_id a list
BAD_TIMESTAMP = 'bad_timestamp'  # missing, unparseable, before 2000 or in the future
MISSING_PLAY_RATE = 'missing_play_rate'  # the log has play rates but this row has none
BAD_PLAY_RATE = 'bad_play_rate'  # not a number
NEGATIVE_PLAY_MS = 'negative_play_ms'
BAD_DURATION = 'bad_duration'  # <= 0 or longer than MAX_DURATION_MS
UNKNOWN_INTENT = 'unknown_intent'  # not one of features.INTENTS
DUPLICATE_EVENT = 'duplicate_event'  # same user, item and ts as an earlier row: the first is kept
REASONS = (UNPARSEABLE_ROW, NON_UTF8, MISSING_USER_ID, MISSING_ITEM_ID, BAD_TYPE, BAD_TIMESTAMP,
           MISSING_PLAY_RATE, BAD_PLAY_RATE, NEGATIVE_PLAY_MS, BAD_DURATION, UNKNOWN_INTENT,
           DUPLICATE_EVENT)

Play = Tuple[int, int, int, str, float, str]  # ts, file_index, line, item_id, play_rate, intent
_INTENTS = frozenset(features.INTENTS)


class BadRow(Exception):
  """A row that cannot be used, with the reason it is quarantined."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f'{reason}: {detail}')
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class QuarantinedRow:
  source: str
  line: int
  reason: str
  detail: str
  raw: str

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class RowValidator:
  """Turns the canonical values of one row into a play, or raises BadRow."""
  min_ts: int
  max_ts: int
  has_play_rate: bool = True

  def play(self, values: Mapping[str, Any]) -> Tuple[str, int, str, float, str]:
    user_id = _id_value(values.get('user_id'), 'user_id', MISSING_USER_ID)
    item_id = _id_value(values.get('item_id'), 'item_id', MISSING_ITEM_ID)
    ts = self._timestamp(values.get('ts'))
    play_rate = _play_rate(values) if self.has_play_rate else features.DEFAULT_PLAY_RATE
    return user_id, ts, item_id, play_rate, _intent(values.get('intent'))

  def _timestamp(self, value: Any) -> int:
    ts = _timestamp_ms(value)
    if not self.min_ts <= ts <= self.max_ts:
      hint = ' (epoch seconds instead of ms?)' if 0 < ts < self.min_ts else ''
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} = {_iso(ts)} is outside '
                   f'[{_iso(self.min_ts)}, {_iso(self.max_ts)}]{hint}')
    return ts


def _missing(value: Any) -> bool:
  return value is None or (isinstance(value, str) and not value.strip())


def _id_value(value: Any, column: str, missing_reason: str) -> str:
  if _missing(value):
    raise BadRow(missing_reason, f'{column} is missing')
  if isinstance(value, str):
    return value.strip()
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  raise BadRow(BAD_TYPE, f'{column} must be a string, got {type(value).__name__} {value!r}')


def _int_value(value: Any, column: str) -> int:
  if isinstance(value, bool):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}')
  if isinstance(value, int):
    return value
  try:
    number = float(value) if not isinstance(value, str) else float(value.strip())
  except (TypeError, ValueError):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}') from None
  if not math.isfinite(number) or number != int(number):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}')
  return int(number)


def _timestamp_ms(value: Any) -> int:
  """Returns epoch ms of an int (epoch ms), a digit string, an ISO-8601 string or a datetime."""
  if _missing(value):
    raise BadRow(BAD_TIMESTAMP, 'ts is missing')
  if isinstance(value, datetime.datetime):
    moment = value
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    if not math.isfinite(value) or value != int(value):
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} is not an integer number of epoch ms')
    return int(value)
  elif isinstance(value, str):
    text = value.strip()
    if text.lstrip('-').isdigit():
      return int(text)
    try:
      moment = datetime.datetime.fromisoformat(text)
    except ValueError:
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} is neither epoch ms nor ISO-8601') from None
  else:
    raise BadRow(BAD_TIMESTAMP, f'ts must be epoch ms or an ISO-8601 string, got {value!r}')
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp() * 1000)


def _iso(ts: int) -> str:
  try:
    return datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).isoformat()
  except (OverflowError, OSError, ValueError):
    return f'{ts} ms'


def _play_rate(values: Mapping[str, Any]) -> float:
  """Returns the play rate in [0, 1], given directly or as play_ms / duration_ms."""
  play_ms, duration_ms = values.get('play_ms'), values.get('duration_ms')
  has_durations = not _missing(play_ms) and not _missing(duration_ms)
  if has_durations:
    play_ms = _int_value(play_ms, 'play_ms')
    duration_ms = _int_value(duration_ms, 'duration_ms')
    if play_ms < 0:
      raise BadRow(NEGATIVE_PLAY_MS, f'play_ms {play_ms} < 0')
    if not 0 < duration_ms <= defaults.MAX_DURATION_MS:
      raise BadRow(BAD_DURATION,
                   f'duration_ms {duration_ms} is not in (0, {defaults.MAX_DURATION_MS}]')
  play_rate = values.get('play_rate')
  if not _missing(play_rate):
    try:
      if isinstance(play_rate, bool):
        raise ValueError
      play_rate = float(play_rate)
    except (TypeError, ValueError):
      raise BadRow(BAD_PLAY_RATE, f'play_rate {play_rate!r} is not a number') from None
    if math.isnan(play_rate):
      raise BadRow(BAD_PLAY_RATE, 'play_rate is NaN')
    return min(1.0, max(0.0, play_rate))
  if has_durations:
    return min(1.0, play_ms / duration_ms)
  raise BadRow(MISSING_PLAY_RATE, 'neither play_rate nor play_ms and duration_ms are given')


def _intent(value: Any) -> str:
  if _missing(value):
    return features.DEFAULT_INTENT
  if not isinstance(value, str):
    raise BadRow(BAD_TYPE, f'intent must be a string, got {value!r}')
  intent = value.strip()
  if intent not in _INTENTS:
    raise BadRow(UNKNOWN_INTENT, f'intent {value!r} is not one of {list(features.INTENTS)}')
  return intent


# --- File readers: yield (line, raw text, source row dict or BadRow) ----------------------------

Record = Tuple[int, str, Union[Mapping[str, Any], BadRow]]


def _open_binary(path: str):
  if FileSystems.get_scheme(path) is None:
    return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')
  return FileSystems.open(path)  # infers gzip from the '.gz' suffix


def _raw_text(raw: bytes) -> str:
  return raw.decode('utf-8', errors='backslashreplace').rstrip('\r\n')


class _DecodedLines:
  """Iterates the UTF-8 lines of a binary stream, setting aside lines that are not UTF-8."""

  def __init__(self, stream):
    self._stream = stream
    self.line = 0
    self.non_utf8 = []  # (line, raw bytes) not yet reported
    self.record_start = 0
    self.record_text = []

  def start_record(self):
    self.record_start = 0
    self.record_text = []

  def __iter__(self):
    for raw in iter(self._stream.readline, b''):
      self.line += 1
      try:
        text = raw.decode('utf-8')
      except UnicodeDecodeError:
        self.non_utf8.append((self.line, raw))
        continue
      if not self.record_start:
        self.record_start = self.line
      self.record_text.append(text)
      yield text


def _non_utf8_records(lines: _DecodedLines) -> Iterator[Record]:
  for line, raw in lines.non_utf8:
    yield line, _raw_text(raw), BadRow(NON_UTF8, 'the line is not valid UTF-8')
  lines.non_utf8.clear()


def read_csv(stream) -> Tuple[Sequence[str], Iterator[Record]]:
  """Returns the header of a CSV stream and its records."""
  lines = _DecodedLines(stream)
  reader = csv.reader(lines)
  header = []
  for header in reader:
    if header:
      break
  header = [column.strip() for column in header]
  prefix = list(_non_utf8_records(lines))

  def records():
    yield from prefix
    while True:
      lines.start_record()
      try:
        fields = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        yield from _non_utf8_records(lines)
        yield (lines.record_start or lines.line, ''.join(lines.record_text).rstrip('\r\n'),
               BadRow(UNPARSEABLE_ROW, f'CSV error: {e}'))
        continue
      yield from _non_utf8_records(lines)
      if not fields:
        continue  # blank line
      raw = ''.join(lines.record_text).rstrip('\r\n')
      if len(fields) != len(header):
        yield (lines.record_start, raw,
               BadRow(UNPARSEABLE_ROW, f'{len(fields)} fields, the header has {len(header)}'))
      else:
        yield lines.record_start, raw, dict(zip(header, fields))
    yield from _non_utf8_records(lines)
  return header, records()


def read_jsonl(stream) -> Iterator[Record]:
  for line, raw in enumerate(iter(stream.readline, b''), start=1):
    try:
      text = raw.decode('utf-8')
    except UnicodeDecodeError:
      yield line, _raw_text(raw), BadRow(NON_UTF8, 'the line is not valid UTF-8')
      continue
    if not text.strip():
      continue
    try:
      row = json.loads(text)
    except json.JSONDecodeError as e:
      yield line, text.rstrip('\r\n'), BadRow(UNPARSEABLE_ROW, f'bad JSON: {e}')
      continue
    if not isinstance(row, dict):
      yield line, text.rstrip('\r\n'), BadRow(UNPARSEABLE_ROW, 'not a JSON object')
      continue
    yield line, text.rstrip('\r\n'), row


def read_parquet(stream) -> Tuple[Sequence[str], Iterator[Record]]:
  table = pq.read_table(pa.BufferReader(stream.read()))

  def records():
    row_number = 0
    for batch in table.to_batches(max_chunksize=65536):
      for row in batch.to_pylist():
        row_number += 1
        yield row_number, json.dumps(row, default=str, ensure_ascii=False), row
  return table.column_names, records()


def read_file(path: str, input_format: str,
              mapping: column_mapping_lib.ColumnMapping) -> Tuple[bool, Iterator[Record]]:
  """Returns (whether the file has play rates, its records); raises ValueError on a bad header."""
  stream = _open_binary(path)
  if input_format == 'csv':
    columns, records = read_csv(stream)
    if not columns:
      return True, iter(())  # an empty file: no rows
  elif input_format == 'parquet':
    columns, records = read_parquet(stream)
  elif input_format == 'jsonl':
    records = read_jsonl(stream)
    first = next(records, None)
    if first is None:
      return True, iter(())
    records = _prepend(first, records)
    # A JSON-lines log is judged by its first object's keys; later rows lacking a play rate are
    # then quarantined as missing_play_rate rather than given the default.
    columns = list(first[2]) if isinstance(first[2], dict) else None
    if columns is None:
      return True, records
  else:
    raise ValueError(f'input_format must be one of {defaults.INPUT_FORMATS}, got {input_format!r}')
  if input_format != 'jsonl':
    missing = mapping.missing_required_columns(columns)
    if missing:
      raise ValueError(f'{path}: no column {missing} needed by column mapping {mapping.name!r} '
                       f'for user_id, item_id and ts; the file has columns {list(columns)}')
  return mapping.has_play_rate(columns), records


def _prepend(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
  yield first
  yield from rest


def read_plays(path: str, file_index: int, input_format: str,
               mapping: column_mapping_lib.ColumnMapping, min_ts: int, max_ts: int
               ) -> Iterator[Union[Tuple[str, Play], QuarantinedRow]]:
  """Yields (user_id, play) for every good row of a file and a QuarantinedRow for every bad one."""
  has_play_rate, records = read_file(path, input_format, mapping)
  validator = RowValidator(min_ts=min_ts, max_ts=max_ts, has_play_rate=has_play_rate)
  for line, raw, row in records:
    if not isinstance(row, BadRow):
      try:
        user_id, ts, item_id, play_rate, intent = validator.play(mapping.canonical_row(row))
        yield user_id, (ts, file_index, line, item_id, play_rate, intent)
        continue
      except BadRow as e:
        row = e
      except column_mapping_lib.TransformError as e:
        reason = {'ts': BAD_TIMESTAMP, 'play_rate': BAD_PLAY_RATE}.get(e.column, BAD_TYPE)
        row = BadRow(reason, str(e))
    yield QuarantinedRow(source=path, line=line, reason=row.reason, detail=row.detail, raw=raw)
