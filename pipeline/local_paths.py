"""Where the local and Beam runners put things: one directory, from $PLAYRECALL_HOME, unless the
pipeline root, the play logs or the push directory are named elsewhere (an object store such as
s3://BUCKET/...). The metadata store is a SQLite file under $PLAYRECALL_HOME either way."""

import dataclasses
import os
from typing import List, Mapping, Optional

from tfx import v1 as tfx

from contract import settings
from contract import storage as storage_names
from pipeline import pipeline
import storage

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
    (default $PLAYRECALL_HOME/data) holds the play logs; $PLAYRECALL_PIPELINE_ROOT and
    $PLAYRECALL_SERVING_MODEL_DIR, when set, are the pipeline root and the push directory."""
    environ = os.environ if environ is None else environ
    home = os.path.abspath(environ.get(HOME_ENV, DEFAULT_HOME))
    return cls(
        pipeline_root=_path(environ.get(storage_names.PIPELINE_ROOT_ENV),
                            os.path.join(home, 'pipelines', pipeline_name)),
        metadata_path=os.path.join(home, 'metadata', pipeline_name, 'metadata.db'),
        serving_model_dir=_path(environ.get(storage_names.SERVING_MODEL_DIR_ENV),
                                os.path.join(home, 'serving_model', pipeline_name)),
        data_root=_path(environ.get(DATA_ENV), os.path.join(home, 'data')),
        reports_dir=os.path.join(home, 'reports', pipeline_name))

  def uris(self) -> List[str]:
    """What the pipeline's steps read and write (the metadata store and reports are local)."""
    return [self.pipeline_root, self.data_root, self.serving_model_dir]


def _path(value: Optional[str], default: str) -> str:
  """value as given if it is a URI (s3://..., gs://...), else as an absolute local path."""
  if value and '://' in value:
    return value
  return os.path.abspath(value or default)


def check_object_stores(pipeline_name: str, environ: Optional[Mapping[str, str]] = None) -> None:
  """Before a run: the buckets of the run's s3:// paths answer, or storage.StorageError names
  the endpoint and the bucket, in seconds."""
  storage.check_buckets(LocalPaths.from_env(pipeline_name, environ).uris())


def create_local_pipeline(config: settings.PipelineConfig,
                          beam_pipeline_args: Optional[List[str]] = None,
                          environ: Optional[Mapping[str, str]] = None) -> tfx.dsl.Pipeline:
  """The pipeline with its outputs where LocalPaths puts them and MLMD in a SQLite file; the
  file systems its paths need are registered in this process and in Beam's workers."""
  paths = LocalPaths.from_env(config.pipeline_name, environ)
  storage.register_filesystems(paths.uris(), beam_pipeline_args or ())
  return pipeline.create_pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=paths.pipeline_root,
      data_root=paths.data_root,
      serving_model_dir=paths.serving_model_dir,
      config=config,
      beam_pipeline_args=storage.beam_pipeline_args(beam_pipeline_args or [], paths.uris()),
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          paths.metadata_path))
