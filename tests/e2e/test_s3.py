"""The whole local pipeline through the real TFX CLI with its pipeline root, play logs and push
directory on s3://, against a real S3-protocol server (moto's) on loopback.

Every step reads and writes the bucket: PlayLogExampleGen lists and reads the logs through Beam's
s3:// (boto3), TFX's components and the Trainer (checkpoints, export) through tf.io.gfile with
tensorflow-io's s3://, all in the runner process (LocalDagRunner, and Beam's in-memory
DirectRunner; Beam's worker processes are tested in tests/storage); Pusher publishes into the
bucket. Only the metadata store (SQLite) and the CLI's records are local. The endpoint is given
the way boto3 reads it (AWS_ENDPOINT_URL) only: storage shares it with tensorflow-io.
"""

import json
import os
import subprocess
import sys

import pytest

from contract import storage as storage_names
from pipeline.local_paths import DATA_ENV
from tests.e2e.cli_workspace import REPO_ROOT, SMALL_CONFIG, Workspace
from tests.s3_server import S3Server, keys

BUCKET = 'playrecall-e2e'
PIPELINE_ROOT = f's3://{BUCKET}/playrecall/root'
DATA_PREFIX = 'playrecall/plays/'
SERVING_PREFIX = 'playrecall/serving/'


@pytest.fixture(scope='module')
def s3_server():
  server = S3Server().start()
  yield server
  server.stop()


@pytest.fixture(scope='module')
def bucket(s3_server):
  return s3_server.create_bucket(BUCKET)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, s3_server, bucket):
  ws = Workspace(tmp_path_factory.mktemp('e2e_s3'))
  ws.write_config(SMALL_CONFIG)
  ws.generate('day1', seed=21, events=12000)  # into a local directory, then up to the bucket
  for name in sorted(os.listdir(ws.data)):
    bucket.upload_file(os.path.join(ws.data, name), BUCKET, DATA_PREFIX + name)
  ws.env.update(s3_server.env)
  ws.env.pop(storage_names.TFIO_ENDPOINT_ENV, None)
  ws.env[storage_names.PIPELINE_ROOT_ENV] = PIPELINE_ROOT
  # A directory on an object store is named with its trailing slash (there are no directories).
  ws.env[DATA_ENV] = f's3://{BUCKET}/{DATA_PREFIX}'
  ws.env[storage_names.SERVING_MODEL_DIR_ENV] = f's3://{BUCKET}/{SERVING_PREFIX}'.rstrip('/')
  ws.create_pipeline()
  return ws


@pytest.fixture(scope='module')
def run(workspace):
  return workspace.run_pipeline()


def test_every_step_writes_its_outputs_to_the_bucket(run, workspace, bucket):
  examples = run.output('PlayLogExampleGen', 'examples')
  assert examples.custom_properties['rows_read'].int_value == 12000
  for node, key in (('PlayLogExampleGen', 'examples'), ('Transform', 'transform_graph'),
                    ('Trainer', 'model'), ('Evaluator', 'evaluation'),
                    ('Pusher', 'pushed_model')):
    uri = run.output(node, key).uri
    assert uri.startswith(PIPELINE_ROOT + '/'), (node, key, uri)
    assert keys(bucket, BUCKET, uri[len(f's3://{BUCKET}/'):]), f'{node}.{key}: nothing at {uri}'
  assert keys(bucket, BUCKET, 'playrecall/root/checkpoints/'), 'the Trainer checkpoints there'
  assert not os.path.exists(os.path.join(workspace.root, 'home', 'pipelines')), \
      'nothing of the pipeline root is written locally'


def test_summary_reads_the_outputs_from_the_bucket(run, workspace):
  result = subprocess.run([sys.executable, '-m', 'pipeline.summary'], env=workspace.env,
                          cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  assert 'rows_read = 12000' in result.stdout
  assert 'Gate: BLESSED' in result.stdout
  assert f'pushed_destination = s3://{BUCKET}/{SERVING_PREFIX}' in result.stdout


def test_the_blessed_model_is_pushed_into_the_bucket_and_serves(run, workspace, bucket):
  assert run.blessed()
  pushed = run.output('Pusher', 'pushed_model')
  destination = pushed.custom_properties['pushed_destination'].string_value
  version = pushed.custom_properties['pushed_version'].string_value
  assert destination == f's3://{BUCKET}/{SERVING_PREFIX}{version}'
  assert f'{SERVING_PREFIX}{version}/saved_model.pb' in keys(bucket, BUCKET, SERVING_PREFIX)
  result = subprocess.run([sys.executable, '-m', 'tests.e2e.s3_serve', destination],
                          env=workspace.env, cwd=REPO_ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-5000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  k = SMALL_CONFIG['train']['hparams']['top_k']
  assert [len(row) for row in answer['item_ids']] == [k, k]
  assert all(len(set(row)) == k for row in answer['item_ids']), 'no song twice in one answer'
