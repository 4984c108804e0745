"""Column-wise validation of a parsed block of play-log rows: the fast path of play_log_reader.

`check` computes, for a whole pyarrow table at once, each row's canonical values and whether the
row certainly passes play_log_reader.RowValidator with exactly these values. It is conservative:
any row it is not sure of (an ISO-8601 timestamp, a value that needs the row-level rules to be
judged, a column of an unexpected type) is marked not ok, and the reader sends it through the
row-level rules, which accept it or quarantine it with its reason. So the rules live in one place
and this module only has to be a correct filter.
"""

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.play_log_example_gen import column_mapping as column_mapping_lib
from components.play_log_example_gen import defaults
from contract import features

# What int() of a stripped digit string gives for sure (int64 has 18 safe decimal digits).
_INT_PATTERN = r'^\s*-?\d{1,18}\s*$'
# Plain decimal numbers; 'nan', 'inf' and the like go to the row-level rules.
_FLOAT_PATTERN = r'^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,3})?\s*$'


class Checked(NamedTuple):
  """The canonical values of every row (meaningful where ok) and which rows passed."""
  ok: np.ndarray  # bool [rows]
  capped: np.ndarray  # bool [rows]: play_ms a little past duration_ms, rate recorded as 1.0
  columns: Dict[str, object]  # user_id, item_id, intent: pa.StringArray; ts, seq: int64;
  #                              play_rate: float64 (numpy arrays)


def _numpy_bool(array: pa.Array) -> np.ndarray:
  return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _is_missing(array: Optional[pa.Array], rows: int) -> np.ndarray:
  """Null or blank: what the row-level rules call missing."""
  if array is None or pa.types.is_null(array.type):
    return np.ones(rows, bool)
  missing = ~_numpy_bool(pc.is_valid(array))
  if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
    missing |= _numpy_bool(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(array)), 0))
  return missing


# features.CONTROL_CHARACTER_RANGES as an RE2 character class (pyarrow's regular expressions).
_CONTROL_CHARACTERS = '[' + ''.join(
    f'\\x{{{low:x}}}-\\x{{{high:x}}}' for low, high in features.CONTROL_CHARACTER_RANGES) + ']'


def _has_control_characters(array: pa.Array) -> np.ndarray:
  """Rows whose (unstripped) string holds a control character: the row-level rules judge them."""
  return _numpy_bool(pc.match_substring_regex(array, _CONTROL_CHARACTERS))


def _ids(array: Optional[pa.Array], rows: int) -> Tuple[pa.Array, np.ndarray]:
  """Returns (ids as strings, ok): strings stripped, integers as decimal strings."""
  if array is not None and (pa.types.is_string(array.type)
                            or pa.types.is_large_string(array.type)):
    return (pc.utf8_trim_whitespace(array).cast(pa.string()),
            ~_is_missing(array, rows) & ~_has_control_characters(array))
  if array is not None and pa.types.is_integer(array.type):
    return array.cast(pa.string()), _numpy_bool(pc.is_valid(array))
  return pa.nulls(rows, pa.string()), np.zeros(rows, bool)


def _integers(array: Optional[pa.Array], rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (int64 values, ok) of integers given as ints, integral floats or digit strings."""
  zeros = np.zeros(rows, np.int64)
  if array is None:
    return zeros, np.zeros(rows, bool)
  kind = array.type
  valid = _numpy_bool(pc.is_valid(array))
  if pa.types.is_integer(kind):
    return pc.fill_null(array, 0).cast(pa.int64()).to_numpy(zero_copy_only=False), valid
  if pa.types.is_floating(kind):
    values = pc.fill_null(array, 0).cast(pa.float64()).to_numpy(zero_copy_only=False)
    ok = valid & np.isfinite(values) & (np.abs(values) < 2.0 ** 53)
    ok &= np.floor(np.where(ok, values, 0)) == np.where(ok, values, 0)
    return np.where(ok, values, 0).astype(np.int64), ok
  if pa.types.is_string(kind) or pa.types.is_large_string(kind):
    ok = _numpy_bool(pc.match_substring_regex(array, _INT_PATTERN))
    text = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(array), '0')
    return text.cast(pa.int64()).to_numpy(zero_copy_only=False), ok
  return zeros, np.zeros(rows, bool)


def _floats(array: Optional[pa.Array], rows: int) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (float64 values, ok) of numbers given as numbers or plain decimal strings."""
  if array is None:
    return np.zeros(rows), np.zeros(rows, bool)
  kind = array.type
  if pa.types.is_integer(kind) or pa.types.is_floating(kind):
    values = pc.fill_null(array, 0).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values, _numpy_bool(pc.is_valid(array)) & np.isfinite(values)
  if pa.types.is_string(kind) or pa.types.is_large_string(kind):
    ok = _numpy_bool(pc.match_substring_regex(array, _FLOAT_PATTERN))
    text = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(array), '0')
    values = text.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values, ok & np.isfinite(values)
  return np.zeros(rows), np.zeros(rows, bool)


def _timestamps(array: Optional[pa.Array], rows: int, validator) -> Tuple[np.ndarray, np.ndarray]:
  rule = validator.timestamps
  if array is not None and pa.types.is_timestamp(array.type):  # stored as UTC whatever its tz
    units = pc.fill_null(array, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)
    unit = array.type.unit
    values = units * 1000 if unit == 's' else units // {'ms': 1, 'us': 1000, 'ns': 10**6}[unit]
    ok = _numpy_bool(pc.is_valid(array))
  else:
    values, ok = _integers(array, rows)
    ok &= np.abs(values) < np.iinfo(np.int64).max // rule.ms_per_unit
    values = np.where(ok, values, 0) * rule.ms_per_unit
  ok &= (values >= rule.min_ms) & (values <= rule.max_ms)
  return values, ok


def _play_rates(columns: Dict[str, Optional[pa.Array]], rows: int
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns (play rate, ok, capped) by the row-level rules' two clean cases: a play rate in
  [0, 1] and no durations, or durations and no play rate."""
  given_rate = ~_is_missing(columns['play_rate'], rows)
  given_durations = (~_is_missing(columns['play_ms'], rows)
                     & ~_is_missing(columns['duration_ms'], rows))
  rate, rate_ok = _floats(columns['play_rate'], rows)
  rate_ok &= given_rate & ~given_durations & (rate >= 0.0) & (rate <= 1.0)
  play_ms, play_ok = _integers(columns['play_ms'], rows)
  duration_ms, duration_ok = _integers(columns['duration_ms'], rows)
  durations_ok = (~given_rate & given_durations & play_ok & duration_ok & (play_ms >= 0)
                  & (duration_ms > 0) & (duration_ms <= defaults.MAX_DURATION_MS))
  durations_ok &= play_ms <= duration_ms * defaults.MAX_PLAY_OVERRUN
  ratio = play_ms / np.where(durations_ok, duration_ms, 1)
  play_rate = np.where(rate_ok, rate, np.minimum(1.0, ratio))
  return play_rate, rate_ok | durations_ok, durations_ok & (play_ms > duration_ms)


def _intents(array: Optional[pa.Array], rows: int) -> Tuple[pa.Array, np.ndarray]:
  """Returns (intents, ok): stripped strings, missing ones the default intent."""
  if array is None or pa.types.is_null(array.type):
    return pa.array([features.DEFAULT_INTENT] * rows, pa.string()), np.ones(rows, bool)
  if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
    intents = pc.if_else(pa.array(_is_missing(array, rows)), features.DEFAULT_INTENT,
                         pc.utf8_trim_whitespace(array))
    return intents.cast(pa.string()), ~_has_control_characters(array)
  return pa.nulls(rows, pa.string()), np.zeros(rows, bool)


def _canonical_columns(table: pa.Table, mapping: column_mapping_lib.ColumnMapping
                       ) -> Tuple[Dict[str, Optional[pa.Array]], np.ndarray]:
  """Returns {canonical column: array or None when absent} and the rows a transform failed on."""
  rows = table.num_rows
  failed = np.zeros(rows, bool)
  columns = {}
  for column in column_mapping_lib.CANONICAL_COLUMNS:
    sources = mapping.source_columns(column)
    if not all(source in table.column_names for source in sources):
      columns[column] = None
    elif mapping.is_renaming(column):
      columns[column] = table.column(sources[0]).combine_chunks()
    else:  # a transform: computed row by row
      values = mapping.canonical_values(column, table.select(sources).to_pylist())
      errors = np.array([isinstance(v, column_mapping_lib.TransformError) for v in values])
      failed |= errors
      clean = [None if error else v for v, error in zip(values, errors)]
      try:
        columns[column] = pa.array(clean)
      except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: the row-level rules judge
        columns[column] = None
        failed[:] = True
  return columns, failed


def check(table: pa.Table, mapping: column_mapping_lib.ColumnMapping, validator) -> Checked:
  """Validates a parsed block column-wise (validator: a play_log_reader.RowValidator)."""
  rows = table.num_rows
  columns, failed = _canonical_columns(table, mapping)
  user_ids, user_ok = _ids(columns['user_id'], rows)
  item_ids, item_ok = _ids(columns['item_id'], rows)
  ts, ts_ok = _timestamps(columns['ts'], rows, validator)
  if validator.has_play_rate:
    play_rate, rate_ok, capped = _play_rates(columns, rows)
  else:
    play_rate = np.full(rows, features.DEFAULT_PLAY_RATE)
    rate_ok, capped = np.ones(rows, bool), np.zeros(rows, bool)
  intents, intent_ok = _intents(columns['intent'], rows)
  if validator.has_seq:
    seq, seq_ok = _integers(columns['seq'], rows)
  else:
    seq, seq_ok = np.zeros(rows, np.int64), np.ones(rows, bool)
  ok = ~failed & user_ok & item_ok & ts_ok & rate_ok & intent_ok & seq_ok
  return Checked(ok, capped, {'user_id': user_ids, 'item_id': item_ids, 'ts': ts,
                              'play_rate': play_rate, 'intent': intents, 'seq': seq})
