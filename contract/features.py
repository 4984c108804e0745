"""Feature names and shared constants: the contract between ExampleGen, Transform, trainer and export.

Raw features are what PlayLogExampleGen writes. Both splits share one schema: a history (up to
history_length plays, oldest first, each with its label) and a target play. What differs is how
the plays are cut:

  train: each user's training plays cut into disjoint windows of up to history_length + 1
    consecutive plays; the history is the window's first plays, the target its last. Every play
    is written once, and the trainer trains every play of the window as the next play of the
    ones before it (the first one from the empty history).
  eval: one example per eval play, its history the up to history_length plays before it.

Transformed features carry the `_xf` suffix, as in TFX's own templates.
"""

import dataclasses
from typing import Optional, Tuple

# --- Raw tf.Example features written by PlayLogExampleGen -------------------------------------
USER_ID = 'user_id'  # bytes, scalar
TS = 'ts'  # int64, scalar: epoch ms of the target play

# The previous plays of the user, oldest first, at most `history_length` of them.
HISTORY_ITEM_ID = 'history_item_id'  # bytes, variable length
HISTORY_PLAY_RATE = 'history_play_rate'  # float, variable length, in [0, 1]
HISTORY_INTENT = 'history_intent'  # bytes, variable length
HISTORY_TS = 'history_ts'  # int64, variable length: epoch ms
HISTORY_LABEL = 'history_label'  # int64, variable length: each history play's LABEL_* value

# The target play.
ITEM_ID = 'item_id'  # bytes, scalar
PLAY_RATE = 'play_rate'  # float, scalar, in [0, 1]
INTENT = 'intent'  # bytes, scalar
LABEL = 'label'  # int64, scalar: one of the LABEL_* values below

LABEL_POSITIVE = 1  # play_rate >= pos_threshold: trained with the sampled softmax
LABEL_NEGATIVE = 0  # play_rate <= neg_threshold: trained with the sigmoid loss, label 0
LABEL_NEITHER = -1  # in between: context only, in no loss and no metric
LABELS = (LABEL_NEITHER, LABEL_NEGATIVE, LABEL_POSITIVE)  # consecutive: the schema's int range

# A play rate is the fraction of the song heard: ingestion quarantines rows outside this range
# (NaN and infinities too) and serving refuses requests with one.
MIN_PLAY_RATE = 0.0
MAX_PLAY_RATE = 1.0

# --- The example, defined once ------------------------------------------------------------------
# Every split (train windows, valid and eval targets) has these features, each in every example:
# PlayLogExampleGen's encoder (user_examples.py), the parsing spec (raw_feature_spec below) and
# the curated schema (contract/schema.py, checked in as contract/raw_examples.schema.pbtxt, which
# ExampleValidator checks every run against) are all made from RAW_FEATURES. The splits differ
# only in how a user's plays are cut into history and target (user_examples.py): a train window's
# target is its last play and its history the window's plays before it; a valid or eval
# example's target is one play and its history the up to history_length plays before it.

BYTES, INT64, FLOAT = 'bytes', 'int64', 'float'  # a tf.train.Feature's value lists
# A feature's place in the example: the example's user, the target play's value (one value), or
# the history's values (one per history play, oldest first; none for an empty history).
USER, TARGET, HISTORY = 'user', 'target', 'history'
# The columns of a play a feature's values come from (play_log_reader.PLAYS_SCHEMA's names, and
# LABEL: the play's LABEL_* value by the thresholds).
PLAY_COLUMNS = (USER_ID, ITEM_ID, PLAY_RATE, INTENT, TS, LABEL)
# Who reads a feature (RawFeature.read_by).
READ_BY_MODEL = 'model'  # Transform and the trainer
READ_BY_SERVING = 'serving'  # the exported signatures' requests
READ_BY_EVALUATOR = 'evaluator'  # the target_rank signature, the gate and the checkpoint choice
READ_BY_BENCHMARKS = 'benchmarks'  # benchmarks/quality.py's baselines and datagen's oracle


@dataclasses.dataclass(frozen=True)
class RawFeature:
  """One feature of the raw examples: its name, value type and shape, the play column it holds,
  the values it may take (checked by ExampleValidator against each run's statistics) and who
  reads it. Every feature is in every example (presence is required); a USER or TARGET feature
  has exactly one value, a HISTORY feature one per history play."""
  name: str
  dtype: str  # BYTES, INT64 or FLOAT
  part: str  # USER, TARGET or HISTORY
  column: str  # one of PLAY_COLUMNS
  read_by: Tuple[str, ...]
  min_value: Optional[float] = None  # the domain, for numbers; None: unbounded on that side
  max_value: Optional[float] = None
  note: str = ''

  @property
  def scalar(self) -> bool:
    return self.part != HISTORY


_RATE = dict(dtype=FLOAT, column=PLAY_RATE, min_value=MIN_PLAY_RATE, max_value=MAX_PLAY_RATE)
_LABEL = dict(dtype=INT64, column=LABEL, min_value=min(LABELS), max_value=max(LABELS))
# Epoch ms; ingestion quarantines plays outside [ingest.min_ts_ms, max_ts_ms], min_ts_ms >= 0.
_TS = dict(dtype=INT64, column=TS, min_value=0)
_TS_NOTE = (
    'Written, read by nothing yet, by decision: a time-gap feature (session starts) is the '
    "model-quality work's to add; on generated logs it is worth ~0.001 POS@50 to the "
    "generator's own oracle, so the model does not use it yet, but real logs may differ and "
    'examples that keep it need no re-ingest to try it. It costs ~6 bytes a play.')
# Unknown intents are kept (README "Intents"): no closed domain; they share the OOV bucket.
_INTENT_NOTE = 'no closed domain: unknown intents are kept and share the OOV bucket'

# In wire order: the encoder writes the features in this order.
RAW_FEATURES = (
    RawFeature(USER_ID, BYTES, USER, USER_ID, (READ_BY_BENCHMARKS,)),
    RawFeature(ITEM_ID, BYTES, TARGET, ITEM_ID,
               (READ_BY_MODEL, READ_BY_EVALUATOR, READ_BY_BENCHMARKS)),
    RawFeature(PLAY_RATE, part=TARGET, read_by=(READ_BY_MODEL,), **_RATE),
    RawFeature(INTENT, BYTES, TARGET, INTENT, (READ_BY_MODEL,), note=_INTENT_NOTE),
    RawFeature(TS, part=TARGET, read_by=(READ_BY_BENCHMARKS,), **_TS),
    RawFeature(LABEL, part=TARGET, read_by=(READ_BY_MODEL, READ_BY_EVALUATOR,
                                            READ_BY_BENCHMARKS), **_LABEL),
    RawFeature(HISTORY_ITEM_ID, BYTES, HISTORY, ITEM_ID,
               (READ_BY_MODEL, READ_BY_SERVING, READ_BY_BENCHMARKS)),
    RawFeature(HISTORY_PLAY_RATE, part=HISTORY, read_by=(READ_BY_MODEL, READ_BY_SERVING),
               **_RATE),
    RawFeature(HISTORY_INTENT, BYTES, HISTORY, INTENT, (READ_BY_MODEL, READ_BY_SERVING),
               note=_INTENT_NOTE),
    RawFeature(HISTORY_TS, part=HISTORY, read_by=(), note=_TS_NOTE, **_TS),
    RawFeature(HISTORY_LABEL, part=HISTORY, read_by=(READ_BY_MODEL, READ_BY_BENCHMARKS),
               **_LABEL),
)
RAW_FEATURE_NAMES = tuple(f.name for f in RAW_FEATURES)


def raw_feature_spec():
  """The raw examples' feature spec, from RAW_FEATURES: USER and TARGET features fixed-length
  scalars, HISTORY features variable-length (what Transform parses with the curated schema)."""
  # Imported here: the generator and ExampleGen's row parsing use this module without TF.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtypes = {BYTES: tf.string, INT64: tf.int64, FLOAT: tf.float32}
  return {f.name: (tf.io.FixedLenFeature([], dtypes[f.dtype]) if f.scalar
                   else tf.io.VarLenFeature(dtypes[f.dtype])) for f in RAW_FEATURES}


# What PlayLogExampleGen records on its Examples (custom properties, and EXAMPLE_SETTINGS_FILE at
# the artifact's root, which Transform's copy carries to the transformed examples): the
# settings that shaped them, which the Trainer's hyper-parameters must agree with.
EXAMPLE_HISTORY_LENGTH = 'history_length'  # int
EXAMPLE_POS_THRESHOLD = 'pos_threshold'  # float
EXAMPLE_NEG_THRESHOLD = 'neg_threshold'  # float
EXAMPLE_SETTINGS = (EXAMPLE_HISTORY_LENGTH, EXAMPLE_POS_THRESHOLD, EXAMPLE_NEG_THRESHOLD)
EXAMPLE_SETTINGS_FILE = 'example_settings.json'
# The eval split's bound (ingest.eval_max_users, an int; absent: none) and, when it has one, the
# users in the eval split and the users with eval plays before the sample. The Evaluator's
# noise estimate counts the targets it scores, so it is the sample's.
EXAMPLE_EVAL_MAX_USERS = 'eval_max_users'
EXAMPLE_EVAL_USERS = 'eval_users'
EXAMPLE_EVAL_USERS_BEFORE_SAMPLE = 'eval_users_before_sample'


# The splits of PlayLogExampleGen's examples. The Trainer trains on TRAIN_SPLIT and picks the
# checkpoint it exports on VALID_SPLIT (each user's last plays before the eval split); the
# Evaluator gates on EVAL_SPLIT, which neither has seen.
TRAIN_SPLIT = 'train'
VALID_SPLIT = 'valid'
EVAL_SPLIT = 'eval'
SPLITS = (TRAIN_SPLIT, VALID_SPLIT, EVAL_SPLIT)

HISTORY_FEATURES = (HISTORY_ITEM_ID, HISTORY_PLAY_RATE, HISTORY_INTENT)
# What a serving request carries: the history only.
SERVING_FEATURES = HISTORY_FEATURES

# Characters no id (user, item) and no intent may hold, as code point ranges: they end a line of a
# vocabulary file (Transform writes one term per '\n'-terminated line) or some reader's idea of
# one (str.splitlines splits on \x0b, \x0c, \x1c-\x1e, U+0085, U+2028 and U+2029 too). The C0
# and C1 controls and the Unicode line and paragraph separators; ingestion quarantines the rows.
CONTROL_CHARACTER_RANGES = ((0x00, 0x1f), (0x7f, 0x9f), (0x2028, 0x2029))

INTENTS = ('on_demand', 'genre_request', 'recommend')
# What a play without feedback gets, as the original system did for its older logs: every row of
# a log with no play rate at all, every row without an intent, and every play of a serving request
# that sends item ids without play rates or without intents.
DEFAULT_INTENT = 'on_demand'
DEFAULT_PLAY_RATE = 0.99
# --- Transform ---------------------------------------------------------------------------------
# Vocabulary files written by Transform, ordered by descending frequency. The *_counts files
# hold "count item" per line, which the trainer's fixed_unigram sampler needs.
ITEM_VOCAB = 'item_id'
ITEM_VOCAB_COUNTS = 'item_id_counts'
INTENT_VOCAB = 'intent'
# Items and intents never seen in training map to one out-of-vocabulary bucket, placed right
# after the vocabulary: ids 0..V-1 are the vocabulary by frequency rank, id V is OOV.
NUM_OOV_BUCKETS = 1


def transformed_name(key: str) -> str:
  return key + '_xf'


# Transformed features (the trainer's input): item and intent ids, clipped play rates.
HISTORY_ITEM_XF = transformed_name(HISTORY_ITEM_ID)  # int64, variable length
HISTORY_PLAY_RATE_XF = transformed_name(HISTORY_PLAY_RATE)  # float, variable length
HISTORY_INTENT_XF = transformed_name(HISTORY_INTENT)  # int64, variable length
ITEM_XF = transformed_name(ITEM_ID)  # int64, scalar
PLAY_RATE_XF = transformed_name(PLAY_RATE)  # float, scalar
INTENT_XF = transformed_name(INTENT)  # int64, scalar
# LABEL and HISTORY_LABEL pass through Transform unchanged.

# Dense padded batch built by the trainer's input function from the transformed features.
# History tensors are [batch, history_length], real positions first, padding (id 0, rate 0) after.
HISTORY_LENGTH = 'history_length'  # int64 [batch]: number of real positions
# Training batches also carry the window's plays as targets: the history followed by the target
# play, [batch, history_length + 1], real plays first. Target j is predicted from the plays
# before it: the empty history for j = 0, the encoder's output at history position j - 1 after.
SEQUENCE_ITEM_XF = 'sequence_item_xf'  # int64 [batch, history_length + 1]
SEQUENCE_LABEL = 'sequence_label'  # int64 [batch, history_length + 1]; padding is LABEL_NEITHER
SEQUENCE_LENGTH = 'sequence_length'  # int64 [batch]: number of real targets

# --- Exported SavedModel ----------------------------------------------------------------------
# Every signature takes one input: serialized tf.Examples with the raw features.
SIGNATURE_INPUT = 'examples'
SERVING_SIGNATURE = 'serving_default'  # history -> top-K item ids and scores
TOP_ITEM_IDS = 'item_ids'  # bytes [batch, K]
TOP_SCORES = 'scores'  # float [batch, K]
USER_VECTOR_SIGNATURE = 'user_vector'  # history -> user vector
USER_VECTOR = 'user_vector'  # float [batch, H]
# With the model's repeat bonus, user_vector also gives each history play's log-weight w_j as a
# return to its item: score = log(exp(user . item + bias) + the sum of exp(w_j) over the item's
# plays); an ANN stack scores the history's items that way.
REPEAT_BONUS_ITEM_IDS = 'repeat_bonus_item_ids'  # bytes [batch, L]: '' for padding and OOV
REPEAT_BONUS = 'repeat_bonus'  # float [batch, L]
# Used by the Evaluator: history + target -> exact rank of the target item among the whole
# vocabulary (0 = best; OOV targets get rank V, so they never count as a hit).
TARGET_RANK_SIGNATURE = 'target_rank'
TARGET_RANK = 'target_rank'  # int64 [batch]
POPULARITY_RANK = 'popularity_rank'  # int64 [batch]: the target's rank by training plays
# int64 [batch]: the target's rank under the repeat baseline: the request's own played-through
# history items by play count (ties: the most recent), then by training plays.
REPEAT_RANK = 'repeat_rank'
