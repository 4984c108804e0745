"""Finds the play-log files under an input base and opens them, decompressing by content.

Discovery is recursive (date partitions such as `2026-11-30/part-0.csv` are read) with one ignore
rule, the one Hadoop, Spark and Beam writers rely on: a file or directory whose name starts with
'.' or '_' (`_SUCCESS`, `.part-0.crc`, `_temporary/`) is not data. Ignored files are logged and
listed in the artifact's counts, so nothing under the input base disappears without a word.

With a partition pattern (`{YYYY}-{MM}-{DD}`, `span-{SPAN}`), the top-level folders or files of
the input base whose names match it are partitions, and only the newest `window` of them are read.
A file outside every partition is ignored and listed like the hidden ones; the partitions left
out of the window are counted.

Compression is decided by the file's first bytes, not its name: a gzipped file named `.csv` is
gunzipped, a plain file named `.gz` is read as it is.
"""

import datetime
import gzip
import os
import re
from typing import BinaryIO, Dict, List, NamedTuple, Optional

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


def is_ignored(relative_path: str) -> bool:
  """Whether a path under the input base is ignored: any part of it starts with '.' or '_'."""
  return any(part.startswith(('.', '_')) for part in relative_path.split('/') if part)


def _relative(path: str, root: str) -> str:
  return path[len(root):].lstrip('/') if path.startswith(root) else os.path.basename(path)


def find_input_files(input_base: str, partition_pattern: Optional[str] = None,
                     window_partitions: Optional[int] = None) -> InputFiles:
  """Returns the data files under a directory (recursively) or matching a glob; with a
  partition pattern, those of the newest `window_partitions` partitions (None: all).

  Raises ValueError naming input_base when no data file is found, and when two partitions
  share a span.
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
    data, ignored, partitions, outside = _in_window(data, ignored, root, partition_pattern,
                                                    window_partitions, input_base)
  if not data:
    found = f'; ignored: {ignored[:5]}' if ignored else ''
    raise ValueError(f'input_base {input_base!r} holds no play-log files'
                     + (f' in partitions named {partition_pattern!r}' if partition_pattern else '')
                     + found)
  return InputFiles(data, sorted(ignored), partitions, outside)


def _in_window(data: List[str], ignored: List[str], root: str, pattern: str,
               window: Optional[int], input_base: str):
  """Splits data files by partition: (files of the window, ignored + files in no partition,
  the window's partitions oldest first, the older partitions)."""
  by_partition: Dict[Partition, List[str]] = {}
  for path in data:
    partition = partition_of(_relative(path, root).split('/')[0], pattern)
    if partition is None:
      ignored.append(path)
    else:
      by_partition.setdefault(partition, []).append(path)
  ordered = sorted(by_partition, key=lambda p: p.span)
  for older, newer in zip(ordered, ordered[1:]):
    if older.span == newer.span:
      raise ValueError(f'input_base {input_base!r}: partitions {older.name!r} and {newer.name!r} '
                       f'have the same span ({older.span}) under partition_pattern {pattern!r}')
  keep = ordered if window is None else ordered[-window:]
  return ([path for p in keep for path in by_partition[p]], ignored, keep,
          ordered[:len(ordered) - len(keep)])


def open_decompressed(path: str) -> BinaryIO:
  """Opens a file for reading, gunzipping it when its first bytes are the gzip magic number."""
  raw = (open(path, 'rb') if FileSystems.get_scheme(path) is None
         else FileSystems.open(path, compression_type='uncompressed'))
  is_gzip = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
  raw.seek(0)  # local files and Beam's remote file systems (gs://, s3://) are seekable
  return gzip.GzipFile(fileobj=raw, mode='rb') if is_gzip else raw
