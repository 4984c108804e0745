"""preprocessing_fn through a real tf.Transform Beam analysis on a handful of examples."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from contract import features
from transform import preprocessing

# ExampleGen's user_id and timestamps are left out: the preprocessing_fn must not need them.
RAW_FEATURE_SPEC = {key: spec for key, spec in features.raw_feature_spec().items()
                    if key not in (features.USER_ID, features.TS, features.HISTORY_TS)}


def example(history, target):
  """A raw example from (item, play_rate, intent, label) tuples of the history and the target."""
  items, rates, intents, labels = zip(*history) if history else ((), (), (), ())
  item, rate, intent, label = target
  return {features.HISTORY_ITEM_ID: list(items), features.HISTORY_PLAY_RATE: list(rates),
          features.HISTORY_INTENT: list(intents), features.HISTORY_LABEL: list(labels),
          features.ITEM_ID: item, features.PLAY_RATE: rate, features.INTENT: intent,
          features.LABEL: label}


# Training windows, every play once. Plays: b x4, a x2, c x1; recommend x4, on_demand x2,
# genre_request x1 -> item vocabulary b, a, c.
TRAIN_EXAMPLES = [
    example([], ('a', 1.0, 'on_demand', 1)),
    example([('a', 1.0, 'on_demand', 1), ('b', 0.1, 'recommend', 0)],
            ('b', 0.5, 'recommend', -1)),
    example([('b', 1.5, 'recommend', 1), ('b', 0.1, 'recommend', 0)],
            ('c', 0.2, 'genre_request', 0)),
]
# Not analysed: an unseen item and intent, and a rate below 0.
EVAL_EXAMPLES = [
    example([('b', 0.1, 'recommend', 0), ('b', 0.5, 'recommend', -1),
             ('unseen', -0.2, 'mystery', 0)], ('a', 0.95, 'on_demand', 1)),
]


@pytest.fixture(scope='module')
def transformed():
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
  with tempfile.TemporaryDirectory() as tmp:
    with tft_beam.Context(temp_dir=os.path.join(tmp, 'tmp'), force_tf_compat_v1=False):
      (train_rows, _), transform_fn = (
          (TRAIN_EXAMPLES, metadata)
          | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn,
                                                output_record_batches=False))
      eval_rows, _ = (((EVAL_EXAMPLES, metadata), transform_fn)
                      | tft_beam.TransformDataset(output_record_batches=False))
      _ = transform_fn | tft_beam.WriteTransformFn(tmp)
    yield train_rows, eval_rows, tft.TFTransformOutput(tmp)


def test_vocabularies_count_every_training_play_once_history_and_target(transformed):
  _, _, output = transformed
  assert output.vocabulary_by_name(features.ITEM_VOCAB) == [b'b', b'a', b'c']
  with open(output.vocabulary_file_by_name(features.ITEM_VOCAB_COUNTS)) as f:
    assert [line.split() for line in f.read().splitlines()] == [
        ['4', 'b'], ['2', 'a'], ['1', 'c']]
  assert output.vocabulary_by_name(features.INTENT_VOCAB) == [
      b'recommend', b'on_demand', b'genre_request']


def test_items_and_intents_map_to_ids_with_one_oov_bucket(transformed):
  train_rows, eval_rows, output = transformed
  num_items = output.vocabulary_size_by_name(features.ITEM_VOCAB)
  num_intents = output.vocabulary_size_by_name(features.INTENT_VOCAB)
  assert [r[features.ITEM_XF] for r in train_rows] == [1, 0, 2]
  assert list(train_rows[0][features.HISTORY_ITEM_XF]) == []
  assert list(train_rows[1][features.HISTORY_ITEM_XF]) == [1, 0]
  assert list(eval_rows[0][features.HISTORY_ITEM_XF]) == [0, 0, num_items]
  assert list(eval_rows[0][features.HISTORY_INTENT_XF]) == [0, 0, num_intents]


def test_play_rates_are_clipped_to_unit_interval(transformed):
  train_rows, eval_rows, _ = transformed
  np.testing.assert_allclose(train_rows[2][features.HISTORY_PLAY_RATE_XF], [1.0, 0.1])
  np.testing.assert_allclose(eval_rows[0][features.HISTORY_PLAY_RATE_XF], [0.1, 0.5, 0.0])


def test_labels_pass_through(transformed):
  train_rows, eval_rows, _ = transformed
  assert [r[features.LABEL] for r in train_rows + eval_rows] == [1, -1, 0, 1]
  assert [list(r[features.HISTORY_LABEL]) for r in train_rows] == [[], [1, 0], [1, 0]]
