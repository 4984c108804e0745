"""Shard writers for the play log: CSV, JSON lines (both optionally gzip) and Parquet.

Text lines are assembled column-wise with Arrow compute kernels (no Python loop per row), which
is what makes the generator fast. Output bytes depend only on the rows, never on how the rows
were grouped into chunks, and gzip headers carry no name or time, so runs are byte-reproducible.
"""

import gzip
from typing import Dict, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contract import features

FORMATS = ('csv', 'jsonl', 'parquet')
# Raw-log columns that have no tf.Example feature of the same name.
PLAY_MS = 'play_ms'
DURATION_MS = 'duration_ms'
PLAY_FIELDS = (PLAY_MS, features.PLAY_RATE)
# Play rates are written with this many decimals (1e-4 of a 6-minute song is 36 ms).
PLAY_RATE_DECIMALS = 4


def columns(play_field: str) -> Sequence[str]:
  """Column order of the written log (the canonical schema of the design notes)."""
  return (features.USER_ID, features.ITEM_ID, features.TS, play_field, DURATION_MS,
          features.INTENT)


def shard_name(index: int, num_shards: int, fmt: str, use_gzip: bool) -> str:
  suffix = {'csv': 'csv', 'jsonl': 'jsonl', 'parquet': 'parquet'}[fmt]
  return f'plays-{index:05d}-of-{num_shards:05d}.{suffix}' + ('.gz' if use_gzip else '')


def arrow_schema(play_field: str) -> pa.Schema:
  play_type = pa.float64() if play_field == features.PLAY_RATE else pa.int64()
  types = (pa.string(), pa.string(), pa.int64(), play_type, pa.int64(), pa.string())
  return pa.schema(list(zip(columns(play_field), types)))


def _as_string(values: pa.Array) -> pa.Array:
  return pc.cast(values, pa.string())


def _play_rate_strings(play_rate: np.ndarray) -> pa.Array:
  # Fixed decimals ("1.0000", "0.0500"), so every value reads back as a float, never an int.
  scaled = np.floor(play_rate * 10**PLAY_RATE_DECIMALS + 0.5).astype(np.int64)
  whole = _as_string(pa.array(scaled // 10**PLAY_RATE_DECIMALS))
  fraction = pc.utf8_lpad(_as_string(pa.array(scaled % 10**PLAY_RATE_DECIMALS)),
                          width=PLAY_RATE_DECIMALS, padding='0')
  return pc.binary_join_element_wise(whole, '.', fraction, '')


def _play_strings(table: pa.Table, play_field: str) -> pa.Array:
  if play_field == features.PLAY_RATE:
    return _play_rate_strings(table.column(play_field).to_numpy())
  return _as_string(table.column(play_field).combine_chunks())


def _joined_bytes(lines: pa.Array) -> bytes:
  """The concatenated values of a string array (each value already ends in a newline)."""
  offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:
                                                               lines.offset + len(lines) + 1]
  return lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]


def _col(table: pa.Table, name: str) -> pa.Array:
  return table.column(name).combine_chunks()


def csv_bytes(table: pa.Table, play_field: str) -> bytes:
  parts = []
  for name in columns(play_field):
    if name == play_field:
      parts.append(_play_strings(table, play_field))
    elif pa.types.is_string(table.schema.field(name).type):
      parts.append(_col(table, name))  # ids and intents never hold commas, quotes or newlines
    else:
      parts.append(_as_string(_col(table, name)))
    parts.append(',')
  parts[-1] = '\n'
  return _joined_bytes(pc.binary_join_element_wise(*parts, ''))


def jsonl_bytes(table: pa.Table, play_field: str) -> bytes:
  parts = []
  for name in columns(play_field):
    separator = '{' if not parts else ','
    if name == play_field:
      parts += [f'{separator}"{name}":', _play_strings(table, play_field)]
    elif pa.types.is_string(table.schema.field(name).type):
      parts += [f'{separator}"{name}":"', _col(table, name), '"']
    else:
      parts += [f'{separator}"{name}":', _as_string(_col(table, name))]
  parts.append('}\n')
  return _joined_bytes(pc.binary_join_element_wise(*parts, ''))


class ShardWriter:
  """Writes one shard file chunk by chunk."""

  def __init__(self, path: str, fmt: str, play_field: str, use_gzip: bool, gzip_level: int):
    self.path = path
    self._fmt = fmt
    self._play_field = play_field
    self.rows = 0
    if fmt == 'parquet':
      self._parquet = pq.ParquetWriter(path, arrow_schema(play_field))
      return
    self._raw = open(path, 'wb')
    # No file name and mtime 0 in the gzip header: the same rows give the same bytes.
    self._out = (gzip.GzipFile(filename='', mode='wb', fileobj=self._raw, mtime=0,
                               compresslevel=gzip_level) if use_gzip else self._raw)
    if fmt == 'csv':
      self._out.write((','.join(columns(play_field)) + '\n').encode())

  def write(self, table: pa.Table) -> None:
    self.rows += table.num_rows
    if self._fmt == 'parquet':
      self._parquet.write_table(table)
    elif self._fmt == 'csv':
      self._out.write(csv_bytes(table, self._play_field))
    else:
      self._out.write(jsonl_bytes(table, self._play_field))

  def close(self) -> None:
    if self._fmt == 'parquet':
      self._parquet.close()
      return
    if self._out is not self._raw:
      self._out.close()
    self._raw.close()


def plays_table(chunk: Dict[str, np.ndarray], user_ids: pa.Array, item_ids: pa.Array,
                intent_names: pa.Array, first_user: int, play_field: str) -> pa.Table:
  """The chunk's rows as an Arrow table in the written schema."""
  if play_field == features.PLAY_RATE:
    play = pa.array(np.round(chunk['play_rate'], PLAY_RATE_DECIMALS))
  else:
    play = pa.array(chunk['play_ms'])
  return pa.Table.from_arrays(
      [user_ids.take(pa.array(chunk['user'] - first_user)), item_ids.take(pa.array(chunk['item'])),
       pa.array(chunk['ts']), play, pa.array(chunk['duration_ms']),
       intent_names.take(pa.array(chunk['intent']))],
      schema=arrow_schema(play_field))

