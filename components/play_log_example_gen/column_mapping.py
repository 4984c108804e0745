"""Column mappings: how the columns of a play log become the canonical play-log columns.

A mapping is a dict from canonical column (user_id, item_id, ts, play_ms, duration_ms, play_rate,
intent, seq) to either the name of a source column or a transform spec (a dict with a 'transform'
key). Canonical columns a mapping leaves out are read from the source column of the same name, if
any; a source column a mapping names explicitly must be in every file (a file without it is an
error, not a file of default values). `seq` orders plays of one user with the same ts.
`column_mapping` parameters are JSON: the name of a shipped mapping ('canonical', 'mssd') or a
mapping dict.

Transforms:
  {'transform': 'first_true', 'columns': [[column, value], ...], 'default': value}
      the value paired with the first column whose flag is true, else `default`.
  {'transform': 'lookup_chain', 'lookups': [{'column': c, 'table': {source_value: value}}, ...],
   'default': value}
      the first lookup whose column's value is in its table, else `default`.
  {'transform': 'date_plus_offsets', 'date': column, 'offsets_ms': {column: ms_per_unit}}
      epoch ms of the date (YYYY-MM-DD, UTC) plus each offset column's value times its unit.
"""

import datetime
import json
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

CANONICAL_COLUMNS = ('user_id', 'item_id', 'ts', 'play_ms', 'duration_ms', 'play_rate', 'intent',
                     'seq')
REQUIRED_COLUMNS = ('user_id', 'item_id', 'ts')

# The Music Streaming Sessions Dataset (Spotify, sequential skip prediction challenge).
# - user: a listening session (the log has no user ids; a session is the history we can trust).
# - ts: the log has a date, an hour and a position in the session but no clock time; date + hour +
#   position seconds keeps the order within a session (positions are < 60 and hours never go back).
# - play_rate from the skip level: the flags are cumulative (skip_1 implies skip_2 implies skip_3),
#   so the first true one says how far the track was heard:
#     skip_1 (very briefly)         -> 0.05  negative
#     skip_2 (briefly)              -> 0.2   negative
#     skip_3 (most of it)           -> 0.5   neither
#     not_skipped (to the end)      -> 1.0   positive
#     all four false (17 of 1,180 rows: ended by fwdbtn/backbtn/endplay past the skip_3 point,
#     but not flagged complete)     -> 0.7   neither
# - intent: first hist_user_behavior_reason_start, then context_type:
#     clickrow, playbtn, backbtn (the listener chose this track)       -> on_demand
#     otherwise (trackdone, fwdbtn, appload, remote, ...: it came next) by context_type:
#       user_collection, catalog (the listener's library or chosen album/artist) -> on_demand
#       editorial_playlist, charts (a genre/mood/chart list the listener chose)  -> genre_request
#       radio, personalized_playlist (the service picks the songs)              -> recommend
MSSD_MAPPING = {
    'user_id': 'session_id',
    'item_id': 'track_id_clean',
    'ts': {
        'transform': 'date_plus_offsets',
        'date': 'date',
        'offsets_ms': {'hour_of_day': 3_600_000, 'session_position': 1_000},
    },
    'play_rate': {
        'transform': 'first_true',
        'columns': [['skip_1', 0.05], ['skip_2', 0.2], ['skip_3', 0.5], ['not_skipped', 1.0]],
        'default': 0.7,
    },
    'intent': {
        'transform': 'lookup_chain',
        'lookups': [
            {'column': 'hist_user_behavior_reason_start',
             'table': {'clickrow': 'on_demand', 'playbtn': 'on_demand', 'backbtn': 'on_demand'}},
            {'column': 'context_type',
             'table': {'user_collection': 'on_demand', 'catalog': 'on_demand',
                       'editorial_playlist': 'genre_request', 'charts': 'genre_request',
                       'radio': 'recommend', 'personalized_playlist': 'recommend'}},
        ],
        'default': 'on_demand',
    },
}

SHIPPED_MAPPINGS = {'canonical': {}, 'mssd': MSSD_MAPPING}

_TRUE_STRINGS = frozenset(('true', 'True', 'TRUE', '1', 't', 'T'))


class TransformError(ValueError):
  """A transform could not compute a canonical value from the row."""

  def __init__(self, message: str, column: str = ''):
    super().__init__(message)
    self.column = column


def _is_true(value: Any) -> bool:
  if isinstance(value, str):
    return value in _TRUE_STRINGS
  return bool(value)


def _first_true(spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Any]:
  pairs = [(column, value) for column, value in spec['columns']]
  default = spec.get('default')

  def first_true(row):
    for column, value in pairs:
      if _is_true(row.get(column)):
        return value
    return default
  return first_true


def _lookup_chain(spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Any]:
  lookups = [(lookup['column'], dict(lookup['table'])) for lookup in spec['lookups']]
  default = spec.get('default')

  def lookup_chain(row):
    for column, table in lookups:
      value = row.get(column)
      if value in table:
        return table[value]
    return default
  return lookup_chain


def _date_plus_offsets(spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Any]:
  date_column = spec['date']
  offsets = list(spec.get('offsets_ms', {}).items())
  epoch = datetime.date(1970, 1, 1)

  def date_plus_offsets(row):
    date = row.get(date_column)
    try:
      if not isinstance(date, datetime.date):
        date = datetime.date.fromisoformat(str(date))
      ts = (date - epoch).days * 86_400_000
      for column, unit_ms in offsets:
        ts += int(row.get(column)) * unit_ms
    except (TypeError, ValueError) as e:
      raise TransformError(f'date_plus_offsets: {e}') from e
    return ts
  return date_plus_offsets


_TRANSFORMS = {
    'first_true': (_first_true, lambda spec: [c for c, _ in spec['columns']]),
    'lookup_chain': (_lookup_chain, lambda spec: [lookup['column'] for lookup in spec['lookups']]),
    'date_plus_offsets': (_date_plus_offsets,
                          lambda spec: [spec['date']] + list(spec.get('offsets_ms', {}))),
}

ColumnSpec = Union[str, Mapping[str, Any]]


class ColumnMapping:
  """Maps a source row (dict of column -> value) to the canonical columns."""

  def __init__(self, mapping: Mapping[str, ColumnSpec], name: str = 'custom'):
    unknown = sorted(set(mapping) - set(CANONICAL_COLUMNS))
    if unknown:
      raise ValueError(f'column mapping {name!r} maps unknown canonical columns {unknown}; '
                       f'canonical columns are {list(CANONICAL_COLUMNS)}')
    self.name = name
    self._explicit = frozenset(mapping)
    self._specs: Dict[str, ColumnSpec] = {c: mapping.get(c, c) for c in CANONICAL_COLUMNS}
    self._readers: Dict[str, Callable[[Mapping[str, Any]], Any]] = {}
    for column, spec in self._specs.items():
      if isinstance(spec, str):
        self._readers[column] = (lambda source: lambda row: row.get(source))(spec)
      elif isinstance(spec, Mapping) and spec.get('transform') in _TRANSFORMS:
        self._readers[column] = _TRANSFORMS[spec['transform']][0](spec)
      else:
        raise ValueError(f'column mapping {name!r}: {column!r} must be a source column name or '
                         f'a transform spec with "transform" in {sorted(_TRANSFORMS)}, got {spec!r}')

  def source_columns(self, column: str) -> Sequence[str]:
    """Returns the source columns the canonical `column` is read from."""
    spec = self._specs[column]
    if isinstance(spec, str):
      return [spec]
    return _TRANSFORMS[spec['transform']][1](spec)

  def is_renaming(self, column: str) -> bool:
    """Whether `column` is read from one source column as it is (no transform)."""
    return isinstance(self._specs[column], str)

  def missing_columns(self, source_columns: Sequence[str]) -> Sequence[str]:
    """Returns the source columns a file must have and lacks: those of user_id, item_id and ts,
    and every source column the mapping names explicitly."""
    present = set(source_columns)
    needed = [c for c in CANONICAL_COLUMNS if c in REQUIRED_COLUMNS or c in self._explicit]
    return [s for c in needed for s in self.source_columns(c) if s not in present]

  def present_columns(self, source_columns: Sequence[str]) -> Sequence[str]:
    """Returns the canonical columns whose source columns are all in `source_columns`."""
    present = set(source_columns)
    return [c for c in CANONICAL_COLUMNS if all(s in present for s in self.source_columns(c))]

  def canonical_values(self, column: str, rows: Sequence[Mapping[str, Any]]
                       ) -> Sequence[Union[Any, TransformError]]:
    """Returns `column` of each source row, or the TransformError computing it raised."""
    reader = self._readers[column]
    values = []
    for row in rows:
      try:
        values.append(reader(row))
      except TransformError as e:
        values.append(TransformError(f'{column}: {e}', column))
    return values

  def canonical_row(self, row: Mapping[str, Any]) -> Dict[str, Any]:
    """Returns the canonical columns of `row` (None where absent); raises TransformError."""
    values = {}
    for column, reader in self._readers.items():
      try:
        values[column] = reader(row)
      except TransformError as e:
        raise TransformError(f'{column}: {e}', column) from e
    return values


def parse_column_mapping(value: Optional[Union[str, Mapping[str, Any]]]) -> ColumnMapping:
  """Returns the ColumnMapping for a `column_mapping` parameter (JSON or a shipped name)."""
  if value is None or value == '':
    value = 'canonical'
  if isinstance(value, str):
    stripped = value.strip()
    if stripped.startswith('{'):
      try:
        value = json.loads(stripped)
      except json.JSONDecodeError as e:
        raise ValueError(f'column_mapping is not valid JSON: {e}: {stripped[:200]!r}') from e
    else:
      name = json.loads(stripped) if stripped.startswith('"') else stripped
      if name not in SHIPPED_MAPPINGS:
        raise ValueError(f'unknown column mapping {name!r}; shipped mappings are '
                         f'{sorted(SHIPPED_MAPPINGS)}, or pass a JSON dict')
      return ColumnMapping(SHIPPED_MAPPINGS[name], name=name)
  if not isinstance(value, Mapping):
    raise ValueError(f'column_mapping must be a mapping name or a JSON dict, got {value!r}')
  return ColumnMapping(value)
