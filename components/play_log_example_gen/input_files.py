"""Finds the play-log files under an input base and opens them, decompressing by content.

Discovery is recursive (date partitions such as `2026-11-30/part-0.csv` are read) with one ignore
rule, the one Hadoop, Spark and Beam writers rely on: a file or directory whose name starts with
'.' or '_' (`_SUCCESS`, `.part-0.crc`, `_temporary/`) is not data. Ignored files are logged and
listed in the artifact's counts, so nothing under the input base disappears without a word.

With a partition pattern (`{YYYY}-{MM}-{DD}`, `span-{SPAN}`), the top-level folders or files of
the input base whose names match it are partitions, and only the newest `window` of them are read.
A file outside every partition is ignored and listed like the hidden ones; the partitions left
out of the window are counted.

A partition is read only once complete (`Completeness`, the ingest settings
partition_completeness, partition_marker, partition_settle_seconds and incomplete_partitions):
by its marker file (`_SUCCESS`; by default required once any partition of the input has one),
or once no file in it has changed for a while. Names that copies and writers in progress leave
(`p.csv._COPYING_`, `.tmp`, `_temporary/`) are never read, and without a marker rule they make
their partition incomplete. An incomplete partition in the window fails the run ("partition X
is not complete yet") or is skipped and listed, and the window reaches back over it.

Compression is decided by the file's first bytes, not its name: a gzipped file named `.csv` is
gunzipped, a plain file named `.gz` is read as it is.
"""

import datetime
import gzip
import hashlib
import os
import re
import time
from typing import BinaryIO, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from contract import settings

GZIP_MAGIC = b'\x1f\x8b'
_EPOCH = datetime.date(1970, 1, 1)


class Partition(NamedTuple):
  name: str  # the top-level folder or file under the input base
  span: int  # its {SPAN} number, or its date as days since 1970-01-01 (as TFX numbers date spans)


class InputFiles(NamedTuple):
  data: List[str]  # sorted
  ignored: List[str]  # sorted: names (or a directory on the path) starting with '.' or '_', and
  # with a partition pattern, files in no partition
  partitions: List[Partition]  # read, oldest first; empty without a partition pattern
  partitions_outside_window: List[Partition]  # matching the pattern but older than the window
  # Incomplete partitions the window skipped (incomplete_partitions 'skip'), oldest first, each
  # with why it is not complete.
  partitions_incomplete: Tuple[Tuple[Partition, str], ...] = ()
  root: str = ''  # the folder the paths are under, with its trailing '/'

  def partition_files(self) -> Dict[str, List[str]]:
    """{partition name: its files} of the partitions read."""
    files: Dict[str, List[str]] = {p.name: [] for p in self.partitions}
    for path in self.data:
      files[_relative(path, self.root).split('/')[0]].append(path)
    return files


class Completeness(NamedTuple):
  """When a partition is complete; the ingest settings of the same names."""
  mode: str = settings.PARTITION_COMPLETENESS
  marker: str = settings.PARTITION_MARKER
  settle_seconds: int = settings.PARTITION_SETTLE_SECONDS
  on_incomplete: str = settings.INCOMPLETE_PARTITIONS

  @classmethod
  def of(cls, ingest: settings.IngestConfig) -> 'Completeness':
    return cls(ingest.partition_completeness, ingest.partition_marker,
               ingest.partition_settle_seconds, ingest.incomplete_partitions)


class IncompletePartitionError(RuntimeError):
  """The window holds a partition that is not complete yet (incomplete_partitions 'fail')."""


def _partition_regex(pattern: str) -> 're.Pattern[str]':
  regex = re.escape(pattern)
  for placeholder, group in ((settings.SPAN_PLACEHOLDER, r'(?P<span>\d+)'),
                             ('{YYYY}', r'(?P<year>\d{4})'), ('{MM}', r'(?P<month>\d{2})'),
                             ('{DD}', r'(?P<day>\d{2})')):
    regex = regex.replace(re.escape(placeholder), group)
  return re.compile(regex)


def partition_of(name: str, pattern: str) -> Optional[Partition]:
  """The partition a top-level name is, or None when it does not match the pattern (or names an
  impossible date)."""
  match = _partition_regex(pattern).fullmatch(name)
  if match is None:
    return None
  if match.groupdict().get('span') is not None:
    return Partition(name, int(match['span']))
  try:
    date = datetime.date(int(match['year']), int(match['month']), int(match['day']))
  except ValueError:
    return None
  return Partition(name, (date - _EPOCH).days)


def is_in_progress(relative_path: str) -> bool:
  """Whether a path is what a copy or writer in progress leaves: a part of it ending with one
  of IN_PROGRESS_SUFFIXES (`p.csv._COPYING_`, `x.tmp`) or named as IN_PROGRESS_DIRECTORIES."""
  return any(part.endswith(settings.IN_PROGRESS_SUFFIXES)
             or part in settings.IN_PROGRESS_DIRECTORIES
             for part in relative_path.split('/') if part)


def is_ignored(relative_path: str) -> bool:
  """Whether a path under the input base is ignored: any part of it starts with '.' or '_', or
  is in progress (is_in_progress)."""
  return (any(part.startswith(('.', '_')) for part in relative_path.split('/') if part)
          or is_in_progress(relative_path))


def _relative(path: str, root: str) -> str:
  return path[len(root):].lstrip('/') if path.startswith(root) else os.path.basename(path)


def find_input_files(input_base: str, partition_pattern: Optional[str] = None,
                     window_partitions: Optional[int] = None,
                     completeness: Completeness = Completeness(),
                     now: Optional[float] = None) -> InputFiles:
  """Returns the data files under a directory (recursively) or matching a glob; with a
  partition pattern, those of the newest `window_partitions` complete partitions (None: all).

  Raises ValueError naming input_base when no data file is found, and when two partitions
  share a span; IncompletePartitionError naming the partition and why when the window holds an
  incomplete one and completeness.on_incomplete is 'fail'. `now` (epoch seconds; default the
  clock) is when settled partitions are judged.
  """
  is_local = FileSystems.get_scheme(input_base) is None
  is_dir = os.path.isdir(input_base) if is_local else input_base.endswith('/')
  if is_dir:
    root = input_base.rstrip('/') + '/'
    if is_local:
      paths = [os.path.join(directory, name) for directory, _, names in os.walk(input_base)
               for name in names]
    else:
      paths = [m.path for m in FileSystems.match([root + '**'])[0].metadata_list]
  else:
    root = os.path.dirname(input_base).rstrip('/') + '/'
    paths = [m.path for m in FileSystems.match([input_base])[0].metadata_list]
  data, ignored = [], []
  for path in sorted(paths):
    (ignored if is_ignored(_relative(path, root)) else data).append(path)
  partitions, outside = [], []
  if partition_pattern is not None:
    data, ignored, partitions, outside, incomplete = _in_window(
        data, ignored, root, partition_pattern, window_partitions, input_base, completeness,
        time.time() if now is None else now)
  else:
    incomplete = ()
  if not data:
    found = f'; ignored: {ignored[:5]}' if ignored else ''
    skipped = (f'; incomplete: {", ".join(f"{p.name} ({why})" for p, why in incomplete)}'
               if incomplete else '')
    raise ValueError(f'input_base {input_base!r} holds no play-log files'
                     + (f' in partitions named {partition_pattern!r}' if partition_pattern else '')
                     + found + skipped)
  return InputFiles(data, sorted(ignored), partitions, outside, tuple(incomplete), root)


def _in_window(data: List[str], ignored: List[str], root: str, pattern: str,
               window: Optional[int], input_base: str, completeness: Completeness, now: float):
  """Splits data files by partition: (files of the window, ignored + files in no partition,
  the window's partitions oldest first, the older partitions, the incomplete partitions the
  window skipped with why)."""
  by_partition: Dict[Partition, List[str]] = {}
  others: Dict[str, List[str]] = {}  # a partition's ignored files (its marker among them)
  for path in data:
    partition = partition_of(_relative(path, root).split('/')[0], pattern)
    if partition is None:
      ignored.append(path)
    else:
      by_partition.setdefault(partition, []).append(path)
  for path in ignored:
    name = _relative(path, root).split('/')[0]
    others.setdefault(name, []).append(path)
    partition = partition_of(name, pattern)
    if partition is not None:  # a partition holding no data yet (only a copy in progress)
      by_partition.setdefault(partition, [])
  ordered = sorted(by_partition, key=lambda p: p.span)
  for older, newer in zip(ordered, ordered[1:]):
    if older.span == newer.span:
      raise ValueError(f'input_base {input_base!r}: partitions {older.name!r} and {newer.name!r} '
                       f'have the same span ({older.span}) under partition_pattern {pattern!r}')
  rule = _CompletenessRule(completeness, root, others, now)
  keep: List[Partition] = []
  skipped: List[Tuple[Partition, str]] = []
  for partition in reversed(ordered):  # newest first, until the window is full
    if window is not None and len(keep) == window:
      break
    why = rule.why_incomplete(partition, by_partition[partition])
    if why is None:
      keep.append(partition)
    elif completeness.on_incomplete == 'fail':
      raise IncompletePartitionError(
          f'input_base {input_base!r}: partition {partition.name} is not complete yet: {why}. '
          'Run again once it is delivered, or set ingest.incomplete_partitions to "skip" to '
          'train without it (ingest.partition_completeness: '
          f'{completeness.mode!r})')
    else:
      skipped.append((partition, why))
  keep.reverse()
  skipped.reverse()
  oldest = keep[0].span if keep else None
  outside = [p for p in ordered if oldest is None or p.span < oldest]
  outside = [p for p in outside if p not in {s for s, _ in skipped}]
  return ([path for p in keep for path in by_partition[p]], ignored, keep, outside, skipped)


class _CompletenessRule:
  """Decides whether a partition is complete, by Completeness."""

  def __init__(self, completeness: Completeness, root: str, others: Dict[str, List[str]],
               now: float):
    self.completeness = completeness
    self.root = root
    self.others = others
    self.now = now
    self.markers = {name for name, paths in others.items()
                    if self._marker_path(name) in paths}
    mode = completeness.mode
    self.needs_marker = mode == 'marker' or (mode == 'auto' and bool(self.markers))

  def _marker_path(self, name: str) -> str:
    return self.root + name + '/' + self.completeness.marker

  def why_incomplete(self, partition: Partition, paths: Sequence[str]) -> Optional[str]:
    """None when the partition is complete, else why not (naming file and setting)."""
    mode = self.completeness.mode
    if mode == 'none':
      return None
    if self.needs_marker:
      if partition.name in self.markers:
        return None
      return (f'no {self.completeness.marker} in it'
              + (f' (other partitions have one: {_names(sorted(self.markers))})'
                 if mode == 'auto' else ''))
    own = self.others.get(partition.name, [])
    in_progress = [p for p in own if is_in_progress(_relative(p, self.root))]
    if in_progress:
      return f'{_relative(in_progress[0], self.root)} is still being written'
    if mode == 'settled':
      newest = max((m.last_updated_in_seconds, m.path) for result in FileSystems.match(
          list(paths) + own) for m in result.metadata_list)
      age = self.now - newest[0]
      if age < self.completeness.settle_seconds:
        return (f'{_relative(newest[1], self.root)} changed {max(age, 0):.0f} s ago, less than '
                f'partition_settle_seconds={self.completeness.settle_seconds}')
    return None


def _names(names: Sequence[str]) -> str:
  return ', '.join(names) if len(names) <= 3 else f'{names[0]}, ..., {names[-1]}'


# Bytes read per step of a content digest: large enough that hashing, not the Python loop, is
# the cost; small enough to stay out of the way of the memory the run needs.
DIGEST_BLOCK_BYTES = 4 << 20


def content_digest(path: str) -> str:
  """A digest of the file's content: an object store's own checksum of the object where it
  has one (gs://: its CRC32C/MD5, s3://: its ETag, both computed from the bytes at upload), else
  SHA-256 of the bytes, read as a stream. So a file rewritten with the same size and
  modification time (`cp -p`, `rsync -a`) gets another digest."""
  if FileSystems.get_scheme(path) is not None:
    checksum = FileSystems.checksum(path)
    if checksum:
      return f'{FileSystems.get_scheme(path)}-checksum:{checksum}'
  digest = hashlib.sha256()
  with _open_raw(path) as f:
    while True:
      block = f.read(DIGEST_BLOCK_BYTES)
      if not block:
        break
      digest.update(block)
  return f'sha256:{digest.hexdigest()}'


def content_digests(paths: Sequence[str], known: Optional[Mapping[str, str]] = None
                    ) -> Dict[str, str]:
  """{path: content_digest} of the files, in their order. Those in `known` (digests this run
  took already: the driver's) are not read again."""
  known = known or {}
  return {path: known[path] if path in known else content_digest(path) for path in paths}


def files_digest(digests: Mapping[str, str], root: str = '') -> str:
  """SHA-256 of the files' paths (relative to root, when they are under it) and content digests
  ({path: digest}, as content_digests gives them, in their order): any new, missing, renamed or
  changed file changes it."""
  digest = hashlib.sha256()
  for path, content in digests.items():
    digest.update(f'{_relative(path, root) if root else path}\t{content}\n'.encode())
  return digest.hexdigest()


def is_gzipped(path: str) -> bool:
  with _open_raw(path) as raw:
    return raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def byte_ranges(size: int, range_bytes: int) -> List[Tuple[int, Optional[int]]]:
  """[start, end) byte ranges of about range_bytes covering a file of this size; one range
  (0, None: to the end) when it is not larger than that."""
  if size <= range_bytes:
    return [(0, None)]
  count = -(-size // range_bytes)
  bounds = [size * k // count for k in range(count + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def _open_raw(path: str) -> BinaryIO:
  return (open(path, 'rb') if FileSystems.get_scheme(path) is None
          else FileSystems.open(path, compression_type='uncompressed'))


def open_decompressed(path: str) -> BinaryIO:
  """Opens a file for reading, gunzipping it when its first bytes are the gzip magic number."""
  raw = _open_raw(path)
  is_gzip = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
  raw.seek(0)  # local files and Beam's remote file systems (gs://, s3://) are seekable
  return gzip.GzipFile(fileobj=raw, mode='rb') if is_gzip else raw
