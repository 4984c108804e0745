"""One user's plays -> serialized tf.Examples, split by time.

Both splits share one schema (transform/features.py): a history of plays, oldest first, each with
its ts and label, and a target play. They differ in how the user's plays (in time order) are cut:

  train: the training plays, cut into disjoint windows of up to history_length + 1 consecutive
    plays aligned from the user's first play. A window is one example: its last play is the
    target, the plays before it the history. Every train play is written exactly once, instead of
    once per later play whose history it is in, and the trainer still trains each play of the
    window as the next play of the ones before it.
  eval: one example per eval play, its history the up to history_length plays before it (train
    plays included), as a served request would have.

tf.Examples are encoded straight to the protobuf wire format: the pure-Python protobuf runtime
takes ~0.6 ms to build and serialize one Example with a 50-play history, which would dominate a
1M-event run. Every play's encoded values are computed once and each history is a join of slices.
The tests check the bytes against tf.train.Example parsing.
"""

import dataclasses
import functools
import itertools
import json
import struct
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from components.play_log_example_gen import play_log_reader
from transform import features

TRAIN = 'train'
EVAL = 'eval'
SPLITS = (TRAIN, EVAL)


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
  """Field 1, wire type 2 (the only tag a tf.Example ever needs at these levels)."""
  return b'\x0a' + _varint(len(payload)) + payload


def _entry_prefix(key: str) -> bytes:
  """The start of a Features.feature map entry: key = field 1, then the Feature's tag (field 2)."""
  return _length_delimited(key.encode()) + b'\x12'


_ENTRY_PREFIXES = {key: _entry_prefix(key) for key in (
    features.USER_ID, features.TS, features.HISTORY_ITEM_ID, features.HISTORY_PLAY_RATE,
    features.HISTORY_INTENT, features.HISTORY_TS, features.HISTORY_LABEL, features.ITEM_ID,
    features.PLAY_RATE, features.INTENT, features.LABEL)}


def _feature_entry(key: str, feature: bytes) -> bytes:
  """A Features.feature map entry (a length-delimited field 1 of Features)."""
  entry = _ENTRY_PREFIXES[key] + _varint(len(feature)) + feature
  return b'\x0a' + _varint(len(entry)) + entry


@functools.lru_cache(maxsize=1024)
def _cached_entry(key: str, feature: bytes) -> bytes:
  """_feature_entry for the few distinct intents and labels."""
  return _feature_entry(key, feature)


def _bytes_feature(encoded_values: bytes) -> bytes:  # Feature.bytes_list = field 1
  return _length_delimited(encoded_values)


def _float_feature(packed: bytes) -> bytes:  # Feature.float_list = field 2, packed floats
  float_list = _length_delimited(packed) if packed else b''
  return b'\x12' + _varint(len(float_list)) + float_list


def _int64_feature(packed: bytes) -> bytes:  # Feature.int64_list = field 3, packed varints
  int64_list = _length_delimited(packed) if packed else b''
  return b'\x1a' + _varint(len(int64_list)) + int64_list


def _string_value(text: str) -> bytes:
  return _length_delimited(text.encode('utf-8'))


# The varint of every label: -1 is a 10-byte one, so it is encoded once here, not once per play.
_LABEL_VARINTS = {label: _varint(label) for label in (
    features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER)}


class _EncodedPlays(NamedTuple):
  """Every play's encoded values, in time order, so that a history is a join of slices."""
  items: List[bytes]  # BytesList elements
  rates: List[bytes]  # packed floats
  intents: List[bytes]  # BytesList elements
  ts: List[bytes]  # varints
  labels: List[bytes]  # varints


def _target_entries(user_feature: bytes, plays: _EncodedPlays, target: int) -> bytes:
  """Returns the encoded map entries of everything but the history."""
  return b''.join((
      user_feature,
      _feature_entry(features.ITEM_ID, _bytes_feature(plays.items[target])),
      _feature_entry(features.PLAY_RATE, _float_feature(plays.rates[target])),
      _cached_entry(features.INTENT, _bytes_feature(plays.intents[target])),
      _feature_entry(features.TS, _int64_feature(plays.ts[target])),
      _cached_entry(features.LABEL, _int64_feature(plays.labels[target])),
  ))


def _history_entries(plays: _EncodedPlays, start: int, stop: int) -> bytes:
  """Returns the encoded map entries of the history plays[start:stop]."""
  return b''.join((
      _feature_entry(features.HISTORY_ITEM_ID, _bytes_feature(b''.join(plays.items[start:stop]))),
      _feature_entry(features.HISTORY_PLAY_RATE,
                     _float_feature(b''.join(plays.rates[start:stop]))),
      _feature_entry(features.HISTORY_INTENT,
                     _bytes_feature(b''.join(plays.intents[start:stop]))),
      _feature_entry(features.HISTORY_TS, _int64_feature(b''.join(plays.ts[start:stop]))),
      _feature_entry(features.HISTORY_LABEL, _int64_feature(b''.join(plays.labels[start:stop]))),
  ))


def _example(user_feature: bytes, plays: _EncodedPlays, start: int, target: int) -> bytes:
  """Returns a serialized tf.Example: history plays[start:target], target plays[target]."""
  return _length_delimited(_target_entries(user_feature, plays, target)
                           + _history_entries(plays, start, target))


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  history_length: int
  pos_threshold: float
  neg_threshold: float
  eval_plays_per_user: int
  eval_start_ts: Optional[int] = None  # if set, plays at or after it are eval

  def label(self, play_rate: float) -> int:
    if play_rate >= self.pos_threshold:
      return features.LABEL_POSITIVE
    if play_rate <= self.neg_threshold:
      return features.LABEL_NEGATIVE
    return features.LABEL_NEITHER

  def first_eval_index(self, plays: Sequence[play_log_reader.Play]) -> int:
    """Returns the index of a user's first eval play in time order (len(plays) if none)."""
    if self.eval_start_ts is None:
      return max(0, len(plays) - self.eval_plays_per_user)
    for index, play in enumerate(plays):
      if play[0] >= self.eval_start_ts:
        return index
    return len(plays)


def ordered_unique_plays(chunks: Iterable[Sequence[play_log_reader.Play]]
                         ) -> Tuple[List[play_log_reader.Play], List[play_log_reader.Play]]:
  """Returns (plays by time, ties by source order; later duplicates of (item, ts))."""
  plays = sorted(itertools.chain.from_iterable(chunks))
  unique, duplicates, seen = [], [], set()
  for play in plays:
    key = (play[3], play[0])
    if key in seen:
      duplicates.append(play)
    else:
      seen.add(key)
      unique.append(play)
  return unique, duplicates


def duplicate_row(user_id: str, play: play_log_reader.Play,
                  files: Sequence[str]) -> play_log_reader.QuarantinedRow:
  ts, file_index, line, item_id, play_rate, intent = play
  raw = json.dumps({'user_id': user_id, 'item_id': item_id, 'ts': ts, 'play_rate': play_rate,
                    'intent': intent}, ensure_ascii=False)
  return play_log_reader.QuarantinedRow(
      source=files[file_index], line=line, reason=play_log_reader.DUPLICATE_EVENT,
      detail='same user_id, item_id and ts as an earlier row', raw=raw)


def _encoded_plays(plays: Sequence[play_log_reader.Play],
                   config: ExampleConfig) -> _EncodedPlays:
  """Returns every play's encoded values; the few distinct intents are encoded once each."""
  intent_values = {}
  return _EncodedPlays(
      items=[_string_value(play[3]) for play in plays],
      rates=[struct.pack('<f', play[4]) for play in plays],
      intents=[intent_values.get(play[5]) or
               intent_values.setdefault(play[5], _string_value(play[5])) for play in plays],
      ts=[_varint(play[0]) for play in plays],
      labels=[_LABEL_VARINTS[config.label(play[4])] for play in plays])


def _example_spans(num_plays: int, first_eval: int,
                   history_length: int) -> Iterator[Tuple[str, int, int]]:
  """Yields (split, first play, target play) of every example of a user, in time order.

  Train windows are aligned from the first play rather than ending at the last train play, so
  appending later plays to the log leaves a user's earlier windows as they were.
  """
  window = history_length + 1
  for start in range(0, first_eval, window):
    yield TRAIN, start, min(start + window, first_eval) - 1
  for target in range(first_eval, num_plays):
    yield EVAL, max(0, target - history_length), target


class UserExample(NamedTuple):
  """A serialized tf.Example and its size, which lets the executor check that the train windows
  hold every train play once."""
  split: str
  plays: int  # plays in the example, history and target: a train window's size
  serialized: bytes


def user_examples(user_id: str, plays: Sequence[play_log_reader.Play],
                  config: ExampleConfig) -> Iterator[UserExample]:
  """Yields every example of a user (train windows, then eval plays), plays in time order."""
  user_feature = _feature_entry(features.USER_ID, _bytes_feature(_string_value(user_id)))
  encoded = _encoded_plays(plays, config)
  spans = _example_spans(len(plays), config.first_eval_index(plays), config.history_length)
  for split, start, target in spans:
    yield UserExample(split, target + 1 - start, _example(user_feature, encoded, start, target))
