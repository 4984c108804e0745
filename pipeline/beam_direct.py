"""The Beam runner the pipeline names when it is given no other: Beam's own local runner (the
FnApiRunner that the DirectRunner runs batch pipelines on), without the DirectRunner's first try
of the Prism runner.

Why a runner of our own: since Beam 2.6x, `--runner=DirectRunner` (and no `--runner` at all,
Beam's default) first tries Prism, a Go binary that Beam downloads from the internet at run time
(`Downloading prism from https://github.com/apache/beam/releases/...`) into the user's cache and
then runs; only when that fails does it fall back to the FnApiRunner. A pipeline step with
internet access would run an unpinned binary fetched at run time; one without waits for the
download to fail. Beam's `--runner=FnApiRunner` skips Prism, but it hands its
`multi_processing` workers none of the pipeline's options, so they import no `--beam_plugins`
(storage.beam_plugin, which registers s3:// in them) and set up no file systems from the
options. This runner is the FnApiRunner given the pipeline's options for its workers, as the
DirectRunner gives them when it picks the FnApiRunner itself: `--direct_running_mode` and
`--direct_num_workers` work as with the DirectRunner.

The pipeline names it in every Beam argument list it builds (pipeline.pipeline.with_runner);
any `--runner=...` given (Dataflow, Flink, Spark) takes its place.
"""

from typing import List, Sequence

from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner

from contract import settings

RUNNER_FLAG = '--runner'


class LocalRunner(fn_runner.FnApiRunner):
  """Beam's FnApiRunner with the pipeline's options handed to its workers (what Beam's
  DirectRunner does for a batch pipeline once Prism was not used), and no Prism."""

  def run_pipeline(self, pipeline, options):
    encoded = portable_runner.JobServiceHandle.encode_pipeline_options(
        options.get_all_options())
    self._provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return super().run_pipeline(pipeline, options)


def names_runner(args: Sequence[str]) -> bool:
  """Whether Beam arguments name a runner (`--runner=X` or `--runner X`)."""
  return any(arg == RUNNER_FLAG or arg.startswith(RUNNER_FLAG + '=') for arg in args)


def with_runner(args: Sequence[str]) -> List[str]:
  """args, with settings.BEAM_RUNNER named first unless they name a runner already: Beam's
  default would be the DirectRunner, which tries to download Prism first."""
  args = list(args)
  if names_runner(args):
    return args
  return [f'{RUNNER_FLAG}={settings.BEAM_RUNNER}'] + args
