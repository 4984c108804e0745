"""The local and Beam runners' pipeline: paths under $PLAYRECALL_HOME, Beam arguments passed on."""

import json
import os

from contract import settings
from pipeline import local_paths

NODES = {'PlayLogExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform',
         'Trainer', 'latest_blessed_model_resolver', 'Evaluator', 'Pusher'}


def test_everything_goes_under_the_home_directory(tmp_path):
  home = str(tmp_path / 'home')
  environ = {local_paths.HOME_ENV: home}
  built = local_paths.create_local_pipeline(settings.PipelineConfig(), environ=environ)
  paths = local_paths.LocalPaths.from_env(settings.PIPELINE_NAME, environ)
  assert built.pipeline_info.pipeline_root == os.path.join(home, 'pipelines', 'playrecall')
  assert built.metadata_connection_config.sqlite.filename_uri == paths.metadata_path
  assert paths.data_root == os.path.join(home, 'data')
  nodes = {node.id: node for node in built.components}
  assert set(nodes) == NODES
  pusher = nodes['Pusher']
  # Pusher keeps its push destination as JSON.
  assert json.loads(pusher.exec_properties['push_destination']) == {
      'filesystem': {'base_directory': paths.serving_model_dir}}


def test_data_directory_and_beam_arguments_pass_through(tmp_path):
  environ = {local_paths.HOME_ENV: str(tmp_path / 'home'),
             local_paths.DATA_ENV: str(tmp_path / 'logs')}
  beam_args = ['--direct_running_mode=in_memory', '--direct_num_workers=1']
  built = local_paths.create_local_pipeline(settings.PipelineConfig(), beam_args, environ)
  assert built.beam_pipeline_args == beam_args
  (example_gen,) = [node for node in built.components if node.id == 'PlayLogExampleGen']
  assert example_gen.exec_properties['input_base'] == str(tmp_path / 'logs')
