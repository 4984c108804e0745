r"""Compiles the pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner) into a pipeline spec YAML.

  python -m pipeline.kubeflow_runner --image=REGISTRY/playrecall@sha256:DIGEST \
      --pipeline_root=gs://BUCKET/playrecall/root --data_root=gs://BUCKET/playrecall/plays/ \
      --serving_model_dir=gs://BUCKET/playrecall/serving --output=build/playrecall.yaml \
      [--runner=DataflowRunner ... any Beam argument]

The paths are gs:// or s3:// (AWS S3, or MinIO such as the one a standalone KFP install runs).
With s3:// paths every step's container gets the endpoint and region as environment variables
(--s3_endpoint, --s3_region) and its credentials from a Kubernetes Secret (--s3_secret, by
default KFP's own MinIO credentials); see docs/kubeflow.md.

Every path flag can also come from the environment (PLAYRECALL_IMAGE, PLAYRECALL_PIPELINE_ROOT,
PLAYRECALL_DATA_ROOT, PLAYRECALL_SERVING_MODEL_DIR); settings from contract/settings.py and the
JSON file in $PLAYRECALL_CONFIG (or --config). Arguments this command does not know are Beam
arguments, passed to every Beam-based component as in beam_runner.py.

The spec references user code by module path (transform.preprocessing.preprocessing_fn,
trainer.run.run_fn): the image (k8s/Dockerfile) carries the project. Submit it with
pipeline/kfp_submit.py. `tfx pipeline compile --engine kubeflow` cannot do this in TFX 1.16 (it
imports the removed KFP v1 runner).
"""

import argparse
import dataclasses
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from tfx import v1 as tfx
import yaml

from contract import schema as schema_lib
from contract import settings
from contract import storage as storage_names
from pipeline import pipeline
import storage
from storage import kfp_executor

# Every pipeline pod reads and writes these, and pods share no filesystem.
OBJECT_STORE_SCHEMES = storage_names.OBJECT_STORE_SCHEMES
# Tasks whose output depends on more than their inputs and parameters: ExampleGen reads whatever
# files are in data_root now, the baseline and the warm-start base read whatever is in the serving
# directory now. A KFP cache hit would replay an old answer, so they always run (everything
# downstream of a new artifact runs anyway).
UNCACHEABLE_TASKS = ('PlayLogExampleGen', pipeline.PUSHED_MODEL_BASELINE_ID,
                     pipeline.PUSHED_MODEL_BASE_ID)
ENV_DEFAULTS = {
    'image': 'PLAYRECALL_IMAGE',
    'pipeline_root': storage_names.PIPELINE_ROOT_ENV,
    'data_root': 'PLAYRECALL_DATA_ROOT',
    'serving_model_dir': storage_names.SERVING_MODEL_DIR_ENV,
}
# The platform section of the spec that KFP's Kubernetes driver reads (what kfp-kubernetes'
# use_secret_as_env writes): per executor, Secret keys as environment variables.
KUBERNETES_PLATFORM = 'kubernetes'


@dataclasses.dataclass(frozen=True)
class S3Access:
  """How every step's container reaches s3:// paths: endpoint and region as plain environment
  variables, the credentials from the keys of a Kubernetes Secret in the run's namespace."""
  endpoint: str = storage_names.KFP_MINIO_ENDPOINT
  region: str = storage_names.DEFAULT_REGION
  secret: str = storage_names.KFP_MINIO_SECRET
  access_key_key: str = storage_names.KFP_MINIO_ACCESS_KEY
  secret_key_key: str = storage_names.KFP_MINIO_SECRET_KEY

  def env(self) -> List[Dict[str, str]]:
    """Both SDKs' names for each setting (boto3's and tensorflow-io's), so that whatever reads
    them in the pod finds them, with or without storage.share_environment."""
    values = {storage_names.REGION_ENV: self.region,
              storage_names.BOTO_REGION_ENV: self.region}
    if self.endpoint:  # none for AWS S3 itself
      values[storage_names.BOTO_ENDPOINT_ENV] = self.endpoint
      values[storage_names.TFIO_ENDPOINT_ENV] = self.endpoint
    return [{'name': name, 'value': value} for name, value in sorted(values.items())]

  def secret_as_env(self) -> List[Dict[str, Any]]:
    return [{'secretName': self.secret, 'keyToEnv': [
        {'secretKey': self.access_key_key, 'envVar': storage_names.ACCESS_KEY_ID_ENV},
        {'secretKey': self.secret_key_key, 'envVar': storage_names.SECRET_ACCESS_KEY_ENV}]}]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Returns this command's flags; anything else lands in `beam_pipeline_args`."""
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.kubeflow_runner',
      allow_abbrev=False,  # a Beam argument must never be taken for an abbreviation of ours
      description=__doc__.split('\n\n')[0],
      epilog='Unknown arguments are Beam arguments (default: '
      + ' '.join(settings.BEAM_PIPELINE_ARGS) + ').')
  parser.add_argument('--image', help='the pipeline image every step runs in, by digest: '
                      'REGISTRY/playrecall@sha256:DIGEST (default $PLAYRECALL_IMAGE)')
  parser.add_argument('--pipeline_root', help='gs:// or s3:// root of every step\'s outputs '
                      f'(default ${storage_names.PIPELINE_ROOT_ENV})')
  parser.add_argument('--data_root', help='gs:// or s3:// directory of play logs, with its '
                      'trailing slash, or a glob (default $PLAYRECALL_DATA_ROOT)')
  parser.add_argument('--serving_model_dir', help='gs:// or s3:// TF Serving model directory '
                      'Pusher writes versions into '
                      f'(default ${storage_names.SERVING_MODEL_DIR_ENV})')
  parser.add_argument('--s3_endpoint', default=S3Access.endpoint,
                      help='with s3:// paths: the S3 endpoint URL the steps\' pods use, \'\' for '
                      'AWS S3 itself (default %(default)s, the MinIO of a standalone KFP)')
  parser.add_argument('--s3_region', default=S3Access.region,
                      help='with s3:// paths: the region requests are signed for (default '
                      '%(default)s; MinIO accepts any)')
  parser.add_argument('--s3_secret', default=S3Access.secret,
                      help='with s3:// paths: the Kubernetes Secret, in the namespace the runs '
                      f'run in, whose keys {S3Access.access_key_key!r} and '
                      f'{S3Access.secret_key_key!r} become {storage_names.ACCESS_KEY_ID_ENV} '
                      f'and {storage_names.SECRET_ACCESS_KEY_ENV} in every step (default '
                      '%(default)s, KFP\'s own MinIO credentials)')
  parser.add_argument('--output', default='playrecall_pipeline.yaml',
                      help='the pipeline spec to write (.yaml; default %(default)s)')
  parser.add_argument('--config', help='JSON settings file (default $PLAYRECALL_CONFIG, else '
                      'the defaults in contract/settings.py)')
  parser.add_argument('--disable_caching', action='store_true',
                      help='compile every task with caching off')
  args, beam_pipeline_args = parser.parse_known_args(argv)
  for name, env in ENV_DEFAULTS.items():
    if getattr(args, name) is None:
      setattr(args, name, os.environ.get(env))
    if not getattr(args, name):
      parser.error(f'--{name} is required (or set ${env})')
  for name in ('pipeline_root', 'data_root', 'serving_model_dir'):
    if not getattr(args, name).startswith(OBJECT_STORE_SCHEMES):
      parser.error(f'--{name}={getattr(args, name)!r} must be an object-store URI '
                   f'({", ".join(OBJECT_STORE_SCHEMES)}): every step runs in its own pod')
  if not args.output.endswith(('.yaml', '.yml')):
    parser.error(f'--output={args.output!r} must end in .yaml (the format kfp.Client uploads)')
  stray = [a for a in beam_pipeline_args if not a.startswith('--')]
  if stray:
    parser.error(f'unexpected arguments {stray}: Beam arguments look like --name=value')
  try:
    check_image(args.image)
  except ValueError as e:
    parser.error(str(e))
  args.beam_pipeline_args = beam_pipeline_args or list(settings.BEAM_PIPELINE_ARGS)
  args.s3_access = S3Access(endpoint=args.s3_endpoint, region=args.s3_region,
                            secret=args.s3_secret)
  return args


def check_image(image: str) -> None:
  """Raises ValueError unless the image is named by digest: a tag can be pushed again with other
  code, and every step and the TFJob must run the code the spec was compiled for."""
  if not re.fullmatch(settings.TFJobConfig.IMAGE_BY_DIGEST, image):
    raise ValueError(f'image {image!r} must be named by digest, '
                     'REGISTRY/playrecall@sha256:<64 hex digits> (`docker push` prints it): a tag '
                     'can be pushed again with other code')


def compile_pipeline_spec(*, image: str, pipeline_root: str, data_root: str,
                          serving_model_dir: str, config: settings.PipelineConfig,
                          beam_pipeline_args: List[str], enable_cache: bool = True,
                          s3_access: S3Access = S3Access()) -> Dict[str, Any]:
  """Returns the KFP PipelineSpec (as a dict) of the pipeline with the pushed-model baseline;
  with s3:// paths, every container also gets s3_access.env() (its Secret is in
  kubernetes_platform_spec())."""
  check_image(image)
  uris = (pipeline_root, data_root, serving_model_dir)
  config = with_tfjob_image(config, image)
  tfx_pipeline = pipeline.create_pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=pipeline_root,
      data_root=data_root,
      serving_model_dir=serving_model_dir,
      config=config,
      baseline='pushed_model',  # KFP v2 cannot execute the Resolver the local runner uses
      beam_pipeline_args=storage.beam_pipeline_args(beam_pipeline_args, uris),
      enable_cache=enable_cache,
      # ImportSchemaGen reads the curated schema in its container: the image's copy.
      schema_file=schema_lib.IMAGE_SCHEMA_FILE)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=image,
          # TFX's executor entrypoint, with s3:// registered first (storage.kfp_executor).
          default_commands=list(kfp_executor.COMMAND),
          # Schema 2.1 is what the KFP 2.x SDK emits and the KFP 2.x backend reads: parameters
          # as `parameterType` and `constant` values (2.0's `constantValue` is not resolved).
          use_pipeline_spec_2_1=True))
  pipeline_spec = runner.run(tfx_pipeline, write_out=False)['pipelineSpec']
  # The root is part of the spec so a run started without one (e.g. from the KFP UI) still
  # writes where this pipeline's baseline and Pusher expect; kfp_submit can override it.
  pipeline_spec['defaultPipelineRoot'] = pipeline_root
  tasks = pipeline_spec['root']['dag']['tasks']
  for task in UNCACHEABLE_TASKS:
    if task in tasks:  # the warm-start base only with train.warm_start
      tasks[task]['cachingOptions'] = {'enableCache': False}
  if storage.uses_s3(uris):
    for executor in pipeline_spec['deploymentSpec']['executors'].values():
      executor['container']['env'] = s3_access.env()
  return pipeline_spec


def kubernetes_platform_spec(pipeline_spec: Dict[str, Any],
                             s3_access: S3Access) -> Optional[Dict[str, Any]]:
  """The spec's platform section: every executor gets the credentials of s3_access.secret as
  environment variables when its container reaches s3:// (has s3_access.env()); else None."""
  executors = {name: {'secretAsEnv': s3_access.secret_as_env()}
               for name, executor in pipeline_spec['deploymentSpec']['executors'].items()
               if executor['container'].get('env')}
  if not executors:
    return None
  return {'platforms': {KUBERNETES_PLATFORM: {'deploymentSpec': {'executors': executors}}}}


def with_tfjob_image(config: settings.PipelineConfig, image: str) -> settings.PipelineConfig:
  """The config with the TFJob (if the Trainer launches one) running this spec's image, so the
  chief trains with the same code as the step that launched it."""
  tfjob = config.train.tfjob
  if tfjob is None or tfjob.image:
    return config
  return dataclasses.replace(config, train=dataclasses.replace(
      config.train, tfjob=dataclasses.replace(tfjob, image=image)))


def write_pipeline_spec(pipeline_spec: Dict[str, Any], path: str,
                        platform_spec: Optional[Dict[str, Any]] = None) -> None:
  """Writes the spec, and its platform section as a second YAML document (as the KFP SDK does)."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, 'w') as f:
    f.write(f'# PIPELINE DEFINITION\n# Name: {pipeline_spec["pipelineInfo"]["name"]}\n'
            '# Compiled by pipeline/kubeflow_runner.py; submit with pipeline/kfp_submit.py.\n')
    yaml.safe_dump_all([pipeline_spec] + ([platform_spec] if platform_spec else []), f,
                       sort_keys=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = (settings.PipelineConfig.from_json_file(args.config) if args.config
            else settings.load_config())
  pipeline_spec = compile_pipeline_spec(
      image=args.image, pipeline_root=args.pipeline_root, data_root=args.data_root,
      serving_model_dir=args.serving_model_dir, config=config,
      beam_pipeline_args=args.beam_pipeline_args, enable_cache=not args.disable_caching,
      s3_access=args.s3_access)
  write_pipeline_spec(pipeline_spec, args.output,
                      kubernetes_platform_spec(pipeline_spec, args.s3_access))
  tasks = sorted(pipeline_spec['root']['dag']['tasks'])
  print(f'Wrote {args.output}: pipeline {config.pipeline_name!r}, {len(tasks)} tasks '
        f'({", ".join(tasks)}), image {args.image}')


if __name__ == '__main__':
  main()
