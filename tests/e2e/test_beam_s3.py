"""The pipeline through the real TFX CLI on the Beam engine (beam_runner.py, TFX's BeamDagRunner,
with the runner's own Beam arguments: the DirectRunner's multi-processing workers), with its
pipeline root, play logs and push directory on s3://, against a real S3-protocol server (moto's)
on loopback.

Every step reads and writes the bucket: PlayLogExampleGen lists and reads the logs through Beam's
s3:// (boto3), TFX's components and the Trainer (checkpoints, export) through tf.io.gfile with
tensorflow-io's s3://; Beam's worker processes get both through storage.beam_plugin, which the
runner names in --beam_plugins. Pusher publishes into the bucket. Only the metadata store
(SQLite) and the CLI's records are local. The endpoint is given the way boto3 reads it
(AWS_ENDPOINT_URL) only: storage shares it with tensorflow-io.
"""

import json
import os

from contract import settings
from tests.e2e import cli_workspace
from tests.e2e.conftest import BUCKET, PIPELINE_ROOT, SERVING_PREFIX, serve_from_s3
from tests.e2e.cli_workspace import TOP_K
from tests.s3_server import keys


def test_beam_engine_runs_every_component_and_ingests_every_play(beam_s3, generated_days):
  step, _ = beam_s3
  run = step.run
  assert set(run.states) >= {
      'PlayLogExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
      'Trainer', 'latest_blessed_model_resolver', 'Evaluator', 'Pusher'}
  directory, names = generated_days
  examples = run.output('PlayLogExampleGen', 'examples')
  plays = cli_workspace.plays_in(os.path.join(directory, names[0]))
  assert examples.custom_properties['rows_read'].int_value == plays
  assert examples.custom_properties['rows_used'].int_value == plays


def test_beam_steps_run_in_worker_processes_with_s3(beam_s3):
  """The runner's Beam arguments reach every Beam-based step: the DirectRunner's
  multi-processing workers, each importing storage.beam_plugin (s3:// for Beam and tf.io.gfile)
  before any of the pipeline's code; and the steps did run in worker processes (whose log lines
  Beam's job service relays), reading and writing the bucket."""
  step, _ = beam_s3
  log = step.run.log
  deployment = log[log.index('Using deployment config:'):]
  evaluator = deployment[deployment.index('key: "Evaluator"'):][:1500]
  for arg in (*settings.BEAM_PIPELINE_ARGS, '--beam_plugins=storage.beam_plugin'):
    assert f'beam_pipeline_args: "{arg}"' in evaluator, evaluator
  assert 'local_job_service:Worker: ' in log, 'no line from a Beam worker process'


def test_every_step_writes_its_outputs_to_the_bucket(beam_s3, bucket):
  step, workspace = beam_s3
  run = step.run
  for node, key in (('PlayLogExampleGen', 'examples'), ('Transform', 'transform_graph'),
                    ('Trainer', 'model'), ('Evaluator', 'evaluation'),
                    ('Pusher', 'pushed_model')):
    uri = run.output(node, key).uri
    assert uri.startswith(PIPELINE_ROOT + '/'), (node, key, uri)
    assert keys(bucket, BUCKET, uri[len(f's3://{BUCKET}/'):]), f'{node}.{key}: nothing at {uri}'
  assert keys(bucket, BUCKET, 'playrecall/root/checkpoints/'), 'the Trainer checkpoints there'
  assert not os.path.exists(os.path.join(workspace.root, 'home', 'pipelines')), \
      'nothing of the pipeline root is written locally'


def test_summary_reads_the_outputs_from_the_bucket(beam_s3):
  step, _ = beam_s3
  rows_read = step.run.output('PlayLogExampleGen', 'examples').custom_properties[
      'rows_read'].int_value
  assert f'rows_read = {rows_read}' in step.summary
  assert 'Gate: BLESSED' in step.summary
  assert f'pushed_destination = s3://{BUCKET}/{SERVING_PREFIX}' in step.summary


def test_the_blessed_model_is_pushed_into_the_bucket_and_serves(beam_s3, bucket):
  step, workspace = beam_s3
  run = step.run
  assert run.blessed()
  pushed = run.output('Pusher', 'pushed_model')
  destination = pushed.custom_properties['pushed_destination'].string_value
  version = pushed.custom_properties['pushed_version'].string_value
  assert destination == f's3://{BUCKET}/{SERVING_PREFIX}{version}'
  assert f'{SERVING_PREFIX}{version}/saved_model.pb' in keys(bucket, BUCKET, SERVING_PREFIX)
  result = serve_from_s3(workspace, destination)
  assert result.returncode == 0, result.stderr[-5000:]
  answer = json.loads(result.stdout.strip().splitlines()[-1])
  # A known history and an empty one (the cold-start answer).
  assert [len(row) for row in answer['item_ids']] == [TOP_K, TOP_K]
  assert all(len(set(row)) == TOP_K for row in answer['item_ids']), 'no song twice in one answer'
