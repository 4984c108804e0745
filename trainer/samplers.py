"""Candidate samplers for the sampled softmax over the item vocabulary.

Every sampler draws `num_sampled` distinct ids (unique=True) from [0, num_items), the OOV bucket
included, and reports the expected counts the softmax needs for its log-probability correction.

`learned_unigram` learns the distribution of the true ids it is given as training runs. Its counts
live inside the sampling op's kernel (every id starts at one; each call adds its true ids after
sampling), not in a variable: they are not checkpointed, so after a restart (a resume from a
checkpoint, a retraced tf.function, a new worker under a parameter-server strategy, where each
worker keeps its own counts) they start again from uniform, and the samples and the correction
follow the uniform prior until the sampler has seen enough targets again. `fixed_unigram` from Transform's counts has no such gap.
"""

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from contract import features
from contract import settings

# (sampled_ids [num_sampled], true_expected_count [B, 1], sampled_expected_count [num_sampled])
Sample = Tuple[tf.Tensor, tf.Tensor, tf.Tensor]
Sampler = Callable[[tf.Tensor], Sample]

# The count given to each OOV bucket in fixed_unigram: no training play maps there (the
# vocabulary is built from the training targets), but it must stay sampleable.
OOV_UNIGRAM_COUNT = 1.0


def make_sampler(name: str,
                 num_items: int,
                 unigram_counts: Optional[Sequence[float]] = None,
                 *,
                 num_sampled: int,
                 seed: Optional[int] = None,
                 unique: bool = True) -> Sampler:
  """Returns sample(true_ids [B]) -> (sampled_ids, true_expected_count, sampled_expected_count).

  Args:
    name: 'log_uniform' (Zipf over ids, right when ids are frequency ranks, as Transform's
      vocabulary gives), 'uniform', 'mixed' (see mixed_sample), 'learned_unigram' or
      'fixed_unigram'.
    num_items: the id range, OOV buckets included.
    unigram_counts: fixed_unigram's counts of the vocabulary ids (vocabulary.item_counts); the
      OOV buckets after them get OOV_UNIGRAM_COUNT each.
    num_sampled: ids drawn per batch, shared by all examples of the batch.
    seed: op seed.
    unique: draw distinct ids (the expected counts then account for the rejected draws).
  """
  if num_sampled > num_items and unique:
    raise ValueError(f'num_sampled={num_sampled} > num_items={num_items}: cannot draw that '
                     'many distinct ids; lower the num_sampled hyper-parameter')
  if name == 'mixed' and num_sampled < 2:
    raise ValueError(f'num_sampled={num_sampled}: the mixed sampler draws half its ids of each '
                     'kind; raise num_sampled to at least 2')
  if name == 'fixed_unigram':
    unigrams = fixed_unigrams(num_items, unigram_counts).tolist()

  def sample(true_ids: tf.Tensor) -> Sample:
    true_classes = tf.reshape(tf.cast(true_ids, tf.int64), [-1, 1])
    common = dict(true_classes=true_classes, num_true=1, num_sampled=num_sampled, unique=unique,
                  range_max=num_items, seed=seed)
    if name == 'log_uniform':
      return tf.random.log_uniform_candidate_sampler(**common)
    if name == 'mixed':
      return mixed_sample(true_classes, num_items, num_sampled, unique, seed)
    if name == 'uniform':
      return tf.random.uniform_candidate_sampler(**common)
    if name == 'learned_unigram':
      return tf.random.learned_unigram_candidate_sampler(**common)
    if name == 'fixed_unigram':
      # unigrams= rather than vocab_file=: the sampler's vocabulary file wants the count as the
      # last field of each line, while Transform's counts file puts it first.
      return tf.random.fixed_unigram_candidate_sampler(**common, unigrams=unigrams)
    raise ValueError(f'unknown sampler {name!r}')

  if name not in settings.SAMPLERS:
    raise ValueError(f'unknown sampler {name!r}; choose one of {", ".join(settings.SAMPLERS)}')
  return sample


def mixed_sample(true_classes: tf.Tensor, num_items: int, num_sampled: int, unique: bool,
                 seed: Optional[int]) -> Sample:
  """Half the draws log-uniform, half uniform, with the expected counts of the two together.

  Log-uniform draws alone (which follow the frequency of the plays) reach a song outside the
  few thousand most played about once in a hundred steps, so nothing but its own plays moves
  its vector; the uniform half pushes every song down now and then (mixed negative sampling,
  Yi et al., RecSys 2019). On the generated quality benchmark it did not lift POS@50
  (docs/results.md); it is a sampler to try on real logs. Each half is drawn as its
  sampler draws (distinct ids within a half with unique); an id both halves drew is a candidate
  twice, and every candidate's expected count is the sum of the two halves' counts for its id,
  which keeps the softmax correction unbiased.

  Args:
    true_classes: [B, 1] int64 true ids.
  """
  num_uniform = num_sampled // 2
  uniform_ids, uniform_true, uniform_sampled = tf.random.uniform_candidate_sampler(
      true_classes=true_classes, num_true=1, num_sampled=num_uniform, unique=unique,
      range_max=num_items, seed=seed)
  # The log-uniform sampler reports expected counts for the true ids it is given: given the
  # uniform half's ids too, it reports theirs under its own draws.
  num_true = tf.shape(true_classes)[0]
  log_ids, log_true, log_sampled = tf.random.log_uniform_candidate_sampler(
      true_classes=tf.concat([true_classes, tf.cast(uniform_ids, tf.int64)[:, tf.newaxis]], 0),
      num_true=1, num_sampled=num_sampled - num_uniform, unique=unique, range_max=num_items,
      # Not the uniform half's seed: the two ops would turn the same random numbers into ids.
      seed=None if seed is None else seed + 1)
  # A uniform draw's expected count is the same for every id.
  uniform_count = uniform_sampled[:1]
  return (tf.concat([log_ids, uniform_ids], 0),
          log_true[:num_true] + uniform_true,
          tf.concat([log_sampled + uniform_count, log_true[num_true:, 0] + uniform_sampled], 0))


def fixed_unigrams(num_items: int, unigram_counts: Optional[Sequence[float]]) -> np.ndarray:
  """fixed_unigram's weights of all num_items ids: the vocabulary counts, then the OOV buckets."""
  if unigram_counts is None:
    raise ValueError('fixed_unigram needs unigram_counts (the vocabulary counts)')
  counts = np.asarray(unigram_counts, dtype=np.float64)
  num_oov = num_items - counts.size
  if num_oov not in (0, features.NUM_OOV_BUCKETS):
    raise ValueError(f'{counts.size} unigram counts for {num_items} ids: expected one per '
                     f'vocabulary item ({num_items - features.NUM_OOV_BUCKETS}) or per id')
  if np.any(counts <= 0):
    raise ValueError(f'unigram counts must be positive; id {int(np.argmin(counts))} has '
                     f'{counts.min()}')
  return np.concatenate([counts, np.full(num_oov, OOV_UNIGRAM_COUNT)])


def sampling_probabilities(name: str,
                           num_items: int,
                           unigram_counts: Optional[Sequence[float]] = None) -> np.ndarray:
  """The probability [num_items] that one draw of the sampler yields each id.

  For learned_unigram, pass the true-id counts it has seen so far (the op starts every id at one).
  """
  if name == 'log_uniform':
    k = np.arange(num_items, dtype=np.float64)
    return (np.log(k + 2) - np.log(k + 1)) / np.log(num_items + 1)
  if name == 'uniform':
    return np.full(num_items, 1.0 / num_items)
  if name == 'mixed':  # of an even num_sampled: half the draws of each
    return 0.5 * (sampling_probabilities('log_uniform', num_items)
                  + sampling_probabilities('uniform', num_items))
  if name == 'fixed_unigram':
    unigrams = fixed_unigrams(num_items, unigram_counts)
    return unigrams / unigrams.sum()
  if name == 'learned_unigram':
    seen = np.zeros(num_items) if unigram_counts is None else np.asarray(unigram_counts, np.float64)
    weights = seen + 1.0
    return weights / weights.sum()
  raise ValueError(f'unknown sampler {name!r}')


def expected_count(probability: np.ndarray, num_tries: int, num_sampled: int) -> np.ndarray:
  """The expected counts the samplers report for ids of the given draw probabilities.

  With unique sampling, drawing num_sampled distinct ids took num_tries draws; the expected count
  is then 1 - (1 - p)^num_tries, except that TensorFlow reports p * num_sampled when no draw was
  rejected (num_tries == num_sampled, always the case without unique), even if that exceeds one.
  For ids drawn often the formula overstates their inclusion probability, a bias of the sampled
  softmax's unique-sampling correction that grows with num_sampled / num_items.
  """
  if num_tries == num_sampled:
    return probability * num_sampled
  return -np.expm1(num_tries * np.log1p(-probability))
