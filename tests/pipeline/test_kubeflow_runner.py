"""The Kubeflow Pipelines v2 spec: compiled by pipeline/kubeflow_runner.py, read back with kfp's loader.

The spec is read with the function kfp.Client.upload_pipeline and run_pipeline use to read a
package (kfp.client.client._extract_pipeline_yaml: YAML -> pipeline_spec_pb2.PipelineSpec, which
rejects unknown fields). No cluster runs here; the last test runs one compiled container command
(the pushed-model baseline's) exactly as a KFP pod would, on local paths instead of gs://, and
on s3:// against a real S3-protocol server (moto's) on loopback.
"""

import dataclasses
import json
import os
import subprocess
import sys

from google.protobuf import json_format
from kfp.client import client as kfp_client
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
import tensorflow as tf
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.utils import import_utils

from components.pushed_model_baseline import executor as baseline_executor
from contract import schema as schema_lib
from contract import settings
from contract import storage as storage_names
from pipeline import kubeflow_runner
import storage
from storage import kfp_executor
from tests.s3_server import S3Server, keys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 'registry.example.com/ml/playrecall@sha256:' + '0123456789abcdef' * 4
BUCKET = 'gs://playrecall-test'
PIPELINE_ROOT = f'{BUCKET}/root'
DATA_ROOT = f'{BUCKET}/plays'
SERVING_MODEL_DIR = f'{BUCKET}/serving/playrecall'
BEAM_ARGS = ['--runner=DataflowRunner', '--project=ml-prod', '--region=europe-west4']
EXPECTED_TASKS = {'PlayLogExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
                  'Transform', 'Trainer', 'pushed_model_baseline', 'Evaluator', 'Pusher'}
ENTRYPOINT = list(kfp_executor.COMMAND)
S3_BUCKET = 'playrecall-kfp'


@pytest.fixture(scope='module')
def spec_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('kfp') / 'build' / 'playrecall.yaml')
  kubeflow_runner.main([f'--image={IMAGE}', f'--pipeline_root={PIPELINE_ROOT}',
                        f'--data_root={DATA_ROOT}', f'--serving_model_dir={SERVING_MODEL_DIR}',
                        f'--output={path}', *BEAM_ARGS])
  return path


@pytest.fixture(scope='module')
def spec(spec_path) -> pipeline_spec_pb2.PipelineSpec:
  return kfp_client._extract_pipeline_yaml(spec_path).pipeline_spec


def _parameter(spec, task: str, name: str):
  value = spec.root.dag.tasks[task].inputs.parameters[name].runtime_value.constant
  return json_format.MessageToDict(value)


def test_every_component_is_a_task_and_there_is_no_resolver(spec):
  assert set(spec.root.dag.tasks) == EXPECTED_TASKS
  assert spec.pipeline_info.name == settings.PIPELINE_NAME
  assert spec.schema_version == '2.1.0'
  assert spec.default_pipeline_root == PIPELINE_ROOT
  executors = spec.deployment_spec.fields['executors']
  assert all('container' in e for e in json_format.MessageToDict(executors).values())
  assert not any('resolver' in name.lower() or 'importer' in name.lower()
                 for name in list(spec.root.dag.tasks) + list(json_format.MessageToDict(
                     executors)))


def test_every_container_runs_the_image_with_the_tfx_entrypoint_and_beam_args(spec_path, spec):
  executors = json_format.MessageToDict(spec.deployment_spec)['executors']
  assert len(executors) == len(EXPECTED_TASKS)
  for name, executor in executors.items():
    container = executor['container']
    assert container['image'] == IMAGE, name
    assert container['command'] == ENTRYPOINT, name
    args = container['args']
    assert args[args.index('--json_serialized_invocation_args') + 1] == '{{$}}'
    assert args[-len(BEAM_ARGS):] == BEAM_ARGS, name
    # The class each pod imports must exist in the code the image carries (this checkout).
    executor_class = args[args.index('--executor_class_path') + 1]
    assert import_utils.import_class_by_path(executor_class), executor_class
    assert 'env' not in container, 'gs:// needs no settings in the pod: it has its identity'
  assert kfp_client._extract_pipeline_yaml(spec_path).platform_spec == (
      pipeline_spec_pb2.PlatformSpec())
  # The command wraps TFX's executor entrypoint (storage.kfp_executor), which must exist.
  assert import_utils.import_func_from_module(kfp_executor.TFX_EXECUTOR_ENTRYPOINT, 'main')


def test_s3_paths_give_every_container_the_endpoint_and_the_credentials_secret(tmp_path):
  path = str(tmp_path / 'playrecall.yaml')
  kubeflow_runner.main([f'--image={IMAGE}', f'--pipeline_root=s3://{S3_BUCKET}/root',
                        f'--data_root=s3://{S3_BUCKET}/plays/',
                        f'--serving_model_dir=s3://{S3_BUCKET}/serving', f'--output={path}',
                        '--s3_secret=playrecall-s3'])
  document = kfp_client._extract_pipeline_yaml(path)  # as kfp.Client reads an upload
  executors = json_format.MessageToDict(document.pipeline_spec.deployment_spec)['executors']
  platform = json_format.MessageToDict(document.platform_spec)['platforms']['kubernetes']
  assert set(platform['deploymentSpec']['executors']) == set(executors)
  for name, executor in executors.items():
    container = executor['container']
    assert container['command'] == ENTRYPOINT
    assert f'--beam_plugins={storage.BEAM_PLUGIN}' in container['args'], name
    assert {e['name']: e['value'] for e in container['env']} == {
        'AWS_ENDPOINT_URL': storage_names.KFP_MINIO_ENDPOINT,
        'S3_ENDPOINT': storage_names.KFP_MINIO_ENDPOINT,
        'AWS_REGION': storage_names.DEFAULT_REGION,
        'AWS_DEFAULT_REGION': storage_names.DEFAULT_REGION}, name
    assert platform['deploymentSpec']['executors'][name] == {'secretAsEnv': [{
        'secretName': 'playrecall-s3',
        'keyToEnv': [{'secretKey': 'accesskey', 'envVar': 'AWS_ACCESS_KEY_ID'},
                     {'secretKey': 'secretkey', 'envVar': 'AWS_SECRET_ACCESS_KEY'}]}]}, name


def test_aws_s3_itself_needs_no_endpoint():
  env = kubeflow_runner.S3Access(endpoint='', region='eu-west-1').env()
  assert {e['name']: e['value'] for e in env} == {'AWS_REGION': 'eu-west-1',
                                                  'AWS_DEFAULT_REGION': 'eu-west-1'}


def test_every_artifact_type_is_importable_by_the_kfp_entrypoint(spec):
  """KFP v2 pods rebuild each artifact's Python class from its schema title."""
  for name, component in spec.components.items():
    for key, artifact in component.output_definitions.artifacts.items():
      class_path = kubeflow_v2_entrypoint_utils._retrieve_class_path(artifact.artifact_type)
      assert import_utils.import_class_by_path(class_path), f'{name}.{key}: {class_path}'


def test_user_code_is_referenced_by_module_path_and_paths_are_the_object_store(spec):
  assert _parameter(spec, 'Transform', 'preprocessing_fn') == (
      'transform.preprocessing.preprocessing_fn')
  assert _parameter(spec, 'Trainer', 'run_fn') == 'trainer.run.run_fn'
  for task, fn in (('Transform', 'preprocessing_fn'), ('Trainer', 'run_fn')):
    assert import_utils.import_func_from_module(*_parameter(spec, task, fn).rsplit('.', 1))
  for task in ('Transform', 'Trainer', 'Evaluator'):
    assert 'module_file' not in spec.root.dag.tasks[task].inputs.parameters, task
    assert 'module_path' not in spec.root.dag.tasks[task].inputs.parameters, task
  assert _parameter(spec, 'PlayLogExampleGen', 'input_base') == DATA_ROOT
  assert json.loads(_parameter(spec, 'PlayLogExampleGen', 'ingest_config')) == (
      dataclasses.asdict(settings.IngestConfig(
          partition_cache_dir=f'{PIPELINE_ROOT}/{settings.PARTITION_CACHE_DIR}')))
  assert _parameter(spec, 'pushed_model_baseline', 'serving_model_dir') == SERVING_MODEL_DIR
  push_destination = json.loads(_parameter(spec, 'Pusher', 'push_destination'))
  assert push_destination['filesystem']['base_directory'] == SERVING_MODEL_DIR
  custom_config = json.loads(_parameter(spec, 'Trainer', 'custom_config'))
  assert custom_config['hparams']['history_length'] == settings.IngestConfig().history_length


def test_evaluator_baseline_comes_from_the_pushed_model_and_gates_the_pusher(spec):
  tasks = spec.root.dag.tasks
  baseline = tasks['Evaluator'].inputs.artifacts['baseline_model'].task_output_artifact
  assert (baseline.producer_task, baseline.output_artifact_key) == ('pushed_model_baseline',
                                                                    'model')
  candidate = tasks['pushed_model_baseline'].inputs.artifacts['candidate_model']
  assert candidate.task_output_artifact.producer_task == 'Trainer'
  blessing = tasks['Pusher'].inputs.artifacts['model_blessing'].task_output_artifact
  assert blessing.producer_task == 'Evaluator'


def test_tasks_that_read_outside_state_are_never_cached(spec):
  for name, task in spec.root.dag.tasks.items():
    assert task.caching_options.enable_cache == (
        name not in kubeflow_runner.UNCACHEABLE_TASKS), name


def test_a_tfjob_config_makes_the_trainer_launch_the_tfjob():
  config = settings.PipelineConfig(train=settings.TrainConfig(tfjob={'replicas': {'Worker': 4}}))
  spec = json_format.ParseDict(kubeflow_runner.compile_pipeline_spec(
      image=IMAGE, pipeline_root=PIPELINE_ROOT, data_root=DATA_ROOT,
      serving_model_dir=SERVING_MODEL_DIR, config=config, beam_pipeline_args=[]),
                               pipeline_spec_pb2.PipelineSpec())
  assert _parameter(spec, 'Trainer', 'run_fn') == 'trainer.tfjob_launcher.run_fn'
  custom_config = json.loads(_parameter(spec, 'Trainer', 'custom_config'))
  # The TFJob runs the image the spec was compiled with.
  assert custom_config['tfjob'] == dataclasses.asdict(
      settings.TFJobConfig(replicas={'Worker': 4}, image=IMAGE))
  assert import_utils.import_func_from_module(*_parameter(spec, 'Trainer', 'run_fn').rsplit(
      '.', 1))


@pytest.mark.parametrize('flags, message', [
    (['--pipeline_root=gs://b/r', '--data_root=gs://b/d', '--serving_model_dir=gs://b/s'],
     '--image is required'),
    (['--image=i', '--pipeline_root=/tmp/root', '--data_root=gs://b/d',
      '--serving_model_dir=gs://b/s'], "--pipeline_root='/tmp/root' must be an object-store URI"),
    (['--image=i', '--pipeline_root=gs://b/r', '--data_root=gs://b/d',
      '--serving_model_dir=gs://b/s', '--output=p.json'], 'must end in .yaml'),
    (['--image=i', '--pipeline_root=gs://b/r', '--data_root=gs://b/d',
      '--serving_model_dir=gs://b/s', 'DataflowRunner'], "unexpected arguments ['DataflowRunner']"),
    # A tag can be pushed again: the steps and the TFJob could run other code than was compiled.
    (['--image=registry.example.com/ml/playrecall:1.0.0', '--pipeline_root=gs://b/r',
      '--data_root=gs://b/d', '--serving_model_dir=gs://b/s'],
     "image 'registry.example.com/ml/playrecall:1.0.0' must be named by digest"),
])
def test_bad_flags_are_named(flags, message, capsys, monkeypatch):
  for env in kubeflow_runner.ENV_DEFAULTS.values():
    monkeypatch.delenv(env, raising=False)
  with pytest.raises(SystemExit):
    kubeflow_runner.parse_args(flags)
  assert message in capsys.readouterr().err


def test_compiling_for_an_image_by_tag_is_refused():
  with pytest.raises(ValueError, match="'playrecall:latest' must be named by digest"):
    kubeflow_runner.compile_pipeline_spec(
        image='playrecall:latest', pipeline_root=PIPELINE_ROOT, data_root=DATA_ROOT,
        serving_model_dir=SERVING_MODEL_DIR, config=settings.PipelineConfig(),
        beam_pipeline_args=[])


def test_flags_default_from_the_environment(monkeypatch):
  monkeypatch.setenv('PLAYRECALL_IMAGE', IMAGE)
  monkeypatch.setenv('PLAYRECALL_PIPELINE_ROOT', PIPELINE_ROOT)
  monkeypatch.setenv('PLAYRECALL_DATA_ROOT', DATA_ROOT)
  monkeypatch.setenv('PLAYRECALL_SERVING_MODEL_DIR', SERVING_MODEL_DIR)
  args = kubeflow_runner.parse_args([])
  assert (args.image, args.serving_model_dir) == (IMAGE, SERVING_MODEL_DIR)
  assert args.beam_pipeline_args == list(settings.BEAM_PIPELINE_ARGS)


def _executor_input(spec, task: str, inputs: dict, parameters: dict, outputs: dict,
                    output_file: str) -> str:
  """The ExecutorInput JSON the KFP v2 launcher substitutes for '{{$}}', with local URIs."""
  component = spec.components[spec.root.dag.tasks[task].component_ref.name]

  def artifacts(definitions, uris):
    return {key: {'artifacts': [{
        'name': f'{task}-{key}', 'uri': uri,
        'type': json_format.MessageToDict(definitions[key].artifact_type)}]}
            for key, uri in uris.items()}

  return json.dumps({
      'inputs': {'artifacts': artifacts(component.input_definitions.artifacts, inputs),
                 'parameterValues': parameters},
      'outputs': {'artifacts': artifacts(component.output_definitions.artifacts, outputs),
                  'outputFile': output_file}})


def _run_baseline_container(spec, serving_model_dir, output_uri, candidate_uri, output_file,
                            env):
  """Runs the pushed_model_baseline container's command and arguments as KFP's launcher would."""
  component = spec.components[spec.root.dag.tasks['pushed_model_baseline'].component_ref.name]
  container = json_format.MessageToDict(spec.deployment_spec)['executors'][
      component.executor_label]['container']
  invocation = _executor_input(
      spec, 'pushed_model_baseline', inputs={'candidate_model': candidate_uri},
      parameters={'serving_model_dir': serving_model_dir}, outputs={'model': output_uri},
      output_file=output_file)
  args = [invocation if a == '{{$}}' else a for a in container['args']]
  command = [sys.executable] + container['command'][1:] + args
  result = subprocess.run(command, cwd=REPO_ROOT, timeout=300, capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=REPO_ROOT, TF_USE_LEGACY_KERAS='1'))
  assert result.returncode == 0, result.stderr[-5000:]


def test_baseline_container_command_runs_as_a_kfp_pod_would(spec, tmp_path):
  serving_model_dir = str(tmp_path / 'serving')
  pushed = tf.Module()
  pushed.v = tf.Variable(3.0)
  tf.saved_model.save(pushed, os.path.join(serving_model_dir, '1700000000'))
  output_uri = str(tmp_path / 'baseline')
  output_file = str(tmp_path / 'task' / 'executor_output.json')
  _run_baseline_container(spec, serving_model_dir, output_uri, str(tmp_path / 'candidate'),
                          output_file, os.environ)

  assert tf.saved_model.load(os.path.join(output_uri, 'Format-Serving')).v.numpy() == 3.0
  with open(output_file) as f:
    executor_output = json.load(f)
  [model] = executor_output['artifacts']['model']['artifacts']
  assert model['uri'] == output_uri
  assert model['metadata'][baseline_executor.BASELINE_SOURCE_PROPERTY] == 'pushed'
  assert model['metadata'][baseline_executor.PUSHED_VERSION_PROPERTY] == 1700000000


def test_baseline_container_command_reads_and_writes_s3_as_a_kfp_pod_would(tmp_path):
  """The same container compiled for s3://, as in a KFP install whose artifacts are in its
  MinIO: the pod has the endpoint and credentials in its environment (here the test server's),
  and ends with exit status 0."""
  spec = json_format.ParseDict(kubeflow_runner.compile_pipeline_spec(
      image=IMAGE, pipeline_root=f's3://{S3_BUCKET}/root', data_root=f's3://{S3_BUCKET}/plays/',
      serving_model_dir=f's3://{S3_BUCKET}/serving', config=settings.PipelineConfig(),
      beam_pipeline_args=[]), pipeline_spec_pb2.PipelineSpec())
  server = S3Server().start()
  try:
    client = server.create_bucket(S3_BUCKET)
    model_dir = tmp_path / 'model'
    pushed = tf.Module()
    pushed.v = tf.Variable(3.0)
    tf.saved_model.save(pushed, str(model_dir))
    for path in model_dir.rglob('*'):
      if path.is_file():
        client.upload_file(str(path), S3_BUCKET,
                           f'serving/1700000000/{path.relative_to(model_dir)}')
    output_file = str(tmp_path / 'task' / 'executor_output.json')
    pod_env = {k: v for k, v in os.environ.items() if k != storage_names.TFIO_ENDPOINT_ENV}
    _run_baseline_container(spec, f's3://{S3_BUCKET}/serving', f's3://{S3_BUCKET}/root/baseline',
                            f's3://{S3_BUCKET}/root/candidate', output_file,
                            dict(pod_env, **server.env))
    copied = keys(client, S3_BUCKET, 'root/baseline/Format-Serving/')
  finally:
    server.stop()
  assert 'root/baseline/Format-Serving/saved_model.pb' in copied
  with open(output_file) as f:
    [model] = json.load(f)['artifacts']['model']['artifacts']
  assert model['metadata'][baseline_executor.PUSHED_VERSION_PROPERTY] == 1700000000


def test_the_curated_schema_is_read_from_the_image_and_transform_waits_for_the_validator(spec):
  assert _parameter(spec, 'ImportSchemaGen', 'schema_file') == schema_lib.IMAGE_SCHEMA_FILE
  # The image's copy of the repository's file: k8s/Dockerfile copies contract/ into its WORKDIR.
  with open(os.path.join(REPO_ROOT, 'k8s', 'Dockerfile')) as f:
    dockerfile = f.read().splitlines()
  [workdir] = [line.split()[1] for line in dockerfile if line.startswith('WORKDIR ')]
  assert 'COPY contract contract' in dockerfile
  assert schema_lib.IMAGE_SCHEMA_FILE == os.path.join(
      workdir, os.path.relpath(schema_lib.SCHEMA_FILE, REPO_ROOT))
  assert 'ExampleValidator' in spec.root.dag.tasks['Transform'].dependent_tasks
