"""The image test's stand-in for KFP's driver (k8s/image_test/kfp_driver.py), on the compiled
spec: the DAG order, and each task's ExecutorInput as TFX's KFP entrypoint reads it. Fast: no
containers (`make image-test` runs them)."""

import json

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts

from contract import settings
from k8s.image_test import kfp_driver
from pipeline import kubeflow_runner

IMAGE = '127.0.0.1:5000/playrecall@sha256:' + '0123456789abcdef' * 4
ROOT = 's3://playrecall/root'


@pytest.fixture(scope='module')
def compiled():
  access = kubeflow_runner.S3Access(endpoint='http://127.0.0.1:9000')
  spec = kubeflow_runner.compile_pipeline_spec(
      image=IMAGE, pipeline_root=ROOT, data_root='s3://playrecall/plays/',
      serving_model_dir='s3://playrecall/serving', config=settings.PipelineConfig(),
      beam_pipeline_args=[], s3_access=access)
  return spec, kubeflow_runner.kubernetes_platform_spec(spec, access)


def _fake_run(spec):
  """Every task's ExecutorInput in DAG order, each producer's outputs with some metadata."""
  produced, invocations = {}, {}
  for task in kfp_driver.dag_order(spec):
    invocation = kfp_driver.executor_input(spec, task, pipeline_root=ROOT, run_id='run-1',
                                           produced=produced)
    outputs = {key: {'artifacts': [dict(a['artifacts'][0], metadata={'from': task})]}
               for key, a in invocation['outputs']['artifacts'].items()}
    produced[task] = kfp_driver.produced_artifacts(invocation, {'artifacts': outputs})
    invocations[task] = invocation
  return invocations


def test_dag_order_runs_every_task_after_its_upstream_tasks(compiled):
  spec, _ = compiled
  order = kfp_driver.dag_order(spec)
  assert sorted(order) == sorted(spec['root']['dag']['tasks'])
  for task in order:
    for up in kfp_driver.upstream(spec['root']['dag']['tasks'][task]):
      assert order.index(up) < order.index(task), (up, task)
  assert order[-1] == 'Pusher'
  assert order.index('ExampleValidator') < order.index('Transform')


def test_a_cycle_or_a_missing_task_is_named():
  spec = {'root': {'dag': {'tasks': {'A': {'dependentTasks': ['B']},
                                     'B': {'dependentTasks': ['A']}}}}}
  with pytest.raises(kfp_driver.SpecError, match='cycle'):
    kfp_driver.dag_order(spec)
  spec['root']['dag']['tasks'] = {'A': {'dependentTasks': ['Z']}}
  with pytest.raises(kfp_driver.SpecError, match="'Z'"):
    kfp_driver.dag_order(spec)


def test_executor_inputs_carry_upstream_artifacts_with_their_tfx_types(compiled):
  spec, _ = compiled
  invocations = _fake_run(spec)
  evaluator = invocations['Evaluator']
  # Parsed by TFX's own entrypoint code, as in the container.
  message = json_format.ParseDict(evaluator, pipeline_spec_pb2.ExecutorInput())
  inputs = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(message.inputs.artifacts)
  [examples] = inputs['examples']
  assert isinstance(examples, standard_artifacts.Examples)
  assert examples.uri == f'{ROOT}/playrecall/run-1/PlayLogExampleGen/examples'
  [model] = inputs['model']
  assert isinstance(model, standard_artifacts.Model)
  assert model.uri == f'{ROOT}/playrecall/run-1/Trainer/model'
  [baseline] = inputs['baseline_model']
  assert baseline.uri == f'{ROOT}/playrecall/run-1/pushed_model_baseline/model'
  assert evaluator['inputs']['artifacts']['model']['artifacts'][0]['metadata'] == {
      'from': 'Trainer'}
  outputs = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(message.outputs.artifacts)
  assert isinstance(outputs['blessing'][0], standard_artifacts.ModelBlessing)
  assert evaluator['outputs']['outputFile'] == kfp_driver.OUTPUT_FILE
  assert json.loads(evaluator['inputs']['parameterValues']['example_splits']) == ['eval']


def test_task_arguments_are_the_compiled_ones_with_the_executor_input(compiled):
  spec, _ = compiled
  invocations = _fake_run(spec)
  for task, invocation in invocations.items():
    compiled_args = kfp_driver.container(spec, task)['args']
    args = kfp_driver.task_arguments(spec, task, invocation)
    assert len(args) == len(compiled_args)
    position = compiled_args.index(kfp_driver.EXECUTOR_INPUT_PLACEHOLDER)
    assert json.loads(args[position]) == invocation
    assert args[:position] + args[position + 1:] == (
        compiled_args[:position] + compiled_args[position + 1:])


def test_secret_keys_become_the_environment_the_spec_names(compiled):
  spec, platform_spec = compiled
  env = kfp_driver.secret_env(platform_spec, spec, 'Trainer', {
      'mlpipeline-minio-artifact': {'accesskey': 'A', 'secretkey': 'S'}})
  assert env == {'AWS_ACCESS_KEY_ID': 'A', 'AWS_SECRET_ACCESS_KEY': 'S'}
  with pytest.raises(kfp_driver.SpecError, match='mlpipeline-minio-artifact'):
    kfp_driver.secret_env(platform_spec, spec, 'Trainer', {})


def test_an_input_not_yet_produced_is_named(compiled):
  spec, _ = compiled
  with pytest.raises(kfp_driver.SpecError, match='StatisticsGen: input examples needs '
                     'PlayLogExampleGen.examples'):
    kfp_driver.executor_input(spec, 'StatisticsGen', pipeline_root=ROOT, run_id='r',
                              produced={})
