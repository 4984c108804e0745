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



def raw_feature_spec():
  """The raw examples' feature spec, as SchemaGen infers it (infer_feature_shape=True) from what
  PlayLogExampleGen writes: scalars are fixed-length, histories variable-length."""
  # Imported here: the generator and ExampleGen's row parsing use this module without TF.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {
      USER_ID: tf.io.FixedLenFeature([], tf.string),
      TS: tf.io.FixedLenFeature([], tf.int64),
      HISTORY_ITEM_ID: tf.io.VarLenFeature(tf.string),
      HISTORY_PLAY_RATE: tf.io.VarLenFeature(tf.float32),
      HISTORY_INTENT: tf.io.VarLenFeature(tf.string),
      HISTORY_TS: tf.io.VarLenFeature(tf.int64),
      HISTORY_LABEL: tf.io.VarLenFeature(tf.int64),
      ITEM_ID: tf.io.FixedLenFeature([], tf.string),
      PLAY_RATE: tf.io.FixedLenFeature([], tf.float32),
      INTENT: tf.io.FixedLenFeature([], tf.string),
      LABEL: tf.io.FixedLenFeature([], tf.int64),
  }


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

INTENTS = ('on_demand', 'genre_request', 'recommend')
# What a play without feedback gets, as the original system did for its older logs: every row of
# a log with no play rate at all, every row without an intent, and every play of a serving request
# that sends item ids without play rates or without intents.
DEFAULT_INTENT = 'on_demand'
DEFAULT_PLAY_RATE = 0.99
# A play rate is the fraction of the song heard: ingestion quarantines rows outside this range
# (NaN and infinities too) and serving refuses requests with one.
MIN_PLAY_RATE = 0.0
MAX_PLAY_RATE = 1.0

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
# With the model's repeat bonus, user_vector also gives what each history play adds to its item's
# score (score = user . item + bias + the sum of its plays' bonus): an ANN stack adds them.
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
