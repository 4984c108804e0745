"""The trainer command's arguments, defined once: FnArgs <-> `python -m trainer.run` flags.

TFX calls run_fn with FnArgs; a TFJob's chief, workers and parameter servers (and the local
cluster's tasks) run `python -m trainer.run` instead. The TFJob launcher writes the flags from the
Trainer step's FnArgs (to_flags) and the command reads them back (fn_args_from_argv), both from
the table below, so a new argument is added in one place and cannot drift between the two.
"""

import argparse
import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

from contract import settings

PROG = 'python -m trainer.run'


@dataclasses.dataclass(frozen=True)
class Flag:
  """One argument: its flag, the FnArgs field it fills and how it is written."""
  flag: str
  field: str
  help: str
  many: bool = False  # a list (nargs='+')
  required: bool = False  # the chief cannot train without it


FLAGS = (
    Flag('train_files', 'train_files', "globs of Transform's training examples", many=True,
         required=True),
    Flag('eval_files', 'eval_files',
         "globs of Transform's eval examples: validation loss, POS@N and NEG@N at each checkpoint",
         many=True),
    Flag('transform_output', 'transform_output', "Transform's output directory (transform_fn/...)",
         required=True),
    Flag('model_dir', 'model_run_dir', 'TensorBoard summaries (and checkpoints, without '
         '--checkpoint_root)', required=True),
    Flag('serving_model_dir', 'serving_model_dir', 'where the serving SavedModel is written',
         required=True),
    Flag('train_steps', 'train_steps', "overrides the hparams' train_steps"),
    Flag('base_model', 'base_model', 'a served SavedModel to warm-start from (its weights, '
         'remapped to this training\'s vocabularies: trainer/warm_start.py)'),
)
# Flags for the Trainer's custom_config: JSON objects or plain strings, by key.
HPARAMS_FLAG = Flag('hparams', settings.TRAINER_HPARAMS_KEY,
                    'JSON object of contract.settings.HParams fields')
CHECKPOINT_ROOT_FLAG = Flag(
    'checkpoint_root', settings.TRAINER_CHECKPOINT_ROOT_KEY,
    'checkpoints go to a folder under it named for the inputs and settings, so a re-run of the '
    'same training (a retried step, a new pipeline run) resumes where the last one stopped')
WARM_START_STEPS_FLAG = Flag(
    'warm_start_steps', settings.TRAINER_WARM_START_STEPS_KEY,
    "steps to train when warm-started from --base_model (default: the hparams' train_steps)")
_INTEGER_FIELDS = ('train_steps', settings.TRAINER_WARM_START_STEPS_KEY)


def parser() -> argparse.ArgumentParser:
  """The command's parser: every flag of FLAGS, HPARAMS_FLAG, CHECKPOINT_ROOT_FLAG and
  WARM_START_STEPS_FLAG."""
  result = argparse.ArgumentParser(
      prog=PROG,
      description='Train and export the DeepMatch model without TFX around it (TFX calls '
      'run_fn). With TF_CONFIG naming a chief/worker/ps cluster, run the same command on every '
      'task: the chief trains, workers and parameter servers serve.')
  for flag in FLAGS:
    result.add_argument(f'--{flag.flag}', nargs='+' if flag.many else None,
                        type=int if flag.field in _INTEGER_FIELDS else str, help=flag.help)
  result.add_argument(f'--{HPARAMS_FLAG.flag}', default='{}', help=HPARAMS_FLAG.help)
  for flag in (CHECKPOINT_ROOT_FLAG, WARM_START_STEPS_FLAG):
    result.add_argument(f'--{flag.flag}', help=flag.help,
                        type=int if flag.field in _INTEGER_FIELDS else str)
  return result


def to_flags(fn_args) -> List[str]:
  """The flags that make the command's chief do what run_fn(fn_args) does."""
  args: List[str] = []
  for flag in FLAGS:
    value = getattr(fn_args, flag.field, None)
    if not value:
      continue
    args += [f'--{flag.flag}', *value] if flag.many else [f'--{flag.flag}', str(value)]
  config = fn_args.custom_config or {}
  args += [f'--{HPARAMS_FLAG.flag}',
           json.dumps(config.get(HPARAMS_FLAG.field) or {}, sort_keys=True)]
  for flag in (CHECKPOINT_ROOT_FLAG, WARM_START_STEPS_FLAG):
    if config.get(flag.field):
      args += [f'--{flag.flag}', str(config[flag.field])]
  return args


def fn_args_from_argv(argv: Optional[Sequence[str]]):
  """The FnArgs TFX's Trainer would pass, from the command line's arguments."""
  return fn_args_from_args(parser().parse_args(argv))


def fn_args_from_args(args: argparse.Namespace):
  """The FnArgs TFX's Trainer would pass, from the parsed flags.

  Raises:
    SystemExit: naming the missing flag, or the --hparams field that is wrong.
  """
  # Imported here: worker and ps tasks parse the flags too, and start faster without TFX.
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top

  missing = [f'--{flag.flag}' for flag in FLAGS if flag.required and not getattr(args, flag.flag)]
  if missing:
    raise SystemExit(f'the chief needs {", ".join(missing)}')
  fields: Dict[str, Any] = {flag.field: getattr(args, flag.flag) for flag in FLAGS}
  fields['eval_files'] = fields['eval_files'] or []
  fields['transform_graph_path'] = fields['transform_output']
  custom_config = {HPARAMS_FLAG.field: _hparams(args.hparams)}
  for flag in (CHECKPOINT_ROOT_FLAG, WARM_START_STEPS_FLAG):
    if getattr(args, flag.flag):
      custom_config[flag.field] = getattr(args, flag.flag)
  return FnArgs(custom_config=custom_config, **fields)


def _hparams(text: str) -> Dict[str, Any]:
  """The --hparams object, checked field by field now rather than deep in training."""
  try:
    hparams = json.loads(text)
  except ValueError as error:
    raise SystemExit(f'--{HPARAMS_FLAG.flag} is not JSON: {error}') from None
  if not isinstance(hparams, dict):
    raise SystemExit(f'--{HPARAMS_FLAG.flag} must be a JSON object, got {text!r}')
  try:
    settings.HParams.from_dict(hparams)
  except (TypeError, ValueError) as error:
    raise SystemExit(f'--{HPARAMS_FLAG.flag}: {error}') from None
  return hparams
