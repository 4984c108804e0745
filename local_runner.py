"""Runs the pipeline with TFX's LocalDagRunner.

  tfx pipeline create --engine local --pipeline_path local_runner.py
  tfx run create --engine local --pipeline_name playrecall

Paths come from $PLAYRECALL_HOME and $PLAYRECALL_DATA (pipeline/local_paths.py), settings from
pipeline/configs.py and the JSON file in $PLAYRECALL_CONFIG.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import logging
from tfx import v1 as tfx

from pipeline import configs
from pipeline import local_paths
from pipeline import pipeline


def main() -> None:
  config = configs.load_config()
  paths = local_paths.LocalPaths.from_env(config.pipeline_name)
  tfx.orchestration.LocalDagRunner().run(
      pipeline.create_pipeline(
          pipeline_name=config.pipeline_name,
          pipeline_root=paths.pipeline_root,
          data_root=paths.data_root,
          serving_model_dir=paths.serving_model_dir,
          config=config,
          metadata_connection_config=tfx.orchestration.metadata
          .sqlite_metadata_connection_config(paths.metadata_path)))


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main()
