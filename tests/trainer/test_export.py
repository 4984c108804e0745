"""Round trip of the serving SavedModel built on a real Transform output."""

import os
import subprocess
import sys
import tempfile

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
import tf_keras
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import metadata_io
from tensorflow_transform.tf_metadata import schema_utils

from contract import features
from contract import settings
from trainer import export
from trainer import model as model_lib
from trainer import vocabulary
from transform import preprocessing

RAW_FEATURE_SPEC = features.raw_feature_spec()
# Plays (all targets, histories empty): song_i is played i + 1 times, so the vocabulary is
# song_7, song_6, ..., song_0.
NUM_SONGS = 8
HPARAMS = settings.HParams(history_length=4, item_embedding_dim=4, hidden_dim=8, num_layers=1,
                              num_heads=2, ffn_dim=8, top_k=100)


def _raw_examples():
  rows = []
  for song in range(NUM_SONGS):
    for play in range(song + 1):
      rows.append({
          features.USER_ID: f'user_{play}', features.TS: 1000 * play + song,
          features.HISTORY_ITEM_ID: [], features.HISTORY_PLAY_RATE: [],
          features.HISTORY_INTENT: [], features.HISTORY_TS: [], features.HISTORY_LABEL: [],
          features.ITEM_ID: f'song_{song}', features.PLAY_RATE: 0.9,
          features.INTENT: features.INTENTS[play % 3], features.LABEL: 1})
  return rows


def _serialized(history=(), play_rates=None, intents=None, item_id=None):
  feature = {
      features.HISTORY_ITEM_ID: _bytes(history),
      features.HISTORY_PLAY_RATE: tf.train.Feature(float_list=tf.train.FloatList(
          value=play_rates if play_rates is not None else [1.0] * len(history))),
      features.HISTORY_INTENT: _bytes(intents if intents is not None else ['on_demand'] * len(history)),
  }
  if item_id is not None:
    feature[features.ITEM_ID] = _bytes([item_id])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


@pytest.fixture(scope='module')
def exported():
  with tempfile.TemporaryDirectory() as tmp:
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
    transform_dir = os.path.join(tmp, 'transform')
    with beam.Pipeline() as pipeline:
      with tft_beam.Context(temp_dir=os.path.join(tmp, 'tft_tmp'), force_tf_compat_v1=False):
        raw = pipeline | beam.Create(_raw_examples())
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    # As TFX's Transform component does, so that raw_feature_spec() answers.
    metadata_io.write_metadata(
        metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    tf_transform_output = tft.TFTransformOutput(transform_dir)
    tf_keras.utils.set_random_seed(3)
    model = model_lib.build_model(HPARAMS, vocabulary.num_items(tf_transform_output),
                                  vocabulary.num_intents(tf_transform_output))
    # Distinct biases, with the OOV bucket's the highest: it must still never be returned.
    bias = np.linspace(0.0, 1.0, NUM_SONGS + 1)[:, np.newaxis]
    model.item_bias_table.assign(bias)
    export_dir = os.path.join(tmp, 'serving')
    export.export_serving_model(model, tf_transform_output, HPARAMS, export_dir)
    yield export_dir, model, tf_transform_output, tf.saved_model.load(export_dir)


def _scores(export_dir, user_vectors):
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  vectors = np.load(os.path.join(ann_dir, export.ITEM_VECTORS_FILE))
  bias = np.load(os.path.join(ann_dir, export.ITEM_BIAS_FILE))
  return user_vectors @ vectors.T + bias


REQUESTS = {
    'known': _serialized(['song_7', 'song_2', 'song_5'], [1.0, 0.2, 0.9],
                         ['on_demand', 'recommend', 'genre_request']),
    'unknown': _serialized(['never_seen', 'song_3'], intents=['mystery', 'on_demand']),
    'empty': _serialized(),
}


def test_top_items_are_vocabulary_strings_by_descending_score(exported):
  export_dir, _, tf_transform_output, loaded = exported
  outputs = loaded.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(list(REQUESTS.values()))})
  ids, scores = outputs[features.TOP_ITEM_IDS].numpy(), outputs[features.TOP_SCORES].numpy()
  vocab = vocabulary.item_vocabulary(tf_transform_output)
  # K = top_k capped at the vocabulary size; every answer is a permutation of the vocabulary.
  assert ids.shape == scores.shape == (3, NUM_SONGS)
  for row in ids:
    assert sorted(item.decode() for item in row) == sorted(vocab)
  assert np.all(np.diff(scores, axis=1) <= 0)
  users = loaded.signatures[features.USER_VECTOR_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant(list(REQUESTS.values()))})[features.USER_VECTOR]
  expected = _scores(export_dir, users.numpy())
  np.testing.assert_allclose(scores, -np.sort(-expected, axis=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      ids, np.array([[vocab[i].encode() for i in np.argsort(-row, kind='stable')] for row in expected]))


def test_user_vector_matches_the_model_and_handles_unknown_and_empty_histories(exported):
  _, model, _, loaded = exported
  user_vector = loaded.signatures[features.USER_VECTOR_SIGNATURE]
  users = user_vector(**{features.SIGNATURE_INPUT: tf.constant(list(REQUESTS.values()))})
  users = users[features.USER_VECTOR].numpy()
  assert users.shape == (3, HPARAMS.hidden_dim) and np.all(np.isfinite(users))
  np.testing.assert_allclose(users[2], model.empty_history_vector.numpy()[0], rtol=1e-6)
  # Unknown items and intents share the OOV buckets: another unknown item answers the same.
  other_unknown = user_vector(**{features.SIGNATURE_INPUT: tf.constant(
      [_serialized(['also_never_seen', 'song_3'], intents=['other', 'on_demand'])])})
  np.testing.assert_allclose(other_unknown[features.USER_VECTOR].numpy()[0], users[1], rtol=1e-6)
  # The signature agrees with the model on an explicitly built batch (vocabulary: song_7 -> 0).
  intents = [v.decode() for v in exported[2].vocabulary_by_name(features.INTENT_VOCAB)]
  batch = {
      features.HISTORY_ITEM_XF: tf.constant([[0, 5, 2, 0]], tf.int64),
      features.HISTORY_PLAY_RATE_XF: tf.constant([[1.0, 0.2, 0.9, 0.0]]),
      features.HISTORY_INTENT_XF: tf.constant([[intents.index('on_demand'), intents.index('recommend'),
                                                intents.index('genre_request'), 0]], tf.int64),
      features.HISTORY_LENGTH: tf.constant([3], tf.int64),
  }
  np.testing.assert_allclose(model(batch).numpy()[0], users[0], rtol=1e-5, atol=1e-6)


def test_target_rank_counts_items_scoring_strictly_higher(exported):
  export_dir, _, _, loaded = exported
  history = (['song_7', 'song_2'], [1.0, 0.3], ['on_demand', 'recommend'])
  targets = [f'song_{i}' for i in range(NUM_SONGS)] + ['never_seen']
  requests = tf.constant([_serialized(*history, item_id=target) for target in targets])
  ranks = loaded.signatures[features.TARGET_RANK_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests})[features.TARGET_RANK].numpy()
  assert ranks.dtype == np.int64
  users = loaded.signatures[features.USER_VECTOR_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests[:1]})[features.USER_VECTOR].numpy()
  scores = _scores(export_dir, users)[0]
  top_ids = loaded.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests[:1]})[features.TOP_ITEM_IDS].numpy()[0]
  for target, rank in zip(targets[:-1], ranks[:-1]):
    vocab_id = NUM_SONGS - 1 - int(target.split('_')[1])
    assert rank == np.sum(scores > scores[vocab_id])
    assert top_ids[rank].decode() == target
  assert sorted(ranks[:-1]) == list(range(NUM_SONGS))
  assert ranks[-1] == NUM_SONGS  # an unknown target is never a hit


def test_item_vector_files_follow_the_vocabulary(exported):
  export_dir, model, tf_transform_output, _ = exported
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  with open(os.path.join(ann_dir, export.ITEM_IDS_FILE)) as f:
    assert f.read().splitlines() == vocabulary.item_vocabulary(tf_transform_output)
  vectors = np.load(os.path.join(ann_dir, export.ITEM_VECTORS_FILE))
  np.testing.assert_allclose(vectors, model.all_item_vectors().numpy()[:NUM_SONGS], rtol=1e-6)


def test_scann_index_finds_the_exact_top_items(exported):
  scann = pytest.importorskip('scann')
  export_dir, _, _, loaded = exported
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  index_dir = export.build_scann_index(ann_dir, num_neighbors=3)
  searcher = scann.scann_ops_pybind.load_searcher(index_dir)
  users = loaded.signatures[features.USER_VECTOR_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant([REQUESTS['known']])})[features.USER_VECTOR].numpy()
  neighbors, _ = searcher.search(np.append(users[0], 1.0).astype(np.float32))
  np.testing.assert_array_equal(neighbors, np.argsort(-_scores(export_dir, users)[0])[:3])


def test_saved_model_cli_shows_the_signatures(exported):
  export_dir = exported[0]
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  shown = subprocess.run([cli, 'show', '--dir', export_dir, '--all'], check=True,
                         capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  for name in (features.SERVING_SIGNATURE, features.USER_VECTOR_SIGNATURE,
               features.TARGET_RANK_SIGNATURE, features.TOP_ITEM_IDS, features.TARGET_RANK):
    assert name in shown.stdout
  assert f"inputs['{features.SIGNATURE_INPUT}'] tensor_info" in shown.stdout
