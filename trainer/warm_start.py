"""Warm start: a new training begins from the weights of the model in service (the base).

Between two runs the vocabularies change: songs appear, others fade, and Transform orders its
vocabularies by frequency, so a song's row moves even when it stays. The base model carries its
own vocabularies (Transform's files among its SavedModel assets) and its weights (the
SavedModel's variables, under the `model` attribute of the serving module), so nothing but the
base SavedModel is needed:

- every table indexed by a vocabulary (the item embedding and the item bias by the item
  vocabulary, the intent embedding by the intent vocabulary) is remapped row by row with
  tf_keras.utils.warmstart_embedding_matrix: a term in both vocabularies keeps its base row, a
  new term keeps the new model's fresh row, a dropped term is left out; the OOV rows carry over;
- every other weight (projection, positions, attention, ...) is copied as it is.

A base that cannot be used means a cold start, with the exact reason logged and recorded: no
SavedModel (nothing pushed yet); another variant or other sizes ("base is variant c, this
training is variant a", "base has 2 layers, this has 1"), read from the hyper-parameters the
export records beside it (ASSETS_EXTRA/HPARAMS_FILE), or for an older export from the weights
that do not fit. A damaged base (a truncated or unreadable variables file, a missing
vocabulary, a missing variables/ folder) fails the Trainer or starts cold, as
train.damaged_base says, naming the base's path and what is wrong. The optimizer starts fresh
either way: its moments belong to the base's last steps, not this data.
"""

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from contract import features
from contract import settings
from trainer import checkpoints
from trainer import model as model_lib

# Written into the Trainer's model_run directory: what the warm start did, and the weights
# training starts from (a model-only checkpoint of the unsharded model; it restores into
# parameter-server shards as any checkpoint does).
RECORD_FILE = 'warm_start.json'
INITIAL_WEIGHTS_PREFIX = 'warm_start/initial'
_SAVED_MODEL_VARIABLES = 'variables/variables'
_ASSETS_DIR = 'assets'
# Where an export records its hyper-parameters (HParams.to_json), written by trainer/export.py.
ASSETS_EXTRA = 'assets.extra'
HPARAMS_FILE = 'hparams.json'
# The hyper-parameters that decide the model's weights: a base that differs in any of them is
# another model. (b and c share their weights, but a base trained for another loss is not what
# this training asks for either.)
_MODEL_DEFINING = ('variant', 'history_length', 'item_embedding_dim', 'hidden_dim', 'num_layers',
                   'num_heads', 'ffn_dim', 'repeat_bonus')


class DamagedBaseError(RuntimeError):
  """The base model is damaged and train.damaged_base is 'fail'."""
# Stands for the OOV rows after the vocabulary's own: a string no vocabulary term can be (ids are
# never empty, and never hold a NUL).
_OOV_TERM = '\0oov-{}'


@dataclasses.dataclass(frozen=True)
class WarmStart:
  """What a warm start did (or why it did not happen)."""
  base_model: Optional[str]
  initial_weights: Optional[str]  # the model-only checkpoint training starts from; None: cold
  reason: str
  items_kept: int = 0  # in both vocabularies: their rows come from the base
  items_new: int = 0  # only in the new vocabulary: fresh rows
  items_dropped: int = 0  # only in the base's vocabulary: left out
  intents_kept: int = 0

  @property
  def warm(self) -> bool:
    return self.initial_weights is not None

  def to_json(self) -> str:
    return json.dumps({**dataclasses.asdict(self), 'warm': self.warm}, indent=1, sort_keys=True)

  def summary(self) -> str:
    """One line: what training started from."""
    if not self.warm:
      return f'cold start: {self.reason}'
    return (f'warm start from {self.base_model}: {self.items_kept} items keep their vectors, '
            f'{self.items_new} new ones start fresh, {self.items_dropped} dropped; the other '
            'weights copied; the optimizer starts fresh')


def read_record(model_run_dir: str) -> Optional[WarmStart]:
  """The RECORD_FILE a training wrote into its model_run directory, or None."""
  path = os.path.join(model_run_dir, RECORD_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    fields = json.load(f)
  del fields['warm']
  return WarmStart(**fields)


def base_vocabulary(base_model: str, name: str) -> List[str]:
  """A Transform vocabulary as the base SavedModel carries it: exactly as Transform writes it,
  one term per '\\n'-terminated line (not str.splitlines, which also splits on \\x0b, \\x0c,
  \\x1c-\\x1e, U+0085, U+2028 and U+2029, characters a term may hold)."""
  with tf.io.gfile.GFile(os.path.join(base_model, _ASSETS_DIR, name), 'rb') as f:
    text = f.read().decode('utf-8')
  terms = text.split('\n')
  if terms and terms[-1] == '':
    terms.pop()  # the last line's own '\n'
  return terms


def write_hparams(export_dir: str, hparams: settings.HParams) -> None:
  """Records the hyper-parameters beside an export, for a later warm start to compare."""
  tf.io.gfile.makedirs(os.path.join(export_dir, ASSETS_EXTRA))
  with tf.io.gfile.GFile(os.path.join(export_dir, ASSETS_EXTRA, HPARAMS_FILE), 'w') as f:
    f.write(hparams.to_json())


def _differences(base: Dict, hparams: settings.HParams) -> List[str]:
  """How the base's recorded hyper-parameters differ from this training's, in words."""
  said = []
  for key in _MODEL_DEFINING:
    if key not in base or base[key] == getattr(hparams, key):
      continue
    mine = getattr(hparams, key)
    if key == 'variant':
      said.append(f'base is variant {base[key]}, this training is variant {mine}')
    elif key == 'num_layers':
      said.append(f'base has {base[key]} layers, this has {mine}')
    elif key == 'repeat_bonus':
      said.append(f'base has repeat_bonus {str(base[key]).lower()}, this has '
                  f'{str(mine).lower()}')
    else:
      said.append(f'base has {key} {base[key]}, this has {mine}')
  return said


def with_oov_terms(vocabulary: Sequence[str]) -> List[str]:
  """The vocabulary and one stand-in term per OOV row: the table's rows, in order."""
  return list(vocabulary) + [_OOV_TERM.format(k) for k in range(features.NUM_OOV_BUCKETS)]


def remap_rows(base_terms: Sequence[str], new_terms: Sequence[str], base_rows: np.ndarray,
               new_rows: np.ndarray) -> np.ndarray:
  """new_rows [len(new_terms), D] with the row of each term also in base_terms taken from
  base_rows [len(base_terms), D]."""
  return tf_keras.utils.warmstart_embedding_matrix(
      base_vocabulary=list(base_terms), new_vocabulary=list(new_terms),
      base_embeddings=base_rows,
      new_embeddings_initializer=tf_keras.initializers.Constant(new_rows)).numpy()


def _vocabulary_tables(model: model_lib.DeepMatch) -> Dict[int, str]:
  """The model's weights indexed by a vocabulary: id(weight) -> Transform vocabulary name."""
  tables = {id(model.item_embedding): features.ITEM_VOCAB,
            id(model.item_bias_table): features.ITEM_VOCAB}
  if model.hparams.feedback_features:
    tables[id(model.intent_embedding)] = features.INTENT_VOCAB
  return tables


def _unsharded_model(hparams: settings.HParams, num_items: int,
                     num_intents: int) -> model_lib.DeepMatch:
  with tf.distribute.get_strategy().scope():
    return model_lib.build_model(hparams, num_items, num_intents)


def initial_weights(base_model: Optional[str], hparams: settings.HParams,
                    new_vocabularies: Dict[str, Sequence[str]], model_run_dir: str,
                    log: Callable[[str], None],
                    damaged_base: str = settings.DAMAGED_BASE) -> WarmStart:
  """Writes this training's first weights, the base model's remapped to the new vocabularies,
  as a model-only checkpoint (WarmStart.initial_weights) that training starts from.

  Args:
    base_model: the base SavedModel directory, or None (no base: cold start).
    hparams: this training's hyper-parameters.
    new_vocabularies: Transform's vocabularies of this training, by name (features.ITEM_VOCAB,
      features.INTENT_VOCAB), without OOV rows.
    model_run_dir: where the checkpoint and RECORD_FILE go.
    log: where the one-line summary goes.
    damaged_base: 'fail' (raise DamagedBaseError) or 'cold' when the base is damaged.

  Returns:
    what was done (also written to model_run_dir/RECORD_FILE).
  """
  try:
    done = _initial_weights(base_model, hparams, new_vocabularies, model_run_dir, log)
  except _Damaged as damage:
    message = (f'the base model {base_model} is damaged: {damage}')
    if damaged_base == 'fail':
      raise DamagedBaseError(
          f'warm start: {message}. Replace or remove it, or set train.damaged_base to "cold" '
          'to train from scratch') from None
    done = _cold(base_model, f'{message} (train.damaged_base: cold)', log)
  tf.io.gfile.makedirs(model_run_dir)
  with tf.io.gfile.GFile(os.path.join(model_run_dir, RECORD_FILE), 'w') as f:
    f.write(done.to_json())
  return done


class _Damaged(Exception):
  """What is wrong with a damaged base (its path is added by initial_weights)."""


def _base_hparams(base_model: str) -> Optional[Dict]:
  """The hyper-parameters an export recorded beside itself, or None (an older export)."""
  path = os.path.join(base_model, ASSETS_EXTRA, HPARAMS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      values = json.load(f)
  except (ValueError, UnicodeDecodeError) as error:
    raise _Damaged(f'{ASSETS_EXTRA}/{HPARAMS_FILE} is not JSON ({error})') from None
  if not isinstance(values, dict):
    raise _Damaged(f'{ASSETS_EXTRA}/{HPARAMS_FILE} is not a JSON object')
  return values


def _read_base_vocabulary(base_model: str, name: str) -> List[str]:
  path = os.path.join(base_model, _ASSETS_DIR, name)
  if not tf.io.gfile.exists(path):
    raise _Damaged(f'{_ASSETS_DIR}/{name} (its vocabulary) is missing')
  try:
    return base_vocabulary(base_model, name)
  except (UnicodeDecodeError, tf.errors.OpError) as error:
    raise _Damaged(f'{_ASSETS_DIR}/{name} cannot be read ({type(error).__name__}: '
                   f'{checkpoints.first_line(error)})') from None


def _check_variables(base_model: str) -> None:
  """Reads every tensor of the base's variables; raises _Damaged saying what is wrong."""
  prefix = os.path.join(base_model, _SAVED_MODEL_VARIABLES)
  if not tf.io.gfile.isdir(os.path.join(base_model, 'variables')):
    raise _Damaged('its variables/ folder is missing (the weights)')
  if not tf.io.gfile.exists(prefix + '.index'):
    raise _Damaged('variables/variables.index is missing')
  data_files = tf.io.gfile.glob(prefix + '.data-*')
  if not data_files:
    raise _Damaged('variables/variables.data-* is missing (the weights)')
  try:
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except Exception as error:  # pylint: disable=broad-except  # IndexError, DataLossError, ...
    raise _Damaged(
        f'its weights cannot be read: {", ".join(os.path.relpath(p, base_model) for p in data_files)}'
        f' is truncated or corrupt ({type(error).__name__}: {checkpoints.first_line(error)})'
    ) from None


def _initial_weights(base_model, hparams, new_vocabularies, model_run_dir, log) -> WarmStart:
  if not base_model:
    return _cold(None, 'no base model (warm start is off, or nothing blessed yet)', log)
  if not tf.io.gfile.exists(os.path.join(base_model, 'saved_model.pb')):
    if tf.io.gfile.isdir(base_model) and tf.io.gfile.listdir(base_model):
      raise _Damaged('saved_model.pb is missing (the folder holds '
                     f'{sorted(tf.io.gfile.listdir(base_model))[:5]})')
    return _cold(base_model, 'the base holds no SavedModel (nothing pushed yet)', log)
  recorded = _base_hparams(base_model)
  if recorded is not None:
    differences = _differences(recorded, hparams)
    if differences:
      return _cold(base_model, f'the base {base_model} is another model: '
                   + '; '.join(differences), log)
  base_vocabularies = {name: _read_base_vocabulary(base_model, name)
                       for name in new_vocabularies}
  _check_variables(base_model)
  base = _unsharded_model(hparams, len(with_oov_terms(base_vocabularies[features.ITEM_VOCAB])),
                          len(with_oov_terms(base_vocabularies[features.INTENT_VOCAB])))
  try:
    tf.train.Checkpoint(model=base).read(
        os.path.join(base_model, _SAVED_MODEL_VARIABLES)).expect_partial(
        ).assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    return _cold(base_model, f'its weights do not fit this model ({type(error).__name__}: '
                 f'{checkpoints.first_line(error)}): its sizes or variant differ (the base '
                 f'records no {HPARAMS_FILE} to say which)', log)
  model = _unsharded_model(hparams,
                           len(with_oov_terms(new_vocabularies[features.ITEM_VOCAB])),
                           len(with_oov_terms(new_vocabularies[features.INTENT_VOCAB])))
  tables = _vocabulary_tables(model)
  for variable, base_variable in zip(model.variables, base.variables):
    name = tables.get(id(variable))
    variable.assign(base_variable if name is None else remap_rows(
        with_oov_terms(base_vocabularies[name]), with_oov_terms(new_vocabularies[name]),
        base_variable.numpy(), variable.numpy()))
  path = tf.train.Checkpoint(model=model).write(
      os.path.join(model_run_dir, INITIAL_WEIGHTS_PREFIX))
  base_items = set(base_vocabularies[features.ITEM_VOCAB])
  new_items = set(new_vocabularies[features.ITEM_VOCAB])
  done = WarmStart(
      base_model=base_model, initial_weights=path, reason='warm start from the base model',
      items_kept=len(base_items & new_items), items_new=len(new_items - base_items),
      items_dropped=len(base_items - new_items),
      intents_kept=len(set(base_vocabularies[features.INTENT_VOCAB])
                       & set(new_vocabularies[features.INTENT_VOCAB])))
  log(done.summary())
  return done


def _cold(base_model: Optional[str], reason: str, log: Callable[[str], None]) -> WarmStart:
  done = WarmStart(base_model=base_model, initial_weights=None, reason=reason)
  log(done.summary())
  return done
