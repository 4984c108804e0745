"""Plays of a bucket of users -> serialized tf.Examples, split by time.

The splits share one layout, defined once in contract/features.py (RAW_FEATURES: names, types,
shapes and which play column each holds), which this encoder follows: a history of plays, oldest
first, and a target play. They differ in how the user's plays (in time order) are cut:

  train: the training plays, cut into disjoint windows of up to history_length + 1 consecutive
    plays aligned from the user's first play. A window is one example: its last play is the
    target, the plays before it the history. Every train play is written exactly once, instead of
    once per later play whose history it is in, and the trainer still trains each play of the
    window as the next play of the ones before it.
  valid: one example per validation play (each user's last valid_plays_per_user plays before
    the eval split, from users who keep at least as many train plays), shaped as eval; the
    Trainer picks the checkpoint it exports on them, so the gate's eval split stays unseen.
  eval: one example per eval play, its history the up to history_length plays before it (train
    and validation plays included), as a served request would have.

Plays arrive as columns (pyarrow tables of a bucket of users) and are sorted, deduplicated and
encoded column-wise. tf.Examples are encoded straight to the protobuf wire format: building and
serializing one Example with a 50-play history took ~0.6 ms in the pure-Python protobuf runtime
the project then ran (protobuf 3.20), which would dominate a 1M-event run. Every play's encoded
values are computed once, for all plays of the bucket at a time, and each example is a join of
slices of them. The tests check the bytes against tf.train.Example parsing.
"""

import dataclasses
import hashlib
import json
import zlib
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.play_log_example_gen import play_log_reader
from contract import features
from contract import settings

TRAIN = features.TRAIN_SPLIT
VALID = features.VALID_SPLIT
EVAL = features.EVAL_SPLIT
SPLITS = features.SPLITS


def _varint_uncached(value: int) -> bytes:
  if value < 0:
    value += 1 << 64  # int64 negatives are 10-byte two's complement varints
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# Lengths inside an example are nearly always small: look them up instead of looping.
_SMALL_VARINTS = [_varint_uncached(n) for n in range(1 << 14)]


def _varint(value: int) -> bytes:
  return _SMALL_VARINTS[value] if 0 <= value < 16384 else _varint_uncached(value)


def _length_delimited(payload: bytes) -> bytes:
  """Field 1, wire type 2."""
  return b'\x0a' + _varint(len(payload)) + payload


def _string_value(text: str) -> bytes:
  """One BytesList element."""
  return _length_delimited(text.encode('utf-8'))


def _entry_prefix(key: str) -> bytes:
  """The start of a Features.feature map entry: key = field 1, then the Feature's tag (field 2)."""
  return _length_delimited(key.encode()) + b'\x12'


# Feature's oneof fields for numbers, each a list message whose field 1 holds packed values.
_FLOAT_LIST, _INT64_LIST = b'\x12', b'\x1a'


def _bytes_entry(prefix: bytes, elements: bytes) -> bytes:
  """A map entry whose Feature is a bytes_list of `elements` (BytesList elements back to back).

  Written out in one join, lengths computed rather than nested: this runs 11 times per example.
  """
  list_varint = _varint(len(elements))
  feature_size = 1 + len(list_varint) + len(elements)
  feature_varint = _varint(feature_size)
  return b''.join((b'\x0a', _varint(len(prefix) + len(feature_varint) + feature_size), prefix,
                   feature_varint, b'\x0a', list_varint, elements))


def _packed_entry(prefix: bytes, kind: bytes, packed: bytes) -> bytes:
  """A map entry whose Feature is a float_list or int64_list (kind) of packed values."""
  if not packed:
    return b''.join((b'\x0a', _varint(len(prefix) + 3), prefix, b'\x02', kind, b'\x00'))
  packed_varint = _varint(len(packed))
  list_size = 1 + len(packed_varint) + len(packed)
  list_varint = _varint(list_size)
  feature_size = 1 + len(list_varint) + list_size
  feature_varint = _varint(feature_size)
  return b''.join((b'\x0a', _varint(len(prefix) + len(feature_varint) + feature_size), prefix,
                   feature_varint, kind, list_varint, b'\x0a', packed_varint, packed))


class _EncodedPlays(NamedTuple):
  """Every play's encoded values, one buffer per play column (features.PLAY_COLUMNS but the
  user's), plays in order, with offsets: the values of plays [a, b) of a column are
  buffers[column][offsets[column][a]:offsets[column][b]]."""
  buffers: Dict[str, bytes]  # BytesList elements, or packed values (floats, varints)
  offsets: Dict[str, List[int]]


def _entry_writer(feature: features.RawFeature) -> Callable[[bytes], bytes]:
  """The function from a feature's encoded values to its map entry in Example.features."""
  prefix = _entry_prefix(feature.name)
  if feature.dtype == features.BYTES:
    return lambda elements: _bytes_entry(prefix, elements)
  kind = _FLOAT_LIST if feature.dtype == features.FLOAT else _INT64_LIST
  return lambda packed: _packed_entry(prefix, kind, packed)


# The example's layout, from its one definition (features.RAW_FEATURES), in wire order:
# (column, whether its values are the history's, entry writer) of every feature but the user's.
_USER_FEATURE, = (f for f in features.RAW_FEATURES if f.part == features.USER)
_USER_ENTRY = _entry_writer(_USER_FEATURE)
_LAYOUT = tuple((f.column, f.part == features.HISTORY, _entry_writer(f))
                for f in features.RAW_FEATURES if f.part != features.USER)
if features.RAW_FEATURES[0] is not _USER_FEATURE:
  raise AssertionError('the encoder writes the user feature first')


def _example(user_entry: bytes, plays: _EncodedPlays, start: int, target: int) -> bytes:
  """Returns a serialized tf.Example: history plays[start:target], target plays[target]."""
  buffers, offsets = plays.buffers, plays.offsets
  entries = [user_entry]
  for column, history, write in _LAYOUT:
    at = offsets[column]
    entries.append(write(buffers[column][at[start]:at[target]] if history
                         else buffers[column][at[target]:at[target + 1]]))
  return _length_delimited(b''.join(entries))


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  history_length: int
  pos_threshold: float
  neg_threshold: float
  # Plays at or after eval_start_ts are eval; without it, each user's last eval_plays_per_user.
  eval_plays_per_user: Optional[int] = None
  eval_start_ts: Optional[int] = None
  valid_plays_per_user: int = settings.VALID_PLAYS_PER_USER
  # The largest eval_sample_key of the users in the eval sample (None: every user).
  eval_sample_bound: Optional[Tuple[int, str]] = None

  def in_eval_sample(self, user_id: str) -> bool:
    return self.eval_sample_bound is None or eval_sample_key(user_id) <= self.eval_sample_bound

  def labels(self, play_rates: np.ndarray) -> np.ndarray:
    """Returns the LABEL_* value of each play rate."""
    return np.where(play_rates >= self.pos_threshold, features.LABEL_POSITIVE,
                    np.where(play_rates <= self.neg_threshold, features.LABEL_NEGATIVE,
                             features.LABEL_NEITHER))

  def first_eval_index(self, ts: np.ndarray) -> int:
    """Returns the index of a user's first eval play, given the user's ts in time order."""
    if self.eval_start_ts is None:
      return max(0, len(ts) - self.eval_plays_per_user)
    return int(np.searchsorted(ts, self.eval_start_ts, side='left'))

  def first_valid_index(self, first_eval: int) -> int:
    """Returns the index of a user's first validation play, given the first eval play's: the
    last valid_plays_per_user train plays, if as many train plays remain."""
    if first_eval >= 2 * self.valid_plays_per_user:
      return first_eval - self.valid_plays_per_user
    return first_eval


def varints(values: np.ndarray) -> Tuple[bytes, List[int]]:
  """Returns (the int64 values as protobuf varints back to back, offsets [len(values) + 1])."""
  rest = values.astype(np.int64).view(np.uint64)  # negatives: 10-byte two's complement varints
  groups = np.zeros((len(rest), 10), np.uint8)
  sizes = np.ones(len(rest), np.int64)
  for k in range(10):
    groups[:, k] = (rest & np.uint64(0x7F)).astype(np.uint8)
    rest = rest >> np.uint64(7)
    more = rest > 0
    groups[:, k] |= more.astype(np.uint8) << 7
    sizes += more
  used = np.arange(10)[None, :] < sizes[:, None]
  return groups[used].tobytes(), np.concatenate([[0], np.cumsum(sizes)]).tolist()


def _dictionary(array: pa.ChunkedArray) -> Tuple[np.ndarray, List[str]]:
  """Returns (each value's code, the distinct values) of a string column."""
  encoded = pc.dictionary_encode(array.combine_chunks() if isinstance(array, pa.ChunkedArray)
                                 else array)
  return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _encoded_strings(codes: np.ndarray, values: Sequence[str]) -> Tuple[bytes, List[int]]:
  """Returns (BytesList elements of values[codes] back to back, offsets)."""
  encoded = [_string_value(value) for value in values]
  sizes = np.array([len(e) for e in encoded], np.int64)
  return (b''.join([encoded[code] for code in codes.tolist()]),
          np.concatenate([[0], np.cumsum(sizes[codes])]).tolist())


def eval_sample_key(user_id: str) -> Tuple[int, str]:
  """A user's place in the eval sample (the least keys are kept): a 63-bit hash of the id (Beam
  encodes integers as signed 64-bit), the same on every worker and run, then the id, so that
  no two users tie."""
  digest = hashlib.blake2b(user_id.encode('utf-8'), digest_size=8).digest()
  return int.from_bytes(digest, 'big') >> 1, user_id


def user_buckets(user_ids: pa.ChunkedArray, num_buckets: int) -> np.ndarray:
  """Returns each play's bucket: a hash of its user, the same on every worker and run."""
  codes, users = _dictionary(user_ids)
  bucket_of_user = np.array([zlib.crc32(user.encode('utf-8')) % num_buckets for user in users],
                            np.int64)
  return bucket_of_user[codes] if len(users) else np.zeros(0, np.int64)


class BucketExamples(NamedTuple):
  """What a bucket of users' plays gives."""
  examples: List['UserExample']
  duplicates: List[play_log_reader.QuarantinedRow]
  plays_used: int
  tied_plays: int  # plays with the same user and ts as another play (ordered by seq, input order)
  unknown_intents: int  # plays whose intent is not one of features.INTENTS
  eval_plays_left_out: int  # eval plays of users outside the eval sample


class UserExample(NamedTuple):
  """A serialized tf.Example and its size, which lets the executor check that the train windows
  hold every train play once."""
  split: str
  plays: int  # plays in the example, history and target: a train window's size
  serialized: bytes


def _duplicate_rows(plays: pa.Table, rows: np.ndarray,
                    files: Sequence[str]) -> List[play_log_reader.QuarantinedRow]:
  quarantined = []
  for play in plays.take(pa.array(rows, pa.int64())).to_pylist():
    raw = json.dumps({key: play[key] for key in ('user_id', 'item_id', 'ts', 'play_rate',
                                                 'intent')}, ensure_ascii=False)
    quarantined.append(play_log_reader.QuarantinedRow(
        source=files[play['file_index']], line=play['line'],
        reason=play_log_reader.DUPLICATE_EVENT,
        detail='same user_id, item_id and ts as an earlier row', raw=raw))
  return quarantined


def _sorted_unique(user_codes: np.ndarray, item_codes: np.ndarray, plays: pa.Table
                   ) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (rows of the unique plays by user, ts, seq, input order; rows of duplicates).

  A duplicate has the user, item and ts of an earlier row in input order (file, line)."""
  ts = plays['ts'].to_numpy()
  file_index, line = plays['file_index'].to_numpy(), plays['line'].to_numpy()
  by_event = np.lexsort((line, file_index, item_codes, ts, user_codes))
  same_event = ((np.diff(user_codes[by_event]) == 0) & (np.diff(ts[by_event]) == 0)
                & (np.diff(item_codes[by_event]) == 0))
  is_duplicate = np.concatenate([[False], same_event])
  unique = by_event[~is_duplicate]
  seq = plays['seq'].to_numpy()
  order = np.lexsort((line[unique], file_index[unique], seq[unique], ts[unique],
                      user_codes[unique]))
  return unique[order], by_event[is_duplicate]


def _tied(user_codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
  """Whether each play (in user, ts order) shares its user and ts with a neighbour."""
  same = (np.diff(user_codes) == 0) & (np.diff(ts) == 0)
  return np.concatenate([[False], same]) | np.concatenate([same, [False]])


def _example_spans(num_plays: int, first_valid: int, first_eval: int,
                   history_length: int) -> Iterator[Tuple[str, int, int]]:
  """Yields (split, first play, target play) of every example of a user, in time order.

  Train windows are aligned from the first play rather than ending at the last train play, so
  appending later plays to the log leaves a user's earlier windows as they were.
  """
  window = history_length + 1
  for start in range(0, first_valid, window):
    yield TRAIN, start, min(start + window, first_valid) - 1
  for target in range(first_valid, num_plays):
    yield VALID if target < first_eval else EVAL, max(0, target - history_length), target


def bucket_examples(plays: pa.Table, config: ExampleConfig,
                    files: Sequence[str]) -> BucketExamples:
  """Builds every example of the users in `plays` (play_log_reader.PLAYS_SCHEMA): each user's
  train windows, then eval plays, users in an order that depends on the plays only."""
  if not plays.num_rows:
    return BucketExamples([], [], 0, 0, 0, 0)
  user_codes, users = _dictionary(plays['user_id'])
  item_codes, items = _dictionary(plays['item_id'])
  order, duplicates = _sorted_unique(user_codes, item_codes, plays)
  user_codes, item_codes = user_codes[order], item_codes[order]
  ts = plays['ts'].to_numpy()[order]
  play_rates = plays['play_rate'].to_numpy()[order]
  intent_codes, intents = _dictionary(plays['intent'].take(pa.array(order, pa.int64())))
  columns = {
      features.ITEM_ID: _encoded_strings(item_codes, items),
      features.PLAY_RATE: (play_rates.astype('<f4').tobytes(),
                           list(range(0, 4 * len(order) + 1, 4))),
      features.INTENT: _encoded_strings(intent_codes, intents),
      features.TS: varints(ts),
      features.LABEL: varints(config.labels(play_rates))}
  encoded = _EncodedPlays({c: v for c, (v, _) in columns.items()},
                          {c: at for c, (_, at) in columns.items()})
  # Users by name, so the examples' order does not depend on the order the plays came in.
  starts = np.flatnonzero(np.concatenate([[True], np.diff(user_codes) != 0]))
  stops = np.concatenate([starts[1:], [len(order)]])
  examples = []
  left_out = 0
  for user_start in sorted(starts.tolist(), key=lambda s: users[user_codes[s]]):
    user_stop = int(stops[np.searchsorted(starts, user_start)])
    user = users[user_codes[user_start]]
    user_entry = _USER_ENTRY(_string_value(user))
    first_eval = config.first_eval_index(ts[user_start:user_stop])
    sampled = config.in_eval_sample(user)
    for split, start, target in _example_spans(user_stop - user_start,
                                               config.first_valid_index(first_eval), first_eval,
                                               config.history_length):
      if split == EVAL and not sampled:
        left_out += 1
        continue
      examples.append(UserExample(split, target + 1 - start, _example(
          user_entry, encoded, user_start + start, user_start + target)))
  known = np.isin(np.asarray(intents, dtype=object), features.INTENTS)
  return BucketExamples(
      examples=examples,
      duplicates=_duplicate_rows(plays, duplicates, files),
      plays_used=len(order),
      tied_plays=int(_tied(user_codes, ts).sum()),
      unknown_intents=int((~known[intent_codes]).sum()),
      eval_plays_left_out=left_out)
