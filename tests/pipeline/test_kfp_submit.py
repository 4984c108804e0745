"""pipeline/kfp_submit.py against a stand-in for the KFP v2beta1 REST API on 127.0.0.1.

The server below is NOT a real Kubeflow Pipelines: it is a small http.server that accepts the
endpoints kfp.Client 2.5.0 calls (healthz, pipelines, upload_version, experiments, runs,
recurringruns), checks each request the way the KFP API server does (path, method, required body
fields, the uploaded file being a PipelineSpec, ids that exist, cron and max_concurrency ranges)
and answers with JSON shaped like KFP's. What it proves is that the command sends KFP the right
requests; scheduling and running are KFP's and were not exercised here.
"""

import datetime
import email.parser
import email.policy
import http.server
import itertools
import json
import threading
import urllib.parse

from google.protobuf import json_format
import kfp
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
import yaml

from contract import settings
from pipeline import kfp_submit
from pipeline import kubeflow_runner

API = '/apis/v2beta1'
PIPELINE_ROOT = 'gs://playrecall/runs'
SERVICE_ACCOUNT = 'pipeline-runner'


class FakeKfpApi:
  """The state of the stand-in server and every request it saw."""

  def __init__(self):
    self.requests = []  # (method, path, query, body) in arrival order
    self.pipelines = {}  # id -> dict
    self.versions = {}  # id -> dict (with 'pipeline_spec', the parsed upload)
    self.experiments = {}
    self.runs = {}
    self.recurring_runs = {}
    self._ids = itertools.count(1)

  def new_id(self, kind: str) -> str:
    return f'{kind}-{next(self._ids):04d}'

  def paths(self):
    return [(method, path) for method, path, _, _ in self.requests]


class ApiError(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _require(condition: bool, message: str, status: int = 400) -> None:
  if not condition:
    raise ApiError(status, message)


def _name_filter(query) -> str:
  """The display_name an EQUALS filter (as kfp.Client sends it) asks for."""
  [predicate] = json.loads(query['filter'][0])['predicates']
  # Filter.Predicate.Operation EQUALS, by name or by its proto enum number (kfp.Client's way).
  _require(predicate['operation'] in ('EQUALS', 1) and predicate['key'] == 'display_name',
           f'unsupported filter {predicate}')
  return predicate['stringValue']


def _multipart_file(headers, body: bytes, field: str) -> bytes:
  content_type = headers['Content-Type']
  _require(content_type.startswith('multipart/form-data'), f'Content-Type {content_type}')
  message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
      b'Content-Type: ' + content_type.encode() + b'\r\n\r\n' + body)
  for part in message.iter_parts():
    if part.get_param('name', header='content-disposition') == field:
      return part.get_payload(decode=True)
  raise ApiError(400, f'multipart form has no {field!r} file')


def _check_runtime_config(api: FakeKfpApi, body: dict) -> None:
  _require(body.get('experiment_id') in api.experiments,
           f'experiment {body.get("experiment_id")} not found', 404)
  reference = body.get('pipeline_version_reference') or {}
  _require(reference.get('pipeline_id') in api.pipelines, 'pipeline not found', 404)
  version = api.versions.get(reference.get('pipeline_version_id'))
  _require(version is not None and version['pipeline_id'] == reference['pipeline_id'],
           'pipeline version not found', 404)
  _require(bool(body.get('display_name')), 'display_name is empty')
  parameters = (body.get('runtime_config') or {}).get('parameters') or {}
  _require(isinstance(parameters, dict), 'runtime_config.parameters must be a map')


def handle(api: FakeKfpApi, method: str, path: str, query, headers, body: bytes):
  """Returns the JSON response of one request, or raises ApiError as KFP would."""
  json_body = json.loads(body) if body and headers.get('Content-Type', '').startswith(
      'application/json') else None
  api.requests.append((method, path, query, json_body))
  if (method, path) == ('GET', f'{API}/healthz'):
    return {'multi_user': False}
  if (method, path) == ('GET', f'{API}/pipelines'):
    name = _name_filter(query)
    return {'pipelines': [p for p in api.pipelines.values() if p['display_name'] == name]}
  if (method, path) == ('POST', f'{API}/pipelines'):
    _require(bool(json_body.get('display_name')), 'pipeline display_name is empty')
    _require(all(p['display_name'] != json_body['display_name'] for p in api.pipelines.values()),
             'pipeline already exists', 409)
    pipeline = dict(pipeline_id=api.new_id('pipeline'), display_name=json_body['display_name'],
                    description=json_body.get('description', ''), created_at=_now())
    api.pipelines[pipeline['pipeline_id']] = pipeline
    return pipeline
  if (method, path) == ('POST', f'{API}/pipelines/upload_version'):
    pipeline_id, name = query.get('pipelineid', [''])[0], query.get('name', [''])[0]
    _require(pipeline_id in api.pipelines, f'pipeline {pipeline_id!r} not found', 404)
    _require(bool(name), 'version name is empty')
    _require(all(v['display_name'] != name or v['pipeline_id'] != pipeline_id
                 for v in api.versions.values()), f'version {name!r} already exists', 409)
    documents = list(yaml.safe_load_all(_multipart_file(headers, body, 'uploadfile')))
    try:
      spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as e:
      raise ApiError(400, f'invalid pipeline spec: {e}') from e
    version = dict(pipeline_id=pipeline_id, pipeline_version_id=api.new_id('version'),
                   display_name=name, created_at=_now())
    api.versions[version['pipeline_version_id']] = dict(version, pipeline_spec=spec)
    return version
  if (method, path) == ('GET', f'{API}/experiments'):
    name = _name_filter(query)
    return {'experiments': [e for e in api.experiments.values() if e['display_name'] == name]}
  if (method, path) == ('POST', f'{API}/experiments'):
    _require(bool(json_body.get('display_name')), 'experiment display_name is empty')
    experiment = dict(experiment_id=api.new_id('experiment'),
                      display_name=json_body['display_name'], created_at=_now(),
                      storage_state='AVAILABLE')
    api.experiments[experiment['experiment_id']] = experiment
    return experiment
  if (method, path) == ('POST', f'{API}/runs'):
    _check_runtime_config(api, json_body)
    run = dict(json_body, run_id=api.new_id('run'), state='PENDING', created_at=_now())
    api.runs[run['run_id']] = run
    return run
  if (method, path) == ('POST', f'{API}/recurringruns'):
    _check_runtime_config(api, json_body)
    cron = ((json_body.get('trigger') or {}).get('cron_schedule') or {}).get('cron', '')
    _require(len(cron.split()) == 6, f'invalid cron {cron!r}: expected exactly 6 fields')
    _require(1 <= int(json_body.get('max_concurrency', 0)) <= 10,
             'max_concurrency must be in [1, 10]')
    _require(json_body.get('mode') in ('ENABLE', 'DISABLE'), f'mode {json_body.get("mode")}')
    recurring_run = dict(json_body, recurring_run_id=api.new_id('recurring'),
                         status='ENABLED', created_at=_now())
    api.recurring_runs[recurring_run['recurring_run_id']] = recurring_run
    return recurring_run
  raise ApiError(404, f'no route {method} {path}')


def _handler_class(api: FakeKfpApi):

  class Handler(http.server.BaseHTTPRequestHandler):

    def _serve(self, method: str):
      url = urllib.parse.urlsplit(self.path)
      body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
      try:
        status, response = 200, handle(api, method, url.path, urllib.parse.parse_qs(url.query),
                                       self.headers, body)
      except ApiError as e:
        status, response = e.status, {'error': str(e), 'message': str(e), 'code': 3}
      payload = json.dumps(response).encode()
      self.send_response(status)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(payload)))
      self.end_headers()
      self.wfile.write(payload)

    def do_GET(self):
      self._serve('GET')

    def do_POST(self):
      self._serve('POST')

    def log_message(self, *args):
      pass

  return Handler


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
  """(the server's state, its http:// address); the server stops after the test."""
  for env in ('KF_PIPELINES_ENDPOINT', 'KF_PIPELINES_UI_ENDPOINT', 'KF_PIPELINES_IAP_OAUTH2_CLIENT_ID'):
    monkeypatch.delenv(env, raising=False)
  # A developer's ~/.config/kfp/context.json must not change what the client sends.
  monkeypatch.setattr(kfp.Client, '_LOCAL_KFP_CONTEXT', str(tmp_path / 'no-context.json'))
  api = FakeKfpApi()
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler_class(api))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield api, f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()
  thread.join()


@pytest.fixture(scope='module')
def package(tmp_path_factory):
  """The real compiled pipeline spec, as pipeline/kubeflow_runner.py writes it."""
  path = str(tmp_path_factory.mktemp('package') / 'playrecall.yaml')
  kubeflow_runner.write_pipeline_spec(kubeflow_runner.compile_pipeline_spec(
      image='registry.example.com/playrecall:1', pipeline_root='gs://playrecall/root',
      data_root='gs://playrecall/plays', serving_model_dir='gs://playrecall/serving',
      config=settings.PipelineConfig(), beam_pipeline_args=[]), path)
  return path


def test_schedule_creates_pipeline_experiment_and_recurring_run(kfp_api, package, capsys):
  api, host = kfp_api
  kfp_submit.main([f'--host={host}', f'--package={package}', '--schedule=0 0 3 * * *',
                   f'--pipeline_root={PIPELINE_ROOT}', f'--service_account={SERVICE_ACCOUNT}',
                   '--param=run_tag=nightly', '--version_name=v1'])

  assert api.paths() == [
      ('GET', f'{API}/healthz'),
      ('GET', f'{API}/pipelines'),
      ('POST', f'{API}/pipelines'),
      ('POST', f'{API}/pipelines/upload_version'),
      ('GET', f'{API}/experiments'),
      ('POST', f'{API}/experiments'),
      ('POST', f'{API}/recurringruns'),
  ]
  [pipeline] = api.pipelines.values()
  assert pipeline['display_name'] == settings.PIPELINE_NAME
  [version] = api.versions.values()
  assert version['display_name'] == 'v1'
  assert set(version['pipeline_spec'].root.dag.tasks) >= {'Trainer', 'Evaluator', 'Pusher'}
  [experiment] = api.experiments.values()
  assert experiment['display_name'] == settings.PIPELINE_NAME
  [recurring_run] = api.recurring_runs.values()
  assert recurring_run['trigger'] == {'cron_schedule': {'cron': '0 0 3 * * *'}}
  assert int(recurring_run['max_concurrency']) == 1
  assert recurring_run['no_catchup'] is True
  assert recurring_run['mode'] == 'ENABLE'
  assert recurring_run['experiment_id'] == experiment['experiment_id']
  assert recurring_run['pipeline_version_reference'] == {
      'pipeline_id': pipeline['pipeline_id'], 'pipeline_version_id': version['pipeline_version_id']}
  assert recurring_run['runtime_config'] == {'pipeline_root': PIPELINE_ROOT,
                                             'parameters': {'run_tag': 'nightly'}}
  assert recurring_run['service_account'] == SERVICE_ACCOUNT
  assert 'pipeline_spec' not in recurring_run  # the run references the uploaded version
  assert recurring_run['recurring_run_id'] in capsys.readouterr().out


def test_one_run_adds_a_version_to_an_existing_pipeline(kfp_api, package):
  api, host = kfp_api
  kfp_submit.main([f'--host={host}', f'--package={package}', '--version_name=v1'])
  api.requests.clear()
  kfp_submit.main([f'--host={host}', f'--package={package}', '--version_name=v2',
                   '--disable_caching', '--run_name=backfill'])

  assert api.paths() == [
      ('GET', f'{API}/healthz'),
      ('GET', f'{API}/pipelines'),
      ('POST', f'{API}/pipelines/upload_version'),
      ('GET', f'{API}/experiments'),
      ('POST', f'{API}/runs'),
  ]
  assert len(api.pipelines) == 1 and len(api.experiments) == 1 and len(api.runs) == 2
  run = api.requests[-1][3]
  assert run['display_name'] == 'backfill'
  assert run['runtime_config'] == {'parameters': {}}  # the spec's own root applies
  v2 = next(v for v in api.versions.values() if v['display_name'] == 'v2')
  assert run['pipeline_version_reference']['pipeline_version_id'] == v2['pipeline_version_id']
  assert not any(t.caching_options.enable_cache
                 for t in v2['pipeline_spec'].root.dag.tasks.values())
  v1 = next(v for v in api.versions.values() if v['display_name'] == 'v1')
  assert v1['pipeline_spec'].root.dag.tasks['Trainer'].caching_options.enable_cache


def test_a_five_field_cron_is_refused_before_any_request(kfp_api, package, capsys):
  api, host = kfp_api
  with pytest.raises(SystemExit):
    kfp_submit.main([f'--host={host}', f'--package={package}', '--schedule=0 3 * * *'])
  assert "did you mean '0 0 3 * * *'" in capsys.readouterr().err
  assert api.requests == []


@pytest.mark.parametrize('cron', ['0 0 3 * * *', '0 */15 * * * ?', '30 0 3 * * MON-FRI',
                                  '0 0 0 1 JAN,JUL *', '@daily', '@every 6h'])
def test_valid_cron(cron):
  assert kfp_submit.validate_cron(cron) == cron


@pytest.mark.parametrize('cron, message', [
    ('0 3 * * *', 'has 5 fields'),
    ('0 0 0 3 * * *', 'has 7 fields'),
    ('0 60 3 * * *', "'60' is not a valid minute"),
    ('0 0 24 * * *', "'24' is not a valid hour"),
    ('? 0 3 * * *', "cannot read '?' in the second field"),
    ('0 0 3 * FOO *', "'FOO' is not a valid month"),
    ('@sometimes', 'unknown descriptor'),
])
def test_invalid_cron_says_why(cron, message):
  with pytest.raises(ValueError) as error:
    kfp_submit.validate_cron(cron)
  assert message in str(error.value)
