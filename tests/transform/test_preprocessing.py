"""preprocessing_fn through a real tf.Transform Beam analysis on a handful of examples."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from transform import features
from transform import preprocessing

# ExampleGen's user_id and ts are left out: the preprocessing_fn must not need them.
RAW_FEATURE_SPEC = {key: spec for key, spec in features.raw_feature_spec().items()
                    if key not in (features.USER_ID, features.TS)}

# Target counts: b x3, a x2, c x1 -> vocabulary order b, a, c.
RAW_EXAMPLES = [
    {'history_item_id': [], 'history_play_rate': [], 'history_intent': [],
     'item_id': 'a', 'play_rate': 1.0, 'intent': 'on_demand', 'label': 1},
    {'history_item_id': ['a'], 'history_play_rate': [1.0], 'history_intent': ['on_demand'],
     'item_id': 'b', 'play_rate': 0.1, 'intent': 'recommend', 'label': 0},
    {'history_item_id': ['a', 'b'], 'history_play_rate': [1.0, 0.1],
     'history_intent': ['on_demand', 'recommend'],
     'item_id': 'b', 'play_rate': 0.5, 'intent': 'recommend', 'label': -1},
    {'history_item_id': ['a', 'b', 'b'], 'history_play_rate': [1.0, 0.1, 1.5],
     'history_intent': ['on_demand', 'recommend', 'recommend'],
     'item_id': 'b', 'play_rate': 0.9, 'intent': 'genre_request', 'label': 1},
    {'history_item_id': ['b', 'b', 'unseen'], 'history_play_rate': [0.1, 0.5, -0.2],
     'history_intent': ['recommend', 'recommend', 'mystery'],
     'item_id': 'a', 'play_rate': 0.95, 'intent': 'on_demand', 'label': 1},
    {'history_item_id': ['b', 'a'], 'history_play_rate': [0.5, 0.95],
     'history_intent': ['recommend', 'on_demand'],
     'item_id': 'c', 'play_rate': 0.2, 'intent': 'recommend', 'label': 0},
]


@pytest.fixture(scope='module')
def transformed():
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
  with tempfile.TemporaryDirectory() as tmp:
    with tft_beam.Context(temp_dir=os.path.join(tmp, 'tmp'), force_tf_compat_v1=False):
      (rows, _), transform_fn = (
          (RAW_EXAMPLES, metadata)
          | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn,
                                                output_record_batches=False))
      _ = transform_fn | tft_beam.WriteTransformFn(tmp)
    output = tft.TFTransformOutput(tmp)
    yield rows, output


def test_item_vocabulary_is_ordered_by_play_count_with_counts(transformed):
  _, output = transformed
  assert output.vocabulary_by_name(features.ITEM_VOCAB) == [b'b', b'a', b'c']
  with open(output.vocabulary_file_by_name(features.ITEM_VOCAB_COUNTS)) as f:
    assert [line.split() for line in f.read().splitlines()] == [
        ['3', 'b'], ['2', 'a'], ['1', 'c']]


def test_items_and_intents_map_to_ids_with_one_oov_bucket(transformed):
  rows, output = transformed
  num_items = output.vocabulary_size_by_name(features.ITEM_VOCAB)
  intents = [v.decode() for v in output.vocabulary_by_name(features.INTENT_VOCAB)]
  assert [r[features.ITEM_XF] for r in rows] == [1, 0, 0, 0, 1, 2]
  assert list(rows[4][features.HISTORY_ITEM_XF]) == [0, 0, num_items]
  assert list(rows[4][features.HISTORY_INTENT_XF]) == [
      intents.index('recommend'), intents.index('recommend'), len(intents)]
  assert list(rows[0][features.HISTORY_ITEM_XF]) == []


def test_play_rates_are_clipped_to_unit_interval(transformed):
  rows, _ = transformed
  np.testing.assert_allclose(rows[3][features.HISTORY_PLAY_RATE_XF], [1.0, 0.1, 1.0])
  np.testing.assert_allclose(rows[4][features.HISTORY_PLAY_RATE_XF], [0.1, 0.5, 0.0])
  assert [r[features.LABEL] for r in rows] == [1, 0, -1, 1, 1, 0]
