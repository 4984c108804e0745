"""Builds the dense model batch from Transform's outputs.

Runs in graph mode: inside tf.data maps, tf.functions and the exported serving signatures.
"""

from typing import Dict, Tuple, Union

import tensorflow as tf

from contract import features
from contract import settings

# One play of a sequence: (history feature, target feature) pairs, in _Plays order.
_PLAY_XF = ((features.HISTORY_ITEM_XF, features.ITEM_XF),
            (features.HISTORY_PLAY_RATE_XF, features.PLAY_RATE_XF),
            (features.HISTORY_INTENT_XF, features.INTENT_XF),
            (features.HISTORY_LABEL, features.LABEL))
# What the model reads of a history: the plays' items, rates and intents (not their labels).
_HISTORY_XF = tuple(history for history, _ in _PLAY_XF[:3])
_TARGET_XF = (features.ITEM_XF, features.LABEL)

AnyTensor = Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]
# Ragged [B, None] item ids, play rates and intent ids (and labels, for sequences) of plays.
_Plays = Tuple[tf.RaggedTensor, ...]


def to_model_batch(transformed: Dict[str, AnyTensor],
                   hparams: settings.HParams,
                   sequence_targets: bool = False) -> Dict[str, tf.Tensor]:
  """Returns the model batch: padded history tensors, HISTORY_LENGTH and, when present, targets.

  History features become dense [B, history_length] tensors with the real positions first (oldest
  first) and padding (0) after; histories longer than history_length keep their most recent plays.
  With hparams.history_filter (variant a), plays whose play rate is below hparams.pos_threshold are
  dropped before padding, so the model sees only well-played songs.

  With sequence_targets (training), the batch also holds every play of the example as a target:
  the sequence is the history followed by the target play (filtered the same way for variant a,
  at most history_length + 1 plays), SEQUENCE_ITEM_XF / SEQUENCE_LABEL [B, history_length + 1]
  hold its items and labels (padding: item 0, LABEL_NEITHER) and SEQUENCE_LENGTH its length; the
  model's input history is the sequence without its last play.

  Args:
    transformed: Transform's output features; history features sparse [B, None] (ragged or dense
      also accepted), scalar features [B] or [B, 1].
    hparams: the model's hyper-parameters.
    sequence_targets: also build the sequence targets (needs the target and label features).
  """
  missing = [name for name in _HISTORY_XF if name not in transformed]
  if missing:
    raise KeyError(f'transformed features lack {missing}; got {sorted(transformed)}')
  length = hparams.history_length
  if sequence_targets:
    sequence = _kept_plays(_sequence_plays(transformed), hparams)
    sequence = tuple(values[:, -(length + 1):] for values in sequence)
    history = tuple(values[:, :-1] for values in sequence[:3])
  else:
    history = _kept_plays(tuple(_to_ragged(transformed[name]) for name in _HISTORY_XF), hparams)
  items, play_rates, intents = history
  batch = {
      features.HISTORY_ITEM_XF: _most_recent_padded(items, length, tf.int64),
      features.HISTORY_PLAY_RATE_XF: _most_recent_padded(play_rates, length, tf.float32),
      features.HISTORY_INTENT_XF: _most_recent_padded(intents, length, tf.int64),
      features.HISTORY_LENGTH: tf.minimum(items.row_lengths(), length),
  }
  if sequence_targets:
    sequence_items, _, _, sequence_labels = sequence
    batch[features.SEQUENCE_ITEM_XF] = _most_recent_padded(sequence_items, length + 1, tf.int64)
    batch[features.SEQUENCE_LABEL] = _most_recent_padded(sequence_labels, length + 1, tf.int64,
                                                         padding=features.LABEL_NEITHER)
    batch[features.SEQUENCE_LENGTH] = sequence_items.row_lengths()
  for name in _TARGET_XF:
    if name in transformed:
      batch[name] = _to_vector(transformed[name])
  return batch


def _sequence_plays(transformed: Dict[str, AnyTensor]) -> _Plays:
  """Each example's plays, history then target: (items, play rates, intents, labels) [B, None]."""
  missing = [name for pair in _PLAY_XF for name in pair if name not in transformed]
  if missing:
    raise KeyError(f'sequence targets need {missing}; got {sorted(transformed)}')
  return tuple(
      tf.concat([tf.cast(_to_ragged(transformed[history]), dtype),
                 tf.RaggedTensor.from_tensor(
                     tf.cast(_to_vector(transformed[target]), dtype)[:, tf.newaxis])], axis=1)
      for (history, target), dtype in zip(_PLAY_XF, (tf.int64, tf.float32, tf.int64, tf.int64)))


def _kept_plays(plays: _Plays, hparams: settings.HParams) -> _Plays:
  """The plays the model sees: all of them, or only the well-played ones for variant a."""
  if not hparams.history_filter:
    return plays
  well_played = plays[1] >= hparams.pos_threshold
  return tuple(tf.ragged.boolean_mask(values, well_played) for values in plays)


def _to_ragged(history: AnyTensor) -> tf.RaggedTensor:
  if isinstance(history, tf.RaggedTensor):
    return history
  if isinstance(history, tf.SparseTensor):
    # Varlen features are ragged-right (columns 0..n-1 in each row), as from_sparse requires.
    return tf.RaggedTensor.from_sparse(history)
  return tf.RaggedTensor.from_tensor(history)


def _most_recent_padded(values: tf.RaggedTensor, length: int, dtype: tf.DType,
                        padding=0) -> tf.Tensor:
  recent = values[:, -length:]
  return tf.cast(recent.to_tensor(default_value=tf.cast(padding, recent.dtype),
                                  shape=[None, length]), dtype)


def _to_vector(values: AnyTensor) -> tf.Tensor:
  """A scalar feature as [B], whether it arrives as [B], [B, 1] or a one-value sparse tensor."""
  if isinstance(values, tf.SparseTensor):
    values = tf.sparse.to_dense(values)
  elif isinstance(values, tf.RaggedTensor):
    values = values.to_tensor()
  return tf.reshape(values, [-1])
