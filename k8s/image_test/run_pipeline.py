r"""The image test: builds the pipeline image (k8s/Dockerfile) with podman and runs the WHOLE
compiled Kubeflow pipeline in it, task by task, as KFP's driver and launcher would, against a
local S3-protocol server; ends with the pushed model loaded from s3:// and answering.

  make image-test                                   (runs setup_host.sh first, then this)
  python -m k8s.image_test.run_pipeline [--image REF] [--events N] [--work_dir DIR]

Steps:
  1. build   k8s/Dockerfile, FROM the base stand-in (python-3.11-slim-bookworm.standin.sh) in
             place of the digest-pinned python:3.11 base, everything after FROM unchanged; push it
             to the local registry so it is named by digest, as the compiler requires;
  2. data    an S3 server (moto, in this process, on 127.0.0.1), a bucket, generated play logs;
  3. compile pipeline/kubeflow_runner.py with the image's digest and s3:// paths, the endpoint
             of that server, a small training config;
  4. run     every task of the spec in DAG order in a container of the image: its command and
             arguments exactly as compiled, `{{$}}` replaced by an ExecutorInput built as KFP's
             driver builds it (k8s/image_test/kfp_driver.py), the container's env from the spec
             and its Secret keys (the spec's Kubernetes section) from the test server's
             credentials; as the pods run: uid 10001, read-only root file system, /tmp the only
             writable mount (the emptyDir k8s/tfjob.yaml declares), no capabilities; the exit
             code of every container is read back (`podman inspect`) and must be 0;
  5. serve   the blessed model Pusher pushed to s3:// is loaded in a container of the image and
             asked for the top items of a history.
Needs root, podman and runc and the registry (setup_host.sh). Not run: a KFP backend, Argo, the
TFJob operator, TF Serving's binary (docs/kubeflow.md).
"""

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import yaml

from contract import storage as storage_names
from k8s.image_test import kfp_driver

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(REPO_ROOT, 'k8s', 'image_test')
BUCKET = 'playrecall'
PIPELINE_ROOT = f's3://{BUCKET}/root'
DATA_ROOT = f's3://{BUCKET}/plays/'
SERVING_MODEL_DIR = f's3://{BUCKET}/serving'
UID = '10001:10001'  # k8s/Dockerfile's user, k8s/tfjob.yaml's runAsUser
# Small enough for 2 shared cores, and the data and settings with which the end-to-end tests'
# first day is blessed (tests/e2e/cli_workspace.py): daily partitions, a window of two days.
NUM_USERS, NUM_ITEMS, DAYS = 600, 400, 3
CONFIG = {
    'ingest': {'history_length': 20, 'eval_plays_per_user': 2,
               'partition_pattern': '{YYYY}-{MM}-{DD}', 'window_partitions': 2},
    'train': {'train_steps': 300, 'eval_steps': 5,
              'hparams': {'batch_size': 128, 'hidden_dim': 32, 'item_embedding_dim': 16,
                          'num_layers': 1, 'num_sampled': 64, 'steps_per_checkpoint': 300,
                          'steps_per_log': 100, 'top_k': 20}},
    'gate': {'ns': [10, 50], 'gate_n': 50, 'pos_floor': 0.05, 'pos_tolerance': 0.02,
             'neg_ceiling': 0.6, 'neg_tolerance': 0.05},
}
PODMAN = ['podman', '--cgroup-manager=cgroupfs', '--runtime=runc']
# What every container of the test gets, as the pods run (see the module doc).
# podman's default open-files limit is above what this kind of machine lets a container raise
# (runc: "error setting rlimit type 7: operation not permitted"): the host's own is given.
_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)
POD_FLAGS = ['--network=host', f'--user={UID}', '--read-only', '--read-only-tmpfs=false',
             '--cap-drop=ALL', '--security-opt=no-new-privileges', '--ulimit=nproc=4096:4096',
             f'--ulimit=nofile={_NOFILE[0]}:{_NOFILE[1]}']


# What Beam's DirectRunner logs when it tries Prism (pipeline/beam_direct.py keeps it from it).
PRISM_LINES = ('Running pipeline with PrismRunner', 'Downloading prism')


class ImageTestError(RuntimeError):
  """A step failed: the message names it (the task, its exit code, its log)."""


def log(message: str) -> None:
  print(f'[image-test {time.strftime("%H:%M:%S")}] {message}', flush=True)


def run(command: List[str], **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(command, check=True, **kwargs)


def registry() -> str:
  return os.environ.get('IMAGE_TEST_REGISTRY', '127.0.0.1:5000')


def base_image(work_dir: str) -> str:
  path = os.path.join(work_dir, 'base-image.txt')
  if not os.path.exists(path):
    raise ImageTestError(f'no base stand-in ({path}): run k8s/image_test/setup_host.sh first')
  with open(path) as f:
    return f.read().strip()


def build_image(work_dir: str) -> str:
  """Builds k8s/Dockerfile FROM the stand-in base, pushes it; returns REGISTRY/playrecall@sha256."""
  base = base_image(work_dir)
  with open(os.path.join(REPO_ROOT, 'k8s', 'Dockerfile')) as f:
    lines = f.read().splitlines()
  froms = [i for i, line in enumerate(lines) if line.startswith('FROM ')]
  if len(froms) != 1:
    raise ImageTestError(f'k8s/Dockerfile has {len(froms)} FROM lines; the test replaces one')
  log(f'k8s/Dockerfile: {lines[froms[0]]}  ->  FROM {base} (stand-in)')
  lines[froms[0]] = f'FROM {base}'
  dockerfile = os.path.join(work_dir, 'Dockerfile.image-test')
  with open(dockerfile, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  tag = f'{registry()}/playrecall:image-test'
  started = time.time()
  result = subprocess.run(
      PODMAN + ['build', '--network=host', '--ulimit=nproc=4096:4096', '--tls-verify=false',
                '--ignorefile', os.path.join(REPO_ROOT, 'k8s', 'Dockerfile.dockerignore'),
                '-f', dockerfile, '-t', tag, REPO_ROOT],
      stdout=open(os.path.join(work_dir, 'build.log'), 'w'), stderr=subprocess.STDOUT)
  if result.returncode:
    raise ImageTestError(f'podman build failed (exit code {result.returncode}); see '
                         f'{work_dir}/build.log')
  build_seconds = time.time() - started
  digest_file = os.path.join(work_dir, 'image.digest')
  run(PODMAN + ['push', '--tls-verify=false', '--digestfile', digest_file, tag],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  with open(digest_file) as f:
    image = f'{registry()}/playrecall@{f.read().strip()}'
  run(PODMAN + ['pull', '--tls-verify=false', image], stdout=subprocess.DEVNULL)
  size = int(subprocess.run(PODMAN + ['image', 'inspect', '--format', '{{.Size}}', image],
                            check=True, capture_output=True, text=True).stdout.strip())
  log(f'built {image} in {build_seconds:.0f} s: {size / 1e9:.2f} GB')
  return image


def generate_plays(work_dir: str, events: int, client) -> None:
  """DAYS daily partitions of generated plays, uploaded under DATA_ROOT."""
  # pylint: disable=g-import-not-at-top
  from datagen import generate as datagen_generate
  # pylint: enable=g-import-not-at-top
  out_dir = os.path.join(work_dir, 'plays')
  span_days = datagen_generate.DAILY_LEAD_IN_DAYS + DAYS + 3  # most plays land in the days
  run([sys.executable, '-m', 'datagen.generate', '--out_dir', out_dir, '--num_events',
       str(events), '--num_users', str(NUM_USERS), '--num_items', str(NUM_ITEMS),
       '--days', str(DAYS), '--set', f'span_days={span_days}',
       '--set', f'mean_session_gap_hours={24 * span_days}', '--overwrite', '--quiet'],
      cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  uploaded = 0
  for directory, _, names in sorted(os.walk(out_dir)):
    for name in sorted(names):
      if name.startswith('plays-'):
        path = os.path.join(directory, name)
        client.upload_file(path, BUCKET, f'plays/{os.path.relpath(path, out_dir)}')
        uploaded += 1
  log(f'{events} plays generated, {uploaded} file(s) in {DAYS} daily partitions at {DATA_ROOT}')


def first_items(work_dir: str, count: int = 5) -> List[str]:
  """Item ids of the first plays generated: a history the model has seen items of."""
  import csv  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(work_dir, 'plays')
  path = sorted(os.path.join(d, n) for d, _, names in os.walk(out_dir) for n in names
                if n.startswith('plays-') and n.endswith('.csv'))[-1]
  with open(path, newline='') as f:
    return [row['item_id'] for _, row in zip(range(count), csv.DictReader(f))]


def compile_spec(work_dir: str, image: str, endpoint: str):
  config = os.path.join(work_dir, 'config.json')
  with open(config, 'w') as f:
    json.dump(CONFIG, f)
  path = os.path.join(work_dir, 'playrecall.yaml')
  run([sys.executable, '-m', 'pipeline.kubeflow_runner', f'--image={image}',
       f'--pipeline_root={PIPELINE_ROOT}', f'--data_root={DATA_ROOT}',
       f'--serving_model_dir={SERVING_MODEL_DIR}', f'--s3_endpoint={endpoint}',
       f'--config={config}', f'--output={path}'], cwd=REPO_ROOT,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  with open(path) as f:
    documents = [d for d in yaml.safe_load_all(f) if d]
  return documents[0], (documents[1] if len(documents) > 1 else {})


def container_run(name: str, image: str, entrypoint: List[str], args: List[str],
                  env: Dict[str, str], tmp_dir: str, log_path: str) -> int:
  """Runs one container as the pods run; returns its exit code as podman recorded it."""
  subprocess.run(PODMAN + ['rm', '--force', '--ignore', name], capture_output=True)
  os.makedirs(tmp_dir, exist_ok=True)
  os.chown(tmp_dir, 10001, 10001)
  command = PODMAN + ['run', f'--name={name}', *POD_FLAGS, f'--volume={tmp_dir}:/tmp:rw',
                      f'--entrypoint={json.dumps(entrypoint)}']
  for key, value in sorted(env.items()):
    command.append(f'--env={key}={value}')
  with open(log_path, 'w') as out:
    returned = subprocess.run(command + [image] + args, stdout=out,
                              stderr=subprocess.STDOUT).returncode
  inspected = subprocess.run(PODMAN + ['inspect', '--format', '{{.State.ExitCode}}', name],
                             capture_output=True, text=True)
  subprocess.run(PODMAN + ['rm', '--force', '--ignore', name], capture_output=True)
  if inspected.returncode:
    raise ImageTestError(f'{name}: podman cannot say how the container ended '
                         f'({inspected.stderr.strip()}; `podman run` returned {returned})')
  code = int(inspected.stdout.strip())
  if code != returned:
    # e.g. 126 with ExitCode 0: the runtime could not start the process, which never ran.
    raise ImageTestError(f'{name}: `podman run` returned {returned} but the container\'s '
                         f'recorded exit code is {code}: it did not run to its end '
                         f'(log: {log_path}):\n{tail(log_path)}')
  return code


def tail(path: str, lines: int = 40) -> str:
  with open(path, errors='replace') as f:
    return ''.join(f.readlines()[-lines:])


def run_pipeline(spec, platform_spec, image: str, work_dir: str, secrets,
                 run_id: str) -> Dict[str, Dict[str, dict]]:
  order = kfp_driver.dag_order(spec)
  log(f'{len(order)} tasks in DAG order: {" -> ".join(order)}')
  produced: Dict[str, Dict[str, dict]] = {}
  for number, task in enumerate(order, 1):
    c = kfp_driver.container(spec, task)
    if c['image'] != image:
      raise ImageTestError(f'task {task}: compiled for {c["image"]}, not the image built')
    invocation = kfp_driver.executor_input(spec, task, pipeline_root=PIPELINE_ROOT,
                                           run_id=run_id, produced=produced)
    env = {e['name']: e['value'] for e in c.get('env', [])}
    env.update(kfp_driver.secret_env(platform_spec, spec, task, secrets))
    task_dir = os.path.join(work_dir, 'tasks', task)
    log_path = os.path.join(work_dir, 'logs', f'{task}.log')
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(os.path.join(work_dir, 'logs', f'{task}.executor_input.json'), 'w') as f:
      json.dump(invocation, f, indent=1)
    log(f'[{number}/{len(order)}] {task}: {" ".join(c["command"])} '
        f'--executor_class_path {c["args"][c["args"].index("--executor_class_path") + 1]} ...')
    started = time.time()
    code = container_run(f'playrecall-image-test-{task.lower().replace("_", "-")}', image,
                         c['command'], kfp_driver.task_arguments(spec, task, invocation), env,
                         os.path.join(task_dir, 'tmp'), log_path)
    if code != 0:
      raise ImageTestError(f'task {task} failed with exit code {code} '
                           f'(log: {log_path}):\n{tail(log_path)}')
    with open(log_path, errors='replace') as f:
      prism = [line for line in f if any(p in line for p in PRISM_LINES)]
    if prism:
      raise ImageTestError(f'task {task}: Beam tried the Prism runner (a download at run time): '
                           f'{prism[0].strip()} (log: {log_path})')
    output_file = os.path.join(task_dir, 'tmp', os.path.relpath(kfp_driver.OUTPUT_FILE, '/tmp'))
    if not os.path.exists(output_file):
      raise ImageTestError(f'task {task} exited 0 but wrote no {kfp_driver.OUTPUT_FILE} '
                           f'(log: {log_path})')
    with open(output_file) as f:
      executor_output = json.load(f)
    produced[task] = kfp_driver.produced_artifacts(invocation, executor_output)
    summary = ', '.join(f'{key}{_short(a["metadata"])}' for key, a in produced[task].items())
    log(f'[{number}/{len(order)}] {task}: exit code 0 in {time.time() - started:.0f} s; {summary}')
  return produced


def _short(metadata: dict) -> str:
  shown = {k: v for k, v in metadata.items() if k in ('blessed', 'pushed', 'pushed_version',
                                                      'split_names', 'rows_read')}
  return f' {shown}' if shown else ''


# Run in a container of the image: the newest version under the push directory, loaded from
# s3:// and asked for the top items of one history.
SERVE_SCRIPT = r'''
import json, sys
import storage
storage.register_s3()
import tensorflow as tf
from contract import features
root = sys.argv[1]
versions = sorted(int(v.rstrip('/')) for v in tf.io.gfile.listdir(root) if v.rstrip('/').isdigit())
assert versions, f'no version under {root}'
path = f'{root}/{versions[-1]}'
loaded = tf.saved_model.load(path)
example = tf.train.Example(features=tf.train.Features(feature={
    features.HISTORY_ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=sys.argv[2].encode().split(b','))),
    features.HISTORY_PLAY_RATE: tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * len(sys.argv[2].split(',')))),
    features.HISTORY_INTENT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'on_demand'] * len(sys.argv[2].split(',')))),
}))
serve = loaded.signatures[features.SERVING_SIGNATURE]
out = serve(**{features.SIGNATURE_INPUT: tf.constant([example.SerializeToString(), b''])})
ids = out[features.TOP_ITEM_IDS].numpy()
scores = out[features.TOP_SCORES].numpy()
assert ids.shape[0] == 2 and ids.shape[1] > 0, ids.shape
assert all(tf.math.is_finite(scores).numpy().ravel()), scores
print(json.dumps({'version': versions[-1], 'top_items': [i.decode() for i in ids[0][:5]],
                  'scores': [float(s) for s in scores[0][:5]],
                  'empty_history_top': [i.decode() for i in ids[1][:3]]}))
storage.exit_process(0)
'''


def check_served(image: str, work_dir: str, env: Dict[str, str], history: List[str]) -> dict:
  log_path = os.path.join(work_dir, 'logs', 'serve.log')
  code = container_run('playrecall-image-test-serve', image, ['python', '-c', SERVE_SCRIPT],
                       [SERVING_MODEL_DIR, ','.join(history)], env,
                       os.path.join(work_dir, 'tasks', 'serve', 'tmp'), log_path)
  if code != 0:
    raise ImageTestError(f'loading the pushed model failed with exit code {code} '
                         f'(log: {log_path}):\n{tail(log_path)}')
  with open(log_path) as f:
    answer = [line for line in f if line.startswith('{"version"')]
  if not answer:
    raise ImageTestError(f'the model answered nothing (log: {log_path})')
  return json.loads(answer[-1])


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m k8s.image_test.run_pipeline', description=__doc__.split('\n\n')[0],
      epilog=__doc__.split('\n\n', 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--image', help='an image already built and pushed (REGISTRY/playrecall@'
                      'sha256:...): skip the build')
  parser.add_argument('--events', type=int, default=120_000,
                      help='plays to generate (default %(default)s)')
  parser.add_argument('--work_dir', default=os.environ.get(
      'IMAGE_TEST_WORK', '/var/tmp/playrecall-image-test'),
                      help='logs, executor inputs, task folders (default %(default)s)')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  started = time.time()
  os.makedirs(args.work_dir, exist_ok=True)
  image = args.image or build_image(args.work_dir)
  # pylint: disable=g-import-not-at-top
  from tests.s3_server import CREDENTIALS, S3Server
  # pylint: enable=g-import-not-at-top
  logging.getLogger('werkzeug').setLevel(logging.ERROR)  # the S3 server's request lines
  server = S3Server().start()
  try:
    client = server.create_bucket(BUCKET)
    log(f'S3 server (moto) at {server.endpoint}, bucket {BUCKET}')
    generate_plays(args.work_dir, args.events, client)
    spec, platform_spec = compile_spec(args.work_dir, image, server.endpoint)
    secrets = {'mlpipeline-minio-artifact': {
        'accesskey': CREDENTIALS[storage_names.ACCESS_KEY_ID_ENV],
        'secretkey': CREDENTIALS[storage_names.SECRET_ACCESS_KEY_ENV]}}
    run_id = time.strftime('image-test-%Y%m%d-%H%M%S')
    produced = run_pipeline(spec, platform_spec, image, args.work_dir, secrets, run_id)
    blessed = produced['Evaluator']['blessing']['metadata'].get('blessed')
    pushed = produced['Pusher']['pushed_model']['metadata'].get('pushed')
    if blessed != 1 or pushed != 1:
      raise ImageTestError(f'the model was not blessed and pushed (blessed={blessed}, '
                           f'pushed={pushed}); see {args.work_dir}/logs/Evaluator.log')
    pod_env = {e['name']: e['value'] for e in kfp_driver.container(spec, 'Pusher').get('env', [])}
    pod_env.update(kfp_driver.secret_env(platform_spec, spec, 'Pusher', secrets))
    answer = check_served(image, args.work_dir, pod_env, history=first_items(args.work_dir))
    log(f'pushed model version {answer["version"]} loaded from {SERVING_MODEL_DIR} answers: '
        f'top items {answer["top_items"]} scores {[round(s, 3) for s in answer["scores"]]}')
  finally:
    server.stop()
  log(f'PASSED: every task of the compiled spec ran in {image}, in DAG order, and the pushed '
      f'model answers ({time.time() - started:.0f} s)')
  return 0


if __name__ == '__main__':
  try:
    sys.exit(main())
  except (ImageTestError, kfp_driver.SpecError) as error:
    print(f'[image-test] FAILED: {error}', file=sys.stderr)
    sys.exit(1)
