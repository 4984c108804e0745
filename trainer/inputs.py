"""Builds the dense model batch from Transform's outputs.

Runs in graph mode: inside tf.data maps, tf.functions and the exported serving signatures.
"""

from typing import Dict, Union

import tensorflow as tf

from trainer import hparams as hparams_lib
from transform import features

_HISTORY_XF = (features.HISTORY_ITEM_XF, features.HISTORY_PLAY_RATE_XF, features.HISTORY_INTENT_XF)
_TARGET_XF = (features.ITEM_XF, features.LABEL)

AnyTensor = Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]


def to_model_batch(transformed: Dict[str, AnyTensor],
                   hparams: hparams_lib.HParams) -> Dict[str, tf.Tensor]:
  """Returns the model batch: padded history tensors, HISTORY_LENGTH and, when present, targets.

  History features become dense [B, history_length] tensors with the real positions first (oldest
  first) and padding (0) after; histories longer than history_length keep their most recent plays.
  With hparams.history_filter (variant a), plays whose play rate is below hparams.pos_threshold are
  dropped before padding, so the model sees only well-played songs.

  Args:
    transformed: Transform's output features; history features sparse [B, None] (ragged or dense
      also accepted), scalar features [B] or [B, 1].
    hparams: the model's hyper-parameters.
  """
  missing = [name for name in _HISTORY_XF if name not in transformed]
  if missing:
    raise KeyError(f'transformed features lack {missing}; got {sorted(transformed)}')
  items, play_rates, intents = (_to_ragged(transformed[name]) for name in _HISTORY_XF)
  if hparams.history_filter:
    well_played = play_rates >= hparams.pos_threshold
    items, play_rates, intents = (
        tf.ragged.boolean_mask(history, well_played) for history in (items, play_rates, intents))
  length = hparams.history_length
  batch = {
      features.HISTORY_ITEM_XF: _most_recent_padded(items, length, tf.int64),
      features.HISTORY_PLAY_RATE_XF: _most_recent_padded(play_rates, length, tf.float32),
      features.HISTORY_INTENT_XF: _most_recent_padded(intents, length, tf.int64),
      features.HISTORY_LENGTH: tf.minimum(items.row_lengths(), length),
  }
  for name in _TARGET_XF:
    if name in transformed:
      batch[name] = _to_vector(transformed[name])
  return batch


def _to_ragged(history: AnyTensor) -> tf.RaggedTensor:
  if isinstance(history, tf.RaggedTensor):
    return history
  if isinstance(history, tf.SparseTensor):
    # Varlen features are ragged-right (columns 0..n-1 in each row), as from_sparse requires.
    return tf.RaggedTensor.from_sparse(history)
  return tf.RaggedTensor.from_tensor(history)


def _most_recent_padded(history: tf.RaggedTensor, length: int, dtype: tf.DType) -> tf.Tensor:
  recent = history[:, -length:]
  return tf.cast(recent.to_tensor(default_value=0, shape=[None, length]), dtype)


def _to_vector(values: AnyTensor) -> tf.Tensor:
  """A scalar feature as [B], whether it arrives as [B], [B, 1] or a one-value sparse tensor."""
  if isinstance(values, tf.SparseTensor):
    values = tf.sparse.to_dense(values)
  elif isinstance(values, tf.RaggedTensor):
    values = values.to_tensor()
  return tf.reshape(values, [-1])
