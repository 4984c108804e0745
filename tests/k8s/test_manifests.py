"""k8s/: every manifest validates against the Kubernetes schemas, the kustomization is whole, the
serving config is a real TF Serving ModelServerConfig, and the Dockerfile installs like `make install`.

Core objects are validated with kubernetes-validate (the Kubernetes 1.31 OpenAPI schemas, strict:
unknown fields fail). The TFJob template goes into the cluster as a ConfigMap the Trainer step
reads; here it is checked to be what trainer/tfjob_launcher.py needs (its CRD schema is checked
by its own test). No cluster and no Docker engine run here: the image build is checked statically.
"""

import os
import re
import shlex
import shutil
import subprocess
from typing import List, Optional, Tuple

from google.protobuf import text_format
import kubernetes_validate
import pytest
from tensorflow_serving.config import model_server_config_pb2
import yaml

from contract import settings
from pipeline import kfp_submit
from pipeline import pipeline
from storage import kfp_executor

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_DIR = os.path.join(REPO_ROOT, 'k8s')
PIPELINE_RUNNER_DIR = 'pipeline-runner'  # under k8s/, applied in KFP's namespace
KUBERNETES_VERSION = '1.31.0'
MODEL_NAME = 'playrecall'
GRPC_PORT, REST_PORT = 8500, 8501


def _kustomization():
  with open(os.path.join(K8S_DIR, 'kustomization.yaml')) as f:
    return yaml.safe_load(f)


def _documents(relative_path: str):
  with open(os.path.join(K8S_DIR, relative_path)) as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _resources():
  """Every object the kustomization lists, as (file, object)."""
  return [(path, obj) for path in _kustomization()['resources'] for obj in _documents(path)]


def _generated_config_maps():
  """The ConfigMaps kustomize's configMapGenerator makes (before its name-hash suffix)."""
  config_maps = []
  for generator in _kustomization().get('configMapGenerator', []):
    data = {}
    for file_path in generator['files']:
      with open(os.path.join(K8S_DIR, file_path)) as f:
        data[os.path.basename(file_path)] = f.read()
    config_maps.append({'apiVersion': 'v1', 'kind': 'ConfigMap',
                        'metadata': {'name': generator['name']}, 'data': data})
  return config_maps


def _one(kind: str, name: str):
  [obj] = [o for _, o in _resources() if o['kind'] == kind and o['metadata']['name'] == name]
  return obj


def test_every_listed_file_exists():
  kustomization = _kustomization()
  listed = list(kustomization['resources']) + [
      f for g in kustomization.get('configMapGenerator', []) for f in g['files']]
  missing = [p for p in listed if not os.path.isfile(os.path.join(K8S_DIR, p))]
  assert not missing, f'kustomization.yaml lists missing files: {missing}'
  assert 'tfjob.yaml' in listed


def test_every_core_object_validates_against_the_kubernetes_schema():
  objects = [o for _, o in _resources()] + _generated_config_maps()
  assert {o['kind'] for o in objects} >= {'Namespace', 'ServiceAccount', 'Deployment', 'Service',
                                          'ConfigMap', 'Role', 'RoleBinding', 'NetworkPolicy'}
  for obj in objects:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_validation_is_strict_about_a_misspelt_field():
  """The check above would catch a typo, not only a wrong type."""
  deployment = _one('Deployment', 'playrecall-serving')
  broken = dict(deployment, spec=dict(deployment['spec'], replica=2))
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_tfjob_template_is_in_the_cluster_as_the_launcher_reads_it():
  from trainer import tfjob_launcher  # pylint: disable=g-import-not-at-top

  [config_map] = [c for c in _generated_config_maps()
                  if c['metadata']['name'] == settings.TFJOB_TEMPLATE_CONFIG_MAP]
  [generator] = [g for g in _kustomization()['configMapGenerator']
                 if g['name'] == settings.TFJOB_TEMPLATE_CONFIG_MAP]
  assert generator['options']['disableNameSuffixHash']  # read by name, not by a hashed name
  assert _kustomization()['namespace'] == settings.TFJobConfig().namespace
  template = tfjob_launcher.parse_template(config_map['data'][tfjob_launcher.TEMPLATE_KEY],
                                           'ConfigMap')
  assert (template['apiVersion'], template['kind']) == ('kubeflow.org/v1', 'TFJob')
  assert {'Chief', 'Worker', 'PS'} <= set(template['spec']['tfReplicaSpecs'])
  # Not a resource: applying the kustomization must not start a training job.
  assert 'TFJob' not in {o['kind'] for _, o in _resources()}


def test_serving_config_is_a_model_server_config_for_the_push_directory():
  [config_map] = [c for c in _generated_config_maps() if c['metadata']['name'] ==
                  'playrecall-serving-config']
  config = text_format.Parse(config_map['data']['models.config'],
                             model_server_config_pb2.ModelServerConfig())
  [model] = config.model_config_list.config
  assert model.name == MODEL_NAME
  assert model.model_platform == 'tensorflow'
  assert model.base_path.startswith('gs://')  # where the pipeline pushes
  assert model.model_version_policy.latest.num_versions == 1


def test_tf_serving_reads_that_config_and_the_service_reaches_it():
  deployment = _one('Deployment', 'playrecall-serving')
  pod = deployment['spec']['template']
  [container] = pod['spec']['containers']
  assert container['image'].startswith('tensorflow/serving:')
  flags = dict(a.lstrip('-').split('=', 1) for a in container['args'])
  assert (int(flags['port']), int(flags['rest_api_port'])) == (GRPC_PORT, REST_PORT)
  ports = {p['name']: p['containerPort'] for p in container['ports']}
  assert ports == {'grpc': GRPC_PORT, 'http': REST_PORT}
  # The config file is in the mounted ConfigMap the kustomization generates.
  [mount] = [m for m in container['volumeMounts']
             if flags['model_config_file'].startswith(m['mountPath'] + '/')]
  [volume] = [v for v in pod['spec']['volumes'] if v['name'] == mount['name']]
  assert volume['configMap']['name'] in {c['metadata']['name'] for c in _generated_config_maps()}
  assert os.path.basename(flags['model_config_file']) in _generated_config_maps()[0]['data']
  assert container['readinessProbe']['httpGet']['path'] == f'/v1/models/{MODEL_NAME}'
  assert pod['spec']['serviceAccountName'] == _one('ServiceAccount', 'playrecall-serving')[
      'metadata']['name']
  assert deployment['spec']['selector']['matchLabels'].items() <= pod['metadata']['labels'].items()

  service = _one('Service', 'playrecall-serving')
  assert service['spec']['selector'].items() <= pod['metadata']['labels'].items()
  assert {(p['port'], p['targetPort']) for p in service['spec']['ports']} == {
      (GRPC_PORT, 'grpc'), (REST_PORT, 'http')}


@pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl (with kustomize) not installed')
def test_kustomize_build_renders_objects_that_validate():
  rendered = subprocess.run(['kubectl', 'kustomize', K8S_DIR], check=True, capture_output=True,
                            text=True, timeout=60).stdout
  objects = [o for o in yaml.safe_load_all(rendered) if o]
  assert all(o['metadata'].get('namespace') == 'playrecall' for o in objects
             if o['kind'] != 'Namespace')
  [config_map] = [o for o in objects if o['kind'] == 'ConfigMap' and
                  o['metadata']['name'].startswith('playrecall-serving-config')]
  [deployment] = [o for o in objects if o['kind'] == 'Deployment']
  # kustomize renamed the ConfigMap with its content hash and followed the reference.
  assert re.fullmatch(r'playrecall-serving-config-[a-z0-9]+', config_map['metadata']['name'])
  assert config_map['metadata']['name'] in [
      v['configMap']['name'] for v in deployment['spec']['template']['spec']['volumes']
      if 'configMap' in v]
  for obj in objects:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
  # The namespace transform leaves the binding's subject where KFP runs the steps.
  runner = subprocess.run(['kubectl', 'kustomize', os.path.join(K8S_DIR, PIPELINE_RUNNER_DIR)],
                          check=True, capture_output=True, text=True, timeout=60).stdout
  runner_objects = [o for o in yaml.safe_load_all(runner) if o]
  [account] = [o for o in runner_objects if o['kind'] == 'ServiceAccount']
  [binding] = [o for o in objects if o['kind'] == 'RoleBinding']
  assert binding['subjects'] == [{'kind': 'ServiceAccount', 'name': account['metadata']['name'],
                                  'namespace': account['metadata']['namespace']}]
  assert {o['metadata']['namespace'] for o in runner_objects} == {'kubeflow'}
  for obj in runner_objects:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def dockerfile_instructions(text: Optional[str] = None) -> List[Tuple[str, str]]:
  """(instruction, argument) pairs of a Dockerfile (default k8s/Dockerfile), continuation lines
  joined."""
  if text is None:
    with open(os.path.join(K8S_DIR, 'Dockerfile')) as f:
      text = f.read()
  text = re.sub(r'\\\n(\s*#.*\n)*', ' ', text)  # comments may sit inside a continuation
  instructions = []
  for line in text.splitlines():
    line = line.strip()
    if line and not line.startswith('#'):
      instruction, _, argument = line.partition(' ')
      instructions.append((instruction.upper(), ' '.join(argument.split())))
  return instructions


def shell_commands(script: str) -> List[List[str]]:
  """The words of each command of a `a && b && c` shell line (a RUN argument, a recipe line)."""
  commands = [[]]
  for word in shlex.split(script):
    if word == '&&':
      commands.append([])
    else:
      commands[-1].append(word)
  return [command for command in commands if command]


def dockerfile_run_commands(instructions: List[Tuple[str, str]]) -> List[List[List[str]]]:
  """Each RUN instruction's commands, as shell_commands gives them."""
  return [shell_commands(arg) for instruction, arg in instructions if instruction == 'RUN']


def dockerfile_env(instructions: List[Tuple[str, str]]) -> dict:
  """The variables the ENV instructions set (KEY=VALUE form), the last setting of each."""
  return dict(word.split('=', 1) for instruction, arg in instructions if instruction == 'ENV'
              for word in shlex.split(arg))


def _makefile_pip_installs() -> List[List[str]]:
  """The words of the Makefile's `$(BIN)/pip install ...` commands, `$(BIN)/pip` as `pip`."""
  with open(os.path.join(REPO_ROOT, 'Makefile')) as f:
    recipes = [line.strip() for line in f if line.startswith('\t')]
  return [['pip'] + command[1:] for line in recipes for command in shell_commands(line)
          if command[:2] == ['$(BIN)/pip', 'install']]


TEST_LOCK = 'requirements/test-lock.txt'


def _installs_the_lock(command: List[str]) -> bool:
  """Whether a command's words are a pip install of requirements/lock.txt."""
  return command[:2] == ['pip', 'install'] and any(
      pair == ('-r', 'requirements/lock.txt') for pair in zip(command, command[1:]))


def test_dockerfile_installs_the_lock_exactly_as_make_install():
  instructions = dockerfile_instructions()
  runs = dockerfile_run_commands(instructions)
  installs = _makefile_pip_installs()
  [lock_install] = [command for command in installs if _installs_the_lock(command)]
  # Every file must match a hash in the lock (tests/k8s/test_policy.py checks that it has them).
  assert {'--require-hashes', '--no-deps'} <= set(lock_install), lock_install
  # The test and development lock is the Makefile's alone: the image installs the runtime.
  [test_lock_install] = [command for command in installs
                         if ('-r', TEST_LOCK) in zip(command, command[1:])]
  assert {'--require-hashes', '--no-deps'} <= set(test_lock_install), test_lock_install
  assert not any(TEST_LOCK in word for run in runs for command in run for word in command)
  for install in installs:
    if install is not test_lock_install:
      assert any(install in run for run in runs), \
          f'the image does not run the Makefile\'s `{" ".join(install)}`'
  # pyfarmhash builds from source: a C++ compiler is installed in the lock's layer, before it.
  [lock_run] = [run for run in runs if lock_install in run]
  before_lock = lock_run[:lock_run.index(lock_install)]
  assert any(command[:2] == ['apt-get', 'install'] and 'g++' in command
             for command in before_lock), lock_run
  # The lock is copied into the image before that layer.
  run_positions = [i for i, (instruction, _) in enumerate(instructions) if instruction == 'RUN']
  lock_run_position = run_positions[runs.index(lock_run)]
  assert any(instruction == 'COPY' and 'requirements/lock.txt' in arg.split()[:-1]
             for instruction, arg in instructions[:lock_run_position]), instructions


def test_dockerfile_base_environment_and_copies():
  instructions = dockerfile_instructions()
  [base] = [arg for instruction, arg in instructions if instruction == 'FROM']
  assert re.match(r'python:3\.11[.-]', base)
  env = dockerfile_env(instructions)
  assert env['TF_USE_LEGACY_KERAS'] == '1'
  [workdir] = [arg for instruction, arg in instructions if instruction == 'WORKDIR']
  assert env['PYTHONPATH'] == workdir, 'the project is importable from any working directory'
  sources = [s for instruction, arg in instructions if instruction == 'COPY'
             for s in arg.split()[:-1]]
  missing = [s for s in sources if not os.path.exists(os.path.join(REPO_ROOT, s))]
  assert not missing, f'the Dockerfile copies files that do not exist: {missing}'
  # Every package the compiled pipeline imports by module path is in the image.
  needed = {path.split('.')[0] for path in (pipeline.PREPROCESSING_FN, pipeline.RUN_FN)}
  needed |= {'pipeline', 'components', 'evaluation', kfp_executor.COMMAND[-1].split('.')[0]}
  assert needed <= set(sources)
  with open(os.path.join(K8S_DIR, 'Dockerfile.dockerignore')) as f:
    included = {line[1:].rstrip('/') for line in f.read().splitlines() if line.startswith('!')}
  assert set(sources) <= included, 'the build context filter drops a copied file'


def test_the_pipeline_may_launch_the_tfjob_in_its_namespace():
  from trainer import tfjob_launcher  # pylint: disable=g-import-not-at-top

  role = _one('Role', 'playrecall-tfjob-launcher')
  [rule] = [r for r in role['rules'] if tfjob_launcher.PLURAL in r['resources']]
  assert rule['apiGroups'] == [tfjob_launcher.GROUP]
  # What launch_and_wait calls, and no more (tests/k8s/test_policy.py refuses any other verb).
  assert set(rule['verbs']) == set(tfjob_launcher.API_VERBS[(tfjob_launcher.GROUP,
                                                              tfjob_launcher.PLURAL)])
  [read_template] = [r for r in role['rules'] if 'configmaps' in r['resources']]
  assert read_template['resourceNames'] == [settings.TFJOB_TEMPLATE_CONFIG_MAP]
  assert read_template['verbs'] == ['get']
  binding = _one('RoleBinding', 'playrecall-tfjob-launcher')
  assert binding['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role',
                                'name': role['metadata']['name']}
  assert _kustomization()['namespace'] == settings.TFJobConfig().namespace
  # Granted to the account playrecall's runs use, in the namespace KFP runs their pods in.
  runner = _documents(os.path.join(PIPELINE_RUNNER_DIR, 'kustomization.yaml'))[0]
  assert binding['subjects'] == [{'kind': 'ServiceAccount',
                                  'name': kfp_submit.PIPELINE_SERVICE_ACCOUNT,
                                  'namespace': runner['namespace']}]


def test_the_runs_service_account_is_where_kfp_runs_the_steps():
  runner = _documents(os.path.join(PIPELINE_RUNNER_DIR, 'kustomization.yaml'))[0]
  objects = [o for path in runner['resources']
             for o in _documents(os.path.join(PIPELINE_RUNNER_DIR, path))]
  for obj in objects:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
  [account] = [o for o in objects if o['kind'] == 'ServiceAccount']
  assert account['metadata']['name'] == kfp_submit.PIPELINE_SERVICE_ACCOUNT
  # The Trainer step calls the Kubernetes API with its token.
  assert account.get('automountServiceAccountToken', True)
  [binding] = [o for o in objects if o['kind'] == 'RoleBinding']
  assert binding['roleRef']['name'] == 'pipeline-runner'  # KFP's own Role for its steps
  assert binding['subjects'] == [{'kind': 'ServiceAccount', 'name': account['metadata']['name']}]


def test_the_image_runs_as_the_user_the_pods_name_with_a_writable_home():
  instructions = dockerfile_instructions()
  user = [arg for instruction, arg in instructions if instruction == 'USER'][-1]
  env = ' '.join(arg for instruction, arg in instructions if instruction == 'ENV').split()
  assert 'HOME=/tmp' in env
  with open(os.path.join(K8S_DIR, 'tfjob.yaml')) as f:
    [tfjob] = [d for d in yaml.safe_load_all(f) if d]
  for role, spec in tfjob['spec']['tfReplicaSpecs'].items():
    pod = spec['template']['spec']
    context = pod['securityContext']
    assert f'{context["runAsUser"]}:{context["runAsGroup"]}' == user, role
    # The root filesystem is read-only: /tmp (HOME) is an emptyDir.
    [container] = pod['containers']
    [tmp] = [m for m in container['volumeMounts'] if m['mountPath'] == '/tmp']
    assert 'emptyDir' in [v for v in pod['volumes'] if v['name'] == tmp['name']][0], role


def _pinned(path: str) -> List[str]:
  with open(os.path.join(REPO_ROOT, path)) as f:
    return [re.split(r'[=<>]', line)[0].lower() for line in f if re.match(r'[A-Za-z0-9]', line)]


def test_the_runtime_lock_has_no_test_package_and_the_two_locks_do_not_overlap():
  runtime, test = _pinned('requirements/lock.txt'), _pinned(TEST_LOCK)
  assert not set(runtime) & set(test)
  assert len(set(runtime)) == len(runtime) and len(set(test)) == len(test)
  assert {'pytest', 'moto', 'flask', 'kubernetes-validate', 'jupyterlab'} <= set(test)
  assert {'tfx', 'tensorflow', 'apache-beam', 'tensorflow-io', 'boto3', 'dill'} <= set(runtime)
