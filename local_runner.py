"""Runs the pipeline with TFX's LocalDagRunner.

  tfx pipeline create --engine local --pipeline_path local_runner.py
  tfx run create --engine local --pipeline_name playrecall

Paths come from $PLAYRECALL_HOME and $PLAYRECALL_DATA (pipeline/local_paths.py), settings from
contract/settings.py and the JSON file in $PLAYRECALL_CONFIG.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import logging
from tfx import v1 as tfx

from contract import settings
from pipeline import local_paths


def main() -> None:
  tfx.orchestration.LocalDagRunner().run(
      local_paths.create_local_pipeline(settings.load_config()))


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main()
