"""Where a training run keeps its checkpoints, and which one it resumes from.

TFX gives every Trainer execution a new model_run directory, so checkpoints kept there are never
seen again: a Trainer killed at step 700 and re-run starts at step 0. With a checkpoint root
(the pipeline's, set by pipeline/pipeline.py), checkpoints go to a folder named for what
determines the training instead (resumable_dir): the training and eval files, Transform's
output, every hyper-parameter and the base model a warm start begins from. A re-run of the same
training (a retried step, a new pipeline run after a crash) finds the folder and resumes; new
examples, a new vocabulary, another base or a changed setting name a new folder and start fresh.

Resuming trusts the checkpoint files, not the 'checkpoint' state file that lists them: a
garbled state file would otherwise read as "no checkpoints", and the restarted run would write
its first checkpoints over the valid ones. restore_newest_valid tries the numbered checkpoints
newest first, sets aside the ones that cannot be restored (renamed, never deleted) and rewrites
the state file to list the good ones.
"""

import hashlib
import json
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

CHECKPOINT_DIR = 'checkpoints'  # under model_run_dir, without a checkpoint root
CHECKPOINT_PREFIX = 'ckpt'  # tf.train.CheckpointManager's: ckpt-<step>.index, ckpt-<step>.data-*
CORRUPT_PREFIX = 'corrupt-'  # what a checkpoint that cannot be restored is renamed to begin with
_INDEX_SUFFIX = '.index'
# What restoring a damaged checkpoint raises: a truncated data file (IndexError), a garbled
# index or data (DataLossError and other OpErrors), a checkpoint of another model (the checks).
_RESTORE_ERRORS = (tf.errors.OpError, IndexError, ValueError, AssertionError)


def inputs_key(train_files: Sequence[str], eval_files: Sequence[str], transform_output: str,
               hparams_json: str, base_model: Optional[str] = None) -> str:
  """A short digest of what determines a training run (its step target and the model it
  warm-starts from included)."""
  described = json.dumps({'train_files': sorted(train_files), 'eval_files': sorted(eval_files),
                          'transform_output': transform_output,
                          'hparams': json.loads(hparams_json), 'base_model': base_model},
                         sort_keys=True)
  return hashlib.sha256(described.encode()).hexdigest()[:16]


def resumable_dir(checkpoint_root: Optional[str], model_run_dir: str, key: str) -> str:
  """checkpoint_root/<key> when there is a root; else model_run_dir/checkpoints (one run's)."""
  if checkpoint_root:
    return os.path.join(checkpoint_root, key)
  return os.path.join(model_run_dir, CHECKPOINT_DIR)


def numbered_checkpoints(directory: str) -> List[Tuple[int, str]]:
  """The (step, path prefix) of every checkpoint in directory, newest first, from its files."""
  pattern = re.compile(rf'{CHECKPOINT_PREFIX}-(\d+){re.escape(_INDEX_SUFFIX)}')
  found = []
  for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
    match = pattern.fullmatch(name)
    if match:
      found.append((int(match.group(1)), os.path.join(directory, name[:-len(_INDEX_SUFFIX)])))
  return sorted(found, reverse=True)


def restore_newest_valid(checkpoint: tf.train.Checkpoint, directory: str,
                         log: Callable[[str], None]) -> Optional[str]:
  """Restores the newest checkpoint in directory that restores whole; returns its path or None.

  Every model and optimizer variable must be in it. Checkpoints newer than it that cannot be
  restored are renamed CORRUPT_PREFIX + their name (and logged), so no later save can mistake
  or overwrite them; the state file is rewritten to list the checkpoints kept.
  """
  candidates = numbered_checkpoints(directory)
  for position, (_, path) in enumerate(candidates):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except _RESTORE_ERRORS as error:
      moved = _set_aside(path)
      log(f'checkpoint {path} cannot be restored ({type(error).__name__}: '
          f'{first_line(error)}); renamed to {moved}, trying the one before it')
      continue
    # The CheckpointManager reads this list next: its newest is the one restored, and only
    # these (oldest first) are the ones it may later delete to keep its maximum.
    kept = [p for _, p in reversed(candidates[position:])]
    tf.compat.v1.train.update_checkpoint_state(directory, path, all_model_checkpoint_paths=kept)
    return path
  return None


def _set_aside(path: str) -> str:
  """Renames every file of the checkpoint at path to CORRUPT_PREFIX + name; returns the prefix."""
  directory, name = os.path.split(path)
  for file_path in tf.io.gfile.glob(path + '.*'):
    file_name = os.path.basename(file_path)
    tf.io.gfile.rename(file_path, os.path.join(directory, CORRUPT_PREFIX + file_name),
                       overwrite=True)
  return os.path.join(directory, CORRUPT_PREFIX + name)


def first_line(error: Exception) -> str:
  """The first line of an error's message: TF errors carry pages of context after it."""
  lines = str(error).strip().splitlines()
  return lines[0] if lines else ''
