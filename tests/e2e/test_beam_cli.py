"""The pipeline through the real TFX CLI on the Beam engine (beam_runner.py, TFX's BeamDagRunner),
with the runner's own Beam arguments: the DirectRunner in multi-processing mode on every core."""

import os

import pytest
import tensorflow as tf

from contract import features
from tests.e2e.cli_workspace import SMALL_CONFIG, Workspace


@pytest.fixture(scope='module')
def beam_run(tmp_path_factory):
  workspace = Workspace(tmp_path_factory.mktemp('e2e_beam'), engine='beam')
  workspace.write_config(SMALL_CONFIG)
  workspace.generate('day1', seed=21, events=8000)
  workspace.create_pipeline()
  return workspace, workspace.run_pipeline()


def test_beam_engine_runs_every_component_and_pushes_a_model_that_serves(beam_run):
  workspace, run = beam_run
  assert set(run.states) >= {
      'PlayLogExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform',
      'Trainer', 'latest_blessed_model_resolver', 'Evaluator', 'Pusher'}
  examples = run.output('PlayLogExampleGen', 'examples')
  assert examples.custom_properties['rows_read'].int_value == 8000
  assert examples.custom_properties['rows_used'].int_value == 8000
  assert run.blessed()
  [version] = workspace.pushed_versions()
  model = tf.saved_model.load(os.path.join(workspace.paths.serving_model_dir, str(version)))
  answer = model.signatures[features.SERVING_SIGNATURE](**{features.SIGNATURE_INPUT: tf.constant(
      [tf.train.Example().SerializeToString()])})  # an empty history: the cold-start answer
  assert answer[features.TOP_ITEM_IDS].shape == (1, SMALL_CONFIG['train']['hparams']['top_k'])
