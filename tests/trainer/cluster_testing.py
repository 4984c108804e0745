"""Helpers of the trainer tests: tiny training settings, running the chief, POS@N of an export."""

import json
import os
import subprocess
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from contract import features
from evaluation import hit_rate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Small enough for seconds per hundred steps on a shared machine; big enough to learn the genres.
TINY_HPARAMS = {
    'history_length': 8, 'item_embedding_dim': 8, 'hidden_dim': 16, 'num_layers': 1,
    'num_heads': 2, 'ffn_dim': 32, 'num_sampled': 20, 'batch_size': 32, 'learning_rate': 0.01,
    'train_steps': 200, 'steps_per_log': 50, 'steps_per_checkpoint': 100, 'top_k': 10,
}
CHIEF_TIMEOUT_SECONDS = 420


def trainer_args(tiny, root: str, **hparams) -> List[str]:
  """`python -m trainer.run` arguments training on the tiny Transform output into root."""
  return ['--train_files', *tiny.train_files, '--eval_files', *tiny.eval_files,
          '--transform_output', tiny.transform_output,
          '--model_dir', os.path.join(root, 'model'),
          '--serving_model_dir', os.path.join(root, 'serving'),
          '--hparams', json.dumps(dict(TINY_HPARAMS, **hparams))]


def target_ranks(export_dir: str, raw_examples: Sequence[bytes]) -> np.ndarray:
  """The exported model's TARGET_RANK of each example's target among the whole vocabulary."""
  signature = tf.saved_model.load(export_dir).signatures[features.TARGET_RANK_SIGNATURE]
  outputs = signature(**{features.SIGNATURE_INPUT: tf.constant(list(raw_examples))})
  return outputs[features.TARGET_RANK].numpy()


def pos_at_n(export_dir: str, tiny, n: int) -> float:
  """POS@N on the tiny eval split, computed as the Evaluator computes it."""
  ranks = target_ranks(export_dir, tiny.raw_eval_examples)
  return hit_rate.hit_rates(ranks, tiny.raw_eval_labels, ns=[n])[hit_rate.pos_metric_name(n)]


def wait_for_output(path: str, text: str, process: subprocess.Popen, timeout: float) -> str:
  """Waits until the file at path (a process's output) contains text; returns the output."""
  deadline = time.time() + timeout
  while True:
    with open(path, encoding='utf-8', errors='replace') as f:
      output = f.read()
    if text in output:
      return output
    if process.poll() is not None:
      raise AssertionError(f'process exited ({process.returncode}) before printing {text!r}:\n'
                           + output[-3000:])
    if time.time() > deadline:
      raise AssertionError(f'no {text!r} within {timeout:.0f}s:\n' + output[-3000:])
    time.sleep(0.5)


def wait_for_exit(process: subprocess.Popen, output_path: str, timeout: float = CHIEF_TIMEOUT_SECONDS
                  ) -> str:
  """Waits for the process to end (killing it after timeout); returns its output."""
  try:
    process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise AssertionError(f'still running after {timeout}s:\n' + read(output_path)[-3000:])
  return read(output_path)


def read(path: str) -> str:
  with open(path, encoding='utf-8', errors='replace') as f:
    return f.read()


def environment_without_cluster() -> Dict[str, str]:
  """This environment for a one-process trainer: no TF_CONFIG, Keras 2, the repository importable."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG'}
  env['TF_USE_LEGACY_KERAS'] = '1'
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
  return env
