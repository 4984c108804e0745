"""ServingPusher: a version appears whole or not at all; crashed pushes' leftovers are cleared."""

import os

import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components.pushed_model_baseline.executor import newest_pushed_version
from components.serving_pusher import executor
from components.serving_pusher.component import ServingPusher


def _write_saved_model(path: str) -> None:
  class Model(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def serve(self, x):
      return {'doubled': 2.0 * x}

  model = Model()
  tf.saved_model.save(model, path, signatures={'serving_default': model.serve})
  os.makedirs(os.path.join(path, 'assets'), exist_ok=True)
  with open(os.path.join(path, 'assets', 'item_id'), 'w') as f:
    f.write('song-a\nsong-b\n')


def _run_push(tmp_path, model_uri: str, serving_dir: str) -> None:
  """Importers for a model and its blessing, then ServingPusher, on TFX's local runner."""
  model = tfx.dsl.Importer(source_uri=model_uri,
                           artifact_type=standard_artifacts.Model).with_id('model')
  blessing = tfx.dsl.Importer(
      source_uri=str(tmp_path / 'blessing'), artifact_type=standard_artifacts.ModelBlessing,
      custom_properties={'blessed': 1}).with_id('blessing')
  pusher = ServingPusher(
      model=model.outputs['result'], model_blessing=blessing.outputs['result'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)))
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='push', pipeline_root=str(tmp_path / 'root'),
      components=[model, blessing, pusher], enable_cache=False,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          str(tmp_path / 'metadata.sqlite'))))


def test_a_push_keeps_complete_versions_and_clears_what_crashed_pushes_left(tmp_path):
  model_uri = str(tmp_path / 'model')
  _write_saved_model(os.path.join(model_uri, 'Format-Serving'))
  serving_dir = tmp_path / 'serving'
  _write_saved_model(str(serving_dir / '100'))  # a complete version in service
  os.makedirs(serving_dir / '200')  # a push killed before its first file
  os.makedirs(serving_dir / '300' / 'assets')  # one killed after the assets, before the graph
  os.makedirs(serving_dir / f'{executor.STAGING_PREFIX}250-0a1b2c3d' / 'variables')
  assert newest_pushed_version(str(serving_dir)) == 100
  assert len(executor.leftovers_of_crashed_pushes(str(serving_dir))) == 3

  _run_push(tmp_path, model_uri, str(serving_dir))

  versions = sorted(os.listdir(serving_dir))
  assert versions[0] == '100' and len(versions) == 2, versions
  pushed = serving_dir / versions[1]
  assert newest_pushed_version(str(serving_dir)) == int(versions[1])
  assert (pushed / 'assets' / 'item_id').read_text() == 'song-a\nsong-b\n'
  loaded = tf.saved_model.load(str(pushed)).signatures['serving_default']
  assert loaded(tf.constant([1.5]))['doubled'].numpy().tolist() == [3.0]
  assert tf.saved_model.load(str(serving_dir / '100')) is not None  # untouched, still loads


def test_a_push_that_dies_midway_leaves_no_version_a_poller_could_see(tmp_path, monkeypatch):
  model_path = str(tmp_path / 'model')
  _write_saved_model(model_path)
  serving_dir = str(tmp_path / 'serving')
  os.makedirs(serving_dir)
  copied = []
  real_copy = io_utils.fileio.copy

  def copy_then_die(source, destination, overwrite=False):
    if copied:
      raise KeyboardInterrupt('killed midway')
    copied.append(destination)
    real_copy(source, destination, overwrite)

  monkeypatch.setattr(io_utils.fileio, 'copy', copy_then_die)
  with pytest.raises(KeyboardInterrupt):
    executor.publish(model_path, serving_dir, '1700000000')
  monkeypatch.undo()
  assert copied, 'the copy never started'
  assert newest_pushed_version(serving_dir) is None
  assert [name for name in os.listdir(serving_dir) if name.isdigit()] == []
  assert [os.path.basename(p) for p in executor.leftovers_of_crashed_pushes(serving_dir)] == [
      name for name in os.listdir(serving_dir) if name.startswith(executor.STAGING_PREFIX)]
