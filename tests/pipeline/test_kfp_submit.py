"""pipeline/kfp_submit.py against a stand-in for the KFP v2beta1 REST API on 127.0.0.1.

The server below is NOT a real Kubeflow Pipelines: it is a small http.server that accepts the
endpoints kfp.Client 2.7.0 calls (healthz, pipelines, upload_version, experiments, runs,
recurringruns), checks each request the way the KFP API server does (path, method, required body
fields, the uploaded file being a PipelineSpec, ids that exist, cron and max_concurrency ranges)
and answers with JSON shaped like KFP's. What it proves is that the command sends KFP the right
requests; scheduling and running are KFP's and were not exercised here.
"""

import contextlib
import datetime
import email.parser
import email.policy
import http.server
import ipaddress
import itertools
import json
import ssl
import threading
from typing import Optional, Tuple
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from google.protobuf import json_format
import kfp
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
import yaml

from contract import settings
from contract import storage as storage_names
from pipeline import kfp_submit
from pipeline import kubeflow_runner

API = '/apis/v2beta1'
PIPELINE_ROOT = 'gs://playrecall/runs'
SERVICE_ACCOUNT = 'pipeline-runner'


class FakeKfpApi:
  """The state of the stand-in server and every request it saw."""

  def __init__(self):
    self.requests = []  # (method, path, query, body) in arrival order
    self.authorizations = []  # the Authorization header of each request
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
  api.authorizations.append(headers.get('Authorization'))
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
      # A second document is the platform section (e.g. Kubernetes Secrets as env).
      platform_spec = json_format.ParseDict(documents[1] if len(documents) > 1 else {},
                                            pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as e:
      raise ApiError(400, f'invalid pipeline spec: {e}') from e
    version = dict(pipeline_id=pipeline_id, pipeline_version_id=api.new_id('version'),
                   display_name=name, created_at=_now())
    api.versions[version['pipeline_version_id']] = dict(version, pipeline_spec=spec,
                                                        platform_spec=platform_spec)
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


@contextlib.contextmanager
def _serving(api: FakeKfpApi, tls: Optional[ssl.SSLContext] = None):
  """Serves the stand-in API (over TLS if given a server context); yields its address."""
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler_class(api))
  if tls:
    server.socket = tls.wrap_socket(server.socket, server_side=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'{"https" if tls else "http"}://127.0.0.1:{server.server_address[1]}'
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def no_kfp_environment(monkeypatch, tmp_path):
  """A developer's KFP variables and ~/.config/kfp/context.json must not change what the
  client sends."""
  for env in ('KF_PIPELINES_ENDPOINT', 'KF_PIPELINES_UI_ENDPOINT',
              'KF_PIPELINES_IAP_OAUTH2_CLIENT_ID', kfp.client.KF_PIPELINES_SA_TOKEN_ENV):
    monkeypatch.delenv(env, raising=False)
  monkeypatch.setattr(kfp.Client, '_LOCAL_KFP_CONTEXT', str(tmp_path / 'no-context.json'))


@pytest.fixture
def kfp_api(no_kfp_environment):
  """(the server's state, its http:// address); the server stops after the test."""
  api = FakeKfpApi()
  with _serving(api) as host:
    yield api, host


@pytest.fixture(scope='module')
def package(tmp_path_factory):
  """The real compiled pipeline spec, as pipeline/kubeflow_runner.py writes it."""
  path = str(tmp_path_factory.mktemp('package') / 'playrecall.yaml')
  kubeflow_runner.write_pipeline_spec(kubeflow_runner.compile_pipeline_spec(
      image='registry.example.com/playrecall@sha256:' + 'ab' * 32,
      pipeline_root='gs://playrecall/root',
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


def test_an_s3_package_is_scheduled_with_its_credentials_secret(kfp_api, tmp_path):
  """The platform section (every step's Secret as env) reaches the uploaded version, also when
  the package is rewritten to set caching."""
  path = str(tmp_path / 'playrecall.yaml')
  kubeflow_runner.main(['--image=registry.example.com/playrecall@sha256:' + 'ab' * 32,
                        '--pipeline_root=s3://mlpipeline/playrecall/root',
                        '--data_root=s3://mlpipeline/playrecall/plays/',
                        '--serving_model_dir=s3://mlpipeline/playrecall/serving',
                        f'--output={path}'])
  api, host = kfp_api
  kfp_submit.main([f'--host={host}', f'--package={path}', '--schedule=0 0 3 * * *',
                   '--version_name=s3', '--disable_caching'])
  [version] = api.versions.values()
  assert version['pipeline_spec'].default_pipeline_root == 's3://mlpipeline/playrecall/root'
  executors = json_format.MessageToDict(version['platform_spec'])['platforms']['kubernetes'][
      'deploymentSpec']['executors']
  assert set(executors) == set(json_format.MessageToDict(
      version['pipeline_spec'].deployment_spec)['executors'])
  assert {e['secretAsEnv'][0]['secretName'] for e in executors.values()} == {
      storage_names.KFP_MINIO_SECRET}
  assert len(api.recurring_runs) == 1


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


@pytest.mark.parametrize('how', ['token_file', 'environment', 'token'])
def test_every_request_carries_the_token(kfp_api, package, tmp_path, monkeypatch, how):
  api, host = kfp_api
  token_file = tmp_path / 'token'
  token_file.write_text('first-token\n')
  credentials = {'token_file': [f'--token_file={token_file}'], 'environment': [],
                 'token': ['--token=first-token']}[how]
  if how == 'environment':
    monkeypatch.setenv(kfp.client.KF_PIPELINES_SA_TOKEN_ENV, str(token_file))
  kfp_submit.main([f'--host={host}', f'--package={package}', '--version_name=v1', *credentials])
  assert len(api.runs) == 1
  assert set(api.authorizations) == {'Bearer first-token'}
  if how != 'token':
    # The file is read before each request: a token the kubelet or a helper rotates is followed.
    token_file.write_text('rotated-token')
    api.authorizations.clear()
    kfp_submit.main([f'--host={host}', f'--package={package}', '--version_name=v2',
                     *credentials])
    assert set(api.authorizations) == {'Bearer rotated-token'}


def test_by_default_no_token_and_playrecalls_own_service_account(kfp_api, package):
  api, host = kfp_api
  kfp_submit.main([f'--host={host}', f'--package={package}'])
  assert set(api.authorizations) == {None}
  # The account k8s/pipeline-runner/ creates, the one allowed to create TFJobs (k8s/rbac.yaml).
  [run] = api.runs.values()
  assert run['service_account'] == kfp_submit.PIPELINE_SERVICE_ACCOUNT


@pytest.mark.parametrize('flags, message', [
    (['--host=http://kfp.example.com', '--token=secret'], 'a token over plain http'),
    (['--host=https://kfp.example.com', '--token_file=/no/such/token'],
     "--token_file='/no/such/token': no such file"),
    (['--host=https://kfp.example.com', '--ssl_ca_cert=/no/such/ca.pem'],
     "--ssl_ca_cert='/no/such/ca.pem': no such file"),
    (['--host=https://kfp.example.com', '--token=a', '--token_file=/etc/hostname'],
     'not allowed with argument'),
])
def test_bad_credentials_are_refused_before_any_request(no_kfp_environment, package, capsys,
                                                         flags, message):
  with pytest.raises(SystemExit):
    kfp_submit.main([f'--package={package}', *flags])
  assert message in capsys.readouterr().err


def _private_ca(directory) -> Tuple[str, ssl.SSLContext]:
  """A CA bundle file, and a TLS server context with a certificate that CA signed for 127.0.0.1."""
  now = datetime.datetime.now(datetime.timezone.utc)

  def certificate(subject, key, issuer, issuer_key, extensions):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1)))
    for extension, critical in extensions:
      builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())

  ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
      ec.SECP256R1())
  ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, 'playrecall test CA')])
  ca = certificate(ca_name, ca_key, ca_name, ca_key,
                   [(x509.BasicConstraints(ca=True, path_length=None), True)])
  server = certificate(
      x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, '127.0.0.1')]), server_key,
      ca_name, ca_key,
      [(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
        False)])
  ca_bundle, chain, key = (directory / name for name in ('ca.pem', 'server.pem', 'key.pem'))
  ca_bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
  chain.write_bytes(server.public_bytes(serialization.Encoding.PEM))
  key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(chain, key)
  return str(ca_bundle), context


def test_a_private_ca_bundle_verifies_the_endpoint(no_kfp_environment, package, tmp_path):
  ca_bundle, tls = _private_ca(tmp_path)
  api = FakeKfpApi()
  with _serving(api, tls) as host:
    # The public CAs do not know this endpoint's certificate: nothing is sent.
    with pytest.raises(Exception, match='CERTIFICATE_VERIFY_FAILED'):
      kfp_submit.main([f'--host={host}', f'--package={package}'])
    assert api.requests == []
    kfp_submit.main([f'--host={host}', f'--package={package}', f'--ssl_ca_cert={ca_bundle}'])
  assert len(api.runs) == 1
