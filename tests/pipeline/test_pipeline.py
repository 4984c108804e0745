"""create_pipeline's wiring: the curated schema and the validator before Transform; the ingest
settings as one parameter; the warm start: which node gives the Trainer its base model."""

import dataclasses
import json

from kfp.client import client as kfp_client

from contract import schema as schema_lib
from contract import settings
from pipeline import kubeflow_runner
from pipeline import pipeline

WARM = settings.PipelineConfig.from_dict({'train': {'warm_start': True, 'warm_start_steps': 50}})


def _build(config, baseline):
  return pipeline.create_pipeline(
      pipeline_name='p', pipeline_root='/tmp/root', data_root='/tmp/data',
      serving_model_dir='/tmp/serving', config=config, baseline=baseline)


def _node(built, node_id):
  [node] = [c for c in built.components if c.id == node_id]
  return node


def test_local_and_beam_warm_start_from_the_resolvers_latest_blessed_model():
  built = _build(WARM, 'resolver')
  trainer = _node(built, 'Trainer')
  resolver = _node(built, 'latest_blessed_model_resolver')
  assert trainer.inputs['base_model'] is resolver.outputs['model']
  assert _node(built, 'Evaluator').inputs['baseline_model'] is resolver.outputs['model']
  custom_config = json.loads(trainer.exec_properties['custom_config'])
  assert custom_config[settings.TRAINER_WARM_START_STEPS_KEY] == 50


def test_kubeflow_warm_starts_from_the_pushed_model_and_compiles(tmp_path):
  built = _build(WARM, 'pushed_model')
  base = _node(built, pipeline.PUSHED_MODEL_BASE_ID)
  assert _node(built, 'Trainer').inputs['base_model'] is base.outputs['model']
  assert 'candidate_model' not in base.inputs  # it cannot wait for the model it is the base of

  config = tmp_path / 'warm.json'
  config.write_text(json.dumps({'train': {'warm_start': True}}))
  spec_path = tmp_path / 'spec.yaml'
  kubeflow_runner.main([
      '--image=registry.example.com/playrecall@sha256:' + '0' * 64,
      '--pipeline_root=gs://b/root', '--data_root=gs://b/plays',
      '--serving_model_dir=gs://b/serving', f'--output={spec_path}', f'--config={config}'])
  tasks = kfp_client._extract_pipeline_yaml(str(spec_path)).pipeline_spec.root.dag.tasks
  base_input = tasks['Trainer'].inputs.artifacts['base_model'].task_output_artifact
  assert base_input.producer_task == pipeline.PUSHED_MODEL_BASE_ID
  # It reads the push directory as it is now: a cache hit would hand over yesterday's model.
  assert not tasks[pipeline.PUSHED_MODEL_BASE_ID].caching_options.enable_cache


def test_without_warm_start_the_trainer_has_no_base():
  built = _build(settings.PipelineConfig(), 'pushed_model')
  assert 'base_model' not in _node(built, 'Trainer').inputs
  assert pipeline.PUSHED_MODEL_BASE_ID not in {c.id for c in built.components}


def test_the_curated_schema_guards_transform_and_ingest_is_one_parameter():
  config = settings.PipelineConfig.from_dict({'ingest': {'history_length': 20}})
  built = _build(config, 'resolver')
  schema_gen = _node(built, 'ImportSchemaGen')
  assert schema_gen.exec_properties['schema_file'] == schema_lib.SCHEMA_FILE
  validator, transform = _node(built, 'ExampleValidator'), _node(built, 'Transform')
  assert validator.inputs['schema'] is schema_gen.outputs['schema']
  assert transform.inputs['schema'] is schema_gen.outputs['schema']
  assert _node(built, 'Trainer').inputs['schema'] is schema_gen.outputs['schema']
  assert validator in transform.upstream_nodes  # an anomaly stops the run before Transform
  example_gen = _node(built, 'PlayLogExampleGen')
  assert set(example_gen.exec_properties) == {'input_base', 'ingest_config'}
  # The settings as given, the partition cache under the pipeline root.
  assert settings.IngestConfig.from_dict(json.loads(
      example_gen.exec_properties['ingest_config'])) == dataclasses.replace(
          config.ingest, partition_cache_dir='/tmp/root/partition_cache')
  custom_config = json.loads(_node(built, 'Trainer').exec_properties['custom_config'])
  assert custom_config['hparams']['history_length'] == 20
