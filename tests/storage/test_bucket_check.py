"""Object-store steps check their buckets first (issue 27): a wrong endpoint or a missing bucket
fails in seconds, naming the endpoint and the bucket, instead of a minute of `exists()` answering
False (a silent cold start, "nothing pushed") and minutes of retries."""

import os
import socket
import time

import pytest

from contract import storage as storage_names
import storage
from tests.s3_server import S3Server

BUCKET = 'playrecall-checked'


@pytest.fixture(scope='module')
def s3_server():
  server = S3Server().start()
  server.create_bucket(BUCKET)
  yield server
  server.stop()


def _environment(monkeypatch, env):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  for name in (storage_names.TFIO_ENDPOINT_ENV, storage_names.BOTO_REGION_ENV):
    monkeypatch.setenv(name, '')
    monkeypatch.delenv(name)


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_buckets_are_found_in_paths_and_in_a_steps_arguments():
  assert storage.s3_buckets([None, '/local', 's3://a/root', 'gs://b/x', 's3://a/other',
                             '{"uri": "s3://c/pipeline/Trainer/model/5"}']) == ['a', 'c']


def test_a_reachable_bucket_passes(s3_server, monkeypatch):
  _environment(monkeypatch, s3_server.env)
  storage.check_buckets([f's3://{BUCKET}/root', '/local/path'])


def test_a_missing_bucket_is_named_with_the_endpoint(s3_server, monkeypatch):
  _environment(monkeypatch, s3_server.env)
  with pytest.raises(storage.StorageError) as raised:
    storage.check_buckets([f's3://{BUCKET}/root', 's3://no-such-bucket/data/'])
  assert str(raised.value) == (f's3://no-such-bucket/ at the S3 endpoint {s3_server.endpoint} '
                               f'({storage_names.BOTO_ENDPOINT_ENV}): no such bucket')


def test_a_wrong_endpoint_fails_in_seconds_naming_it(s3_server, monkeypatch):
  endpoint = f'http://127.0.0.1:{_closed_port()}'
  _environment(monkeypatch, dict(s3_server.env, **{storage_names.BOTO_ENDPOINT_ENV: endpoint}))
  started = time.monotonic()
  with pytest.raises(storage.StorageError) as raised:
    storage.check_buckets([f's3://{BUCKET}/root'])
  assert time.monotonic() - started < 2 * storage.BUCKET_CHECK_TIMEOUT_SECONDS
  message = str(raised.value)
  assert message.startswith(f'cannot reach the S3 endpoint {endpoint} '
                            f'({storage_names.BOTO_ENDPOINT_ENV}) for s3://{BUCKET}/: '), message
  assert message.endswith(f'; check {storage_names.BOTO_ENDPOINT_ENV}'), message


def test_a_run_checks_the_buckets_of_its_paths_before_it_starts(s3_server, monkeypatch):
  from pipeline import local_paths  # pylint: disable=g-import-not-at-top
  _environment(monkeypatch, s3_server.env)
  environ = {local_paths.HOME_ENV: '/tmp/playrecall-home',
             storage_names.PIPELINE_ROOT_ENV: f's3://{BUCKET}/root',
             local_paths.DATA_ENV: f's3://{BUCKET}/plays/',
             storage_names.SERVING_MODEL_DIR_ENV: 's3://missing-bucket/serving'}
  with pytest.raises(storage.StorageError, match=r'^s3://missing-bucket/ at the S3 endpoint '):
    local_paths.check_object_stores('playrecall', environ)
  environ[storage_names.SERVING_MODEL_DIR_ENV] = f's3://{BUCKET}/serving'
  local_paths.check_object_stores('playrecall', environ)
  local_paths.check_object_stores('playrecall', {local_paths.HOME_ENV: '/tmp/h'})  # local only
