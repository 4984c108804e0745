"""The feedback-aware DeepMatch model: a self-attentive encoder of the play history.

Parameter-server notes. Under ParameterServerStrategy with a variable_partitioner, the item
tables become ShardedVariables. This model therefore reads table rows only with
tf.nn.embedding_lookup (which understands shards; tf.gather does not), reads whole tables with
tf.convert_to_tensor (which concatenates shards), and builds the same variables, under the same
names, with or without sharding, so a checkpoint written by a sharded model restores into an
unsharded one (as the export does).
"""

from typing import Dict
import zlib

import tensorflow as tf
import tf_keras

from contract import features
from contract import settings

_INIT_STDDEV = 0.02


class DeepMatch(tf_keras.Model):
  """Maps a padded play history to a user vector; scores items by user . item + item bias.

  Each history position sums four embeddings in the H-dimensional space: the item (a V x E table
  projected E -> H, the same weights that give the output item vectors), the position (a learned
  table of history_length rows, counted back from the most recent play), and, with feedback features, the play rate (a learned vector
  scaled by the rate) and the intent. After a layer normalisation, num_layers blocks of
  multi-head self-attention (with padding and causal masks) and a feed-forward network, each
  normalised before and with a residual connection, produce one output per position. The user
  vector is the output at the last real position, or the mean over real positions; an empty
  history gets a learned vector of its own. With hparams.unique_gather, the history's item
  vectors are looked up and projected once per distinct id. With hparams.repeat_bonus, an item
  the history holds may also come next as a return to its own plays there (RepeatBonus): people
  play the same songs again, and a dot product with one user vector ranks a handful of exact
  past items poorly.
  """

  def __init__(self, hparams: settings.HParams, num_items: int, num_intents: int, **kwargs):
    super().__init__(**kwargs)
    self.hparams = hparams
    self.num_items = num_items
    self.num_intents = num_intents
    h = hparams.hidden_dim
    self.item_embedding = self._normal_weight('item_embedding', [num_items, hparams.item_embedding_dim])
    # Kept [V, 1] rather than [V]: embedding lookups and partitioners handle rank-2 tables best.
    self.item_bias_table = self.add_weight(
        name='item_bias', shape=[num_items, 1], initializer='zeros')
    self.item_projection = tf_keras.layers.Dense(
        h, use_bias=False, kernel_initializer=tf_keras.initializers.GlorotUniform(
            seed=weight_seed(hparams.seed, 'item_projection')),
        name='item_projection')
    # Row k is the play k plays before the most recent one.
    self.position_embedding = self._normal_weight('position_embedding', [hparams.history_length, h])
    if hparams.feedback_features:
      self.play_rate_vector = self._normal_weight('play_rate_vector', [1, h])
      self.intent_embedding = self._normal_weight('intent_embedding', [num_intents, h])
    # The user vector of an empty history: a cold-start request, and in training the predictor
    # of each window's first play, so it learns what to play to someone nothing is known about.
    self.empty_history_vector = self._normal_weight('empty_history_vector', [1, h])
    self.input_norm = tf_keras.layers.LayerNormalization(name='input_norm')
    self.input_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.blocks = [_AttentionBlock(hparams, name=f'attention_block_{i}')
                   for i in range(hparams.num_layers)]
    self.repeat_bonus = RepeatBonus(hparams, num_intents, name='repeat_bonus') if (
        hparams.repeat_bonus) else None

  def _normal_weight(self, name: str, shape) -> tf.Variable:
    """A weight drawn from a truncated normal with a seed of its own (see weight_seed)."""
    return self.add_weight(name=name, shape=shape, initializer=tf_keras.initializers.TruncatedNormal(
        stddev=_INIT_STDDEV, seed=weight_seed(self.hparams.seed, name)))

  def call(self, batch: Dict[str, tf.Tensor], training=False) -> tf.Tensor:
    """User vectors [B, H] of a model batch (see trainer.inputs.to_model_batch)."""
    outputs = self.sequence_outputs(batch, training=training)
    length = tf.cast(batch[features.HISTORY_LENGTH], tf.int32)
    if self.hparams.user_vector == 'last':
      user = tf.gather(outputs, tf.maximum(length - 1, 0), batch_dims=1)
    else:
      real = tf.sequence_mask(length, self.hparams.history_length, dtype=outputs.dtype)
      total = tf.reduce_sum(outputs * real[:, :, tf.newaxis], axis=1)
      user = total / tf.maximum(tf.reduce_sum(real, axis=1, keepdims=True), 1.0)
    empty = tf.broadcast_to(self.empty_history_vector, tf.shape(user))
    return tf.where((length > 0)[:, tf.newaxis], user, empty)

  def target_user_vectors(self, batch: Dict[str, tf.Tensor], training=False) -> tf.Tensor:
    """The user vector that predicts each play of the sequence [B, L + 1, H].

    Causal attention makes the output at history position j a function of plays 0..j only, so
    it predicts play j + 1; play 0 is predicted from the empty history. One pass through the
    encoder thus trains every play of the batch's sequences (features.SEQUENCE_ITEM_XF).
    """
    outputs = self.sequence_outputs(batch, training=training)
    empty = tf.broadcast_to(self.empty_history_vector[tf.newaxis],
                            [tf.shape(outputs)[0], 1, self.hparams.hidden_dim])
    return tf.concat([empty, outputs], axis=1)

  def sequence_outputs(self, batch: Dict[str, tf.Tensor], training=False) -> tf.Tensor:
    """Encoder outputs at every history position [B, L, H]; padded positions are meaningless."""
    items = batch[features.HISTORY_ITEM_XF]
    length = tf.cast(batch[features.HISTORY_LENGTH], tf.int32)
    x = self.item_vectors(items, unique=self.hparams.unique_gather)
    x += tf.nn.embedding_lookup(self.position_embedding,
                                plays_before_most_recent(length, self.hparams.history_length))
    if self.hparams.feedback_features:
      play_rates = tf.cast(batch[features.HISTORY_PLAY_RATE_XF], x.dtype)
      x += play_rates[:, :, tf.newaxis] * tf.convert_to_tensor(self.play_rate_vector)
      x += tf.nn.embedding_lookup(self.intent_embedding, batch[features.HISTORY_INTENT_XF])
    x = self.input_dropout(self.input_norm(x), training=training)
    mask = attention_mask(length, self.hparams.history_length)
    for block in self.blocks:
      x = block(x, mask, training=training)
    return x

  def item_vectors(self, ids: tf.Tensor, unique: bool = False) -> tf.Tensor:
    """Item vectors [..., H] of item ids [...]; the same weights embed the history.

    With unique, each distinct id is looked up and projected once and the result expanded back:
    batches of popular songs repeat ids heavily, and the embedding gradient (and, on parameter
    servers, the traffic) then has one row per distinct id.
    """
    if not unique:
      return self.item_projection(tf.nn.embedding_lookup(self.item_embedding, ids))
    unique_ids, positions = tf.unique(tf.reshape(ids, [-1]))
    vectors = self.item_projection(tf.nn.embedding_lookup(self.item_embedding, unique_ids))
    # tf.gather on the looked-up tensor, not on the (possibly sharded) table.
    expanded = tf.gather(vectors, positions)
    return tf.reshape(expanded, tf.concat([tf.shape(ids), [self.hparams.hidden_dim]], axis=0))

  def item_bias(self, ids: tf.Tensor) -> tf.Tensor:
    """Item biases [...] of item ids [...]."""
    return tf.squeeze(tf.nn.embedding_lookup(self.item_bias_table, ids), axis=-1)

  def all_item_vectors(self) -> tf.Tensor:
    """Vectors of every item id, OOV bucket included [num_items, H]."""
    return self.item_projection(tf.convert_to_tensor(self.item_embedding))

  def all_item_bias(self) -> tf.Tensor:
    """Biases of every item id, OOV bucket included [num_items]."""
    return tf.reshape(tf.convert_to_tensor(self.item_bias_table), [-1])

  def scores(self, batch: Dict[str, tf.Tensor], training=False) -> tf.Tensor:
    """Scores of every item id as each history's next play [B, num_items]."""
    user_vectors = self(batch, training=training)
    return self.history_scores(
        batch, user_vectors,
        tf.matmul(user_vectors, self.all_item_vectors(), transpose_b=True) + self.all_item_bias())

  def history_scores(self, batch: Dict[str, tf.Tensor], user_vectors: tf.Tensor,
                     scores: tf.Tensor) -> tf.Tensor:
    """scores [B, V] (user . item + bias) of the next play, mixed with a return to each item the
    history holds (if the model has a repeat bonus): see RepeatBonus."""
    if self.repeat_bonus is None:
      return scores
    weights = self.repeat_bonus.next_play_weights(batch, user_vectors,
                                                  self.history_item_vectors(batch))  # [B, L]
    items = tf.cast(batch[features.HISTORY_ITEM_XF], tf.int64)
    # Serving scores leave the OOV bucket out: its plays add nothing (nor does padding).
    scored = (items < tf.shape(scores, out_type=tf.int64)[1]) & (weights > NO_REPEAT)
    rows = tf.broadcast_to(tf.range(tf.shape(items, out_type=tf.int64)[0])[:, tf.newaxis],
                           tf.shape(items, out_type=tf.int64))
    shift = _log_mass_shift(weights)
    mass = tf.tensor_scatter_nd_add(
        tf.zeros_like(scores), tf.stack([rows, tf.where(scored, items, 0)], axis=-1),
        tf.where(scored, tf.exp(tf.cast(weights, scores.dtype) - shift), 0.0))
    return scores + repeat_offsets(_log_of_mass(mass, shift), scores)

  def history_item_vectors(self, batch: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The item vectors [B, L, H] of the history's plays."""
    return self.item_vectors(batch[features.HISTORY_ITEM_XF], unique=self.hparams.unique_gather)


def target_ranks(scores: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """The exact rank [B] of each target among the scored items [B, V] (0 = best).

  Counts the items scoring strictly higher than the target; a target outside [0, V) (the OOV
  bucket) gets rank V, so it is never a hit.
  """
  num_vocabulary = tf.shape(scores, out_type=tf.int64)[1]
  targets = tf.reshape(tf.cast(targets, tf.int64), [-1])
  in_vocabulary = targets < num_vocabulary
  target_scores = tf.gather(scores, tf.where(in_vocabulary, targets, 0), batch_dims=1)
  higher = tf.reduce_sum(tf.cast(scores > target_scores[:, tf.newaxis], tf.int64), axis=1)
  return tf.where(in_vocabulary, higher, num_vocabulary)


def weight_seed(seed: int, weight_name: str) -> int:
  """The initializer seed of one weight: the model's seed mixed with the weight's name.

  One seeded initializer shared by several weights would start all of them (and the first rows
  of the tables) with the same values.
  """
  return (seed * 1_000_003 + zlib.crc32(weight_name.encode())) % (1 << 31)


def plays_before_most_recent(length: tf.Tensor, history_length: int) -> tf.Tensor:
  """[B, L] position ids: how many plays before the most recent one each position is (0 = it).

  Counting back from the most recent play encodes recency the same way for every history length,
  so the position the user vector is read at always has id 0. Padding gets id 0 too (masked).
  """
  positions = tf.range(history_length)[tf.newaxis, :]
  return tf.maximum(tf.cast(length, tf.int32)[:, tf.newaxis] - 1 - positions, 0)


def attention_mask(length: tf.Tensor, history_length: int) -> tf.Tensor:
  """[B, L, L] boolean: query i may attend key j iff j <= i (causal) and j < length (padding)."""
  positions = tf.range(history_length)
  causal = positions[tf.newaxis, :] <= positions[:, tf.newaxis]
  real_keys = tf.sequence_mask(length, history_length)
  return tf.logical_and(causal[tf.newaxis], real_keys[:, tf.newaxis, :])


class _AttentionBlock(tf_keras.layers.Layer):
  """Self-attention and a feed-forward network, each normalised before and added back after.

  Normalising each sub-layer's input rather than the residual sum (pre-norm) keeps an identity
  path from the input embeddings to the user vector: trained from scratch without warm-up, it
  left most-popular's level in a quarter of the steps the post-norm block took (docs/results.md).
  """

  def __init__(self, hparams: settings.HParams, **kwargs):
    super().__init__(**kwargs)
    h = hparams.hidden_dim
    self.attention = tf_keras.layers.MultiHeadAttention(
        num_heads=hparams.num_heads, key_dim=h // hparams.num_heads, dropout=hparams.dropout,
        name='attention')
    self.attention_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.attention_norm = tf_keras.layers.LayerNormalization(name='attention_norm')
    # The attention layer is left with its unseeded default initializer: it clones one
    # initializer config into its query, key and value kernels, so a seed would make them equal.
    self.ffn_hidden = tf_keras.layers.Dense(
        hparams.ffn_dim, activation='gelu', kernel_initializer=tf_keras.initializers.GlorotUniform(
            seed=weight_seed(hparams.seed, self.name + '/ffn_hidden')), name='ffn_hidden')
    self.ffn_output = tf_keras.layers.Dense(
        h, kernel_initializer=tf_keras.initializers.GlorotUniform(
            seed=weight_seed(hparams.seed, self.name + '/ffn_output')), name='ffn_output')
    self.ffn_dropout = tf_keras.layers.Dropout(hparams.dropout)
    self.ffn_norm = tf_keras.layers.LayerNormalization(name='ffn_norm')

  def call(self, x, mask, training=False):
    normed = self.attention_norm(x)
    attended = self.attention(normed, normed, attention_mask=mask, training=training)
    x += self.attention_dropout(attended, training=training)
    transformed = self.ffn_output(self.ffn_hidden(self.ffn_norm(x)))
    return x + self.ffn_dropout(transformed, training=training)


class RepeatBonus(tf_keras.layers.Layer):
  """Returns to the history's songs: the next play mixes a new pick and a return to a past play.

  Play j of the history (item h_j, vector v_j) has, as the prediction of a later play q, the
  log-weight
      w_qj = recency[k] + replays[n] + u_q . g + u_q A v_j
             + rate_weight * rate_j + intent_weight[intent_j]
  where k is the number of plays between j and q's predecessor (0: j is the most recent play), n
  the number of plays of h_j that q sees (j among them; capped at MAX_REPLAYS), u_q the user
  vector predicting q, u_q A v_j how well the song suits the moment, and the last two terms only
  with feedback features (b, c). An item's score is the log of the sum of the two ways
  it can come next:
      score_i = log(exp(u_q . v_i + bias_i) + sum over the plays j of item i of exp(w_qj))
              = base_i + softplus(R_i - base_i),   base_i = u_q . v_i + bias_i,
                                                    R_i = log sum_j exp(w_qj).
  So an item played n times counts n times and recent plays weigh more, as in the repeat
  baseline; replays[n] lets that count grow more than linearly (a song played again and again is
  a favourite, a song played once may have been a passing pick: without it the model found 88 %
  of the returns in its top 50, the generator's oracle 96 %; with it 89 %, docs/results.md);
  and a return does not depend on the song's popularity, which base_i carries (in the
  bias and in the vectors): a rarely played favourite comes back as readily as a hit. A bonus
  added to base_i, as this layer first was, must be larger for rare songs than for hits, which
  one weight per play cannot be: such a model ranked only 43 % of the returns to songs outside
  the 1,000 most played in its top 50, against 89 % for the generator's oracle
  (docs/results.md). The play rate lets a skip count against a return, the user vector lets it
  follow the context (a session of new finds, or of favourites). All weights start at 0.
  """

  def __init__(self, hparams: settings.HParams, num_intents: int, **kwargs):
    super().__init__(**kwargs)
    self.history_length = hparams.history_length
    self.feedback_features = hparams.feedback_features
    self.recency = self.add_weight(name='recency', shape=[hparams.history_length],
                                   initializer='zeros')
    self.replays = self.add_weight(name='replays', shape=[MAX_REPLAYS], initializer='zeros')
    self.context = self.add_weight(name='context', shape=[hparams.hidden_dim, 1],
                                   initializer='zeros')
    self.affinity = self.add_weight(name='affinity', shape=[hparams.hidden_dim, hparams.hidden_dim],
                                    initializer='zeros')
    if hparams.feedback_features:
      self.rate_weight = self.add_weight(name='rate_weight', shape=[], initializer='zeros')
      self.intent_weight = self.add_weight(name='intent_weight', shape=[num_intents],
                                           initializer='zeros')

  def play_weights(self, batch: Dict[str, tf.Tensor], user_vectors: tf.Tensor,
                   history_vectors: tf.Tensor, plays_between: tf.Tensor,
                   counted: tf.Tensor) -> tf.Tensor:
    """w_qj [B, Q, L] for Q predictions, NO_REPEAT where not counted.

    Args:
      batch: the model batch (history items, play rates and intents [B, L]).
      user_vectors: [B, Q, H], the user vector predicting each of the Q plays.
      history_vectors: [B, L, H], the history plays' item vectors.
      plays_between: [B, Q, L] int, k of each (prediction, history play) pair.
      counted: [B, Q, L] bool, the history plays each prediction may see.
    """
    weights = tf.gather(self.recency, tf.clip_by_value(plays_between, 0, self.history_length - 1))
    replays = replays_seen(batch[features.HISTORY_ITEM_XF], counted)
    weights += tf.gather(self.replays, tf.clip_by_value(replays - 1, 0, MAX_REPLAYS - 1))
    weights += tf.matmul(user_vectors, self.context)  # [B, Q, 1]
    weights += tf.matmul(tf.matmul(user_vectors, self.affinity), history_vectors,
                         transpose_b=True)
    if self.feedback_features:
      rates = tf.cast(batch[features.HISTORY_PLAY_RATE_XF], weights.dtype)
      plays = self.rate_weight * rates + tf.gather(self.intent_weight,
                                                   batch[features.HISTORY_INTENT_XF])
      weights += plays[:, tf.newaxis, :]
    return tf.where(counted, weights, NO_REPEAT)

  def next_play_weights(self, batch: Dict[str, tf.Tensor], user_vectors: tf.Tensor,
                        history_vectors: tf.Tensor) -> tf.Tensor:
    """w_j [B, L] of each history play for the play after the history (user_vectors [B, H],
    history_vectors [B, L, H])."""
    length = batch[features.HISTORY_LENGTH]
    counted = tf.sequence_mask(length, self.history_length)[:, tf.newaxis, :]
    plays_between = plays_before_most_recent(length, self.history_length)[:, tf.newaxis, :]
    return self.play_weights(batch, user_vectors[:, tf.newaxis, :], history_vectors,
                             plays_between, counted)[:, 0]

  def sequence_weights(self, batch: Dict[str, tf.Tensor], user_vectors: tf.Tensor,
                       history_vectors: tf.Tensor) -> tf.Tensor:
    """w_qj [B, L + 1, L] for every play q of a batch's sequences (user_vectors [B, L + 1, H],
    model.target_user_vectors; history_vectors [B, L, H]): play q sees the history plays j < q,
    causally."""
    queries = tf.range(self.history_length + 1)[:, tf.newaxis]
    keys = tf.range(self.history_length)[tf.newaxis, :]
    causal = keys < queries  # [L + 1, L]
    real = tf.sequence_mask(batch[features.HISTORY_LENGTH], self.history_length)
    counted = causal[tf.newaxis] & real[:, tf.newaxis, :]
    plays_between = tf.broadcast_to((queries - 1 - keys)[tf.newaxis], tf.shape(counted))
    return self.play_weights(batch, user_vectors, history_vectors, plays_between, counted)


# The log-weight of a play that does not count (padding, a later play): exp of it is 0.
NO_REPEAT = -1e9
# RepeatBonus learns one weight per number of plays of a song seen, 1 to this (and more).
MAX_REPLAYS = 5


def replays_seen(history_items: tf.Tensor, counted: tf.Tensor) -> tf.Tensor:
  """[B, Q, L] int32: for each prediction q and history play j, how many of the plays q sees
  (counted [B, Q, L]) are of play j's item (history_items [B, L]); 0 where j is not seen."""
  same = tf.equal(history_items[:, :, tf.newaxis], history_items[:, tf.newaxis, :])  # [B, L, L]
  seen = tf.cast(counted, tf.float32)
  # replays[b, q, j] = sum over j' of seen[b, q, j'] * same[b, j', j]
  replays = tf.cast(tf.matmul(seen, tf.cast(same, tf.float32)), tf.int32)
  return tf.where(counted, replays, 0)


def repeat_log_mass(weights: tf.Tensor, history_items: tf.Tensor,
                    candidates: tf.Tensor) -> tf.Tensor:
  """R [B, Q, C]: the log of the sum of exp(w_qj) over the history plays of history_items
  [B, L] equal to each candidate, NO_REPEAT where none; weights [B, Q, L] (NO_REPEAT for plays
  that do not count), candidates [B, Q, C] per prediction or [C] shared."""
  history_items = tf.cast(history_items, tf.int64)
  candidates = tf.cast(candidates, tf.int64)
  shift = _log_mass_shift(weights)  # [B, Q, 1]
  scaled = tf.exp(weights - shift)
  if candidates.shape.rank == 1:
    same = tf.cast(tf.equal(history_items[:, :, tf.newaxis], candidates), weights.dtype)
    mass = tf.matmul(scaled, same)  # [B, Q, L] x [B, L, C]
  else:
    same = tf.cast(tf.equal(history_items[:, tf.newaxis, tf.newaxis, :],
                            candidates[:, :, :, tf.newaxis]), weights.dtype)  # [B, Q, C, L]
    mass = tf.reduce_sum(same * scaled[:, :, tf.newaxis, :], axis=-1)
  return _log_of_mass(mass, shift)


def repeat_offsets(log_mass: tf.Tensor, base_logits: tf.Tensor) -> tf.Tensor:
  """What a return adds to base logits (user . item + bias) of the same shape, with the log
  repeat masses R (RepeatBonus): log(exp(base) + exp(R)) - base; 0 where R is NO_REPEAT."""
  return tf.nn.softplus(log_mass - base_logits)


def _log_mass_shift(weights: tf.Tensor) -> tf.Tensor:
  """The largest weight along the last axis (at least 0), [..., 1]: exp(w - shift) cannot
  overflow, and plays that do not count stay at exp(NO_REPEAT - shift) = 0."""
  return tf.stop_gradient(tf.maximum(tf.reduce_max(weights, axis=-1, keepdims=True), 0.0))


def _log_of_mass(mass: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
  """log(mass) + shift where mass > 0, NO_REPEAT where it is 0, with finite gradients."""
  present = mass > 0
  return tf.where(present, tf.math.log(tf.where(present, mass, 1.0)) + shift, NO_REPEAT)


def dummy_batch(hparams: settings.HParams) -> Dict[str, tf.Tensor]:
  """An all-padding model batch of one row, of the right shapes and dtypes, for building
  variables."""
  shape = [1, hparams.history_length]
  return {
      features.HISTORY_ITEM_XF: tf.zeros(shape, tf.int64),
      features.HISTORY_PLAY_RATE_XF: tf.zeros(shape, tf.float32),
      features.HISTORY_INTENT_XF: tf.zeros(shape, tf.int64),
      features.HISTORY_LENGTH: tf.zeros([1], tf.int64),
  }


def build_model(hparams: settings.HParams, num_items: int, num_intents: int) -> DeepMatch:
  """A DeepMatch model with all its variables created (create it inside a strategy's scope)."""
  model = DeepMatch(hparams, num_items, num_intents, name='deep_match')
  model(dummy_batch(hparams), training=False)
  return model
