"""Item and intent vocabularies written by Transform, as the trainer and the export need them."""

from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import features


def _terms(tf_transform_output: tft.TFTransformOutput, name: str) -> List[str]:
  return [term.decode('utf-8') for term in tf_transform_output.vocabulary_by_name(name)]


def item_vocabulary(tf_transform_output: tft.TFTransformOutput) -> List[str]:
  """Item ids by descending training frequency: line i of the vocabulary is model id i."""
  return _terms(tf_transform_output, features.ITEM_VOCAB)


def item_vocabulary_file(tf_transform_output: tft.TFTransformOutput) -> str:
  return tf_transform_output.vocabulary_file_by_name(features.ITEM_VOCAB)


def item_counts(tf_transform_output: tft.TFTransformOutput) -> np.ndarray:
  """Training play counts of the vocabulary items, aligned with item_vocabulary (float64 [V]).

  Read from the counts vocabulary ('count item' per line, the same order as the item vocabulary).
  """
  path = tf_transform_output.vocabulary_file_by_name(features.ITEM_VOCAB_COUNTS)
  if not path:
    raise ValueError(f'Transform output has no vocabulary {features.ITEM_VOCAB_COUNTS!r}')
  vocabulary = item_vocabulary(tf_transform_output)
  counts = []
  with tf.io.gfile.GFile(path, 'rb') as f:
    for line_number, line in enumerate(f, start=1):
      count, _, item = line.rstrip(b'\n').partition(b' ')
      try:
        counts.append(float(count))
      except ValueError:
        raise ValueError(f'{path}:{line_number}: expected "count item", got {line!r}') from None
      if line_number <= len(vocabulary) and item.decode('utf-8') != vocabulary[line_number - 1]:
        raise ValueError(
            f'{path}:{line_number}: item {item!r} is not line {line_number} of the item vocabulary '
            f'({vocabulary[line_number - 1]!r}); the two vocabularies must share one order')
  if len(counts) != len(vocabulary):
    raise ValueError(f'{path} has {len(counts)} lines, the item vocabulary {len(vocabulary)}')
  return np.asarray(counts, dtype=np.float64)


def num_vocabulary_items(tf_transform_output: tft.TFTransformOutput) -> int:
  """The items with an id of their own: the ones served and ranked."""
  return tf_transform_output.vocabulary_size_by_name(features.ITEM_VOCAB)


def num_items(tf_transform_output: tft.TFTransformOutput) -> int:
  """Rows of the item tables: the vocabulary plus its OOV bucket(s)."""
  return num_vocabulary_items(tf_transform_output) + features.NUM_OOV_BUCKETS


def num_intents(tf_transform_output: tft.TFTransformOutput) -> int:
  """Rows of the intent table: the vocabulary plus its OOV bucket(s)."""
  return tf_transform_output.vocabulary_size_by_name(features.INTENT_VOCAB) + features.NUM_OOV_BUCKETS


def vocabularies(tf_transform_output: tft.TFTransformOutput) -> Dict[str, List[str]]:
  """The vocabularies that index the model's tables, by name: items and intents, in id order."""
  return {name: _terms(tf_transform_output, name)
          for name in (features.ITEM_VOCAB, features.INTENT_VOCAB)}
