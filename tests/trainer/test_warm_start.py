"""Warm start: the base model's rows remapped to a drifted vocabulary, on real exports."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import features
from contract import settings
from tests.trainer import tiny_data
from trainer import export
from trainer import model as model_lib
from trainer import train_loop
from trainer import vocabulary
from trainer import warm_start

HPARAMS = settings.HParams(history_length=tiny_data.HISTORY_LENGTH, item_embedding_dim=4,
                           hidden_dim=8, num_layers=1, num_heads=2, ffn_dim=8, top_k=10,
                           train_steps=2, steps_per_log=1, steps_per_checkpoint=1, batch_size=8)


def test_remap_rows_keeps_shared_terms_and_the_fresh_rows_of_new_ones():
  base_rows = np.array([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]])
  new_rows = np.array([[10.0, 10.5], [20.0, 20.5], [30.0, 30.5]])
  remapped = warm_start.remap_rows(['a', 'b', 'c'], ['c', 'd', 'a'], base_rows, new_rows)
  # c was row 2 of the base, d is new, a was row 0; b is dropped.
  np.testing.assert_array_equal(remapped, [[3.0, 3.5], [20.0, 20.5], [1.0, 1.5]])


def test_oov_rows_follow_the_vocabulary_and_match_only_each_other():
  base = warm_start.with_oov_terms(['a'])
  assert len(base) == 1 + features.NUM_OOV_BUCKETS
  remapped = warm_start.remap_rows(base, warm_start.with_oov_terms(['b', 'a']),
                                   np.array([[1.0], [9.0]]), np.array([[5.0], [6.0], [7.0]]))
  np.testing.assert_array_equal(remapped, [[5.0], [1.0], [9.0]])


@pytest.fixture(scope='module')
def base_export(tiny_transform, tmp_path_factory):
  """(export dir, model) of a model over the first catalogue, its weights random."""
  output = tft.TFTransformOutput(tiny_transform.transform_output)
  tf.keras.utils.set_random_seed(5)
  model = model_lib.build_model(HPARAMS.replace(seed=99), vocabulary.num_items(output),
                                vocabulary.num_intents(output))
  directory = str(tmp_path_factory.mktemp('base'))
  export.export_serving_model(model, output, HPARAMS, directory, log=lambda _: None)
  return directory, model


@pytest.fixture
def drifted(drifted_transform):
  return drifted_transform


def _rows_by_term(table, terms):
  values = np.asarray(tf.convert_to_tensor(table))
  return {term: values[row] for row, term in enumerate(warm_start.with_oov_terms(terms))}


def test_initial_weights_remap_items_and_copy_everything_else(base_export, tiny_transform,
                                                              drifted, tmp_path):
  base_dir, base_model = base_export
  old = vocabulary.vocabularies(tft.TFTransformOutput(tiny_transform.transform_output))
  new_output = tft.TFTransformOutput(drifted.transform_output)
  new = vocabulary.vocabularies(new_output)
  logged = []
  done = warm_start.initial_weights(base_dir, HPARAMS, new, str(tmp_path), logged.append)

  kept = tiny_data.NUM_GENRES * (tiny_data.SONGS_PER_GENRE - tiny_data.DRIFT)
  moved = tiny_data.NUM_GENRES * tiny_data.DRIFT  # gone, and as many new
  assert done.warm, done.reason
  assert (done.items_kept, done.items_new, done.items_dropped) == (kept, moved, moved)
  assert done.warm and done.intents_kept == len(features.INTENTS)
  assert f'{done.items_kept} items keep their vectors' in logged[0]
  assert json.loads((tmp_path / warm_start.RECORD_FILE).read_text())['warm'] is True

  started = model_lib.build_model(HPARAMS, vocabulary.num_items(new_output),
                                  vocabulary.num_intents(new_output))
  fresh = {name: np.asarray(tf.convert_to_tensor(getattr(started, name)))
           for name in ('item_embedding', 'item_bias_table')}
  tf.train.Checkpoint(model=started).read(done.initial_weights).assert_existing_objects_matched()
  for name in ('item_embedding', 'item_bias_table', 'intent_embedding'):
    vocab = features.INTENT_VOCAB if name == 'intent_embedding' else features.ITEM_VOCAB
    before = _rows_by_term(getattr(base_model, name), old[vocab])
    after = _rows_by_term(getattr(started, name), new[vocab])
    for term, row in after.items():
      if term in before:  # kept items, every intent, the OOV rows
        np.testing.assert_array_equal(row, before[term], err_msg=f'{name} {term}')
  new_songs = [row for row, term in enumerate(new[features.ITEM_VOCAB]) if term not in
               old[features.ITEM_VOCAB]]
  assert len(new_songs) == done.items_new
  for name, values in fresh.items():  # new songs keep the new model's own initial rows
    np.testing.assert_array_equal(
        np.asarray(tf.convert_to_tensor(getattr(started, name)))[new_songs], values[new_songs])
  np.testing.assert_array_equal(started.position_embedding.numpy(),
                                base_model.position_embedding.numpy())
  np.testing.assert_array_equal(started.item_projection.kernel.numpy(),
                                base_model.item_projection.kernel.numpy())


def test_training_starts_from_the_initial_weights(base_export, drifted, tmp_path):
  base_dir, _ = base_export
  output = tft.TFTransformOutput(drifted.transform_output)
  done = warm_start.initial_weights(base_dir, HPARAMS, vocabulary.vocabularies(output),
                                    str(tmp_path / 'run'), lambda _: None)
  from trainer import dataset  # pylint: disable=g-import-not-at-top
  from trainer import losses  # pylint: disable=g-import-not-at-top
  from trainer import samplers  # pylint: disable=g-import-not-at-top
  num_items = vocabulary.num_items(output)
  sampler = samplers.make_sampler('uniform', num_items, num_sampled=4, seed=1)
  lines = []
  result = train_loop.train(
      tf.distribute.get_strategy(),
      lambda: model_lib.build_model(HPARAMS, num_items, vocabulary.num_intents(output)),
      lambda context: dataset.make_dataset(drifted.train_files, output, HPARAMS, 8,
                                           input_context=context),
      lambda model, batch: losses.compute_losses(model, batch, HPARAMS, sampler, training=True),
      HPARAMS, str(tmp_path / 'run'), log=lines.append, initial_weights=done.initial_weights)
  assert result.final_step == HPARAMS.train_steps
  assert any(f'from the weights in {done.initial_weights}' in line for line in lines), lines
  # The first checkpoint is one step on from the warm start: the position table moved only a
  # little, whereas a cold start would hold entirely other values.
  reader = tf.train.load_checkpoint(os.path.join(str(tmp_path / 'run'), 'checkpoints', 'ckpt-1'))
  initial = tf.train.load_checkpoint(done.initial_weights)
  key = 'model/position_embedding/.ATTRIBUTES/VARIABLE_VALUE'
  np.testing.assert_allclose(reader.get_tensor(key), initial.get_tensor(key),
                             atol=2 * HPARAMS.learning_rate)


def test_a_base_that_cannot_be_used_means_a_cold_start_with_the_reason(base_export, drifted,
                                                                       tmp_path):
  base_dir, _ = base_export
  new = vocabulary.vocabularies(tft.TFTransformOutput(drifted.transform_output))
  cases = {
      'no base model': (None, HPARAMS),
      'holds no SavedModel (nothing pushed yet)': (str(tmp_path / 'empty'), HPARAMS),
      'is another model: base has hidden_dim 8, this has 16': (base_dir,
                                                               HPARAMS.replace(hidden_dim=16)),
  }
  for reason, (base, hparams) in cases.items():
    done = warm_start.initial_weights(base, hparams, new, str(tmp_path / 'run'), lambda _: None)
    assert not done.warm and reason in done.reason, (reason, done)
    assert json.loads((tmp_path / 'run' / warm_start.RECORD_FILE).read_text())['reason'] == (
        done.reason)
