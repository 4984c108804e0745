"""What PlayLogExampleGen's content fingerprint costs: the driver hashes every input file of a
run (a streaming SHA-256, input_files.content_digest) so that a day re-delivered with the same
size and modification time but other bytes reruns the pipeline. Every run pays it, cached or not.

  python benchmarks/fingerprint.py                # 1 GB, three repeats
  python benchmarks/fingerprint.py --gigabytes 4
  python benchmarks/fingerprint.py --quick        # a smoke run, seconds

Prints MB/s of content_digest against two references measured in the same run on the same file:
reading it alone (the floor any content hash pays) and the old fingerprint (path, size and mtime:
no read at all). The file is written once with random bytes (incompressible, as gzipped logs are),
then read from the page cache if it fits in memory: the figure is the hash's cost; a cold read
from disk or an object store adds its own transfer time (gs:// and s3:// use the store's own
checksum and read nothing). The load average is printed: figures taken beside other work are low.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components.play_log_example_gen import input_files  # pylint: disable=wrong-import-position

_WRITE_BLOCK = 16 << 20


def _write_file(path: str, size: int) -> None:
  block = os.urandom(_WRITE_BLOCK)
  with open(path, 'wb') as f:
    written = 0
    while written < size:
      f.write(block[:min(_WRITE_BLOCK, size - written)])
      written += _WRITE_BLOCK


def _read_only(path: str) -> None:
  with open(path, 'rb') as f:
    while f.read(input_files.DIGEST_BLOCK_BYTES):
      pass


def _metadata_only(path: str) -> None:
  stat = os.stat(path)
  hashlib.sha256(f'{path}\t{stat.st_size}\t{stat.st_mtime}'.encode()).hexdigest()


def _best_seconds(function, path: str, repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    started = time.perf_counter()
    function(path)
    best = min(best, time.perf_counter() - started)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--gigabytes', type=float, default=1.0, help='size of the file (GB, 10^9)')
  parser.add_argument('--repeats', type=int, default=3, help='timed passes; the best is shown')
  parser.add_argument('--dir', default=None, help='where to write the file (default: a temp dir)')
  parser.add_argument('--quick', action='store_true', help='8 MB, one pass: a smoke run')
  args = parser.parse_args()
  size = 8 << 20 if args.quick else int(args.gigabytes * 1e9)
  repeats = 1 if args.quick else args.repeats
  with tempfile.TemporaryDirectory(dir=args.dir) as directory:
    path = os.path.join(directory, 'part-0.csv.gz')
    _write_file(path, size)
    _read_only(path)  # warm the page cache for every row alike
    rows = [('content_digest (SHA-256)', _best_seconds(input_files.content_digest, path, repeats)),
            ('read only', _best_seconds(_read_only, path, repeats)),
            ('path, size, mtime (old)', _best_seconds(_metadata_only, path, repeats))]
  load = os.getloadavg()
  print(f'Fingerprint of one {size / 1e6:,.0f} MB file (best of {repeats})')
  print(f'{"what":28s} | {"seconds":>9s} | {"MB/s":>9s}')
  for name, seconds in rows:
    print(f'{name:28s} | {seconds:9.3f} | {size / 1e6 / max(seconds, 1e-9):9,.0f}')
  print(f'load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min), '
        f'{os.cpu_count()} cores')
  if args.quick:
    print('(--quick: a smoke run; the figures are not meaningful)')


if __name__ == '__main__':
  main()
