"""Exports the trained DeepMatch model as a self-contained serving SavedModel.

Every signature takes serialized raw tf.Examples (features.SIGNATURE_INPUT), parses only the raw
features it needs, checks and completes the history (checked_request), runs Transform's graph (so
unknown items and intents map to their OOV buckets exactly as in training), builds the model
batch, and encodes the history:

  serving_default: history -> TOP_ITEM_IDS [B, K] (vocabulary strings) and TOP_SCORES [B, K]
    over the whole vocabulary; the OOV bucket is never returned. K = min(top_k, V).
  user_vector: history -> USER_VECTOR [B, H]; with the repeat bonus (hparams.repeat_bonus) also
    REPEAT_BONUS_ITEM_IDS [B, L] and REPEAT_BONUS [B, L], each history play's log-weight w_j as
    a return to its item ('' and 0 for padding and OOV plays; model.RepeatBonus).
  target_rank: history + target item_id -> TARGET_RANK [B] int64, the number of vocabulary items
    scoring strictly higher than the target (0 = best); an OOV target gets V, never a hit. And
    POPULARITY_RANK [B] int64, the target's rank by training play count (V for OOV).

Beside the SavedModel, assets.extra/ holds the item vectors for an approximate nearest-neighbour
index: item_vectors.npy [V, H] float32, item_bias.npy [V] float32 and item_ids.txt (line i is
row i). Score = log(exp(user_vector . item_vector + item_bias) + the sum of exp(REPEAT_BONUS) over
the item's plays in the history); a maximum-inner-product index over [item_vector, item_bias]
queried with [user_vector, 1] ranks the items the history does not hold exactly as the model
does; a serving stack scores the union of its top K and the history's items that way. From
hparams.ann_min_items items on, assets.extra/scann holds such an index (ScaNN), exported only if
its measured recall@top_k reaches hparams.ann_min_recall, and assets.extra/ann_index.json says
what was measured and why the index was or was not exported. A serving stack that cannot score
every item per request loads it with scann.scann_ops_pybind.load_searcher(dir), asks the
user_vector signature for the user vector, appends 1.0 and searches; row i is item_ids.txt's
line i.
"""

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import features
from contract import settings
from evaluation import baseline_ranks
from trainer import inputs
from trainer import model as model_lib
from trainer import vocabulary
from trainer import warm_start

FeatureSpec = Dict[str, Union[tf.io.FixedLenFeature, tf.io.VarLenFeature]]

ANN_DIR = 'assets.extra'
ITEM_VECTORS_FILE = 'item_vectors.npy'
ITEM_BIAS_FILE = 'item_bias.npy'
ITEM_IDS_FILE = 'item_ids.txt'
SCANN_DIR = 'scann'
ANN_REPORT_FILE = 'ann_index.json'
_TREE_MIN_ITEMS = 10_000  # below it the index scores every item (still exact)
_RECALL_QUERIES = 1000
_SCORES_PER_BLOCK = 1 << 25  # 32M float32 scores: 128 MB (and 256 MB of argpartition indices)

# The signature functions below name their argument after the contract's input name.
assert features.SIGNATURE_INPUT == 'examples'


class ServingModule(tf.Module):
  """The model, Transform's layer and the item vocabulary, with the serving signatures."""

  def __init__(self, model: model_lib.DeepMatch, tf_transform_output: tft.TFTransformOutput,
               hparams: settings.HParams, raw_feature_spec: Optional[FeatureSpec] = None):
    super().__init__(name='deep_match_serving')
    self.model = model
    self.hparams = hparams
    self.tft_layer = tf_transform_output.transform_features_layer()
    num_vocabulary = vocabulary.num_vocabulary_items(tf_transform_output)
    self.num_vocabulary = num_vocabulary
    self.top_k = min(hparams.top_k, num_vocabulary)
    # Scoring reads precomputed vocabulary vectors: no per-request projection of the whole table,
    # and the OOV rows are left out, so they can never be returned or outrank a target.
    self.item_vectors = tf.Variable(model.all_item_vectors()[:num_vocabulary], trainable=False,
                                    name='item_vectors')
    self.item_bias = tf.Variable(model.all_item_bias()[:num_vocabulary], trainable=False,
                                 name='item_bias')
    self.item_ids = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary.item_vocabulary_file(tf_transform_output),
            key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value='')
    raw_spec = raw_feature_spec or tf_transform_output.raw_feature_spec()
    missing = [name for name in features.SERVING_FEATURES + (features.ITEM_ID,)
               if name not in raw_spec]
    if missing:
      raise ValueError(f'the raw feature spec lacks {missing}; it has {sorted(raw_spec)}')
    self._history_spec = {name: raw_spec[name] for name in features.SERVING_FEATURES}
    # A request may carry any raw feature (the Evaluator sends whole examples); any other
    # feature is refused by name (a misspelt one would be ignored in silence).
    self._known_features = tuple(sorted(raw_spec))
    self._target_spec = dict(self._history_spec, **{features.ITEM_ID: raw_spec[features.ITEM_ID]})

  def _transformed(self, examples, spec) -> Dict[str, tf.Tensor]:
    return self.tft_layer(checked_request(tf.io.parse_example(examples, spec),
                                          examples, self._known_features))

  def _scores(self, transformed) -> tf.Tensor:
    """[B, V] scores of the vocabulary items as each history's next play."""
    batch = inputs.to_model_batch(transformed, self.hparams)
    user_vectors = self.model(batch, training=False)
    return self.model.history_scores(
        batch, user_vectors,
        tf.matmul(user_vectors, self.item_vectors, transpose_b=True) + self.item_bias)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve_top_items(self, examples):
    top = tf.math.top_k(self._scores(self._transformed(examples, self._history_spec)),
                        k=self.top_k)
    return {features.TOP_ITEM_IDS: self.item_ids.lookup(tf.cast(top.indices, tf.int64)),
            features.TOP_SCORES: top.values}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve_user_vector(self, examples):
    batch = inputs.to_model_batch(self._transformed(examples, self._history_spec), self.hparams)
    user_vectors = self.model(batch, training=False)
    outputs = {features.USER_VECTOR: user_vectors}
    if self.model.repeat_bonus is not None:
      items = tf.cast(batch[features.HISTORY_ITEM_XF], tf.int64)
      scored = (items < self.num_vocabulary) & tf.sequence_mask(
          batch[features.HISTORY_LENGTH], self.hparams.history_length)
      outputs[features.REPEAT_BONUS_ITEM_IDS] = tf.where(scored, self.item_ids.lookup(items), '')
      outputs[features.REPEAT_BONUS] = tf.where(
          scored, self.model.repeat_bonus.next_play_weights(
              batch, user_vectors, self.model.history_item_vectors(batch)), 0.0)
    return outputs

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve_target_rank(self, examples):
    transformed = self._transformed(examples, self._target_spec)
    scores = self._scores(transformed)
    targets = tf.cast(transformed[features.ITEM_XF], tf.int64)
    return {features.TARGET_RANK: model_lib.target_ranks(scores, targets),
            # The vocabulary is in descending order of training plays, so an id is the item's
            # rank under "most popular first": the baseline the gate makes the model beat.
            features.POPULARITY_RANK: tf.minimum(targets, self.num_vocabulary),
            # The user's own history, the baseline the gate makes the model beat beside it.
            features.REPEAT_RANK: baseline_ranks.repeat_ranks(
                transformed[features.HISTORY_ITEM_XF], transformed[features.HISTORY_PLAY_RATE_XF],
                targets, self.num_vocabulary, self.hparams.pos_threshold,
                self.hparams.history_length)}

  def signatures(self):
    return {
        features.SERVING_SIGNATURE: self.serve_top_items.get_concrete_function(),
        features.USER_VECTOR_SIGNATURE: self.serve_user_vector.get_concrete_function(),
        features.TARGET_RANK_SIGNATURE: self.serve_target_rank.get_concrete_function(),
    }


def checked_request(parsed: Dict[str, tf.SparseTensor], serialized: Optional[tf.Tensor] = None,
                    known_features: Sequence[str] = ()) -> Dict[str, tf.SparseTensor]:
  """The parsed requests with their histories checked and completed, for Transform's layer.

  A client's request is not ExampleGen's output: nothing upstream has checked it, and a history
  the model cannot read right must fail loudly rather than answer for the wrong plays. Refused,
  with an InvalidArgumentError whose message (which TF Serving returns to the client) names the
  feature and the request's index in the batch:
    - play rates or intents given, but not one per history item (they would attach to the wrong
      plays);
    - a play rate that is NaN or outside [MIN_PLAY_RATE, MAX_PLAY_RATE], the range ingestion keeps
      (the message shows it as sent: 1.0000001, not 1);
    - given the serialized requests, a feature not among known_features (a misspelt
      `history_playrate` would otherwise be ignored, and the plays scored with default rates);
      the message lists the known ones.
  A history with item ids and no play rates at all gets DEFAULT_PLAY_RATE for each play, one with
  no intents DEFAULT_INTENT, as ingestion gives logs without them; otherwise padding would make
  every play a skip of intent id 0. Empty histories pass unchanged.

  Args:
    parsed: tf.io.parse_example's output for B requests; the history features SparseTensor
      [B, None], other features passed through.
    serialized: the B serialized tf.Examples parsed was made from, to check their feature names.
    known_features: the names a request may carry.

  Returns:
    parsed with HISTORY_PLAY_RATE and HISTORY_INTENT completed, SparseTensor [B, None] each; every
    tensor of it runs after the checks, so nothing downstream sees a refused request.
  """
  items = parsed[features.HISTORY_ITEM_ID]
  item_counts = _values_per_request(items)
  refusals = [_play_rate_range_refusal(parsed[features.HISTORY_PLAY_RATE])]
  if serialized is not None:
    refusals.append(_unknown_feature_refusal(serialized, known_features))
  completed = dict(parsed)
  for name, default in _HISTORY_DEFAULTS:
    counts = _values_per_request(parsed[name])
    refusals.append(_unmatched_history_refusal(name, counts, item_counts, default))
    completed[name] = _with_defaults(parsed[name], tf.equal(counts, 0), items, default)
  with tf.control_dependencies(refusals):
    return tf.nest.map_structure(tf.identity, completed, expand_composites=True)


# The history features a request may leave out, and what each play then gets.
_HISTORY_DEFAULTS = ((features.HISTORY_PLAY_RATE, features.DEFAULT_PLAY_RATE),
                     (features.HISTORY_INTENT, features.DEFAULT_INTENT))


def _values_per_request(history: tf.SparseTensor) -> tf.Tensor:
  """The number of values [B] in each row of a history SparseTensor [B, None]."""
  rows = history.indices[:, 0]
  return tf.math.unsorted_segment_sum(tf.ones_like(rows), rows, history.dense_shape[0])


def _unmatched_history_refusal(name: str, counts: tf.Tensor, item_counts: tf.Tensor,
                               default) -> tf.Operation:
  """An assertion failing on the first request whose `name` values are given but not one per
  item (counts and item_counts [B]); none at all is fine (the default applies)."""
  unmatched = (counts > 0) & (counts != item_counts)
  return _first_refusal(unmatched, [
      f'{name} has ', counts, f' values but {features.HISTORY_ITEM_ID} has ', item_counts,
      ' (request ', tf.range(tf.size(counts, out_type=tf.int64)),
      f'): send one per item, or none for the default {default}'])


def _play_rate_range_refusal(play_rates: tf.SparseTensor) -> tf.Operation:
  """An assertion failing on the first play rate (of a SparseTensor [B, None]) that is NaN or
  outside [MIN_PLAY_RATE, MAX_PLAY_RATE]."""
  rates = play_rates.values
  # Written so that NaN, which fails every comparison, is out of range.
  out_of_range = ~((rates >= features.MIN_PLAY_RATE) & (rates <= features.MAX_PLAY_RATE))
  return _first_refusal(out_of_range, [
      f'{features.HISTORY_PLAY_RATE}[', play_rates.indices[:, 1], '] is ', rates,
      ' (request ', play_rates.indices[:, 0],
      f'): play rates must be in [{features.MIN_PLAY_RATE:g}, {features.MAX_PLAY_RATE:g}]'])


def _unknown_feature_refusal(serialized: tf.Tensor, known: Sequence[str]) -> tf.Operation:
  """An assertion failing on the first feature of the serialized tf.Examples [B] whose name is
  not in `known`, naming it, its request and the known names."""
  _, (feature_maps,) = tf.io.decode_proto(serialized, 'tensorflow.Example', ['features'],
                                          [tf.string])
  counts, (entries,) = tf.io.decode_proto(feature_maps[:, 0], 'tensorflow.Features', ['feature'],
                                          [tf.string])
  present = tf.sequence_mask(counts[:, 0], tf.shape(entries)[1])
  _, (keys,) = tf.io.decode_proto(tf.boolean_mask(entries, present),
                                  'tensorflow.Features.FeatureEntry', ['key'], [tf.string])
  names = keys[:, 0]
  requests = tf.boolean_mask(
      tf.broadcast_to(tf.range(tf.shape(entries, out_type=tf.int64)[0])[:, tf.newaxis],
                      tf.shape(entries, out_type=tf.int64)), present)
  unknown = ~tf.reduce_any(tf.equal(names[:, tf.newaxis], tf.constant(list(known))[tf.newaxis]),
                           axis=1)
  return _first_refusal(unknown, [
      'unknown feature ', names, ' (request ', requests,
      f'): the model does not read it; known features: {", ".join(known)}'])


def _first_refusal(refused: tf.Tensor, message: List[Union[str, tf.Tensor]]) -> tf.Operation:
  """An assertion that fails on the first refused entry (refused [N] bool) with the message of
  its parts, each a string or a tensor [N] of which that entry's value is shown. One message is
  enough to fix a request and keeps the error short; only it is formatted."""
  first = tf.where(refused)[:1, 0]
  shown = [part if isinstance(part, str) else _as_string(tf.gather(part, first))
           for part in message]
  return tf.debugging.Assert(~tf.reduce_any(refused), [tf.strings.join(shown)])


def _as_string(values: tf.Tensor) -> tf.Tensor:
  """Numbers as text; strings as they are; floats as sent: the shortest decimal that reads back
  as the same value (0.99, not 0.990000; 1.0000001, not 1)."""
  if values.dtype == tf.string:
    return values
  if not values.dtype.is_floating:
    return tf.strings.as_string(values)
  digits = 9 if values.dtype.size <= 4 else 17  # enough for any float32 / float64
  candidates = tf.stack([tf.strings.as_string(values, precision=p, shortest=True)
                         for p in range(1, digits + 1)])
  exact = tf.equal(tf.strings.to_number(candidates, values.dtype), values)  # NaN: none
  fewest = tf.argmax(tf.cast(exact, tf.int32), axis=0)  # the first exact one (NaN: the first)
  return tf.gather(tf.transpose(candidates), fewest, batch_dims=1)


def _with_defaults(values: tf.SparseTensor, missing: tf.Tensor, items: tf.SparseTensor,
                   default) -> tf.SparseTensor:
  """values [B, None], with `default` at each item's position (items [B, None]) in the rows where
  `missing` [B] (which have no values)."""
  fill_indices = tf.boolean_mask(items.indices, tf.gather(missing, items.indices[:, 0]))
  fill = tf.fill(tf.shape(fill_indices)[:1], tf.constant(default, values.dtype))
  # A row holds either its own values or the defaults, never both; reordering puts the defaults'
  # rows back in row order, as Transform's layer expects of a SparseTensor.
  return tf.sparse.reorder(tf.SparseTensor(
      tf.concat([values.indices, fill_indices], axis=0), tf.concat([values.values, fill], axis=0),
      tf.maximum(values.dense_shape, items.dense_shape)))


def restore_unsharded_model(hparams: settings.HParams, num_items: int, num_intents: int,
                            checkpoint_path: str) -> model_lib.DeepMatch:
  """The model rebuilt outside any strategy, with the weights of a (possibly sharded) checkpoint.

  tf.saved_model.load and the Evaluator need plain variables; a table sharded over parameter
  servers is saved as one full tensor, so it restores into an unsharded one.
  """
  with tf.distribute.get_strategy().scope():
    model = model_lib.build_model(hparams, num_items, num_intents)
  # read(), not restore(): a model-only checkpoint (the best one) has no save counter.
  status = tf.train.Checkpoint(model=model).read(checkpoint_path)
  # The optimizer's slots are in the checkpoint too; the model's own variables must all be there.
  status.expect_partial().assert_existing_objects_matched()
  return model


def export_serving_model(model: model_lib.DeepMatch,
                         tf_transform_output: tft.TFTransformOutput,
                         hparams: settings.HParams,
                         export_dir: str,
                         raw_feature_spec: Optional[FeatureSpec] = None,
                         log: Callable[[str], None] = print) -> str:
  """Writes the serving SavedModel and the ANN files to export_dir; returns export_dir.

  The model must hold plain (unsharded) variables: rebuild it outside any parameter-server
  strategy and restore its checkpoint before exporting.

  Args:
    model: the trained model.
    tf_transform_output: Transform's output the model was trained on.
    hparams: the model's hyper-parameters (history_length, variant, top_k, ...).
    export_dir: where to write; must not hold a SavedModel already.
    raw_feature_spec: the raw examples' feature spec; by default Transform's record of it.
    log: where the ANN index's report line goes.

  From hparams.ann_min_items vocabulary items on, an ANN index is built beside the item vectors
  and exported if its recall reaches hparams.ann_min_recall (build_ann_index).
  """
  module = ServingModule(model, tf_transform_output, hparams, raw_feature_spec)
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
  write_item_vectors(module, os.path.join(export_dir, ANN_DIR))
  warm_start.write_hparams(export_dir, hparams)  # what a warm start from it compares
  if module.num_vocabulary >= hparams.ann_min_items:
    report = build_ann_index(os.path.join(export_dir, ANN_DIR), hparams.top_k,
                             hparams.ann_min_recall, seed=hparams.seed)
    log(f'ANN index over {report.num_items} items: {report.reason}')
  return export_dir


def write_item_vectors(module: ServingModule, directory: str) -> None:
  """Writes item_vectors.npy, item_bias.npy and item_ids.txt (vocabulary order) to directory."""
  tf.io.gfile.makedirs(directory)
  ids = module.item_ids.lookup(tf.range(module.num_vocabulary, dtype=tf.int64)).numpy()
  with tf.io.gfile.GFile(os.path.join(directory, ITEM_IDS_FILE), 'wb') as f:
    f.write(b''.join(item + b'\n' for item in ids))
  for name, values in ((ITEM_VECTORS_FILE, module.item_vectors), (ITEM_BIAS_FILE, module.item_bias)):
    with tf.io.gfile.GFile(os.path.join(directory, name), 'wb') as f:
      np.save(f, values.numpy().astype(np.float32))


@dataclasses.dataclass(frozen=True)
class AnnIndexReport:
  """What build_ann_index did; written beside the index as ANN_REPORT_FILE."""
  index_dir: Optional[str]  # the serialized ScaNN searcher; None when it was not exported
  num_items: int
  num_neighbors: int  # K of recall@K
  recall_at_k: float  # mean share of the exact top-K the index returns, over the queries
  num_queries: int
  min_recall: float
  reason: str


def build_ann_index(directory: str, num_neighbors: int = 100, min_recall: float = 0.95,
                    seed: int = 0) -> AnnIndexReport:
  """Builds a ScaNN maximum-inner-product index over [item_vector, item_bias], measures it, and
  exports it (under directory/scann) only if its recall@num_neighbors reaches min_recall.

  Query it with [user_vector, 1.0]. Small catalogues (< _TREE_MIN_ITEMS) get an exact index;
  larger ones a partitioned, asymmetric-hashing index re-scored exactly on its top candidates,
  whose recall depends on how clustered the vectors are: random vectors give about 0.45 at 20k x
  64, a trained model's far more. The recall is therefore measured on this model's own vectors:
  up to _RECALL_QUERIES items, each queried as [item_vector, 1.0], against numpy's exact top-K.
  The report (ANN_REPORT_FILE) is written either way, with the reason.
  """
  import scann  # pylint: disable=g-import-not-at-top  # only the index needs it

  database = _ann_database(directory)
  num_items = database.shape[0]
  k = min(num_neighbors, num_items)
  builder = scann.scann_ops_pybind.builder(database, k, 'dot_product')
  if num_items < _TREE_MIN_ITEMS:
    searcher = builder.score_brute_force().build()
  else:
    num_leaves = int(np.sqrt(num_items))
    searcher = (builder.tree(num_leaves=num_leaves, num_leaves_to_search=max(num_leaves // 10, 1),
                             training_sample_size=min(num_items, 250000))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(min(10 * k, num_items))
                .build())
  rows = np.random.default_rng(seed).choice(num_items, min(_RECALL_QUERIES, num_items),
                                            replace=False)
  queries = np.concatenate([database[rows, :-1], np.ones([len(rows), 1], np.float32)], axis=1)
  found, _ = searcher.search_batched(queries)
  recall = recall_at_k(np.asarray(found), exact_top_k(queries, database, k))
  if recall >= min_recall:
    index_dir = os.path.join(directory, SCANN_DIR)
    tf.io.gfile.makedirs(index_dir)
    searcher.serialize(index_dir)
    reason = f'recall@{k} {recall:.4f} >= ann_min_recall {min_recall:g}: exported'
  else:
    index_dir = None
    reason = (f'recall@{k} {recall:.4f} < ann_min_recall {min_recall:g}: not exported; serve '
              'with exact scoring (serving_default) or tune the index')
  report = AnnIndexReport(index_dir, num_items, k, recall, len(rows), min_recall, reason)
  with tf.io.gfile.GFile(os.path.join(directory, ANN_REPORT_FILE), 'w') as f:
    json.dump(dataclasses.asdict(report), f, indent=2)
  return report


def exact_top_k(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
  """The ids [Q, k] of each query's k highest inner products with the database rows, by numpy.

  Queries are scored a block at a time, so memory stays near _SCORES_PER_BLOCK scores (with
  argpartition's indices) whatever the catalogue: 1,000 queries over 1M items at once would
  hold some 16 GB.
  """
  rows_per_block = max(1, _SCORES_PER_BLOCK // max(len(database), 1))
  blocks = []
  for start in range(0, len(queries), rows_per_block):
    scores = queries[start:start + rows_per_block] @ database.T
    top = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    blocks.append(np.take_along_axis(top, order, axis=1))
  return np.concatenate(blocks) if blocks else np.zeros([0, k], np.int64)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
  """The mean share of each row of exact [Q, k] that the same row of found [Q, k] holds."""
  hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact)]
  return float(np.sum(hits)) / exact.size if exact.size else 1.0


def _ann_database(directory: str) -> np.ndarray:
  """[item_vector, item_bias] [V, H + 1] float32 from the files write_item_vectors wrote."""
  with tf.io.gfile.GFile(os.path.join(directory, ITEM_VECTORS_FILE), 'rb') as f:
    item_vectors = np.load(f)
  with tf.io.gfile.GFile(os.path.join(directory, ITEM_BIAS_FILE), 'rb') as f:
    item_bias = np.load(f)
  return np.concatenate([item_vectors, item_bias[:, np.newaxis]], axis=1).astype(np.float32)
