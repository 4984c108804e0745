"""Reads play-log files (CSV, JSON lines, Parquet; any of them gzipped) into validated plays.

A file is read in blocks of whole lines (CSV, JSON lines) or record batches (Parquet). Each block
is parsed by pyarrow and validated column-wise (play_columns.py); only the rows that check finds
suspect, and the blocks pyarrow cannot parse (a stray quote, a line that is not UTF-8, a field
count that does not match the header), go through the row-level rules below, which decide the
reason each bad row is quarantined with. So there is one set of rules, and the fast path is a
filter that passes only rows those rules accept unchanged.

One record is one physical line (CSV and JSON lines): a quote left open does not swallow the lines
after it, the line holding it is quarantined. Every non-blank line after the header is a row read:
rows read = rows used + rows quarantined, and blank lines are counted apart. `line` is the physical
line a row is on (the header is line 1 of a CSV), or the 1-based row number in a Parquet file.
"""

import csv
import dataclasses
import datetime
import io
import json
import math
import re
import unicodedata
from typing import Any, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import defaults
from components.play_log_example_gen import input_files
from components.play_log_example_gen import play_columns
from contract import features
from contract import settings

# Reasons a row is quarantined.
UNPARSEABLE_ROW = 'unparseable_row'  # wrong field count, open quote, bad JSON, not a JSON object
NON_UTF8 = 'non_utf8'
MISSING_USER_ID = 'missing_user_id'
MISSING_ITEM_ID = 'missing_item_id'
BAD_TYPE = 'bad_type'  # e.g. play_ms 'abc', user_id a list, seq missing in a log that has seq
BAD_TIMESTAMP = 'bad_timestamp'  # missing, unparseable or outside [min_ts_ms, max_ts_ms]
MISSING_PLAY_RATE = 'missing_play_rate'  # the log has play rates but this row has none
BAD_PLAY_RATE = 'bad_play_rate'  # not a number, outside [0, 1], or play_ms far past duration_ms
NEGATIVE_PLAY_MS = 'negative_play_ms'
BAD_DURATION = 'bad_duration'  # <= 0 or longer than MAX_DURATION_MS
DUPLICATE_EVENT = 'duplicate_event'  # same user, item and ts as an earlier row: the first is kept
# user_id, item_id or intent holds a line break or another control character
# (features.CONTROL_CHARACTER_RANGES): no vocabulary file can hold it as one term.
CONTROL_CHARACTER = 'control_character'
# ts outside the day of its date partition (ingest.off_day_plays 'quarantine').
OFF_PARTITION_DAY = 'off_partition_day'
# The same characters as a Python regular expression.
CONTROL_CHARACTERS = re.compile('[' + ''.join(
    f'\\U{low:08x}-\\U{high:08x}' for low, high in features.CONTROL_CHARACTER_RANGES) + ']')

# The columns of every block of validated plays.
PLAYS_SCHEMA = pa.schema([
    ('user_id', pa.string()), ('item_id', pa.string()), ('ts', pa.int64()),
    ('play_rate', pa.float64()), ('intent', pa.string()), ('seq', pa.int64()),
    ('file_index', pa.int32()), ('line', pa.int64())])


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


class Play(NamedTuple):
  user_id: str
  item_id: str
  ts: int  # epoch ms
  play_rate: float
  intent: str
  seq: int
  capped: bool  # play_ms was a little past duration_ms and the rate was recorded as 1.0


@dataclasses.dataclass(frozen=True)
class TimestampRule:
  """Timestamps are numbers in `unit` (or ISO-8601 strings) within [min_ms, max_ms] epoch ms."""
  min_ms: int
  max_ms: int
  unit: str = settings.TS_UNIT

  @property
  def ms_per_unit(self) -> int:
    return settings.TS_UNITS[self.unit]


@dataclasses.dataclass(frozen=True)
class RowValidator:
  """Turns the canonical values of one row into a Play, or raises BadRow.

  has_play_rate: the file has play-rate columns (else every row gets DEFAULT_PLAY_RATE).
  has_seq: the file has a tie-breaking `seq` column, which every row then needs.
  """
  timestamps: TimestampRule
  has_play_rate: bool = True
  has_seq: bool = False

  def play(self, values: Mapping[str, Any]) -> Play:
    user_id = _id_value(values.get('user_id'), 'user_id', MISSING_USER_ID)
    item_id = _id_value(values.get('item_id'), 'item_id', MISSING_ITEM_ID)
    ts = self._timestamp(values.get('ts'))
    play_rate, capped = (_play_rate(values) if self.has_play_rate
                         else (features.DEFAULT_PLAY_RATE, False))
    seq = _int_value(values.get('seq'), 'seq') if self.has_seq else 0
    return Play(user_id, item_id, ts, play_rate, _intent(values.get('intent')), seq, capped)

  def _timestamp(self, value: Any) -> int:
    rule = self.timestamps
    ts = _timestamp_ms(value, rule.ms_per_unit)
    if not rule.min_ms <= ts <= rule.max_ms:
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} = {_iso(ts)} {_OUTSIDE_BOUNDS}'
                   f'{_iso(rule.min_ms)}, {_iso(rule.max_ms)}] (ts_unit={rule.unit!r})')
    return ts


_INTEGER = re.compile(r'-?[0-9]+')
_OUTSIDE_BOUNDS = 'is outside ['


def depends_on_ts_bounds(row: QuarantinedRow) -> bool:
  """Whether the row was quarantined for a ts outside [min_ms, max_ms] (its detail names
  both): another bound could judge it otherwise."""
  return row.reason == BAD_TIMESTAMP and _OUTSIDE_BOUNDS in row.detail


def _missing(value: Any) -> bool:
  return value is None or (isinstance(value, str) and not value.strip())


def _without_control_characters(text: str, column: str) -> str:
  """text (an id or intent, stripped), or BadRow(CONTROL_CHARACTER) naming the character."""
  found = CONTROL_CHARACTERS.search(text)
  if found:
    char = found.group()
    name = unicodedata.name(char, '') or repr(char)[1:-1]
    raise BadRow(CONTROL_CHARACTER,
                 f'{column} {text!r} holds U+{ord(char):04X} {name} at {found.start()}: a line '
                 'break or control character, which no vocabulary file can hold in one term')
  return text


def _id_value(value: Any, column: str, missing_reason: str) -> str:
  if _missing(value):
    raise BadRow(missing_reason, f'{column} is missing')
  if isinstance(value, str):
    return _without_control_characters(value.strip(), column)
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  raise BadRow(BAD_TYPE, f'{column} must be a string, got {type(value).__name__} {value!r}')


def _int_value(value: Any, column: str) -> int:
  if _missing(value):
    raise BadRow(BAD_TYPE, f'{column} is missing')
  if isinstance(value, bool):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}')
  if isinstance(value, int):
    return value
  if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
    return int(value.strip())
  try:
    number = float(value) if not isinstance(value, str) else float(value.strip())
  except (TypeError, ValueError):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}') from None
  if not math.isfinite(number) or number != int(number):
    raise BadRow(BAD_TYPE, f'{column} must be an integer, got {value!r}')
  return int(number)


def _timestamp_ms(value: Any, ms_per_unit: int) -> int:
  """Returns epoch ms of a number or digit string (in the ts unit), an ISO-8601 string or a
  datetime."""
  if _missing(value):
    raise BadRow(BAD_TIMESTAMP, 'ts is missing')
  if isinstance(value, datetime.datetime):
    moment = value
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    if not math.isfinite(value) or value != int(value):
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} is not an integer')
    return int(value) * ms_per_unit
  elif isinstance(value, str):
    text = value.strip()
    if _INTEGER.fullmatch(text):
      return int(text) * ms_per_unit
    try:
      moment = datetime.datetime.fromisoformat(text)
    except ValueError:
      raise BadRow(BAD_TIMESTAMP, f'ts {value!r} is neither a number nor ISO-8601') from None
  else:
    raise BadRow(BAD_TIMESTAMP, f'ts must be a number or an ISO-8601 string, got {value!r}')
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp() * 1000)


def iso(ts: int) -> str:
  """An epoch ms as ISO-8601 UTC (or 'N ms' when it is no date)."""
  return _iso(ts)


def _iso(ts: int) -> str:
  try:
    return datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).isoformat()
  except (OverflowError, OSError, ValueError):
    return f'{ts} ms'


def _play_rate(values: Mapping[str, Any]) -> Tuple[float, bool]:
  """Returns (play rate in [0, 1], whether it was capped), given directly or as play_ms /
  duration_ms. Nothing out of range is clamped into a label: it is quarantined."""
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
    if not 0.0 <= play_rate <= 1.0:  # NaN fails this too
      raise BadRow(BAD_PLAY_RATE, f'play_rate {play_rate!r} is not in [0, 1]')
    return play_rate, False
  if has_durations:
    if play_ms > duration_ms * defaults.MAX_PLAY_OVERRUN:
      raise BadRow(BAD_PLAY_RATE, f'play_ms {play_ms} is more than {defaults.MAX_PLAY_OVERRUN:g}'
                   f' x duration_ms {duration_ms}')
    return min(1.0, play_ms / duration_ms), play_ms > duration_ms
  raise BadRow(MISSING_PLAY_RATE, 'neither play_rate nor play_ms and duration_ms are given')


def _intent(value: Any) -> str:
  """Returns the intent; intents outside features.INTENTS are kept (counted by the executor)."""
  if _missing(value):
    return features.DEFAULT_INTENT
  if not isinstance(value, str):
    raise BadRow(BAD_TYPE, f'intent must be a string, got {value!r}')
  return _without_control_characters(value.strip(), 'intent')


# --- Blocks of a file ----------------------------------------------------------------------------

class FileBlock(NamedTuple):
  """What one block of a file gave: its good plays, its bad rows and its counts."""
  plays: pa.Table  # PLAYS_SCHEMA
  quarantined: List[QuarantinedRow]
  rows_read: int
  blank_lines: int
  capped_play_rates: int
  default_play_rates: int


@dataclasses.dataclass(frozen=True)
class ReadSettings:
  input_format: str
  mapping: column_mapping_lib.ColumnMapping
  timestamps: TimestampRule


class _Lines(NamedTuple):
  """The physical lines of a block of bytes: number of the first, and each one's [start, end)
  without its line break."""
  first: int
  starts: np.ndarray
  ends: np.ndarray

  @classmethod
  def of(cls, data: bytes, first: int) -> '_Lines':
    buffer = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(buffer == ord('\n'))
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(data)]])
    if starts[-1] == len(data):  # the block ends with a line break: no line after it
      starts, ends = starts[:-1], ends[:-1]
    has_cr = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == ord('\r'))
    return cls(first, starts, ends - has_cr)

  def nonblank(self) -> np.ndarray:
    return np.flatnonzero(self.ends > self.starts)

  def text(self, data: bytes, index: int) -> bytes:
    return data[self.starts[index]:self.ends[index]]


def _line_blocks(stream, first_line: int) -> Iterator[Tuple[int, bytes]]:
  """Yields (number of its first line, block) for blocks of whole lines of a binary stream."""
  rest = b''
  while True:
    chunk = stream.read(defaults.READ_BLOCK_BYTES)
    if not chunk:
      break
    data = rest + chunk
    cut = data.rfind(b'\n') + 1
    if cut == 0:
      rest = data
      continue
    yield first_line, data[:cut]
    first_line += data.count(b'\n', 0, cut)
    rest = data[cut:]
  if rest:
    yield first_line, rest


class ByteRange(NamedTuple):
  """The part of a file one reader reads: the lines that start in [start, end) (end None: to
  the end of the file), whole, however far the last one reaches past end. newlines_before, the
  line breaks before start, numbers them: a split file's quarantined rows name their line as
  an unsplit file's do."""
  start: int = 0
  end: Optional[int] = None
  newlines_before: int = 0

  @property
  def whole_file(self) -> bool:
    return self.start == 0 and self.end is None


WHOLE_FILE = ByteRange()
# Bytes read at a time while looking for the line break that ends a range's first, foreign line.
_SCAN_BYTES = 64 << 10


class _RangeStream:
  """A binary stream of a file's bytes from a line start up to `end`, then to the end of the
  line holding byte end - 1: the lines that start before end, whole."""

  def __init__(self, stream, position: int, end: Optional[int]):
    self._stream = stream
    self._position = position
    self._end = end
    self._done = end is not None and position >= end

  def read(self, size: int) -> bytes:
    if self._done:
      return b''
    if self._end is None:
      return self._stream.read(size)
    if self._position < self._end:
      data = self._stream.read(min(size, self._end - self._position))
      self._position += len(data)
      # A line break just before end: the next line starts at end, in the next range.
      self._done = not data or (self._position == self._end and data.endswith(b'\n'))
      return data
    data = self._stream.read(size)  # the rest of the range's last line
    cut = data.find(b'\n')
    if cut >= 0 or not data:
      self._done = True
      return data[:cut + 1]
    return data


def _owned_lines(stream, byte_range: ByteRange, not_before: int) -> Tuple[int, _RangeStream]:
  """(number of its first line, the stream of its lines) of a range of a seekable stream: lines
  starting in [start, end) and not before not_before (a line start: after a CSV header)."""
  begin = max(byte_range.start, not_before)
  stream.seek(byte_range.start)
  newlines = stream.read(begin - byte_range.start).count(b'\n')
  if begin not in (0, not_before):
    stream.seek(begin - 1)
    if stream.read(1) != b'\n':  # begin is inside a line, which the range before reads
      while True:
        chunk = stream.read(_SCAN_BYTES)
        cut = chunk.find(b'\n')
        if cut >= 0 or not chunk:
          begin += cut + 1 if cut >= 0 else len(chunk)
          newlines += cut >= 0
          break
        begin += len(chunk)
  stream.seek(begin)
  return (1 + byte_range.newlines_before + newlines,
          _RangeStream(stream, begin, byte_range.end))


def count_newlines(path: str, start: int, end: int) -> int:
  """Line breaks in bytes [start, end) of a file (not gzipped)."""
  with input_files.open_decompressed(path) as stream:
    stream.seek(start)
    count = 0
    while start < end:
      chunk = stream.read(min(defaults.READ_BLOCK_BYTES, end - start))
      if not chunk:
        break
      count += chunk.count(b'\n')
      start += len(chunk)
    return count


def _raw_text(raw: bytes) -> str:
  return raw.decode('utf-8', errors='backslashreplace')


class _BlockBuilder:
  """Collects the plays and bad rows of one block from both the column-wise and row-level paths."""

  def __init__(self, path: str, file_index: int, validator: RowValidator,
               mapping: column_mapping_lib.ColumnMapping):
    self.path = path
    self.file_index = file_index
    self.validator = validator
    self.mapping = mapping
    self.tables: List[pa.Table] = []
    self.rows: List[Tuple[Play, int]] = []  # (play, line) from the row-level path
    self.quarantined: List[QuarantinedRow] = []
    self.rows_read = 0
    self.blank_lines = 0
    self.capped = 0

  def quarantine(self, line: int, raw: str, bad: BadRow) -> None:
    self.rows_read += 1
    self.quarantined.append(QuarantinedRow(self.path, int(line), bad.reason, bad.detail, raw))

  def add_row(self, line: int, raw: str, row: Mapping[str, Any]) -> None:
    """Validates one source row with the row-level rules."""
    try:
      play = self.validator.play(self.mapping.canonical_row(row))
    except BadRow as e:
      self.quarantine(line, raw, e)
      return
    except column_mapping_lib.TransformError as e:
      reason = {'ts': BAD_TIMESTAMP, 'play_rate': BAD_PLAY_RATE}.get(e.column, BAD_TYPE)
      self.quarantine(line, raw, BadRow(reason, str(e)))
      return
    self.rows_read += 1
    self.capped += play.capped
    self.rows.append((play, int(line)))

  def add_table(self, table: pa.Table, lines: np.ndarray, raw_of) -> None:
    """Validates a parsed block column-wise; rows it finds suspect go through add_row."""
    checked = play_columns.check(table, self.mapping, self.validator)
    good = checked.ok
    self.rows_read += int(good.sum())
    self.capped += int(checked.capped[good].sum())
    columns, mask = checked.columns, pa.array(good)
    self.tables.append(pa.table({
        'user_id': columns['user_id'].filter(mask), 'item_id': columns['item_id'].filter(mask),
        'ts': columns['ts'][good], 'play_rate': columns['play_rate'][good],
        'intent': columns['intent'].filter(mask), 'seq': columns['seq'][good],
        'file_index': np.full(int(good.sum()), self.file_index, np.int32),
        'line': lines[good]}, schema=PLAYS_SCHEMA))
    suspects = np.flatnonzero(~good)
    if len(suspects):
      rows = table.take(pa.array(suspects)).to_pylist()
      for index, row in zip(suspects, rows):
        self.add_row(lines[index], raw_of(index, row), row)

  def block(self) -> FileBlock:
    if self.rows:
      plays, lines = zip(*self.rows)
      self.tables.append(pa.table({
          'user_id': [p.user_id for p in plays], 'item_id': [p.item_id for p in plays],
          'ts': [p.ts for p in plays], 'play_rate': [p.play_rate for p in plays],
          'intent': [p.intent for p in plays], 'seq': [p.seq for p in plays],
          'file_index': [self.file_index] * len(plays), 'line': list(lines)},
          schema=PLAYS_SCHEMA))
    plays = (pa.concat_tables(self.tables) if self.tables
             else PLAYS_SCHEMA.empty_table())
    default_rates = 0 if self.validator.has_play_rate else plays.num_rows
    return FileBlock(plays, self.quarantined, self.rows_read, self.blank_lines, self.capped,
                     default_rates)


def _validator(settings: ReadSettings, path: str, columns: Sequence[str]) -> RowValidator:
  """Returns the validator of a file with these source columns; raises ValueError naming the file
  when it lacks a column the mapping needs."""
  missing = settings.mapping.missing_columns(columns)
  if missing:
    raise ValueError(f'{path}: no column {missing} needed by column mapping '
                     f'{settings.mapping.name!r}; the file has columns {list(columns)}')
  present = set(settings.mapping.present_columns(columns))
  has_play_rate = 'play_rate' in present or {'play_ms', 'duration_ms'} <= present
  return RowValidator(settings.timestamps, has_play_rate=has_play_rate, has_seq='seq' in present)


def _strip_bom(data: bytes) -> bytes:
  return data[3:] if data.startswith(b'\xef\xbb\xbf') else data


# --- CSV ---------------------------------------------------------------------------------------

def _csv_header(stream) -> Tuple[List[str], int, bytes]:
  """Returns (header columns, number of the header line, the bytes read after it)."""
  data = _strip_bom(stream.read(defaults.READ_BLOCK_BYTES))
  line = 1
  while data:
    end = data.find(b'\n')
    while end < 0:
      more = stream.read(defaults.READ_BLOCK_BYTES)
      if not more:
        end = len(data)
        break
      data += more
      end = data.find(b'\n')
    text = data[:end].decode('utf-8', errors='replace').strip()
    data = data[end + 1:]
    if text:
      return [column.strip() for column in next(csv.reader([text]))], line, data
    line += 1
  return [], line, b''


def _text_lines(builder: _BlockBuilder, data: bytes, lines: _Lines) -> Iterator[Tuple[int, str]]:
  """Yields (line number, text) of the block's non-blank lines for a row-level path; quarantines
  lines that are not UTF-8 and counts blank ones."""
  for index in range(len(lines.starts)):
    raw = lines.text(data, index)
    line = lines.first + index
    try:
      text = raw.decode('utf-8')
    except UnicodeDecodeError:
      builder.quarantine(line, _raw_text(raw), BadRow(NON_UTF8, 'the line is not valid UTF-8'))
      continue
    if text.strip():
      yield line, text
    else:
      builder.blank_lines += 1


def _csv_block_rows(builder: _BlockBuilder, data: bytes, lines: _Lines,
                    header: Sequence[str]) -> None:
  """The row-level path of a CSV block: each line parsed on its own."""
  for line, text in _text_lines(builder, data, lines):
    try:
      fields = next(csv.reader([text], strict=True))
    except csv.Error as e:
      builder.quarantine(line, text, BadRow(UNPARSEABLE_ROW, f'CSV error: {e}'))
      continue
    if len(fields) != len(header):
      builder.quarantine(line, text, BadRow(
          UNPARSEABLE_ROW, f'{len(fields)} fields, the header has {len(header)}'))
      continue
    builder.add_row(line, text, dict(zip(header, fields)))


def _parse_csv_block(data: bytes, header: Sequence[str], expected_rows: int) -> Optional[pa.Table]:
  """Returns the block parsed by pyarrow, every value a string, or None when pyarrow cannot
  parse it or a record spans lines (then the row-level path reads it)."""
  try:
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=list(header), use_threads=False,
                                        block_size=len(data) + 1),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={column: pa.string() for column in header},
            strings_can_be_null=False, quoted_strings_can_be_null=False))
  except (pa.ArrowInvalid, pa.ArrowTypeError):
    return None
  return table if table.num_rows == expected_rows else None


def _read_csv(stream, new_builder, settings: ReadSettings, path: str,
              byte_range: ByteRange) -> Iterator[FileBlock]:
  header, header_line, rest = _csv_header(stream)
  if not header:
    return
  validator = _validator(settings, path, header)
  if byte_range.whole_file:
    blocks = _line_blocks(_Prefixed(rest, stream), header_line + 1)
  else:  # the range's lines after the header; every range reads the header for its columns
    first, lines = _owned_lines(stream, byte_range, not_before=stream.tell() - len(rest))
    blocks = _line_blocks(lines, first)
  for first, data in blocks:
    builder = new_builder(validator)
    lines = _Lines.of(data, first)
    nonblank = lines.nonblank()
    table = _parse_csv_block(data, header, len(nonblank))
    if table is None:
      _csv_block_rows(builder, data, lines, header)
    else:
      builder.blank_lines += len(lines.starts) - len(nonblank)
      builder.add_table(table, lines.first + nonblank, _line_text(data, lines, nonblank))
    yield builder.block()


def _line_text(data: bytes, lines: _Lines, nonblank: np.ndarray):
  """Returns raw_of(row index, row) for add_table: the text of the row's line."""
  return lambda index, _: _raw_text(lines.text(data, nonblank[index]))


class _Prefixed:
  """A binary stream that first returns `prefix`, then the rest of `stream`."""

  def __init__(self, prefix: bytes, stream):
    self._prefix = prefix
    self._stream = stream

  def read(self, size: int) -> bytes:
    if self._prefix:
      head, self._prefix = self._prefix, b''
      return head
    return self._stream.read(size)


# --- JSON lines --------------------------------------------------------------------------------

def _json_keys_present(path: str, keys: Sequence[str]) -> List[str]:
  """Returns the keys that occur as a JSON key anywhere in the file (one streaming pass), so the
  play-rate and seq columns are decided by the whole file, not by its first object."""
  with input_files.open_decompressed(path) as stream:
    return _keys_in_blocks(_line_blocks(stream, 1), keys)


def _keys_in_blocks(blocks: Iterator[Tuple[int, bytes]], keys: Sequence[str]) -> List[str]:
  patterns = {key: re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:') for key in keys}
  found = set()
  for _, data in blocks:
    found.update(k for k, pattern in patterns.items() if k not in found and pattern.search(data))
    if len(found) == len(keys):
      break
  return sorted(found)


def _jsonl_block_rows(builder: _BlockBuilder, data: bytes, lines: _Lines) -> None:
  """The row-level path of a JSON-lines block."""
  for line, text in _text_lines(builder, data, lines):
    try:
      row = json.loads(text)
    except json.JSONDecodeError as e:
      builder.quarantine(line, text, BadRow(UNPARSEABLE_ROW, f'bad JSON: {e}'))
      continue
    if not isinstance(row, dict):
      builder.quarantine(line, text, BadRow(UNPARSEABLE_ROW, 'not a JSON object'))
      continue
    builder.add_row(line, text, row)


def _parse_jsonl_block(data: bytes, expected_rows: int) -> Optional[pa.Table]:
  try:
    table = pa_json.read_json(
        io.BytesIO(data), read_options=pa_json.ReadOptions(use_threads=False,
                                                           block_size=len(data) + 1))
  except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
    return None
  return table if table.num_rows == expected_rows else None


def json_source_keys(mapping: column_mapping_lib.ColumnMapping) -> List[str]:
  """The JSON keys the mapping reads."""
  return sorted({s for c in column_mapping_lib.CANONICAL_COLUMNS
                 for s in mapping.source_columns(c)})


def json_keys_in_range(path: str, byte_range: ByteRange, keys: Sequence[str]) -> List[str]:
  """The keys that occur as a JSON key in the range's lines: their union over a file's ranges
  is _json_keys_present of the file."""
  with input_files.open_decompressed(path) as stream:
    first, lines = _owned_lines(stream, byte_range, not_before=0)
    return _keys_in_blocks(_line_blocks(lines, first), keys)


def _read_jsonl(stream, new_builder, settings: ReadSettings, path: str, byte_range: ByteRange,
                json_keys: Optional[Sequence[str]] = None) -> Iterator[FileBlock]:
  if json_keys is None:
    json_keys = _json_keys_present(path, json_source_keys(settings.mapping))
  validator = _validator(settings, path, json_keys)
  first, lines = ((1, stream) if byte_range.whole_file
                  else _owned_lines(stream, byte_range, not_before=0))
  blocks = _line_blocks(lines, first)
  for first, data in blocks:
    if first == 1:
      data = _strip_bom(data)
    builder = new_builder(validator)
    lines = _Lines.of(data, first)
    nonblank = lines.nonblank()
    table = _parse_jsonl_block(data, len(nonblank))
    if table is None:
      _jsonl_block_rows(builder, data, lines)
    else:
      builder.blank_lines += len(lines.starts) - len(nonblank)
      builder.add_table(table, lines.first + nonblank, _line_text(data, lines, nonblank))
    yield builder.block()


# --- Parquet -----------------------------------------------------------------------------------

def _read_parquet(stream, new_builder, settings: ReadSettings, path: str,
                  byte_range: ByteRange) -> Iterator[FileBlock]:
  del byte_range  # a Parquet file is read whole
  parquet = pq.ParquetFile(stream if stream.seekable() else io.BytesIO(stream.read()))
  validator = _validator(settings, path, parquet.schema_arrow.names)
  first_row = 1
  for batch in parquet.iter_batches(batch_size=defaults.PARQUET_BATCH_ROWS):
    builder = new_builder(validator)
    table = pa.Table.from_batches([batch])
    rows = np.arange(first_row, first_row + table.num_rows)
    builder.add_table(table, rows,
                      lambda _, row: json.dumps(row, default=str, ensure_ascii=False))
    first_row += table.num_rows
    yield builder.block()


_READERS = {'csv': _read_csv, 'jsonl': _read_jsonl, 'parquet': _read_parquet}


def read_file(path: str, file_index: int, settings: ReadSettings,
              byte_range: ByteRange = WHOLE_FILE,
              json_keys: Optional[Sequence[str]] = None) -> Iterator[FileBlock]:
  """Yields the blocks of one file, or of the lines of one byte range of a CSV or JSON-lines
  file that is not gzipped (a JSON-lines range needs json_keys: the file's, from
  json_keys_in_range). Raises ValueError naming the file when it cannot be read at all
  (truncated gzip, not Parquet, a column the mapping needs is missing)."""
  def new_builder(validator: RowValidator) -> _BlockBuilder:
    return _BlockBuilder(path, file_index, validator, settings.mapping)
  extra = {'json_keys': json_keys} if settings.input_format == 'jsonl' else {}
  try:
    with input_files.open_decompressed(path) as stream:
      yield from _READERS[settings.input_format](stream, new_builder, settings, path,
                                                 byte_range, **extra)
  except (EOFError, OSError, pa.ArrowException, ValueError) as e:
    if str(e).startswith(path):
      raise
    raise ValueError(f'{path}: cannot read it as {settings.input_format}: '
                     f'{type(e).__name__}: {e}') from e
