"""Finds the play-log files under an input base and opens them, decompressing by content.

Discovery is recursive (date partitions such as `2026-11-30/part-0.csv` are read) with one ignore
rule, the one Hadoop, Spark and Beam writers rely on: a file or directory whose name starts with
'.' or '_' (`_SUCCESS`, `.part-0.crc`, `_temporary/`) is not data. Ignored files are logged and
listed in the artifact's counts, so nothing under the input base disappears without a word.

Compression is decided by the file's first bytes, not its name: a gzipped file named `.csv` is
gunzipped, a plain file named `.gz` is read as it is.
"""

import gzip
import os
from typing import BinaryIO, List, NamedTuple

from apache_beam.io.filesystems import FileSystems

GZIP_MAGIC = b'\x1f\x8b'


class InputFiles(NamedTuple):
  data: List[str]  # sorted
  ignored: List[str]  # sorted: names (or a directory on the path) starting with '.' or '_'


def is_ignored(relative_path: str) -> bool:
  """Whether a path under the input base is ignored: any part of it starts with '.' or '_'."""
  return any(part.startswith(('.', '_')) for part in relative_path.split('/') if part)


def _relative(path: str, root: str) -> str:
  return path[len(root):].lstrip('/') if path.startswith(root) else os.path.basename(path)


def find_input_files(input_base: str) -> InputFiles:
  """Returns the data files under a directory (recursively) or matching a glob.

  Raises ValueError naming input_base when no data file is found.
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
  if not data:
    found = f'; ignored (names starting with "." or "_"): {ignored[:5]}' if ignored else ''
    raise ValueError(f'input_base {input_base!r} holds no play-log files{found}')
  return InputFiles(data, ignored)


def open_decompressed(path: str) -> BinaryIO:
  """Opens a file for reading, gunzipping it when its first bytes are the gzip magic number."""
  raw = (open(path, 'rb') if FileSystems.get_scheme(path) is None
         else FileSystems.open(path, compression_type='uncompressed'))
  is_gzip = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
  raw.seek(0)  # local files and Beam's remote file systems (gs://, s3://) are seekable
  return gzip.GzipFile(fileobj=raw, mode='rb') if is_gzip else raw
