"""Where the local and Beam runners put things: one directory, from $PLAYRECALL_HOME."""

import dataclasses
import os
from typing import List, Mapping, Optional

from tfx import v1 as tfx

from contract import settings
from pipeline import pipeline

HOME_ENV = 'PLAYRECALL_HOME'
DATA_ENV = 'PLAYRECALL_DATA'
DEFAULT_HOME = 'playrecall_home'


@dataclasses.dataclass(frozen=True)
class LocalPaths:
  pipeline_root: str
  metadata_path: str
  serving_model_dir: str
  data_root: str
  reports_dir: str

  @classmethod
  def from_env(cls, pipeline_name: str,
               environ: Optional[Mapping[str, str]] = None) -> 'LocalPaths':
    """$PLAYRECALL_HOME (default ./playrecall_home) holds everything; $PLAYRECALL_DATA
    (default $PLAYRECALL_HOME/data) holds the play logs."""
    environ = os.environ if environ is None else environ
    home = os.path.abspath(environ.get(HOME_ENV, DEFAULT_HOME))
    return cls(
        pipeline_root=os.path.join(home, 'pipelines', pipeline_name),
        metadata_path=os.path.join(home, 'metadata', pipeline_name, 'metadata.db'),
        serving_model_dir=os.path.join(home, 'serving_model', pipeline_name),
        data_root=os.path.abspath(environ.get(DATA_ENV, os.path.join(home, 'data'))),
        reports_dir=os.path.join(home, 'reports', pipeline_name))


def create_local_pipeline(config: settings.PipelineConfig,
                          beam_pipeline_args: Optional[List[str]] = None,
                          environ: Optional[Mapping[str, str]] = None) -> tfx.dsl.Pipeline:
  """The pipeline with every output under $PLAYRECALL_HOME and MLMD in a SQLite file there."""
  paths = LocalPaths.from_env(config.pipeline_name, environ)
  return pipeline.create_pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=paths.pipeline_root,
      data_root=paths.data_root,
      serving_model_dir=paths.serving_model_dir,
      config=config,
      beam_pipeline_args=beam_pipeline_args,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          paths.metadata_path))
