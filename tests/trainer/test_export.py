"""Round trip of the serving SavedModel built on a real Transform output."""

import json
import os
import subprocess
import re
import sys

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
# song_7, song_6, ..., song_0. Intents cycle genre_request, recommend, on_demand over each song's
# plays, so intent id 0 is genre_request, not the default on_demand: a history whose missing
# intents were padded to id 0 cannot pass for one with the default.
NUM_SONGS = 8
# ann_min_items: the export builds its ANN index even for this tiny catalogue.
HPARAMS = settings.HParams(history_length=4, item_embedding_dim=4, hidden_dim=8, num_layers=1,
                              num_heads=2, ffn_dim=8, top_k=100, ann_min_items=NUM_SONGS)


def _raw_examples():
  rows = []
  for song in range(NUM_SONGS):
    for play in range(song + 1):
      rows.append({
          features.USER_ID: f'user_{play}', features.TS: 1000 * play + song,
          features.HISTORY_ITEM_ID: [], features.HISTORY_PLAY_RATE: [],
          features.HISTORY_INTENT: [], features.HISTORY_TS: [], features.HISTORY_LABEL: [],
          features.ITEM_ID: f'song_{song}', features.PLAY_RATE: 0.9,
          features.INTENT: features.INTENTS[(play + 1) % 3], features.LABEL: 1})
  return rows


def _serialized(history=(), play_rates=None, intents=None, item_id=None, omit=()):
  """A request; play rates 1.0 and on-demand intents unless given; features in omit left out."""
  feature = {
      features.HISTORY_ITEM_ID: _bytes(history),
      features.HISTORY_PLAY_RATE: tf.train.Feature(float_list=tf.train.FloatList(
          value=play_rates if play_rates is not None else [1.0] * len(history))),
      features.HISTORY_INTENT: _bytes(intents if intents is not None else ['on_demand'] * len(history)),
  }
  if item_id is not None:
    feature[features.ITEM_ID] = _bytes([item_id])
  for name in omit:
    del feature[name]
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _with_feature(serialized, name, float_values):
  """A serialized request with one more (float) feature."""
  example = tf.train.Example.FromString(serialized)
  example.features.feature[name].float_list.value.extend(float_values)
  return example.SerializeToString()


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


@pytest.fixture(scope='module')
def transform_output(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('export_transform'))
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
  return tft.TFTransformOutput(transform_dir)


def _untrained_model(tf_transform_output, hparams):
  tf_keras.utils.set_random_seed(3)
  model = model_lib.build_model(hparams, vocabulary.num_items(tf_transform_output),
                                vocabulary.num_intents(tf_transform_output))
  # Distinct biases, with the OOV bucket's the highest: it must still never be returned.
  bias = np.linspace(0.0, 1.0, NUM_SONGS + 1)[:, np.newaxis]
  model.item_bias_table.assign(bias)
  return model


@pytest.fixture(scope='module')
def exported(transform_output, tmp_path_factory):
  """(export_dir, model, Transform output, loaded SavedModel) of variant c, HParams' default:
  play rates and intents are model inputs."""
  model = _untrained_model(transform_output, HPARAMS)
  export_dir = str(tmp_path_factory.mktemp('serving'))
  export.export_serving_model(model, transform_output, HPARAMS, export_dir)
  return export_dir, model, transform_output, tf.saved_model.load(export_dir)


@pytest.fixture(scope='module')
def variant_a_serving(transform_output):
  """(model, signatures) of variant a, whose play rates only decide which plays the history
  keeps. The signatures are the exported graphs, traced but not saved: saving and loading is
  variant c's test, and would cost half a minute more here."""
  hparams = HPARAMS.replace(variant='a')
  model = _untrained_model(transform_output, hparams)
  return model, export.ServingModule(model, transform_output, hparams).signatures()


@pytest.fixture(params=['a', 'c'])
def serving(request):
  """(variant, model, signatures by name) of each variant."""
  if request.param == 'a':
    return ('a',) + request.getfixturevalue('variant_a_serving')
  _, model, _, loaded = request.getfixturevalue('exported')
  return 'c', model, loaded.signatures


def _scores(export_dir, user_vectors):
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  vectors = np.load(os.path.join(ann_dir, export.ITEM_VECTORS_FILE))
  bias = np.load(os.path.join(ann_dir, export.ITEM_BIAS_FILE))
  return user_vectors @ vectors.T + bias


def _scores_with_returns(export_dir, user_outputs, vocab):
  """_scores of the user_vector signature's answer, each history song mixed with a return to
  its plays, as a serving stack over the exported item vectors computes them."""
  scores = _scores(export_dir, user_outputs[features.USER_VECTOR].numpy())
  for row, (ids, bonus) in enumerate(zip(user_outputs[features.REPEAT_BONUS_ITEM_IDS].numpy(),
                                         user_outputs[features.REPEAT_BONUS].numpy())):
    returns = {}
    for item, value in zip(ids, bonus):
      if item:
        returns[item] = returns.get(item, 0.0) + np.exp(value)
    for item, mass in returns.items():
      column = vocab.index(item)
      scores[row, column] = np.log(np.exp(scores[row, column]) + mass)
  return scores


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
      **{features.SIGNATURE_INPUT: tf.constant(list(REQUESTS.values()))})
  expected = _scores_with_returns(export_dir, users, [item.encode() for item in vocab])
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


def test_scores_add_the_repeat_bonus_the_user_vector_signature_gives(transform_output):
  model = _untrained_model(transform_output, HPARAMS)
  model.repeat_bonus.recency.assign(np.linspace(3.0, 1.0, HPARAMS.history_length))
  model.repeat_bonus.rate_weight.assign(2.0)
  signatures = export.ServingModule(model, transform_output, HPARAMS).signatures()
  requests = tf.constant([REQUESTS['known'], REQUESTS['unknown'], REQUESTS['empty'],
                          _serialized(['song_7', 'song_2', 'song_7'], [1.0, 0.2, 0.9])])
  user = signatures[features.USER_VECTOR_SIGNATURE](**{features.SIGNATURE_INPUT: requests})
  ids = user[features.REPEAT_BONUS_ITEM_IDS].numpy()
  bonus = user[features.REPEAT_BONUS].numpy()
  length = HPARAMS.history_length
  assert ids.shape == bonus.shape == (4, length)
  # Padding and unknown songs carry nothing; the last request plays song_7 twice.
  assert [item.decode() for item in ids[1]] == ['', 'song_3'] + [''] * (length - 2)
  assert [item.decode() for item in ids[3][:3]] == ['song_7', 'song_2', 'song_7']
  assert not bonus[2].any() and bonus[1][0] == 0.0 and bonus[1][1] != 0.0
  top = signatures[features.SERVING_SIGNATURE](**{features.SIGNATURE_INPUT: requests})
  vocab = [item.encode() for item in vocabulary.item_vocabulary(transform_output)]
  expected = (user[features.USER_VECTOR].numpy() @ model.all_item_vectors().numpy()[:NUM_SONGS].T
              + model.all_item_bias().numpy()[:NUM_SONGS])
  for row in range(4):
    returns = {}  # each item's plays' exp(bonus): the mass of a return to it
    for item, value in zip(ids[row], bonus[row]):
      if item:
        returns[item] = returns.get(item, 0.0) + np.exp(value)
    for item, mass in returns.items():
      column = vocab.index(item)
      expected[row, column] = np.log(np.exp(expected[row, column]) + mass)
  for row in range(4):
    scores = dict(zip(top[features.TOP_ITEM_IDS].numpy()[row],
                      top[features.TOP_SCORES].numpy()[row]))
    np.testing.assert_allclose([scores[item] for item in vocab], expected[row], rtol=1e-5,
                               atol=1e-5)
  assert expected[3, vocab.index(b'song_7')] - expected[3, vocab.index(b'song_2')] > 2.0


def test_target_rank_counts_items_scoring_strictly_higher(exported):
  export_dir, _, _, loaded = exported
  history = (['song_7', 'song_2'], [1.0, 0.3], ['on_demand', 'recommend'])
  targets = [f'song_{i}' for i in range(NUM_SONGS)] + ['never_seen']
  requests = tf.constant([_serialized(*history, item_id=target) for target in targets])
  ranks = loaded.signatures[features.TARGET_RANK_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests})[features.TARGET_RANK].numpy()
  assert ranks.dtype == np.int64
  users = loaded.signatures[features.USER_VECTOR_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests[:1]})
  vocab = [f'song_{NUM_SONGS - 1 - i}'.encode() for i in range(NUM_SONGS)]
  scores = _scores_with_returns(export_dir, users, vocab)[0]
  top_ids = loaded.signatures[features.SERVING_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests[:1]})[features.TOP_ITEM_IDS].numpy()[0]
  for target, rank in zip(targets[:-1], ranks[:-1]):
    vocab_id = NUM_SONGS - 1 - int(target.split('_')[1])
    assert rank == np.sum(scores > scores[vocab_id])
    assert top_ids[rank].decode() == target
  assert sorted(ranks[:-1]) == list(range(NUM_SONGS))
  assert ranks[-1] == NUM_SONGS  # an unknown target is never a hit


def test_popularity_rank_is_the_targets_place_in_the_play_count_order(exported):
  _, _, _, loaded = exported
  targets = [f'song_{i}' for i in range(NUM_SONGS)] + ['never_seen']
  requests = tf.constant([_serialized(['song_1'], [1.0], ['on_demand'], item_id=target)
                          for target in targets])
  ranks = loaded.signatures[features.TARGET_RANK_SIGNATURE](
      **{features.SIGNATURE_INPUT: requests})[features.POPULARITY_RANK].numpy()
  # The fixture plays song_i i + 1 times: the vocabulary puts the last song first.
  assert list(ranks) == [NUM_SONGS - 1 - i for i in range(NUM_SONGS)] + [NUM_SONGS]


HISTORY = ['song_7', 'never_seen', 'song_5']
# What a history without play rates or intents must mean: every play heard (almost) to the end,
# asked for on demand.
WITH_DEFAULTS = _serialized(HISTORY, [features.DEFAULT_PLAY_RATE] * 3,
                            [features.DEFAULT_INTENT] * 3, item_id='song_1')
SIGNATURES = (features.SERVING_SIGNATURE, features.USER_VECTOR_SIGNATURE,
              features.TARGET_RANK_SIGNATURE)


def _answer(signatures, signature, requests):
  """The signature's outputs as numpy arrays (requests name a target item for target_rank)."""
  outputs = signatures[signature](**{features.SIGNATURE_INPUT: tf.constant(requests)})
  return {name: value.numpy() for name, value in outputs.items()}


def _assert_same(actual, expected, what):
  if actual.dtype.kind in 'SO':  # item ids
    np.testing.assert_array_equal(actual, expected, err_msg=what)
  else:
    np.testing.assert_allclose(actual, expected, rtol=1e-6, err_msg=what)


def test_requests_without_play_rates_or_intents_get_the_defaults(serving):
  variant, model, signatures = serving
  without = {
      'no rates': _serialized(HISTORY, omit=[features.HISTORY_PLAY_RATE], item_id='song_1'),
      'empty rates': _serialized(HISTORY, play_rates=[], item_id='song_1'),
      'no intents': _serialized(HISTORY, [features.DEFAULT_PLAY_RATE] * 3,
                                omit=[features.HISTORY_INTENT], item_id='song_1'),
      'neither': _serialized(HISTORY, omit=[features.HISTORY_PLAY_RATE, features.HISTORY_INTENT],
                             item_id='song_1'),
  }
  # Defaults are per request: a neighbour with its own rates and intents keeps them.
  own = _serialized(HISTORY, [0.1, 0.5, 0.0], ['recommend', 'genre_request', 'recommend'],
                    item_id='song_1')
  empty = _serialized(omit=[features.HISTORY_PLAY_RATE, features.HISTORY_INTENT], item_id='song_1')
  for signature in SIGNATURES:
    answers = _answer(signatures, signature, list(without.values()) + [own, empty])
    expected = _answer(signatures, signature, [WITH_DEFAULTS, own])
    for name, values in answers.items():
      for row, case in enumerate(without):
        _assert_same(values[row], expected[name][0], f'{signature} {name}: {case}')
      _assert_same(values[len(without)], expected[name][1], f'{signature} {name}: own')
  requests = {'defaults': WITH_DEFAULTS, 'empty': empty,
              'all skipped': _serialized(HISTORY, [0.0] * 3),
              'intent id 0': _serialized(HISTORY, intents=['genre_request'] * 3)}
  users = dict(zip(requests, _answer(signatures, features.USER_VECTOR_SIGNATURE,
                                     list(requests.values()))[features.USER_VECTOR]))
  np.testing.assert_allclose(users['empty'], model.empty_history_vector.numpy()[0], rtol=1e-6)
  if variant == 'a':
    # The plays are kept, not filtered out as skips.
    assert not np.allclose(users['defaults'], users['empty'])
  else:
    # The defaults are what they say, not what padding gave: every song skipped, intent id 0.
    assert not np.allclose(users['defaults'], users['all skipped'])
    assert not np.allclose(users['defaults'], users['intent id 0'])


REFUSED = {
    'fewer play rates': (
        [_serialized(HISTORY, [1.0, 0.5], item_id='song_1')],
        'history_play_rate has 2 values but history_item_id has 3 (request 0): send one per item, '
        'or none for the default 0.99'),
    'more intents': (
        [WITH_DEFAULTS, _serialized(HISTORY, intents=['on_demand'] * 4, item_id='song_1')],
        'history_intent has 4 values but history_item_id has 3 (request 1): send one per item, '
        'or none for the default on_demand'),
    'play rates without items': (
        [_serialized([], [0.5], [], item_id='song_1')],
        'history_play_rate has 1 values but history_item_id has 0 (request 0)'),
    'NaN play rate': (
        [_serialized(HISTORY, [1.0, float('nan'), 0.5], item_id='song_1')],
        'history_play_rate[1] is nan (request 0): play rates must be in [0, 1]'),
    'play rate above 1': (
        [WITH_DEFAULTS, WITH_DEFAULTS, _serialized(HISTORY, [1.5, 1.0, 0.5], item_id='song_1')],
        'history_play_rate[0] is 1.5 (request 2): play rates must be in [0, 1]'),
    'negative play rate': (
        [_serialized(HISTORY, [1.0, 0.5, -0.25], item_id='song_1')],
        'history_play_rate[2] is -0.25 (request 0): play rates must be in [0, 1]'),
    'infinite play rate': (
        [_serialized(HISTORY, [float('inf'), 0.5, 1.0], item_id='song_1')],
        'history_play_rate[0] is inf (request 0): play rates must be in [0, 1]'),
    # The value as sent (float32's shortest form), not rounded to 6 digits ("is 1").
    'play rate just above 1': (
        [_serialized(HISTORY, [1.0, 1.0000001, 0.5], item_id='song_1')],
        'history_play_rate[1] is 1.0000001 (request 0): play rates must be in [0, 1]'),
    'play rate just below 0': (
        [_serialized(HISTORY, [1.0, 0.5, -1e-07], item_id='song_1')],
        'history_play_rate[2] is -1e-07 (request 0): play rates must be in [0, 1]'),
    # A misspelt optional feature would be ignored: the history scored with default rates.
    'unknown feature': (
        [WITH_DEFAULTS, _with_feature(_serialized(HISTORY, omit=[features.HISTORY_PLAY_RATE],
                                                  item_id='song_1'),
                                      'history_playrate', [0.0, 0.1, 0.0])],
        'unknown feature history_playrate (request 1): the model does not read it; known '
        'features: history_intent, history_item_id, history_label, history_play_rate, '
        'history_ts, intent, item_id, label, play_rate, ts, user_id'),
}


@pytest.mark.parametrize('case', list(REFUSED))
def test_bad_requests_are_refused_with_a_message_naming_them(case, serving):
  signatures = serving[2]
  requests, message = REFUSED[case]
  for signature in SIGNATURES:
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
      _answer(signatures, signature, requests)


def test_requests_may_carry_every_feature_examplegen_writes(serving):
  """The Evaluator sends whole examples: the features the model does not read but knows are
  not refused."""
  signatures = serving[2]
  example = tf.train.Example.FromString(_serialized(HISTORY, [1.0, 0.2, 0.9], item_id='song_1'))
  feature = example.features.feature
  feature[features.USER_ID].bytes_list.value.append(b'user_1')
  feature[features.TS].int64_list.value.append(1000)
  feature[features.HISTORY_TS].int64_list.value.extend([1, 2, 3])
  feature[features.HISTORY_LABEL].int64_list.value.extend([1, 0, 1])
  feature[features.PLAY_RATE].float_list.value.append(1.0)
  feature[features.INTENT].bytes_list.value.append(b'on_demand')
  feature[features.LABEL].int64_list.value.append(1)
  plain = _serialized(HISTORY, [1.0, 0.2, 0.9], item_id='song_1')
  for signature in SIGNATURES:
    whole = _answer(signatures, signature, [example.SerializeToString()])
    for name, values in _answer(signatures, signature, [plain]).items():
      _assert_same(whole[name], values, f'{signature} {name}')


def test_item_vector_files_follow_the_vocabulary(exported):
  export_dir, model, tf_transform_output, _ = exported
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  with open(os.path.join(ann_dir, export.ITEM_IDS_FILE)) as f:
    assert f.read().splitlines() == vocabulary.item_vocabulary(tf_transform_output)
  vectors = np.load(os.path.join(ann_dir, export.ITEM_VECTORS_FILE))
  np.testing.assert_allclose(vectors, model.all_item_vectors().numpy()[:NUM_SONGS], rtol=1e-6)


def test_the_export_holds_an_ann_index_that_finds_the_exact_top_items(exported):
  scann = pytest.importorskip('scann')
  export_dir, _, _, loaded = exported
  ann_dir = os.path.join(export_dir, export.ANN_DIR)
  with open(os.path.join(ann_dir, export.ANN_REPORT_FILE)) as f:
    report = json.load(f)
  assert report['index_dir'] == os.path.join(ann_dir, export.SCANN_DIR)
  assert report['num_items'] == NUM_SONGS and report['recall_at_k'] == 1.0
  searcher = scann.scann_ops_pybind.load_searcher(report['index_dir'])
  users = loaded.signatures[features.USER_VECTOR_SIGNATURE](
      **{features.SIGNATURE_INPUT: tf.constant([REQUESTS['known']])})[features.USER_VECTOR].numpy()
  neighbors, _ = searcher.search(np.append(users[0], 1.0).astype(np.float32), final_num_neighbors=3)
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
