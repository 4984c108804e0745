"""The Trainer's entry point: run_fn for TFX, and the same training as a command.

  Trainer(run_fn='trainer.run.run_fn',
          custom_config={'hparams': {...}, 'checkpoint_root': '<pipeline root>/checkpoints'})

run_fn puts the pieces together: the strategy (distribution.py: one process, or the chief of a
TF_CONFIG parameter-server cluster whose workers and parameter servers serve), the training loop
(train_loop.py) with checkpoints a re-run resumes from (checkpoints.py) and the eval split
measured at each checkpoint (checkpoint_eval.py), and the serving export (export.py), which
rebuilds the model outside any strategy from the last checkpoint. It first refuses
hyper-parameters whose history_length or pos_threshold disagree with what the examples were
written with (their features.EXAMPLE_SETTINGS_FILE, which Transform's copy carries).

As a command (no TFX around it), for the TFJob, the local cluster, benchmarks and tests; its
flags (flags.py) are the FnArgs fields:

  python -m trainer.run --train_files 'transform/Split-train/*' --eval_files 'transform/Split-eval/*' \
      --transform_output transform --model_dir run --serving_model_dir serving \
      --hparams '{"train_steps": 1000, "num_shards": 2}'
"""

import json
import os
import sys
from typing import Any, List, Mapping, Optional, Sequence

from absl import logging

from contract import features
from contract import settings
from trainer import checkpoints
from trainer import distribution
from trainer import flags


def hparams_from_fn_args(fn_args) -> settings.HParams:
  """The HParams of the Trainer's custom_config, with the Trainer's own step count if it has one."""
  config = fn_args.custom_config or {}
  hparams = settings.HParams.from_dict(config.get(settings.TRAINER_HPARAMS_KEY) or {})
  if fn_args.train_steps:
    hparams = hparams.replace(train_steps=int(fn_args.train_steps))
  return hparams


# The hyper-parameters that must be what shaped the examples (contract/settings.HPARAMS_SET_BY):
# another history_length silently truncates (or pads) every history, another pos_threshold
# filters variant a's histories by another rule than the labels were given by.
CHECKED_AGAINST_EXAMPLES = (features.EXAMPLE_HISTORY_LENGTH, features.EXAMPLE_POS_THRESHOLD)


def examples_settings_file(train_files: Sequence[str]) -> Optional[str]:
  """features.EXAMPLE_SETTINGS_FILE of the examples the train files are in (a split's files,
  '<examples>/Split-train/*', as TFX and the command give them), if they have one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for pattern in train_files or []:
    path = os.path.join(os.path.dirname(os.path.dirname(pattern.rstrip('/'))),
                        features.EXAMPLE_SETTINGS_FILE)
    if tf.io.gfile.exists(path):
      return path
  return None


def check_hparams_against_examples(hparams: settings.HParams, recorded: Mapping[str, Any],
                                   source: str) -> None:
  """Raises ValueError naming both values when hparams disagree with the settings the examples
  were written with (history_length, pos_threshold)."""
  for key in CHECKED_AGAINST_EXAMPLES:
    if key in recorded and getattr(hparams, key) != recorded[key]:
      raise ValueError(
          f'hparams.{key} {getattr(hparams, key)!r} disagrees with the examples\' {key} '
          f'{recorded[key]!r} (written by PlayLogExampleGen, {source}): train with '
          f'{key} {recorded[key]!r}, or write the examples again with ingest.{key} '
          f'{getattr(hparams, key)!r}')


def check_examples(fn_args, hparams: settings.HParams) -> None:
  """check_hparams_against_examples with the settings recorded beside the train files; examples
  that record none (written before they did, or made by hand) are not checked."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = examples_settings_file(fn_args.train_files)
  if path is None:
    logging.warning('the train files %s record no %s: history_length and pos_threshold are not '
                    'checked against the examples', fn_args.train_files,
                    features.EXAMPLE_SETTINGS_FILE)
    return
  with tf.io.gfile.GFile(path) as f:
    check_hparams_against_examples(hparams, json.load(f), path)


def checkpoint_dir(fn_args, hparams: settings.HParams, base_model: Optional[str] = None) -> str:
  """Where this training's checkpoints are: found again by a re-run of the same training (from
  the same base model, when it warm-starts)."""
  key = checkpoints.inputs_key(fn_args.train_files, fn_args.eval_files or [],
                               fn_args.transform_output, hparams.to_json(), base_model)
  return checkpoints.resumable_dir(
      (fn_args.custom_config or {}).get(settings.TRAINER_CHECKPOINT_ROOT_KEY),
      fn_args.model_run_dir, key)


def warm_start_steps(fn_args, hparams: settings.HParams) -> int:
  """Steps to train on top of a base model: the Trainer's warm_start_steps, else train_steps."""
  steps = (fn_args.custom_config or {}).get(settings.TRAINER_WARM_START_STEPS_KEY)
  return int(steps) if steps else hparams.train_steps


def exported_checkpoint(hparams: settings.HParams, result) -> str:
  """The checkpoint to export from a train_loop.TrainResult: the best on the validation split
  (hparams.export_checkpoint 'best', when training evaluated), else the last."""
  if hparams.export_checkpoint == 'best' and result.best_checkpoint_path:
    logging.info('exporting step %d, the best on the validation split (of %d steps)',
                 result.best_step, result.final_step)
    return result.best_checkpoint_path
  logging.info('exporting the last step, %d', result.final_step)
  return result.checkpoint_path


def run_fn(fn_args) -> None:
  """TFX Trainer entry point: trains (here or on the TF_CONFIG cluster) and exports the model."""
  task = distribution.cluster_task()
  if task and task.type in distribution.SERVER_ROLES:
    distribution.serve(task)
    return
  # Imported here so that worker and ps tasks start fast and light.
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top

  from trainer import checkpoint_eval  # pylint: disable=g-import-not-at-top
  from trainer import dataset  # pylint: disable=g-import-not-at-top
  from trainer import export  # pylint: disable=g-import-not-at-top
  from trainer import losses  # pylint: disable=g-import-not-at-top
  from trainer import model as model_lib  # pylint: disable=g-import-not-at-top
  from trainer import samplers  # pylint: disable=g-import-not-at-top
  from trainer import train_loop  # pylint: disable=g-import-not-at-top
  from trainer import vocabulary  # pylint: disable=g-import-not-at-top
  from trainer import warm_start  # pylint: disable=g-import-not-at-top

  hparams = hparams_from_fn_args(fn_args)
  check_examples(fn_args, hparams)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  num_items = vocabulary.num_items(tf_transform_output)
  num_intents = vocabulary.num_intents(tf_transform_output)
  started = warm_start.initial_weights(
      fn_args.base_model, hparams, vocabulary.vocabularies(tf_transform_output),
      fn_args.model_run_dir, logging.info,
      damaged_base=(fn_args.custom_config or {}).get(settings.TRAINER_DAMAGED_BASE_KEY,
                                                     settings.DAMAGED_BASE))
  if started.warm:
    hparams = hparams.replace(train_steps=warm_start_steps(fn_args, hparams))
  logging.info('training %s on %d items (%s)', 'a cluster' if task else 'one process', num_items,
               hparams.to_json())
  strategy, coordinator = distribution.training_strategy(task, hparams, num_items)
  counts = vocabulary.item_counts(tf_transform_output) if hparams.sampler == 'fixed_unigram' else None
  sampler = samplers.make_sampler(hparams.sampler, num_items, unigram_counts=counts,
                                  num_sampled=hparams.num_sampled, seed=hparams.seed)

  def dataset_fn(input_context):
    return dataset.make_dataset(fn_args.train_files, tf_transform_output, hparams,
                                hparams.batch_size, input_context=input_context)

  def loss_fn(model, batch):
    return losses.compute_losses(model, batch, hparams, sampler, training=True)

  result = train_loop.train(
      strategy, lambda: model_lib.build_model(hparams, num_items, num_intents), dataset_fn,
      loss_fn, hparams, fn_args.model_run_dir,
      checkpoint_dir=checkpoint_dir(fn_args, hparams, started.base_model),
      initial_weights=started.initial_weights,
      coordinator=coordinator, log=logging.info,
      evaluate=None if task else checkpoint_eval.evaluate_on_files(
          fn_args.eval_files, fn_args.eval_steps, tf_transform_output, hparams))

  model = export.restore_unsharded_model(hparams, num_items, num_intents,
                                         exported_checkpoint(hparams, result))
  export.export_serving_model(model, tf_transform_output, hparams, fn_args.serving_model_dir)
  logging.info('exported the serving model to %s', fn_args.serving_model_dir)


def main(argv: Optional[List[str]] = None) -> None:
  logging.set_verbosity(logging.INFO)
  args = flags.parser().parse_args(sys.argv[1:] if argv is None else argv)
  task = distribution.cluster_task()
  if task and task.type in distribution.SERVER_ROLES:
    distribution.serve(task)
    return
  from trainer import train_loop  # pylint: disable=g-import-not-at-top
  try:
    run_fn(flags.fn_args_from_args(args))
  except train_loop.ClusterError as error:
    raise SystemExit(f'error: {error}') from None


if __name__ == '__main__':
  main()
