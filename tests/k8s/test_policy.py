"""The security policy over everything playrecall puts into a cluster, and proof each check bites.

Checked: every manifest under k8s/, the TFJob the Trainer step renders from the template
(trainer/tfjob_launcher.build_tfjob), every image of the compiled Kubeflow pipeline spec
(pipeline/kubeflow_runner.py), the image's Dockerfile and the lock it installs. Each check returns
Violations naming file, object, container and rule:

- restricted: every container meets the Pod Security Standards' "restricted" profile (runAsNonRoot,
  no uid 0, no privileged, allowPrivilegeEscalation false, ALL capabilities dropped and at most
  NET_BIND_SERVICE added, a RuntimeDefault or Localhost seccomp profile, no host namespaces, host
  ports, host paths or other volume types outside the profile, no procMount), and beyond it a
  read-only root filesystem, CPU and memory limits and no Kubernetes API token (no pod here calls
  the API). Sysctls, AppArmor and SELinux options are left to the namespace's Pod Security
  Admission: no manifest sets them.
- image: every image is named by digest (a tag can be pushed again with other content), the
  Dockerfile's base included, and its last USER is a numeric non-root one.
- rbac: no wildcard, no verb the launcher does not call (tfjob_launcher.API_VERBS), ConfigMaps
  and Secrets only by name, no cluster-wide role.
- network: the TF server port is reachable only from the job's pods (the label the launcher
  stamps), TF Serving's ports only from pods labelled as serving clients in namespaces labelled
  so, and both kinds of pods are isolated by some NetworkPolicy.
- hashes: every pin of the lock carries its hashes.
"""

import copy
import os
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import pytest
from tfx.components.trainer.fn_args_utils import FnArgs
import yaml

from contract import settings
from pipeline import kubeflow_runner
from tests.k8s import test_manifests
from trainer import tfjob_launcher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_DIR = os.path.join(REPO_ROOT, 'k8s')
IMAGE = 'registry.example.com/ml/playrecall@sha256:' + '0123456789abcdef' * 4
BY_DIGEST = re.compile(r'[^\s@]+@sha256:[0-9a-f]{64}')
# The Pod Security Standards' "restricted" profile.
ALLOWED_CAPABILITIES = {'NET_BIND_SERVICE'}
SECCOMP_TYPES = {'RuntimeDefault', 'Localhost'}
VOLUME_TYPES = {'configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral',
                'persistentVolumeClaim', 'projected', 'secret'}
HOST_NAMESPACES = ('hostNetwork', 'hostPID', 'hostIPC')
# The TF server port as the training operator names it, and its number unless a container says.
TF_SERVER_PORT = (2222, 'tfjob-port')
# The label TF Serving's clients carry, on their pods and on their namespaces (docs/kubeflow.md).
SERVING_CLIENT_LABELS = {'playrecall/serving-client': 'true'}
RENDERED_TFJOB = 'trainer/tfjob_launcher.build_tfjob(k8s/tfjob.yaml)'
COMPILED_SPEC = 'pipeline/kubeflow_runner.compile_pipeline_spec'
# What only the operator can fill in (no registry could be asked here): the digest of
# tensorflow/serving:2.16.1. Once it is in, this test fails until the entry is removed.
OPERATOR_INPUTS = [
    ('k8s/serving/deployment.yaml', 'Deployment/playrecall-serving', 'tensorflow-serving',
     'image'),
]


class Violation(NamedTuple):
  file: str
  obj: str  # Kind/name, and the replica group of a TFJob's pods
  container: str  # '' when the rule is about the object or pod, not one container
  rule: str
  detail: str

  def __str__(self):
    container = f' container {self.container}:' if self.container else ''
    return f'{self.file}: {self.obj}:{container} {self.rule}: {self.detail}'


def _name(obj: Dict[str, Any]) -> str:
  name = (obj.get('metadata') or {}).get('name')
  return f'{obj.get("kind")}/{name}' if name else obj.get('kind')


def pod_specs(obj: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """Every pod spec in an object, whatever its kind (a dict with a list of containers), with the
  name of its place: '' for a Pod or a workload's one template, the replica group of a TFJob."""
  if isinstance(obj, dict):
    if isinstance(obj.get('containers'), list):
      yield ('/'.join(p for p in path if p not in ('spec', 'template', 'tfReplicaSpecs')), obj)
    for key, value in obj.items():
      yield from pod_specs(value, path + (key,))
  elif isinstance(obj, list):
    for i, value in enumerate(obj):
      yield from pod_specs(value, path + (str(i),))


def _pod(obj, role: str = '') -> Dict[str, Any]:
  return dict(pod_specs(obj))[role]


def _container(obj, role: str = '') -> Dict[str, Any]:
  return _pod(obj, role)['containers'][0]


def image_violations(image: str) -> List[str]:
  return [] if BY_DIGEST.fullmatch(image) else [
      f'{image!r} is not named by digest (NAME@sha256:<64 hex digits>)']


def container_violations(pod: Dict[str, Any]) -> Iterator[Tuple[str, str, str]]:
  """(container, rule, detail) of each way a pod spec's containers break the policy."""
  pod_context = pod.get('securityContext') or {}
  for key in HOST_NAMESPACES:
    if pod.get(key):
      yield '', 'hostNamespaces', f'{key} is true'
  for volume in pod.get('volumes') or []:
    for kind in sorted(set(volume) - {'name'} - VOLUME_TYPES):
      yield '', 'volumeTypes', f'volume {volume["name"]} is a {kind}'
  if pod.get('automountServiceAccountToken') is not False:
    yield '', 'automountServiceAccountToken', 'not false: the pod gets an API token it never uses'
  for container in (pod.get('initContainers') or []) + pod['containers'] + (
      pod.get('ephemeralContainers') or []):
    name, context = container['name'], container.get('securityContext') or {}
    effective = {**pod_context, **context}  # a container's settings override its pod's
    if effective.get('runAsNonRoot') is not True:
      yield name, 'runAsNonRoot', 'not true (pod or container)'
    if effective.get('runAsUser') == 0:
      yield name, 'runAsUser', 'runs as uid 0'
    if context.get('privileged'):
      yield name, 'privileged', 'privileged is true'
    if context.get('allowPrivilegeEscalation') is not False:
      yield name, 'allowPrivilegeEscalation', 'not false'
    capabilities = context.get('capabilities') or {}
    if 'ALL' not in (capabilities.get('drop') or []):
      yield name, 'capabilities', 'does not drop ALL'
    added = sorted(set(capabilities.get('add') or []) - ALLOWED_CAPABILITIES)
    if added:
      yield name, 'capabilities', f'adds {added}'
    seccomp = (effective.get('seccompProfile') or {}).get('type')
    if seccomp not in SECCOMP_TYPES:
      yield name, 'seccompProfile', f'type {seccomp!r}, not one of {sorted(SECCOMP_TYPES)}'
    if context.get('procMount', 'Default') != 'Default':
      yield name, 'procMount', f'{context["procMount"]!r}'
    if context.get('readOnlyRootFilesystem') is not True:
      yield name, 'readOnlyRootFilesystem', 'not true'
    for port in container.get('ports') or []:
      if port.get('hostPort'):
        yield name, 'hostPorts', f'hostPort {port["hostPort"]}'
    limits = (container.get('resources') or {}).get('limits') or {}
    missing = [r for r in ('cpu', 'memory') if r not in limits]
    if missing:
      yield name, 'limits', f'no {" or ".join(missing)} limit'
    if 'image' in container:  # the TFJob template leaves it to the launcher
      for detail in image_violations(container['image']):
        yield name, 'image', detail


def rbac_violations(role: Dict[str, Any],
                    used: Dict[Tuple[str, str], Sequence[str]]) -> Iterator[Tuple[str, str]]:
  """(rule, detail) of each grant beyond the calls `used` lists, by (API group, resource)."""
  if role['kind'] == 'ClusterRole':
    yield 'clusterRole', 'grants in every namespace; a Role grants in its own'
  for rule in role.get('rules') or []:
    for field in ('apiGroups', 'resources', 'verbs', 'resourceNames'):
      if '*' in (rule.get(field) or []):
        yield 'wildcard', f'{field}: *'
    for group in rule.get('apiGroups') or []:
      for resource in rule.get('resources') or []:
        for verb in rule.get('verbs') or []:
          if verb != '*' and verb not in used.get((group, resource), ()):
            yield 'unusedVerb', f'{verb} {group or "core"}/{resource}: never called'
    if {'configmaps', 'secrets'} & set(rule.get('resources') or []) and not rule.get(
        'resourceNames'):
      yield 'resourceNames', f'{rule["resources"]} not restricted by name'


def manifest_violations(file: str, obj: Dict[str, Any]) -> List[Violation]:
  """Every violation of one object: its pods' containers and images, or its RBAC grants."""
  found = [Violation(file, f'{_name(obj)} {where}'.strip(), container, rule, detail)
           for where, pod in pod_specs(obj)
           for container, rule, detail in container_violations(pod)]
  if obj.get('kind') in ('Role', 'ClusterRole'):
    found += [Violation(file, _name(obj), '', rule, detail)
              for rule, detail in rbac_violations(obj, tfjob_launcher.API_VERBS)]
  if obj.get('kind') == 'Kustomization':
    for image in obj.get('images') or []:
      if not image.get('digest'):
        found.append(Violation(file, _name(obj), '', 'image',
                               f'images: {image["name"]} is set without a digest'))
  return found


def _selects(selector: Dict[str, Any], labels: Dict[str, str]) -> bool:
  """Whether a label selector (matchLabels, matchExpressions) selects these labels."""
  if not (selector.get('matchLabels') or {}).items() <= labels.items():
    return False
  tests = {'In': lambda e: labels.get(e['key']) in e['values'],
           'NotIn': lambda e: labels.get(e['key']) not in e['values'],
           'Exists': lambda e: e['key'] in labels,
           'DoesNotExist': lambda e: e['key'] not in labels}
  return all(tests[e['operator']](e) for e in selector.get('matchExpressions') or [])


def _covers(ports, number: int, name: str) -> bool:
  """Whether an ingress rule's ports (none: all) include this container port."""
  if not ports:
    return True
  return any('port' not in p or p['port'] in (number, name) or (
      isinstance(p['port'], int) and p['port'] <= number <= p.get('endPort', p['port']))
             for p in ports)


def _admits_only(peer: Dict[str, Any], labels: Dict[str, str], other_namespaces: bool) -> bool:
  """Whether a `from` peer admits only pods with these labels (and, if it reaches beyond the
  policy's namespace, only namespaces labelled so too)."""
  if 'ipBlock' in peer or 'podSelector' not in peer:
    return False
  if 'namespaceSelector' in peer and not (
      other_namespaces and labels.items() <= (
          peer['namespaceSelector'].get('matchLabels') or {}).items()):
    return False
  return labels.items() <= (peer['podSelector'].get('matchLabels') or {}).items()


def exposure_violations(policies: List[Tuple[str, Dict[str, Any]]], pods: str,
                        labels: Dict[str, str], ports: Sequence[Tuple[int, str]], rule: str,
                        peer_labels: Dict[str, str], other_namespaces: bool) -> List[Violation]:
  """Each way the pods with these labels can be reached on these ports by pods without
  peer_labels: no policy isolating them, or an ingress rule admitting a wider peer."""
  selecting = [(file, policy) for file, policy in policies
               if _selects(policy['spec']['podSelector'], labels)
               and 'Ingress' in policy['spec'].get('policyTypes', ['Ingress'])]
  if not selecting:
    return [Violation('k8s/', 'NetworkPolicy/*', '', rule,
                      f'no NetworkPolicy isolates the {pods} pods: every pod reaches them')]
  found = []
  for file, policy in selecting:
    for ingress in policy['spec'].get('ingress') or []:
      covered = [str(n) for n, name in ports if _covers(ingress.get('ports'), n, name)]
      peers = ingress.get('from') or [{}]  # none: from everywhere
      for peer in peers:
        if covered and not _admits_only(peer, peer_labels, other_namespaces):
          found.append(Violation(file, _name(policy), '', rule,
                                 f'{peer or "every source"} reaches the {pods} pods on port '
                                 f'{", ".join(covered)}; only pods labelled {peer_labels} may'))
  return found


def _pod_labels(obj: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, str]]]:
  """(replica group, labels) of the pods a TFJob or workload makes; TFJob pods also carry the
  training operator's own labels."""
  if obj['kind'] == 'TFJob':
    for role, spec in obj['spec']['tfReplicaSpecs'].items():
      yield role, dict(spec['template'].get('metadata', {}).get('labels') or {}, **{
          'training.kubeflow.org/job-name': obj['metadata']['name'],
          'training.kubeflow.org/replica-type': role.lower()})
  else:
    yield '', obj['spec']['template']['metadata']['labels']


def network_violations(policies: List[Tuple[str, Dict[str, Any]]], tfjob: Dict[str, Any],
                       serving: Dict[str, Any]) -> List[Violation]:
  """The TF server port open beyond the job's pods; TF Serving open beyond its clients."""
  found = []
  for role, labels in _pod_labels(tfjob):
    ports = [(p['containerPort'], p['name']) for c in _pod(tfjob, role)['containers']
             for p in c.get('ports') or [] if p.get('name') == TF_SERVER_PORT[1]]
    found += exposure_violations(policies, f'TFJob {role}', labels, ports or [TF_SERVER_PORT],
                                 'tfServerPort', tfjob_launcher.SERVER_POD_LABELS,
                                 other_namespaces=False)
  [(_, labels)] = _pod_labels(serving)
  ports = [(p['containerPort'], p.get('name', '')) for _, pod in pod_specs(serving)
           for c in pod['containers'] for p in c.get('ports') or []]
  found += exposure_violations(policies, 'TF Serving', labels, ports, 'servingPort',
                               SERVING_CLIENT_LABELS, other_namespaces=True)
  return found


def _all_images(obj: Any) -> Iterator[str]:
  if isinstance(obj, dict):
    for key, value in obj.items():
      if key == 'image' and isinstance(value, str):
        yield value
      else:
        yield from _all_images(value)
  elif isinstance(obj, list):
    for value in obj:
      yield from _all_images(value)


def spec_violations(pipeline_spec: Dict[str, Any]) -> List[Violation]:
  """Every image the compiled pipeline's steps run, by digest."""
  return [Violation(COMPILED_SPEC, 'PipelineSpec/' + pipeline_spec['pipelineInfo']['name'],
                    executor, 'image', detail)
          for executor, body in pipeline_spec['deploymentSpec']['executors'].items()
          for image in _all_images(body) for detail in image_violations(image)]


def dockerfile_violations(file: str, instructions: List[Tuple[str, str]]) -> List[Violation]:
  """Base images by digest (written out: a build argument could name any); the image runs as a
  numeric non-root user."""
  found = [Violation(file, 'FROM', '', 'image', detail)
           for instruction, arg in instructions if instruction == 'FROM'
           for detail in image_violations(arg.split()[0])]
  users = [arg for instruction, arg in instructions if instruction == 'USER']
  user = users[-1].split(':')[0] if users else 'root'
  if not user.isdigit() or int(user) == 0:
    found.append(Violation(file, 'USER', '', 'nonRootUser',
                           f'runs as {user!r}: runAsNonRoot can only verify a non-zero number'))
  return found


def lock_violations(file: str, text: str) -> List[Violation]:
  """Every pinned requirement without a hash (pip's --require-hashes would refuse the lock)."""
  requirements = re.sub(r'\\\n', ' ', text).splitlines()
  return [Violation(file, line.split()[0], '', 'hashes', 'no --hash')
          for line in requirements if re.match(r'[A-Za-z0-9]', line)
          and '--hash=sha256:' not in line]


def _k8s_manifests() -> List[Tuple[str, Dict[str, Any]]]:
  """(file, object) of every YAML document under k8s/."""
  found = []
  for directory, _, files in sorted(os.walk(K8S_DIR)):
    for name in sorted(files):
      if name.endswith(('.yaml', '.yml')):
        path = os.path.join(directory, name)
        with open(path) as f:
          found += [(os.path.relpath(path, REPO_ROOT), d) for d in yaml.safe_load_all(f) if d]
  return found


def _fn_args() -> FnArgs:
  root = 'gs://bucket/root/playrecall/Trainer/42'
  return FnArgs(train_files=['gs://bucket/root/Transform/transformed_examples/7/Split-train/*'],
                eval_files=['gs://bucket/root/Transform/transformed_examples/7/Split-eval/*'],
                transform_output='gs://bucket/root/Transform/transform_graph/7',
                model_run_dir=f'{root}/model_run', serving_model_dir=f'{root}/model/Format-Serving',
                train_steps=500, custom_config={'hparams': {'num_shards': 2}})


@pytest.fixture(scope='module')
def manifests():
  return _k8s_manifests()


@pytest.fixture()
def tfjob():
  """The TFJob the Trainer step would create from k8s/tfjob.yaml."""
  return tfjob_launcher.build_tfjob(
      tfjob_launcher.load_template(os.path.join(K8S_DIR, 'tfjob.yaml')), _fn_args(),
      settings.TFJobConfig(image=IMAGE, replicas={'Worker': 4, 'PS': 2}))


@pytest.fixture(scope='module')
def compiled_spec():
  """The compiled pipeline, training on the TFJob."""
  config = settings.PipelineConfig(train=settings.TrainConfig(tfjob={'replicas': {'Worker': 4}}))
  return kubeflow_runner.compile_pipeline_spec(
      image=IMAGE, pipeline_root='gs://b/root', data_root='gs://b/plays',
      serving_model_dir='gs://b/serving', config=config, beam_pipeline_args=[])


def _one(manifests, kind: str, name: str) -> Dict[str, Any]:
  [obj] = [o for _, o in manifests if o.get('kind') == kind and o['metadata']['name'] == name]
  return copy.deepcopy(obj)


def _kustomization(manifests) -> Dict[str, Any]:
  [obj] = [o for f, o in manifests if f == os.path.join('k8s', 'kustomization.yaml')]
  return copy.deepcopy(obj)


def _policies(manifests) -> List[Tuple[str, Dict[str, Any]]]:
  return [(f, copy.deepcopy(o)) for f, o in manifests if o.get('kind') == 'NetworkPolicy']


def _dockerfile_text() -> str:
  with open(os.path.join(K8S_DIR, 'Dockerfile')) as f:
    return f.read()


def _lock_text(name: str = 'lock.txt') -> str:
  with open(os.path.join(REPO_ROOT, 'requirements', name)) as f:
    return f.read()


def _violations(manifests, tfjob, compiled_spec) -> List[Violation]:
  found = [v for file, obj in manifests for v in manifest_violations(file, obj)]
  found += manifest_violations(RENDERED_TFJOB, tfjob)
  found += network_violations(_policies(manifests), tfjob,
                              _one(manifests, 'Deployment', 'playrecall-serving'))
  found += spec_violations(compiled_spec)
  found += dockerfile_violations('k8s/Dockerfile', test_manifests.dockerfile_instructions())
  found += lock_violations('requirements/lock.txt', _lock_text())
  found += lock_violations('requirements/test-lock.txt', _lock_text('test-lock.txt'))
  return found


def test_everything_meets_the_policy_but_what_the_operator_fills_in(manifests, tfjob,
                                                                     compiled_spec):
  kinds = {o.get('kind') for _, o in manifests}
  assert {'Deployment', 'TFJob', 'Role', 'NetworkPolicy', 'Kustomization'} <= kinds
  found = _violations(manifests, tfjob, compiled_spec)
  assert sorted((v.file, v.obj, v.container, v.rule) for v in found) == OPERATOR_INPUTS, (
      '\n'.join(map(str, found)))


def test_every_container_of_every_source_was_looked_at(manifests, tfjob, compiled_spec):
  """The checks above pass because they saw the containers, not because they found none."""
  pods = {(file, _name(o), where) for file, o in manifests + [(RENDERED_TFJOB, tfjob)]
          for where, pod in pod_specs(o) if pod['containers']}
  assert pods >= {
      ('k8s/serving/deployment.yaml', 'Deployment/playrecall-serving', ''),
      ('k8s/tfjob.yaml', 'TFJob/playrecall-train', 'Chief'),
      (RENDERED_TFJOB, f'TFJob/{tfjob["metadata"]["name"]}', 'PS')}
  executors = compiled_spec['deploymentSpec']['executors']
  assert len(executors) >= 9 and all(
      list(_all_images(e)) == [IMAGE] for e in executors.values())


def _policy(policies, name: str) -> Dict[str, Any]:
  [policy] = [p for _, p in policies if p['metadata']['name'] == name]
  return policy


def _tf_rule(policies) -> Dict[str, Any]:
  return _policy(policies, 'playrecall-tfjob-servers')['spec']['ingress'][0]


def _serving_peer(policies) -> Dict[str, Any]:
  return _policy(policies, 'playrecall-serving-clients')['spec']['ingress'][0]['from'][0]


def _without(policies, *names: str) -> None:
  policies[:] = [(f, p) for f, p in policies if p['metadata']['name'] not in names]


# name -> (what it breaks, how, the rule the policy must name, the container it must name)
BREAKAGES = {}


def breaks(target: str, rule: str, container: str = ''):
  """Registers a function that breaks a good copy of `target` in one way (a text it returns)."""

  def register(break_it):
    BREAKAGES[break_it.__name__] = (target, break_it, rule, container)
    return break_it
  return register


@breaks('tfjob', 'runAsNonRoot', 'tensorflow')
def runs_as_root(job):
  _pod(job, 'Worker')['securityContext']['runAsNonRoot'] = False


@breaks('tfjob', 'runAsUser', 'tensorflow')
def uid_0(job):
  _container(job, 'PS')['securityContext']['runAsUser'] = 0


@breaks('tfjob', 'allowPrivilegeEscalation', 'tensorflow')
def privilege_escalation(job):
  _container(job, 'Chief')['securityContext']['allowPrivilegeEscalation'] = True


@breaks('tfjob', 'privileged', 'tensorflow')
def privileged(job):
  _container(job, 'Chief')['securityContext']['privileged'] = True


@breaks('tfjob', 'capabilities', 'tensorflow')
def capability_added(job):
  _container(job, 'PS')['securityContext']['capabilities']['add'] = ['NET_ADMIN']


@breaks('deployment', 'capabilities', 'tensorflow-serving')
def capabilities_kept(deployment):
  del _container(deployment)['securityContext']['capabilities']


@breaks('tfjob', 'seccompProfile', 'tensorflow')
def seccomp_unconfined(job):
  _pod(job, 'Worker')['securityContext']['seccompProfile'] = {'type': 'Unconfined'}


@breaks('deployment', 'readOnlyRootFilesystem', 'tensorflow-serving')
def writable_root(deployment):
  _container(deployment)['securityContext']['readOnlyRootFilesystem'] = False


@breaks('tfjob', 'procMount', 'tensorflow')
def unmasked_proc(job):
  _container(job, 'Chief')['securityContext']['procMount'] = 'Unmasked'


@breaks('tfjob', 'hostNamespaces')
def host_network(job):
  _pod(job, 'PS')['hostNetwork'] = True


@breaks('deployment', 'volumeTypes')
def host_path(deployment):
  _pod(deployment)['volumes'].append({'name': 'docker', 'hostPath': {'path': '/var/run'}})


@breaks('tfjob', 'hostPorts', 'tensorflow')
def host_port(job):
  _container(job, 'Worker')['ports'][0]['hostPort'] = 2222


@breaks('deployment', 'limits', 'tensorflow-serving')
def no_cpu_limit(deployment):
  del _container(deployment)['resources']['limits']['cpu']


@breaks('deployment', 'automountServiceAccountToken')
def api_token_mounted(deployment):
  del _pod(deployment)['automountServiceAccountToken']


@breaks('deployment', 'allowPrivilegeEscalation', 'init')
def bare_init_container(deployment):
  _pod(deployment)['initContainers'] = [{
      'name': 'init', 'image': 'busybox@sha256:' + 'ab' * 32,
      'resources': {'limits': {'cpu': '1', 'memory': '1Gi'}}}]


@breaks('tfjob', 'image', 'tensorflow')
def tfjob_image_by_tag(job):
  _container(job, 'Worker')['image'] = 'registry.example.com/playrecall:1.0'


@breaks('deployment', 'image', 'tensorflow-serving')
def serving_latest(deployment):
  _container(deployment)['image'] = 'tensorflow/serving:latest'


@breaks('kustomization', 'image')
def kustomize_image_by_tag(kustomization):
  kustomization['images'] = [{'name': 'tensorflow/serving', 'newTag': '2.16.1'}]


@breaks('spec', 'image', 'Trainer_executor')
def step_image_by_tag(pipeline_spec):
  executor = pipeline_spec['deploymentSpec']['executors']['Trainer_executor']
  executor['container']['image'] = 'registry.example.com/playrecall:1.0'


@breaks('dockerfile', 'image')
def base_image_by_tag(text):
  return re.sub(r'FROM \S+', 'FROM python:3.11-slim-bookworm', text)


@breaks('dockerfile', 'nonRootUser')
def root_user(text):
  return text.replace('USER 10001:10001', 'USER root')


@breaks('dockerfile', 'nonRootUser')
def no_user(text):
  return text.replace('USER 10001:10001', '')


@breaks('role', 'unusedVerb')
def unused_delete(role):
  role['rules'][0]['verbs'].append('delete')


@breaks('role', 'unusedVerb')
def list_and_watch(role):
  role['rules'][0]['verbs'] += ['list', 'watch']


@breaks('role', 'wildcard')
def wildcard_verb(role):
  role['rules'][0]['verbs'] = ['*']


@breaks('role', 'wildcard')
def wildcard_resource(role):
  role['rules'][0]['resources'] = ['*']


@breaks('role', 'resourceNames')
def every_config_map(role):
  del role['rules'][1]['resourceNames']


@breaks('role', 'clusterRole')
def cluster_role(role):
  role['kind'] = 'ClusterRole'


@breaks('policies', 'tfServerPort')
def tf_port_from_any_namespace(policies):
  _tf_rule(policies)['from'][0]['namespaceSelector'] = {}


@breaks('policies', 'tfServerPort')
def tf_port_from_every_pod(policies):
  _tf_rule(policies)['from'][0]['podSelector'] = {}


@breaks('policies', 'tfServerPort')
def tf_port_from_an_ip_block(policies):
  _tf_rule(policies)['from'].append({'ipBlock': {'cidr': '10.0.0.0/8'}})


@breaks('policies', 'tfServerPort')
def tf_port_from_everywhere(policies):
  del _tf_rule(policies)['from']


@breaks('policies', 'tfServerPort')
def same_namespace_allowed(policies):
  """What KFP installs in its own namespace: every pod may reach every pod, on every port."""
  policies.append(('k8s/extra.yaml', {
      'apiVersion': 'networking.k8s.io/v1', 'kind': 'NetworkPolicy',
      'metadata': {'name': 'default-allow-same-namespace'},
      'spec': {'podSelector': {}, 'ingress': [{'from': [{'podSelector': {}}]}]}}))


@breaks('policies', 'tfServerPort')
def tf_pods_not_isolated(policies):
  _without(policies, 'playrecall-default-deny-ingress', 'playrecall-tfjob-servers')


@breaks('policies', 'servingPort')
def serving_from_unlabelled_pods(policies):
  _serving_peer(policies)['podSelector'] = {}


@breaks('policies', 'servingPort')
def serving_from_any_namespace(policies):
  _serving_peer(policies)['namespaceSelector'] = {}


@breaks('policies', 'servingPort')
def serving_not_isolated(policies):
  _without(policies, 'playrecall-default-deny-ingress', 'playrecall-serving-clients')


@breaks('lock', 'hashes')
def unhashed_pin(text):
  return re.sub(r'(absl-py==\S+) \\\n(    --hash=\S+( \\)?\n)+', r'\1\n', text)


@pytest.mark.parametrize('breakage', sorted(BREAKAGES))
def test_each_check_names_what_is_broken(manifests, tfjob, compiled_spec, breakage):
  target, break_it, rule, container = BREAKAGES[breakage]
  serving = _one(manifests, 'Deployment', 'playrecall-serving')
  good, check = {
      'tfjob': (tfjob, lambda j: manifest_violations(RENDERED_TFJOB, j)),
      'deployment': (serving, lambda d: manifest_violations('k8s/serving/deployment.yaml', d)),
      'kustomization': (_kustomization(manifests),
                        lambda k: manifest_violations('k8s/kustomization.yaml', k)),
      'role': (_one(manifests, 'Role', 'playrecall-tfjob-launcher'),
               lambda r: manifest_violations('k8s/rbac.yaml', r)),
      'policies': (_policies(manifests), lambda p: network_violations(p, tfjob, serving)),
      'spec': (compiled_spec, spec_violations),
      'dockerfile': (_dockerfile_text(), lambda text: dockerfile_violations(
          'k8s/Dockerfile', test_manifests.dockerfile_instructions(text))),
      'lock': (_lock_text(), lambda text: lock_violations('requirements/lock.txt', text)),
  }[target]
  broken = copy.deepcopy(good)
  broken = break_it(broken) or broken  # texts come back changed, objects are changed in place
  assert broken != good
  before = check(good)
  new = [v for v in check(broken) if v not in before]
  assert any(v.rule == rule and v.container == container for v in new), (
      f'{breakage}: expected {rule} on {container!r}, found:\n' + '\n'.join(map(str, new)))
