"""Where the local and Beam runners put things: one directory, from $PLAYRECALL_HOME."""

import dataclasses
import os
from typing import Mapping, Optional

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
