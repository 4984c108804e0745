"""A Trainer run_fn that trains on a TFJob (Kubeflow training operator) instead of in its own pod.

  Trainer(run_fn='trainer.tfjob_launcher.run_fn',
          custom_config={'hparams': {..., 'num_shards': 2},
                         'tfjob': {'namespace': 'playrecall', 'replicas': {'Worker': 4, 'PS': 2}}})

The Trainer step (a Kubeflow Pipelines pod) creates a TFJob from the template k8s/tfjob.yaml,
which `kubectl apply -k k8s/` puts in the cluster as the ConfigMap playrecall-tfjob-template (so
replica resources, node selectors and tolerations are cluster settings, changed without a new
image). Its chief, workers and parameter servers run `python -m trainer.run` in the pipeline
image (the training operator sets TF_CONFIG for each); every replica gets the Trainer's own
inputs and outputs as flags (object-store paths all pods can read). The step waits for the job
and fails when it fails. The chief writes the serving model into the Trainer's output artifact,
so Evaluator and Pusher see a model like any other. Settings under 'tfjob' (all optional) are
the fields of contract.settings.TFJobConfig; kubeflow_runner.py sets `image` to the image the
spec runs.

The TFJob's name is derived from the Trainer's output location, so a Trainer pod that is
restarted attaches to the job it already started instead of training twice, but only to a job
that runs what this step would create: a job of that name with other replicas, images, commands,
flags, identity or security settings is refused (TFJobMismatch), never waited for.
"""

import hashlib
import json
import re
import time
from typing import Any, Callable, Dict, Optional

import yaml

from contract import settings
from trainer import flags as trainer_flags

# The key of the template in its ConfigMap (settings.TFJOB_TEMPLATE_CONFIG_MAP).
TEMPLATE_KEY = 'tfjob.yaml'
GROUP, VERSION, PLURAL = 'kubeflow.org', 'v1', 'tfjobs'
# The training operator sets TF_CONFIG only in the container with this name.
TENSORFLOW_CONTAINER = 'tensorflow'
FINISHED = ('Succeeded', 'Failed')
# Stamped on every replica's pods, whatever the template says: k8s/networkpolicies.yaml admits the
# TF server port only from pods with this label.
SERVER_POD_LABELS = {'app.kubernetes.io/name': 'playrecall-trainer'}
# The launcher's API calls by (API group, resource): k8s/rbac.yaml grants these verbs, no others.
API_VERBS = {(GROUP, PLURAL): ('create', 'get'), ('', 'configmaps'): ('get',)}


class TFJobFailed(RuntimeError):
  """The TFJob ended Failed, or did not finish in time."""


class TFJobMismatch(RuntimeError):
  """A TFJob of this execution's name exists but would run something else."""


def tfjob_name(fn_args) -> str:
  """A DNS-1123 name, the same for every attempt of one Trainer execution."""
  digest = hashlib.sha256(fn_args.serving_model_dir.encode()).hexdigest()[:12]
  return f'playrecall-train-{digest}'


def build_tfjob(template: Dict[str, Any], fn_args,
                config: settings.TFJobConfig) -> Dict[str, Any]:
  """The template with this execution's name, namespace, image, replica counts and flags."""
  tfjob = json.loads(json.dumps(template))  # a deep copy
  tfjob['metadata'] = dict(tfjob.get('metadata') or {}, name=tfjob_name(fn_args),
                           namespace=config.namespace)
  replica_specs = tfjob['spec']['tfReplicaSpecs']
  unknown = sorted(set(config.replicas) - set(replica_specs))
  if unknown:
    raise ValueError(f'tfjob replicas {unknown} are not replica groups of the template '
                     f'({sorted(replica_specs)})')
  flags = trainer_flags.to_flags(fn_args)
  for role, spec in replica_specs.items():
    if role in config.replicas:
      spec['replicas'] = int(config.replicas[role])
    containers = [c for c in spec['template']['spec']['containers']
                  if c['name'] == TENSORFLOW_CONTAINER]
    if not containers:
      raise ValueError(f'TFJob template: replica group {role} has no container named '
                       f'{TENSORFLOW_CONTAINER!r} (the one the training operator configures)')
    container = containers[0]
    # Every role gets the same flags: workers and parameter servers ignore them and serve.
    container['args'] = flags
    if config.image:
      container['image'] = config.image
    if not re.fullmatch(settings.TFJobConfig.IMAGE_BY_DIGEST, container.get('image') or ''):
      raise ValueError(f'TFJob {role}: image {container.get("image")!r} is not named by digest; '
                       'set train.tfjob.image (kubeflow_runner sets it to the pipeline image)')
    pod_metadata = spec['template'].setdefault('metadata', {})
    pod_metadata['labels'] = dict(pod_metadata.get('labels') or {}, **SERVER_POD_LABELS)
  return tfjob


def replica_fingerprints(tfjob: Dict[str, Any]) -> Dict[str, Any]:
  """Per replica group, what its pods run: the count, the service account, the security
  contexts and each container's image, command and flags (fields the API server stores as given)."""
  fingerprints = {}
  for role, spec in tfjob['spec']['tfReplicaSpecs'].items():
    pod = spec['template']['spec']
    fingerprints[role] = {
        'replicas': spec.get('replicas', 1),
        'serviceAccountName': pod.get('serviceAccountName'),
        'securityContext': pod.get('securityContext'),
        'containers': [[c['name'], c.get('image'), c.get('command'), c.get('args'),
                        c.get('securityContext')]
                       for c in pod.get('initContainers', []) + pod['containers']]}
  return fingerprints


def job_state(tfjob: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The latest true condition of a TFJob's status ({type, reason, message}), or None."""
  conditions = [c for c in (tfjob.get('status') or {}).get('conditions') or []
                if c.get('status') == 'True']
  return conditions[-1] if conditions else None


def launch_and_wait(api, template: Dict[str, Any], fn_args, config: settings.TFJobConfig,
                    log: Callable[[str], None] = print, sleep=time.sleep,
                    clock=time.monotonic) -> Dict[str, Any]:
  """Creates the TFJob (or attaches to it if it exists) and returns it once Succeeded.

  Args:
    api: a kubernetes.client.CustomObjectsApi.
  Raises:
    TFJobFailed: when the job fails or exceeds config.timeout_seconds.
  """
  from kubernetes.client.rest import ApiException  # pylint: disable=g-import-not-at-top

  body = build_tfjob(template, fn_args, config)
  name, namespace = body['metadata']['name'], config.namespace
  try:
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    log(f'created TFJob {namespace}/{name}: ' + ', '.join(
        f'{role} x{spec.get("replicas", 1)}' for role, spec in
        body['spec']['tfReplicaSpecs'].items()))
  except ApiException as e:
    if e.status != 409:
      raise
    existing = replica_fingerprints(
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    rendered = replica_fingerprints(body)
    differing = sorted(r for r in set(existing) | set(rendered)
                       if existing.get(r) != rendered.get(r))
    if differing:
      raise TFJobMismatch(
          f'TFJob {namespace}/{name} exists but its {", ".join(differing)} pods differ from what '
          'this Trainer step would create (replicas, image, command, flags, service account or '
          'security context): it was created with other settings or by someone else. Compare '
          f'`kubectl -n {namespace} get tfjob {name} -o yaml`; delete it to train anew.')
    log(f'TFJob {namespace}/{name} exists (a restarted Trainer step): waiting for it')
  deadline = clock() + config.timeout_seconds
  last_state = None
  while True:
    tfjob = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    state = job_state(tfjob)
    if state and state.get('type') != last_state:
      last_state = state.get('type')
      log(f'TFJob {namespace}/{name}: {last_state} ({state.get("reason", "")})')
    if last_state == 'Succeeded':
      return tfjob
    if last_state == 'Failed':
      raise TFJobFailed(f'TFJob {namespace}/{name} failed: {state.get("reason")}: '
                        f'{state.get("message")} (kubectl -n {namespace} logs '
                        f'{name}-chief-0)')
    if clock() > deadline:
      raise TFJobFailed(f'TFJob {namespace}/{name} did not finish in '
                        f'{config.timeout_seconds:.0f} s (last state {last_state})')
    sleep(config.poll_seconds)


def parse_template(text: str, source: str) -> Dict[str, Any]:
  templates = [d for d in yaml.safe_load_all(text) if d and d.get('kind') == 'TFJob']
  if len(templates) != 1:
    raise ValueError(f'{source}: expected one TFJob, found {len(templates)}')
  return templates[0]


def load_template(path: str) -> Dict[str, Any]:
  with open(path) as f:
    return parse_template(f.read(), path)


def template_from_cluster(core_api, config: settings.TFJobConfig) -> Dict[str, Any]:
  """The TFJob template in the ConfigMap (a kubernetes.client.CoreV1Api reads it)."""
  config_map = core_api.read_namespaced_config_map(config.template_config_map, config.namespace)
  source = f'ConfigMap {config.namespace}/{config.template_config_map}'
  if TEMPLATE_KEY not in (config_map.data or {}):
    raise ValueError(f'{source} has no key {TEMPLATE_KEY!r} (apply k8s/kustomization.yaml)')
  return parse_template(config_map.data[TEMPLATE_KEY], source)


def run_fn(fn_args) -> None:
  """TFX Trainer entry point: trains on a TFJob in the cluster this pod runs in."""
  import kubernetes  # pylint: disable=g-import-not-at-top

  config = settings.TFJobConfig.from_dict(
      (fn_args.custom_config or {}).get(settings.TRAINER_TFJOB_KEY) or {})
  kubernetes.config.load_incluster_config()
  template = (load_template(config.manifest) if config.manifest else
              template_from_cluster(kubernetes.client.CoreV1Api(), config))
  launch_and_wait(kubernetes.client.CustomObjectsApi(), template, fn_args, config)
