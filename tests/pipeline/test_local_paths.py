"""The local and Beam runners' pipeline: paths under $PLAYRECALL_HOME or on an object store, Beam
arguments passed on."""

import json
import os

from contract import settings
from contract import storage as storage_names
from pipeline import local_paths
import storage

NODES = {'PlayLogExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
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
  assert built.beam_pipeline_args == [f'--runner={settings.BEAM_RUNNER}'] + beam_args
  (example_gen,) = [node for node in built.components if node.id == 'PlayLogExampleGen']
  assert example_gen.exec_properties['input_base'] == str(tmp_path / 'logs')


def test_object_store_paths_are_kept_as_given_and_beam_workers_get_s3(tmp_path):
  home = str(tmp_path / 'home')
  environ = {local_paths.HOME_ENV: home,
             storage_names.PIPELINE_ROOT_ENV: 's3://bucket/playrecall/root',
             local_paths.DATA_ENV: 's3://bucket/playrecall/plays/',
             storage_names.SERVING_MODEL_DIR_ENV: 's3://bucket/playrecall/serving'}
  built = local_paths.create_local_pipeline(settings.PipelineConfig(), environ=environ)
  paths = local_paths.LocalPaths.from_env(settings.PIPELINE_NAME, environ)
  assert built.pipeline_info.pipeline_root == 's3://bucket/playrecall/root'
  assert paths.data_root == 's3://bucket/playrecall/plays/'
  assert paths.serving_model_dir == 's3://bucket/playrecall/serving'
  assert paths.metadata_path.startswith(home), 'the metadata store stays a local file'
  assert built.beam_pipeline_args == [f'--runner={settings.BEAM_RUNNER}',
                                      f'--beam_plugins={storage.BEAM_PLUGIN}']
