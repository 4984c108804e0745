"""Counter-based random numbers: every draw is a pure function of (seed, stream, keys).

The generator never carries a random state from one user to the next. A draw for user 17's
42nd play is hashed from (seed, stream, 17, 42), so the data do not depend on how users are
grouped into chunks or shards, any user can be regenerated alone, and everything stays
vectorised. The hash is SplitMix64's finaliser, which passes BigCrush on a counter.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_INV_2_53 = 1.0 / float(1 << 53)


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser on a uint64 array (wrapping arithmetic is intended)."""
  x = x ^ (x >> np.uint64(30))
  x = x * _MUL1
  x = x ^ (x >> np.uint64(27))
  x = x * _MUL2
  return x ^ (x >> np.uint64(31))


def _stream_id(name: str) -> int:
  # A fixed, platform-independent code per stream name (Python's hash() is salted per process).
  code = 1469598103934665603
  for byte in name.encode():
    code = ((code ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
  return code


class Streams:
  """Named, independent random streams for one seed."""

  def __init__(self, seed: int):
    if seed < 0:
      raise ValueError(f'seed must be >= 0, got {seed}')
    self.seed = seed

  def bits(self, stream: str, *keys) -> np.ndarray:
    """64 random bits per element of the broadcast integer key arrays."""
    keys = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in keys])
    with np.errstate(over='ignore'):
      h = np.full(keys[0].shape, self.seed, dtype=np.uint64) * _GOLDEN
      h = _mix(h ^ np.uint64(_stream_id(stream)))
      for k in keys:
        h = _mix(h + k.astype(np.uint64) * _GOLDEN)
    return h

  def uniform(self, stream: str, *keys) -> np.ndarray:
    """Uniform floats in [0, 1)."""
    return (self.bits(stream, *keys) >> np.uint64(11)).astype(np.float64) * _INV_2_53

  def exponential(self, stream: str, *keys) -> np.ndarray:
    """Exponential floats with mean 1."""
    return -np.log1p(-self.uniform(stream, *keys))

  def normal(self, stream: str, *keys) -> np.ndarray:
    """Standard normal floats (Box-Muller on two derived streams)."""
    u1 = 1.0 - self.uniform(stream + '/1', *keys)  # in (0, 1], safe for log
    u2 = self.uniform(stream + '/2', *keys)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
