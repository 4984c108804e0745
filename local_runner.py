"""Runs the pipeline with TFX's LocalDagRunner.

  tfx pipeline create --engine local --pipeline_path local_runner.py
  tfx run create --engine local --pipeline_name playrecall

Paths come from $PLAYRECALL_HOME and $PLAYRECALL_DATA, or any of them on an object store
from $PLAYRECALL_PIPELINE_ROOT, $PLAYRECALL_DATA and $PLAYRECALL_SERVING_MODEL_DIR
(pipeline/local_paths.py; s3:// credentials and endpoint in docs/kubeflow.md), settings from
contract/settings.py and the JSON file in $PLAYRECALL_CONFIG.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from absl import logging
from tfx import v1 as tfx

from contract import settings
from pipeline import local_paths
import storage


def main() -> None:
  config = settings.load_config()
  built = local_paths.create_local_pipeline(config)
  local_paths.check_object_stores(config.pipeline_name)  # a wrong endpoint fails in seconds
  tfx.orchestration.LocalDagRunner().run(built)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  storage.run(main)  # past tensorflow-io's crash at exit after s3:// (storage.exit_process)
