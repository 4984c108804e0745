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

A base that cannot be used (no SavedModel: nothing pushed yet; weights of another shape: the
model's sizes or variant changed) means a cold start, with the reason logged and recorded. The
optimizer starts fresh either way: its moments belong to the base's last steps, not this data.
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
  """A Transform vocabulary as the base SavedModel carries it (one term per line)."""
  with tf.io.gfile.GFile(os.path.join(base_model, _ASSETS_DIR, name)) as f:
    return f.read().splitlines()


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
                    log: Callable[[str], None]) -> WarmStart:
  """Writes this training's first weights, the base model's remapped to the new vocabularies,
  as a model-only checkpoint (WarmStart.initial_weights) that training starts from.

  Args:
    base_model: the base SavedModel directory, or None (no base: cold start).
    hparams: this training's hyper-parameters.
    new_vocabularies: Transform's vocabularies of this training, by name (features.ITEM_VOCAB,
      features.INTENT_VOCAB), without OOV rows.
    model_run_dir: where the checkpoint and RECORD_FILE go.
    log: where the one-line summary goes.

  Returns:
    what was done (also written to model_run_dir/RECORD_FILE).
  """
  done = _initial_weights(base_model, hparams, new_vocabularies, model_run_dir, log)
  tf.io.gfile.makedirs(model_run_dir)
  with tf.io.gfile.GFile(os.path.join(model_run_dir, RECORD_FILE), 'w') as f:
    f.write(done.to_json())
  return done


def _initial_weights(base_model, hparams, new_vocabularies, model_run_dir, log) -> WarmStart:
  if not base_model:
    return _cold(None, 'no base model (warm start is off, or nothing blessed yet)', log)
  if not tf.io.gfile.exists(os.path.join(base_model, 'saved_model.pb')):
    return _cold(base_model, 'the base holds no SavedModel (nothing pushed yet)', log)
  base_vocabularies = {name: base_vocabulary(base_model, name) for name in new_vocabularies}
  base = _unsharded_model(hparams, len(with_oov_terms(base_vocabularies[features.ITEM_VOCAB])),
                          len(with_oov_terms(base_vocabularies[features.INTENT_VOCAB])))
  try:
    tf.train.Checkpoint(model=base).read(
        os.path.join(base_model, _SAVED_MODEL_VARIABLES)).expect_partial(
        ).assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as error:
    return _cold(base_model, f'its weights do not fit this model ({type(error).__name__}: '
                 f'{checkpoints.first_line(error)}): its sizes or variant differ', log)
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
