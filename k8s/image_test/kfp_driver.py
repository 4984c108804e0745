"""What Kubeflow Pipelines' v2 driver does between two tasks of a compiled pipeline spec, without
a cluster: the order the DAG allows, and each task's ExecutorInput (the JSON the launcher puts in
place of the `{{$}}` placeholder of the task's arguments).

The driver builds a task's ExecutorInput from the spec and from what its upstream tasks left:
  - inputs.parameterValues: each parameter of the task (`runtimeValue.constant` in a spec of
    schema 2.1, as pipeline/kubeflow_runner.py compiles);
  - inputs.artifacts: for each `taskOutputArtifact`, the artifact the producer task output: its
    URI, its type (the TFX type's instance schema, as in the spec: TFX's entrypoint imports the
    class from it) and its metadata (the custom properties the producer's executor wrote to its
    output file, which the launcher records in ML Metadata and the driver hands on);
  - outputs.artifacts: a fresh URI under the pipeline root per output, named by run, task and
    output key, with the output's type;
  - outputs.outputFile: where the executor writes its ExecutorOutput (the launcher reads it).
Standard library only (and the spec as a dict): tests/k8s checks it on a compiled spec.
"""

import json
from typing import Any, Dict, List, Mapping

# The launcher's local file for the executor's output metadata (KFP v2's default path).
OUTPUT_FILE = '/tmp/kfp_outputs/output_metadata.json'
EXECUTOR_INPUT_PLACEHOLDER = '{{$}}'


class SpecError(ValueError):
  """The compiled spec has something this driver cannot run (named in the message)."""


def tasks(spec: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
  return spec['root']['dag']['tasks']


def upstream(task: Mapping[str, Any]) -> List[str]:
  """The tasks a task waits for: its dependentTasks and the producers of its input artifacts."""
  producers = [a['taskOutputArtifact']['producerTask']
               for a in task.get('inputs', {}).get('artifacts', {}).values()]
  return sorted(set(task.get('dependentTasks', [])) | set(producers))


def dag_order(spec: Mapping[str, Any]) -> List[str]:
  """Every task once, each after all of its upstream tasks (ties by name, so the order is
  stable); SpecError on an unknown upstream task or a cycle."""
  all_tasks = tasks(spec)
  for name, task in all_tasks.items():
    for up in upstream(task):
      if up not in all_tasks:
        raise SpecError(f'task {name} waits for {up!r}, which is no task of the spec')
  done: List[str] = []
  while len(done) < len(all_tasks):
    ready = sorted(name for name, task in all_tasks.items()
                   if name not in done and all(up in done for up in upstream(task)))
    if not ready:
      raise SpecError(f'the DAG has a cycle among {sorted(set(all_tasks) - set(done))}')
    done += ready
  return done


def component(spec: Mapping[str, Any], task_name: str) -> Dict[str, Any]:
  return spec['components'][tasks(spec)[task_name]['componentRef']['name']]


def container(spec: Mapping[str, Any], task_name: str) -> Dict[str, Any]:
  """The task's container: image, command, args, env, exactly as compiled."""
  label = component(spec, task_name)['executorLabel']
  return spec['deploymentSpec']['executors'][label]['container']


def output_uri(pipeline_root: str, pipeline_name: str, run_id: str, task_name: str,
               key: str) -> str:
  return '/'.join([pipeline_root.rstrip('/'), pipeline_name, run_id, task_name, key])


def parameter_values(spec: Mapping[str, Any], task_name: str) -> Dict[str, Any]:
  values = {}
  for name, parameter in tasks(spec)[task_name].get('inputs', {}).get('parameters', {}).items():
    if 'constant' not in parameter.get('runtimeValue', {}):
      raise SpecError(f'task {task_name}: parameter {name} is no constant ({parameter}); only '
                      'compiled constants are supported')
    values[name] = parameter['runtimeValue']['constant']
  return values


def executor_input(spec: Mapping[str, Any], task_name: str, *, pipeline_root: str, run_id: str,
                   produced: Mapping[str, Mapping[str, Dict[str, Any]]],
                   output_file: str = OUTPUT_FILE) -> Dict[str, Any]:
  """The ExecutorInput of task_name. produced[task][key] is the artifact (name, uri, type,
  metadata) an upstream task output, as produced_artifacts() returns it."""
  definitions = component(spec, task_name)
  pipeline_name = spec['pipelineInfo']['name']
  inputs = {}
  for key, source in tasks(spec)[task_name].get('inputs', {}).get('artifacts', {}).items():
    producer = source['taskOutputArtifact']['producerTask']
    output_key = source['taskOutputArtifact']['outputArtifactKey']
    if output_key not in produced.get(producer, {}):
      raise SpecError(f'task {task_name}: input {key} needs {producer}.{output_key}, which has '
                      'not been produced')
    inputs[key] = {'artifacts': [dict(produced[producer][output_key])]}
  outputs = {}
  for key, definition in definitions.get('outputDefinitions', {}).get('artifacts', {}).items():
    outputs[key] = {'artifacts': [{
        'name': f'{task_name}-{key}',
        'uri': output_uri(pipeline_root, pipeline_name, run_id, task_name, key),
        'type': definition['artifactType'],
        'metadata': {}}]}
  return {'inputs': {'artifacts': inputs,
                     'parameterValues': parameter_values(spec, task_name)},
          'outputs': {'artifacts': outputs, 'outputFile': output_file}}


def produced_artifacts(invocation: Mapping[str, Any],
                       executor_output: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
  """The task's output artifacts as the launcher records them: the ExecutorInput's output
  artifact (name, uri, type) with the metadata its executor wrote (its ExecutorOutput)."""
  result = {}
  for key, artifact_list in invocation['outputs']['artifacts'].items():
    [artifact] = artifact_list['artifacts']
    written = executor_output.get('artifacts', {}).get(key, {}).get('artifacts', [])
    metadata = dict(written[0].get('metadata', {})) if written else {}
    if written and written[0].get('uri', artifact['uri']) != artifact['uri']:
      raise SpecError(f'{artifact["name"]}: the executor moved its output to '
                      f'{written[0]["uri"]} (expected {artifact["uri"]})')
    result[key] = dict(artifact, metadata=metadata)
  return result


def task_arguments(spec: Mapping[str, Any], task_name: str,
                   invocation: Mapping[str, Any]) -> List[str]:
  """The task's arguments exactly as compiled, `{{$}}` replaced by the ExecutorInput's JSON;
  SpecError if another placeholder is left (this driver would not know its value)."""
  args = [json.dumps(invocation) if arg == EXECUTOR_INPUT_PLACEHOLDER else arg
          for arg in container(spec, task_name).get('args', [])]
  left = [arg for arg in args if arg.startswith('{{$.')]
  if left:
    raise SpecError(f'task {task_name}: placeholders this driver does not fill: {left}')
  return args


def secret_env(platform_spec: Mapping[str, Any], spec: Mapping[str, Any], task_name: str,
               secrets: Mapping[str, Mapping[str, str]]) -> Dict[str, str]:
  """The environment variables the spec's Kubernetes section gives the task from Secrets
  (secretAsEnv), with the values of secrets[secret_name][key]."""
  label = component(spec, task_name)['executorLabel']
  executors = (platform_spec or {}).get('platforms', {}).get('kubernetes', {}).get(
      'deploymentSpec', {}).get('executors', {})
  env = {}
  for entry in executors.get(label, {}).get('secretAsEnv', []):
    secret = secrets.get(entry['secretName'])
    if secret is None:
      raise SpecError(f'task {task_name}: Secret {entry["secretName"]!r} is not provided')
    for mapping in entry['keyToEnv']:
      env[mapping['envVar']] = secret[mapping['secretKey']]
  return env
