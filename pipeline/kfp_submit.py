r"""Uploads a compiled pipeline spec to Kubeflow Pipelines and starts one run or a schedule.

  # one run now
  python -m pipeline.kfp_submit --host=http://localhost:8080 --package=build/playrecall.yaml
  # every day at 03:00 (KFP cron: six fields, seconds first)
  python -m pipeline.kfp_submit --host=http://localhost:8080 --package=build/playrecall.yaml \
      --schedule='0 0 3 * * *'

The spec (from pipeline/kubeflow_runner.py) becomes a new version of the pipeline named
--pipeline_name (created on first upload); the run or recurring run references that version, in
--experiment (created if missing). Talks to the KFP v2beta1 API through kfp.Client.

Credentials, for an endpoint behind authentication: --token_file (a bearer token read again
before every request, so a short-lived token that the kubelet or a credential helper rotates
keeps working; default $KF_PIPELINES_SA_TOKEN_PATH, as kfp reads it) or --token, and
--ssl_ca_cert for an endpoint whose TLS certificate a private CA signed. kfp.Client itself reads
$KF_PIPELINES_IAP_OAUTH2_CLIENT_ID for Identity-Aware Proxy. A token never goes over plain http
except to a port-forward on this machine.
"""

import argparse
import datetime
import hashlib
import os
import re
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple
import urllib.parse

import kfp
import kfp_server_api
import yaml

from contract import settings

# robfig/cron, which KFP's scheduler uses: second minute hour day-of-month month day-of-week.
CRON_FIELDS = (
    ('second', 0, 59, ()),
    ('minute', 0, 59, ()),
    ('hour', 0, 23, ()),
    ('day of month', 1, 31, ()),
    ('month', 1, 12, ('JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT',
                      'NOV', 'DEC')),
    ('day of week', 0, 6, ('SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT')),
)
CRON_DESCRIPTORS = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight',
                    '@hourly')
PIPELINE_DESCRIPTION = 'playrecall: play logs -> DeepMatch recall model -> gate -> TF Serving'
# KFP's API server rejects a recurring run outside this range.
MAX_CONCURRENCY_RANGE = (1, 10)
# The identity of playrecall's runs (k8s/pipeline-runner/), the account k8s/rbac.yaml lets create
# TFJobs in the playrecall namespace.
PIPELINE_SERVICE_ACCOUNT = 'playrecall-pipeline'
# Where a token may go over plain http: a `kubectl port-forward` on this machine.
LOOPBACK_HOSTS = ('localhost', '127.0.0.1', '::1')
_CRON_PART = re.compile(r'^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?$')


def validate_cron(expression: str) -> str:
  """Returns the expression if KFP's scheduler accepts it, else raises ValueError saying why."""
  expression = ' '.join(expression.split())
  if expression.startswith('@'):
    if expression in CRON_DESCRIPTORS or re.fullmatch(r'@every (\d+(ns|us|ms|s|m|h))+',
                                                      expression):
      return expression
    raise ValueError(f'cron {expression!r}: unknown descriptor; use one of '
                     f'{", ".join(CRON_DESCRIPTORS)} or "@every <duration>"')
  fields = expression.split(' ')
  if len(fields) == 5:
    raise ValueError(
        f'cron {expression!r} has 5 fields, but KFP\'s cron has six with seconds first '
        f'(second minute hour day-of-month month day-of-week): did you mean '
        f'{"0 " + expression!r}?')
  if len(fields) != 6:
    raise ValueError(f'cron {expression!r} has {len(fields)} fields; KFP\'s cron has six: '
                     'second minute hour day-of-month month day-of-week')
  for field, (name, low, high, names) in zip(fields, CRON_FIELDS):
    for part in field.split(','):
      _check_cron_part(expression, name, part, low, high, names)
  return expression


def _check_cron_part(expression: str, name: str, part: str, low: int, high: int,
                     names: Tuple[str, ...]) -> None:
  match = _CRON_PART.match(part)
  if not match or (part.startswith('?') and name not in ('day of month', 'day of week')):
    raise ValueError(f'cron {expression!r}: cannot read {part!r} in the {name} field')
  for value in re.split(r'[-/]', part.split('/')[0]):
    if value in ('*', '?'):
      continue
    number = names.index(value.upper()) + low if value.upper() in names else (
        int(value) if value.isdigit() else None)
    if number is None or not low <= number <= high:
      raise ValueError(f'cron {expression!r}: {value!r} is not a valid {name} '
                       f'({low}-{high})')


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.kfp_submit', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
  parser.add_argument('--host', default=os.environ.get('KF_PIPELINES_ENDPOINT'),
                      help='KFP API endpoint, e.g. http://localhost:8080 after '
                      '`kubectl port-forward svc/ml-pipeline-ui 8080:80` '
                      '(default $KF_PIPELINES_ENDPOINT)')
  parser.add_argument('--package', required=True,
                      help='the compiled pipeline spec (.yaml) from pipeline/kubeflow_runner.py')
  parser.add_argument('--pipeline_name', default=settings.PIPELINE_NAME,
                      help='pipeline to add a version to, created if missing '
                      '(default %(default)s)')
  parser.add_argument('--version_name', help='name of the uploaded version (default: the '
                      'package\'s content hash and the upload time)')
  parser.add_argument('--experiment', default=settings.PIPELINE_NAME,
                      help='experiment of the run, created if missing (default %(default)s)')
  parser.add_argument('--namespace', help='Kubernetes namespace of a multi-user KFP')
  parser.add_argument('--run_name', help='display name of the run or recurring run '
                      '(default: pipeline name, and the time for one-off runs)')
  parser.add_argument('--pipeline_root', help='override the spec\'s pipeline root '
                      '(gs://... or s3://...)')
  parser.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                      help='a pipeline parameter (repeatable)')
  parser.add_argument('--service_account', default=PIPELINE_SERVICE_ACCOUNT,
                      help='Kubernetes service account the run\'s pods use (default %(default)s, '
                      'from k8s/pipeline-runner/)')
  credentials = parser.add_argument_group('credentials (default: none, as through a port-forward)')
  token = credentials.add_mutually_exclusive_group()
  token.add_argument('--token_file', default=os.environ.get(kfp.client.KF_PIPELINES_SA_TOKEN_ENV),
                     help='file holding a bearer token, read before every request (default '
                     f'${kfp.client.KF_PIPELINES_SA_TOKEN_ENV})')
  token.add_argument('--token', help='a bearer token; other users can read it in the process '
                     'list, so prefer --token_file')
  credentials.add_argument('--ssl_ca_cert', help='CA bundle (PEM) that verifies the endpoint\'s '
                           'TLS certificate (default: the public CAs)')
  caching = parser.add_mutually_exclusive_group()
  caching.add_argument('--enable_caching', dest='enable_caching', action='store_const',
                       const=True, help='cache every task, ExampleGen and the baseline included (safe only '
                       'when each run reads a new data path)')
  caching.add_argument('--disable_caching', dest='enable_caching', action='store_const',
                       const=False, help='run every task (default: the settings compiled '
                       'into the spec, which never cache ExampleGen and the baseline)')
  schedule = parser.add_argument_group('schedule (omit --schedule for one run now)')
  schedule.add_argument('--schedule', metavar='CRON', help='six-field cron, seconds first, '
                        'e.g. "0 0 3 * * *" for 03:00 every day (the server\'s time zone, '
                        'usually UTC)')
  schedule.add_argument('--max_concurrency', type=int, default=1,
                        help='scheduled runs allowed at once (default %(default)s: a run that '
                        'overlaps the next keeps the push order)')
  schedule.add_argument('--catchup', action='store_true',
                        help='after a pause, start every missed run (default: only the latest)')
  schedule.add_argument('--start_time', help='RFC 3339 time the schedule starts')
  schedule.add_argument('--end_time', help='RFC 3339 time the schedule ends')
  args = parser.parse_args(argv)

  if not args.host:
    parser.error('--host is required (or set $KF_PIPELINES_ENDPOINT)')
  if not os.path.isfile(args.package):
    parser.error(f'--package={args.package!r}: no such file (compile it with '
                 'python -m pipeline.kubeflow_runner)')
  if not args.package.endswith(('.yaml', '.yml')):
    parser.error(f'--package={args.package!r} must be the .yaml pipeline spec')
  for flag in ('token_file', 'ssl_ca_cert'):
    path = getattr(args, flag)
    if path and not os.path.isfile(path):
      parser.error(f'--{flag}={path!r}: no such file')
  host = urllib.parse.urlsplit(args.host)
  if (args.token or args.token_file) and host.scheme == 'http' and (
      host.hostname not in LOOPBACK_HOSTS):
    parser.error(f'--host={args.host!r}: a token over plain http can be read on the way; use '
                 'https:// or a port-forward to localhost')
  if args.schedule is not None:
    try:
      args.schedule = validate_cron(args.schedule)
    except ValueError as e:
      parser.error(f'--schedule: {e}')
  low, high = MAX_CONCURRENCY_RANGE
  if not low <= args.max_concurrency <= high:
    parser.error(f'--max_concurrency={args.max_concurrency} must be in [{low}, {high}]')
  try:
    args.params = dict(_split_param(p) for p in args.param)
  except ValueError as e:
    parser.error(str(e))
  return args


def _split_param(text: str) -> Tuple[str, str]:
  name, sep, value = text.partition('=')
  if not sep or not name:
    raise ValueError(f'--param {text!r} must look like NAME=VALUE')
  return name, value


def package_with_caching(package: str, enable_caching: Optional[bool], workdir: str) -> str:
  """Returns the package to upload: as compiled, or with every task's caching set.

  kfp.Client applies `enable_caching` only to runs from a local package, not to runs of an
  uploaded version, so the setting goes into the uploaded spec itself.
  """
  if enable_caching is None:
    return package
  with open(package) as f:
    documents = list(yaml.safe_load_all(f))
  for task in documents[0]['root']['dag']['tasks'].values():
    task['cachingOptions'] = {'enableCache': enable_caching}
  path = os.path.join(workdir, os.path.basename(package))
  with open(path, 'w') as f:
    yaml.safe_dump_all(documents, f, sort_keys=True)
  return path


def default_version_name(package: str) -> str:
  with open(package, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:12]
  return f'{digest}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}'


def upload_version(client: kfp.Client, package: str, pipeline_name: str, version_name: str,
                   namespace: Optional[str]) -> Tuple[str, str]:
  """Uploads the package as a new version of the pipeline (created empty if missing, so every
  upload, the first included, is a version named version_name); returns (pipeline_id, version_id).
  """
  pipeline_id = client.get_pipeline_id(pipeline_name)
  if pipeline_id is None:
    pipeline = client.pipelines.create_pipeline(body=kfp_server_api.V2beta1Pipeline(
        display_name=pipeline_name, description=PIPELINE_DESCRIPTION, namespace=namespace))
    pipeline_id = pipeline.pipeline_id
    print(f'Created pipeline {pipeline_name!r} ({pipeline_id})')
  version = client.upload_pipeline_version(package, pipeline_version_name=version_name,
                                           pipeline_id=pipeline_id)
  return pipeline_id, version.pipeline_version_id


def client_arguments(args: argparse.Namespace) -> Dict[str, Any]:
  """kfp.Client's arguments: the endpoint, the namespace and the credentials."""
  arguments = dict(host=args.host, namespace=args.namespace or 'kubeflow',
                   ssl_ca_cert=args.ssl_ca_cert)
  if args.token:
    arguments['existing_token'] = args.token
  elif args.token_file:
    arguments['credentials'] = kfp.client.ServiceAccountTokenVolumeCredentials(args.token_file)
  return arguments


def submit(args: argparse.Namespace) -> str:
  """Uploads, then starts the run or creates the recurring run; returns its id."""
  client = kfp.Client(**client_arguments(args))
  with tempfile.TemporaryDirectory() as workdir:
    package = package_with_caching(args.package, args.enable_caching, workdir)
    version_name = args.version_name or default_version_name(package)
    pipeline_id, version_id = upload_version(client, package, args.pipeline_name, version_name,
                                             args.namespace)
  print(f'Uploaded {args.package} as version {version_name!r} ({version_id}) of pipeline '
        f'{args.pipeline_name!r} ({pipeline_id})')
  experiment = client.create_experiment(args.experiment, namespace=args.namespace)
  common = dict(experiment_id=experiment.experiment_id, pipeline_id=pipeline_id,
                version_id=version_id, params=args.params, pipeline_root=args.pipeline_root,
                service_account=args.service_account)
  if args.schedule is None:
    run_name = args.run_name or (
        f'{args.pipeline_name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}')
    run = client.run_pipeline(job_name=run_name, **common)
    print(f'Started run {run_name!r}: {run.run_id}')
    return run.run_id
  run_name = args.run_name or f'{args.pipeline_name} ({args.schedule})'
  recurring_run = client.create_recurring_run(
      job_name=run_name, cron_expression=args.schedule, max_concurrency=args.max_concurrency,
      no_catchup=not args.catchup, start_time=args.start_time, end_time=args.end_time,
      **common)
  print(f'Scheduled {run_name!r}: recurring run {recurring_run.recurring_run_id}, cron '
        f'{args.schedule!r}, at most {args.max_concurrency} at once')
  return recurring_run.recurring_run_id


def main(argv: Optional[Sequence[str]] = None) -> None:
  submit(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
  main()
