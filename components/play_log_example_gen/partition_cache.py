"""The partition cache: each partition's validated plays, quarantined rows and counts, kept so that
a daily run parses only the partitions that are new or changed.

An entry is a folder `<cache dir>/<partition>/<key>/`: the plays of each piece of the partition
read (a file, or a byte range of one) as Parquet, its quarantined rows as JSON lines, and
`manifest.json`, which lists the pieces with their sizes, SHA-256 and counts. The key is a digest
of the partition's name, its files (paths and content digests, input_files.files_digest: the
digests the driver took for its fingerprint) and every setting that shapes what validation
gives (entry_key). Pieces are written by the readers under fresh names; the manifest is written
last, to a temporary name renamed into place, once every piece is written (commit). So an
entry without a manifest (a run killed half way) or whose pieces do not match it is never used.
Only the manifest's paths are read, so the cache works wherever Beam's file systems reach (a
local folder, gs://, s3://).

An entry is checked in two steps, so that each cached byte is read once, by the worker that
uses it. Before the run, reusable_manifest reads the manifest and lists the entry's folder:
an entry with no manifest, another key, or a piece missing or of another size (cut short) is
parsed again and rebuilt. Pieces are written under fresh names and never rewritten, and
object stores write an object whole, so a piece partly written or lost shows in its size.
What keeps the size (a flipped bit, a piece rewritten by hand) is caught by the worker that
reads the piece, against its SHA-256 (verified_bytes): the run fails naming the file, and the
entry's manifest is removed so that the next run parses the partition again. Verifying the
digests before the run (as this cache first did) read every cached byte twice, the first time
in the launcher alone before the pipeline starts, and on a daily window most of the input comes
from the cache.

Plays carry no file index (a run numbers its files; a cached piece gets the index its file has
in the run that reads it) and quarantined rows no source (the path of the file in that run).

Standard library, pyarrow and Beam's file systems only: the readers run it on Beam workers.
"""

import hashlib
import io
import json
import os
import shutil
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
import pyarrow as pa
import pyarrow.parquet as pq

from components.play_log_example_gen import defaults
from components.play_log_example_gen import play_log_reader
from contract import settings

# Bumped whenever the entries' layout or what validation gives changes in code, so that no entry
# made by other code is trusted.
CACHE_FORMAT = 1
ENTRY_MANIFEST = 'manifest.json'
PLAYS_SCHEMA = pa.schema([field for field in play_log_reader.PLAYS_SCHEMA
                          if field.name != 'file_index'])
# The counts a piece stores; the quarantine counts are made again from its rows.
PIECE_COUNTS = ('files_read', 'rows_read', 'blank_lines', 'capped_play_rates',
                'default_play_rates', 'off_day_plays')


def entry_key(partition: str, files_digest: str, ingest: settings.IngestConfig) -> Dict[str, Any]:
  """What a partition's entry depends on: its name (the day off-day plays are judged by), its
  files and the settings validation reads. Not the label thresholds, history length or split:
  those shape the examples built from the plays, not the plays. A max_ts_ms of None (one day
  after the run starts) is kept as None: reusable_manifest checks the entry against the run's
  own bound."""
  return {'format': CACHE_FORMAT, 'partition': partition, 'files': files_digest,
          'input_format': ingest.input_format, 'column_mapping': ingest.column_mapping,
          'ts_unit': ingest.ts_unit, 'min_ts_ms': ingest.min_ts_ms,
          'max_ts_ms': ingest.max_ts_ms, 'partition_pattern': ingest.partition_pattern,
          'off_day_plays': ingest.off_day_plays, 'off_day_margin_ms': ingest.off_day_margin_ms,
          'max_duration_ms': defaults.MAX_DURATION_MS,
          'max_play_overrun': defaults.MAX_PLAY_OVERRUN}


def entry_dir(cache_dir: str, key: Mapping[str, Any]) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
  return os.path.join(cache_dir, key['partition'], digest)


def _files(piece: Mapping[str, Any]) -> List[str]:
  """The kinds of file a piece has: its plays, and its quarantined rows when it has any."""
  return ['plays'] + (['quarantined'] if piece['quarantined'] else [])


def _read_bytes(path: str) -> bytes:
  with FileSystems.open(path, compression_type='uncompressed') as f:
    return f.read()


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


class DamagedPieceError(RuntimeError):
  """A cached piece whose bytes are not those its manifest lists."""


def reusable_manifest(directory: str, key: Mapping[str, Any], ts_bound_ms: int
                      ) -> Optional[Dict]:
  """The entry's manifest, when the entry is whole and holds what validating the partition in
  this run, whose latest accepted ts is ts_bound_ms, would give; else None (no entry, a half
  one, one whose pieces are missing or of other sizes, or one that another bound on timestamps
  would change). The pieces' digests are checked where they are read (verified_bytes).

  With a bound relative to the clock (max_ts_ms None), an entry made at an earlier bound is
  what this run would make when it quarantined no ts for being out of bounds: every ts it
  accepted is under the later bound too, and every other rule reads the row as it did."""
  try:
    manifest = json.loads(_read_bytes(os.path.join(directory, ENTRY_MANIFEST)).decode('utf-8'))
    if manifest['key'] != dict(key):
      return None
    sizes = _file_sizes(directory)
    if any(sizes.get(piece[kind]) != piece[f'{kind}_bytes']
           for piece in manifest['pieces'] for kind in _files(piece)):
      return None
  except Exception:  # pylint: disable=broad-except
    return None  # missing, unreadable or not a manifest: rebuilt
  if key['max_ts_ms'] is None and (manifest['ts_out_of_bounds'] or
                                   manifest['ts_bound_ms'] > ts_bound_ms):
    return None
  return manifest


def _file_sizes(directory: str) -> Dict[str, int]:
  """{name: size in bytes} of the files in an entry's folder: one listing."""
  return {os.path.basename(m.path): m.size_in_bytes
          for m in FileSystems.match([os.path.join(directory, '*')])[0].metadata_list}


def verified_bytes(directory: str, piece: Mapping[str, Any], kind: str) -> bytes:
  """The bytes of the piece's file of this kind ('plays', 'quarantined'), checked against the
  size and SHA-256 its manifest lists. Raises DamagedPieceError naming the file when they
  differ, after removing the entry's manifest so that the next run rebuilds the entry."""
  path = os.path.join(directory, piece[kind])
  data = _read_bytes(path)
  found, listed = (len(data), _sha256(data)), (piece[f'{kind}_bytes'], piece[f'{kind}_sha256'])
  if found == listed:
    return data
  _remove_manifest(directory)
  raise DamagedPieceError(
      f'partition cache: {path} is not the piece its manifest lists ({found[0]} bytes, sha256 '
      f'{found[1]}; listed: {listed[0]} bytes, sha256 {listed[1]}). The entry\'s manifest is '
      'removed: the next run parses the partition again and rebuilds its entry')


def _remove_manifest(directory: str) -> None:
  try:
    FileSystems.delete([os.path.join(directory, ENTRY_MANIFEST)])
  except BeamIOError:
    pass  # removed already (by a retry of this read, or another run's): rebuilt all the same


class _HashingWriter:
  """A writable file that counts and hashes the bytes written to it."""

  def __init__(self, path: str):
    self._raw = FileSystems.create(path, 'application/octet-stream')
    self._digest = hashlib.sha256()
    self.size = 0
    self.closed = False

  def write(self, data) -> int:
    data = bytes(data)
    self._raw.write(data)
    self._digest.update(data)
    self.size += len(data)
    return len(data)

  def tell(self) -> int:
    return self.size

  def flush(self) -> None:
    pass

  def close(self) -> None:
    if not self.closed:
      self._raw.close()
      self.closed = True

  def hexdigest(self) -> str:
    return self._digest.hexdigest()


class PieceWriter:
  """Writes one piece of an entry (a file or a byte range of it, as one reader read it)."""

  def __init__(self, directory: str, relative_path: str, byte_range: Tuple[int, Optional[int]]):
    self._directory = directory
    name = uuid.uuid4().hex  # a new name per attempt: a retried or rival reader writes apart
    self._record = {'file': relative_path, 'start': byte_range[0], 'end': byte_range[1],
                    'plays': f'{name}.plays.parquet', 'quarantined': f'{name}.quarantined.jsonl'}
    self._plays_file = _HashingWriter(os.path.join(directory, self._record['plays']))
    self._plays = pq.ParquetWriter(self._plays_file, PLAYS_SCHEMA)
    self._quarantined = io.BytesIO()
    self._ts_out_of_bounds = 0

  def add(self, plays: pa.Table, quarantined: Sequence[play_log_reader.QuarantinedRow]) -> None:
    self._plays.write_table(plays.drop(['file_index']).cast(PLAYS_SCHEMA))
    for row in quarantined:
      self._quarantined.write(json.dumps([row.line, row.reason, row.detail, row.raw],
                                         ensure_ascii=False).encode('utf-8') + b'\n')
      self._ts_out_of_bounds += play_log_reader.depends_on_ts_bounds(row)

  def close(self, counts: Mapping[str, int], ts_bound_ms: int) -> Dict[str, Any]:
    """Finishes the piece, validated with latest ts ts_bound_ms; returns its record for the
    manifest."""
    self._plays.close()
    self._plays_file.close()
    record = {**self._record, 'plays_bytes': self._plays_file.size,
              'plays_sha256': self._plays_file.hexdigest(),
              'counts': {name: counts[name] for name in PIECE_COUNTS},
              'ts_out_of_bounds': self._ts_out_of_bounds, 'ts_bound_ms': ts_bound_ms}
    rows = self._quarantined.getvalue()
    if not rows:  # no file (Beam's S3 writer cannot write an empty one)
      return {**record, 'quarantined': None}
    quarantined = _HashingWriter(os.path.join(self._directory, self._record['quarantined']))
    quarantined.write(rows)
    quarantined.close()
    return {**record, 'quarantined_bytes': quarantined.size,
            'quarantined_sha256': quarantined.hexdigest()}


def read_piece(directory: str, piece: Mapping[str, Any], file_index: int, path: str
               ) -> Tuple[pa.Table, List[play_log_reader.QuarantinedRow]]:
  """(plays in play_log_reader.PLAYS_SCHEMA, quarantined rows) of a piece, as the file at `path`,
  the run's file number file_index, would give them."""
  plays = pq.read_table(pa.BufferReader(verified_bytes(directory, piece, 'plays')))
  plays = plays.add_column(plays.schema.get_field_index('line'), 'file_index',
                           pa.array([file_index] * plays.num_rows, pa.int32()))
  # Split at '\n' only: JSON escapes it inside strings, but not U+2028 and the like, which a
  # raw row may hold and str.splitlines would split at.
  lines = (verified_bytes(directory, piece, 'quarantined').decode('utf-8').split('\n')
           if piece['quarantined'] else [])
  rows = [play_log_reader.QuarantinedRow(path, line, reason, detail, raw)
          for line, reason, detail, raw in (json.loads(text) for text in lines if text)]
  return plays.select(play_log_reader.PLAYS_SCHEMA.names), rows


def commit(directory: str, key: Mapping[str, Any], pieces: Sequence[Mapping[str, Any]],
           expected_pieces: int) -> bool:
  """Writes the entry's manifest once all its pieces are written, by a rename (a reader sees
  the old manifest or the whole new one), then deletes the files it does not list (pieces of
  failed attempts or of the entry it replaces). Returns whether it committed."""
  if len(pieces) != expected_pieces:
    return False
  pieces = sorted(pieces, key=lambda p: (p['file'], p['start']))
  manifest = {'key': dict(key), 'pieces': list(pieces),
              'ts_out_of_bounds': sum(p['ts_out_of_bounds'] for p in pieces),
              'ts_bound_ms': max(p['ts_bound_ms'] for p in pieces)}
  temporary = os.path.join(directory, f'.{ENTRY_MANIFEST}.{uuid.uuid4().hex}')
  with FileSystems.create(temporary, 'application/json') as f:
    f.write(json.dumps(manifest, sort_keys=True, indent=1).encode('utf-8'))
  FileSystems.rename([temporary], [os.path.join(directory, ENTRY_MANIFEST)])
  listed = {ENTRY_MANIFEST} | {p[kind] for p in pieces for kind in _files(p)}
  stale = [m.path for m in FileSystems.match([os.path.join(directory, '*')])[0].metadata_list
           if os.path.basename(m.path) not in listed]
  if stale:
    FileSystems.delete(stale)
  return True


def forget_partitions(cache_dir: str, names: Sequence[str]) -> None:
  """Deletes the entries of these partitions (those the window has left), where there are."""
  for name in names:
    folder = os.path.join(cache_dir, name)
    if FileSystems.get_scheme(folder) is None:
      shutil.rmtree(folder, ignore_errors=True)
    else:  # an object store has no folders: its entries' files
      files = [m.path for m in FileSystems.match([os.path.join(folder, '*', '*')])[0].metadata_list]
      if files:
        FileSystems.delete(files)
