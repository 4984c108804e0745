"""Executor of PushedModelBaseline: copies the served model version into a Model artifact."""

import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

CANDIDATE_MODEL_KEY = 'candidate_model'
SERVING_MODEL_DIR_KEY = 'serving_model_dir'
MODEL_KEY = 'model'
BASELINE_SOURCE_PROPERTY = 'baseline_source'
PUSHED_VERSION_PROPERTY = 'pushed_version'
PUSHED_MODEL_PATH_PROPERTY = 'pushed_model_path'
SOURCE_PUSHED = 'pushed'
SOURCE_CANDIDATE = 'candidate'
SOURCE_NONE = 'none'


def newest_pushed_version(serving_model_dir: str) -> Optional[int]:
  """Returns the version TF Serving serves by default (the largest integer-named subdirectory
  holding a SavedModel), or None when there is none (or no directory at all).

  TF Serving ignores non-numeric subdirectories and cannot load a version without
  saved_model.pb (it keeps serving the previous one), so neither counts here.
  """
  if not fileio.exists(serving_model_dir):
    return None
  versions = []
  for name in fileio.listdir(serving_model_dir):
    name = name.rstrip('/')  # object stores list directories with a trailing slash
    if not name.isdigit():
      continue
    version_dir = os.path.join(serving_model_dir, name)
    if holds_saved_model(version_dir):
      versions.append(int(name))
    else:
      logging.warning('Ignoring %s: no saved_model.pb (TF Serving cannot load it either).',
                      version_dir)
  return max(versions) if versions else None


def holds_saved_model(model_dir: str) -> bool:
  return any(fileio.exists(os.path.join(model_dir, name))
             for name in ('saved_model.pb', 'saved_model.pbtxt'))


class Executor(base_executor.BaseExecutor):
  """Writes `<output uri>/Format-Serving/` from the newest pushed version, else the candidate."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    serving_model_dir = exec_properties[SERVING_MODEL_DIR_KEY]
    baseline = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
    version = newest_pushed_version(serving_model_dir)
    if version is None and not input_dict.get(CANDIDATE_MODEL_KEY):
      logging.info('Nothing pushed to %s yet, and no candidate: the model artifact stays empty.',
                   serving_model_dir)
      baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, SOURCE_NONE)
      return
    if version is None:
      candidate = artifact_utils.get_single_instance(input_dict[CANDIDATE_MODEL_KEY])
      source = path_utils.serving_model_path(
          candidate.uri, path_utils.is_old_model_artifact(candidate))
      logging.info('Nothing pushed to %s yet: the candidate %s is its own baseline, so only '
                   'absolute thresholds decide the blessing.', serving_model_dir, source)
      baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, SOURCE_CANDIDATE)
    else:
      source = os.path.join(serving_model_dir, str(version))
      logging.info('Baseline: pushed version %d at %s.', version, source)
      baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, SOURCE_PUSHED)
      baseline.set_int_custom_property(PUSHED_VERSION_PROPERTY, version)
      baseline.set_string_custom_property(PUSHED_MODEL_PATH_PROPERTY, source)
    # A copy, not a reference: a rollback or a later push must not change what this run's
    # Evaluator compared against.
    io_utils.copy_dir(source, path_utils.serving_model_dir(baseline.uri))
