r"""Compiles the pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner) into a pipeline spec YAML.

  python -m pipeline.kubeflow_runner --image=REGISTRY/playrecall@sha256:DIGEST \
      --pipeline_root=gs://BUCKET/playrecall/root --data_root=gs://BUCKET/playrecall/plays \
      --serving_model_dir=gs://BUCKET/playrecall/serving --output=build/playrecall.yaml \
      [--runner=DataflowRunner ... any Beam argument]

Every flag can also come from the environment (PLAYRECALL_IMAGE, PLAYRECALL_PIPELINE_ROOT,
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

from contract import settings
from pipeline import pipeline

# Every pipeline pod reads and writes these, and pods share no filesystem. TFX reads and writes
# artifact URIs with tf.io.gfile, which in this TensorFlow build speaks gs:// (S3 left TensorFlow
# for tensorflow-io, which the image does not carry; see docs/kubeflow.md).
OBJECT_STORE_SCHEMES = ('gs://',)
# Tasks whose output depends on more than their inputs and parameters: ExampleGen reads whatever
# files are in data_root now, the baseline reads whatever is in the serving directory now. A KFP
# cache hit would replay an old answer, so they always run (everything downstream of a new
# artifact runs anyway).
UNCACHEABLE_TASKS = ('PlayLogExampleGen', 'pushed_model_baseline')
ENV_DEFAULTS = {
    'image': 'PLAYRECALL_IMAGE',
    'pipeline_root': 'PLAYRECALL_PIPELINE_ROOT',
    'data_root': 'PLAYRECALL_DATA_ROOT',
    'serving_model_dir': 'PLAYRECALL_SERVING_MODEL_DIR',
}


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
  parser.add_argument('--pipeline_root', help='gs:// root of every step\'s outputs '
                      '(default $PLAYRECALL_PIPELINE_ROOT)')
  parser.add_argument('--data_root', help='gs:// directory (or glob) of play logs '
                      '(default $PLAYRECALL_DATA_ROOT)')
  parser.add_argument('--serving_model_dir', help='gs:// TF Serving model directory '
                      'Pusher writes versions into (default $PLAYRECALL_SERVING_MODEL_DIR)')
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
                          beam_pipeline_args: List[str], enable_cache: bool = True
                          ) -> Dict[str, Any]:
  """Returns the KFP PipelineSpec (as a dict) of the pipeline with the pushed-model baseline."""
  check_image(image)
  config = with_tfjob_image(config, image)
  tfx_pipeline = pipeline.create_pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=pipeline_root,
      data_root=data_root,
      serving_model_dir=serving_model_dir,
      config=config,
      baseline='pushed_model',  # KFP v2 cannot execute the Resolver the local runner uses
      beam_pipeline_args=beam_pipeline_args,
      enable_cache=enable_cache)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=image,
          # Schema 2.1 is what the KFP 2.x SDK emits and the KFP 2.x backend reads: parameters
          # as `parameterType` and `constant` values (2.0's `constantValue` is not resolved).
          use_pipeline_spec_2_1=True))
  pipeline_spec = runner.run(tfx_pipeline, write_out=False)['pipelineSpec']
  # The root is part of the spec so a run started without one (e.g. from the KFP UI) still
  # writes where this pipeline's baseline and Pusher expect; kfp_submit can override it.
  pipeline_spec['defaultPipelineRoot'] = pipeline_root
  for task in UNCACHEABLE_TASKS:
    pipeline_spec['root']['dag']['tasks'][task]['cachingOptions'] = {'enableCache': False}
  return pipeline_spec


def with_tfjob_image(config: settings.PipelineConfig, image: str) -> settings.PipelineConfig:
  """The config with the TFJob (if the Trainer launches one) running this spec's image, so the
  chief trains with the same code as the step that launched it."""
  tfjob = config.train.tfjob
  if tfjob is None or tfjob.image:
    return config
  return dataclasses.replace(config, train=dataclasses.replace(
      config.train, tfjob=dataclasses.replace(tfjob, image=image)))


def write_pipeline_spec(pipeline_spec: Dict[str, Any], path: str) -> None:
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(path, 'w') as f:
    f.write(f'# PIPELINE DEFINITION\n# Name: {pipeline_spec["pipelineInfo"]["name"]}\n'
            '# Compiled by pipeline/kubeflow_runner.py; submit with pipeline/kfp_submit.py.\n')
    yaml.safe_dump(pipeline_spec, f, sort_keys=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = (settings.PipelineConfig.from_json_file(args.config) if args.config
            else settings.load_config())
  pipeline_spec = compile_pipeline_spec(
      image=args.image, pipeline_root=args.pipeline_root, data_root=args.data_root,
      serving_model_dir=args.serving_model_dir, config=config,
      beam_pipeline_args=args.beam_pipeline_args, enable_cache=not args.disable_caching)
  write_pipeline_spec(pipeline_spec, args.output)
  tasks = sorted(pipeline_spec['root']['dag']['tasks'])
  print(f'Wrote {args.output}: pipeline {config.pipeline_name!r}, {len(tasks)} tasks '
        f'({", ".join(tasks)}), image {args.image}')


if __name__ == '__main__':
  main()
