"""Runs the pipeline with TFX's BeamDagRunner; Beam arguments pass through to every component.

  python beam_runner.py [--beam_arg=VALUE ...]
  (or: tfx pipeline create --engine beam --pipeline_path beam_runner.py)

With no arguments Beam's DirectRunner runs on all local cores; any other runner is chosen by
its own arguments, e.g. --runner=FlinkRunner --flink_master=HOST:PORT. Paths as in
local_runner.py.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import logging
from tfx import v1 as tfx
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipeline import configs
from pipeline import local_paths
from pipeline import pipeline

def main(beam_pipeline_args) -> None:
  config = configs.load_config()
  paths = local_paths.LocalPaths.from_env(config.pipeline_name)
  BeamDagRunner().run(
      pipeline.create_pipeline(
          pipeline_name=config.pipeline_name,
          pipeline_root=paths.pipeline_root,
          data_root=paths.data_root,
          serving_model_dir=paths.serving_model_dir,
          config=config,
          beam_pipeline_args=beam_pipeline_args or list(configs.BEAM_PIPELINE_ARGS),
          metadata_connection_config=tfx.orchestration.metadata
          .sqlite_metadata_connection_config(paths.metadata_path)))


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main(sys.argv[1:])
