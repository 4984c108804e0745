"""Reads Transform's transformed examples as batches of the model's dense input."""

from typing import Dict, List, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_transform as tft

from contract import settings
from trainer import inputs

FilePatterns = Union[str, Sequence[str]]

# Transform writes its materialised examples as gzipped TFRecords.
COMPRESSION = 'GZIP'
_SHUFFLE_BUFFER_BATCHES = 16
_READ_PARALLELISM = 4


def list_files(file_pattern: FilePatterns) -> List[str]:
  """The files matching one glob or a list of globs (as TFX passes fn_args.train_files), sorted.

  Raises:
    FileNotFoundError: naming every pattern that matches nothing.
  """
  patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
  if not patterns:
    raise FileNotFoundError('no file pattern given')
  files, empty = [], []
  for pattern in patterns:
    matched = tf.io.gfile.glob(pattern)
    if not matched:
      empty.append(pattern)
    files.extend(matched)
  if empty:
    raise FileNotFoundError(f'no files match {empty}')
  return sorted(set(files))


def make_dataset(file_pattern: FilePatterns,
                 tf_transform_output: tft.TFTransformOutput,
                 hparams: settings.HParams,
                 batch_size: int,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 shuffle: bool = True,
                 repeat: bool = True,
                 sequence_targets: bool = True) -> tf.data.Dataset:
  """Batches of the model's dense input (inputs.to_model_batch) from transformed examples.

  Args:
    file_pattern: a glob or a list of globs of Transform's gzipped TFRecords.
    tf_transform_output: gives the transformed feature spec.
    hparams: history_length, variant (history filter) and seed.
    batch_size: examples (training windows: every play of each is a target) per batch. Under a parameter-server strategy each worker step takes one
      batch, so this is also the number of examples per training step.
    input_context: set when each worker builds its own input pipeline; the pipeline then reads
      only its share of the data (by file when there are enough files, else by record).
    shuffle: shuffle files and examples (training); False keeps file order (evaluation).
    repeat: repeat forever (training steps are counted by the loop); batches are then all full.
    sequence_targets: every play of an example is a target (training); False gives the history
      and the one target, as the Evaluator scores them.

  Returns:
    A dataset of dicts of dense tensors with a static batch dimension when repeat is True.
  """
  files = list_files(file_pattern)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  shard_records = False
  if input_context and input_context.num_input_pipelines > 1:
    if len(files) >= input_context.num_input_pipelines:
      dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    else:
      shard_records = True
  seed = hparams.seed + (input_context.input_pipeline_id if input_context else 0)
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed)
  dataset = dataset.interleave(
      lambda path: tf.data.TFRecordDataset(path, compression_type=COMPRESSION),
      cycle_length=min(len(files), _READ_PARALLELISM),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
  if shard_records:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if shuffle:
    dataset = dataset.shuffle(_SHUFFLE_BUFFER_BATCHES * batch_size, seed=seed)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=repeat)
  feature_spec = tf_transform_output.transformed_feature_spec()

  def model_batch(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    batch = inputs.to_model_batch(tf.io.parse_example(serialized, feature_spec), hparams,
                                  sequence_targets=sequence_targets)
    if repeat:  # Full batches only: say so, for the shapes traced in the step function.
      for tensor in batch.values():
        tensor.set_shape([batch_size] + tensor.shape.as_list()[1:])
    return batch

  dataset = dataset.map(model_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
