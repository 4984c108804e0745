"""Every Beam pipeline the project starts names its runner: left to Beam's default (the
DirectRunner), Beam 2.74 first downloads the Prism runner binary from the internet at run time.
Checked on the compiled Kubeflow spec, the local and Beam runners' pipelines, and by running the
named runner in the multi_processing mode the project uses."""

import os
import subprocess
import sys
import textwrap

from google.protobuf import json_format
import pytest

from contract import settings
from pipeline import beam_direct
from pipeline import kubeflow_runner
from pipeline import local_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 'registry.example.com/ml/playrecall@sha256:' + '0123456789abcdef' * 4
# Runner names with which Beam would pick its runner itself: no name, or the DirectRunner (which
# tries Prism, downloading it, before its own runner), or Prism itself.
BEAM_DEFAULT_RUNNERS = ('DirectRunner', 'SwitchingDirectRunner', 'PrismRunner')


def runners_named(args):
  """The runner names in Beam arguments (both `--runner=X` and `--runner X`)."""
  names = []
  for i, arg in enumerate(args):
    if arg.startswith('--runner='):
      names.append(arg.split('=', 1)[1])
    elif arg == '--runner' and i + 1 < len(args):
      names.append(args[i + 1])
  return names


def assert_runner_named(args, expected=settings.BEAM_RUNNER, where=''):
  names = runners_named(args)
  assert names, f'{where}: no --runner in {args}: Beam would choose, and try to download Prism'
  assert not any(name.split('.')[-1] in BEAM_DEFAULT_RUNNERS for name in names), (where, args)
  assert names == [expected], (where, args)


def compiled_executor_args(tmp_path, beam_args):
  path = str(tmp_path / 'spec.yaml')
  kubeflow_runner.main([f'--image={IMAGE}', '--pipeline_root=s3://b/root',
                        '--data_root=s3://b/plays/', '--serving_model_dir=s3://b/serving',
                        f'--output={path}', *beam_args])
  from kfp.client import client as kfp_client  # pylint: disable=g-import-not-at-top
  spec = kfp_client._extract_pipeline_yaml(path).pipeline_spec  # pylint: disable=protected-access
  executors = json_format.MessageToDict(spec.deployment_spec)['executors']
  assert executors
  return {name: executor['container']['args'] for name, executor in executors.items()}


def test_the_default_beam_arguments_name_the_local_runner_in_multi_processing_mode():
  assert_runner_named(settings.BEAM_PIPELINE_ARGS)
  assert '--direct_running_mode=multi_processing' in settings.BEAM_PIPELINE_ARGS


@pytest.mark.parametrize('beam_args', [[], ['--direct_num_workers=2']])
def test_every_compiled_kubeflow_task_names_the_runner(tmp_path, beam_args):
  for name, args in compiled_executor_args(tmp_path, beam_args).items():
    assert_runner_named(args, where=name)
    if not beam_args:
      assert '--direct_running_mode=multi_processing' in args, name


def test_a_runner_given_to_the_compiler_is_kept(tmp_path):
  for name, args in compiled_executor_args(
      tmp_path, ['--runner=FlinkRunner', '--flink_master=flink:8081']).items():
    assert_runner_named(args, expected='FlinkRunner', where=name)


def test_the_local_and_beam_runners_pipelines_name_the_runner(tmp_path):
  environ = {local_paths.HOME_ENV: str(tmp_path / 'home')}
  config = settings.PipelineConfig()
  # local_runner.py passes no Beam arguments; beam_runner.py its own or the defaults.
  local = local_paths.create_local_pipeline(config, environ=environ)
  assert_runner_named(local.beam_pipeline_args, where='local_runner.py')
  beam = local_paths.create_local_pipeline(config, list(settings.BEAM_PIPELINE_ARGS), environ)
  assert_runner_named(beam.beam_pipeline_args, where='beam_runner.py')
  assert beam.beam_pipeline_args.count(f'--runner={settings.BEAM_RUNNER}') == 1
  given = local_paths.create_local_pipeline(config, ['--runner', 'SparkRunner'], environ)
  assert_runner_named(given.beam_pipeline_args, expected='SparkRunner')


def test_with_runner():
  assert beam_direct.with_runner([]) == [f'--runner={settings.BEAM_RUNNER}']
  assert beam_direct.with_runner(['--a=1']) == [f'--runner={settings.BEAM_RUNNER}', '--a=1']
  assert beam_direct.with_runner(['--runner=DataflowRunner']) == ['--runner=DataflowRunner']
  assert beam_direct.with_runner(['--runner', 'X']) == ['--runner', 'X']
  assert beam_direct.with_runner(['--runnerx=1'])[0] == f'--runner={settings.BEAM_RUNNER}'


def test_the_runner_runs_multi_processing_workers_with_the_plugins_and_never_prism(tmp_path):
  """In a fresh process, as a pipeline step runs: Beam's PrismRunner must not be constructed,
  and every worker process imports the --beam_plugins (what s3:// needs in the workers; Beam's
  own FnApiRunner, named alone, gives its workers no options and so no plugins)."""
  (tmp_path / 'probe_plugin.py').write_text(textwrap.dedent('''
      import os
      open(os.path.join(os.environ['PROBE_DIR'], 'plugin-%d' % os.getpid()), 'w').close()
  '''))
  script = textwrap.dedent(f'''
      import os, sys
      import apache_beam as beam
      from apache_beam.options.pipeline_options import PipelineOptions
      from apache_beam.runners.portability import prism_runner
      def no_prism(*args, **kwargs):
        raise AssertionError('PrismRunner constructed')
      prism_runner.PrismRunner.__init__ = no_prism
      args = [*{list(settings.BEAM_PIPELINE_ARGS)!r}, '--direct_num_workers=2',
              '--beam_plugins=probe_plugin']
      with beam.Pipeline(options=PipelineOptions(args)) as p:
        counted = p | beam.Create(range(100)) | beam.Map(lambda x: x * 2) | beam.combiners.Count.Globally()
        _ = counted | beam.Map(lambda n: open(os.path.join(os.environ['PROBE_DIR'], 'count'), 'w').write(str(n)))
      print('runner', type(p.runner).__module__, type(p.runner).__name__)
  ''')
  env = dict(os.environ, PROBE_DIR=str(tmp_path),
             PYTHONPATH=os.pathsep.join([str(tmp_path), REPO_ROOT]))
  result = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-5000:]
  assert 'runner pipeline.beam_direct LocalRunner' in result.stdout
  assert 'prism' not in result.stderr.lower(), result.stderr[-5000:]
  assert (tmp_path / 'count').read_text() == '100'
  workers = [p for p in os.listdir(tmp_path) if p.startswith('plugin-')]
  assert len(workers) == 2, workers
