"""Runs the pipeline with TFX's BeamDagRunner; Beam arguments pass through to every component.

  python beam_runner.py [--beam_arg=VALUE ...]

With no arguments Beam's local runner runs on all local cores (settings.BEAM_PIPELINE_ARGS:
pipeline/beam_direct.py's runner, which never downloads Prism as Beam's DirectRunner would try
to); arguments without a --runner get that runner too. Any other runner is chosen by its own
arguments, e.g. --runner=FlinkRunner --flink_master=HOST:PORT. Paths as in local_runner.py.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import logging
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from contract import settings
from pipeline import local_paths
import storage


def main(beam_pipeline_args) -> None:
  config = settings.load_config()
  built = local_paths.create_local_pipeline(
      config, beam_pipeline_args or list(settings.BEAM_PIPELINE_ARGS))
  local_paths.check_object_stores(config.pipeline_name)  # a wrong endpoint fails in seconds
  BeamDagRunner().run(built)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  storage.run(lambda: main(sys.argv[1:]))  # past tensorflow-io's crash at exit after s3://
