"""trainer/checkpoint_eval.py: the validation losses, against values computed by hand."""

import math

import pytest
import tensorflow as tf

from contract import features
from contract import settings
from trainer import checkpoint_eval

POS, NEG, NEITHER = features.LABEL_POSITIVE, features.LABEL_NEGATIVE, features.LABEL_NEITHER
# Two vocabulary items; each row is one eval target's scores.
SCORES = [[0.0, math.log(3.0)],  # softmax: item 1 has 3/4 of the mass
          [1.0, 1.0],
          [2.0, 0.0],
          [0.0, 0.0]]


def _losses(targets, labels, **hparams):
  losses = checkpoint_eval.target_losses(
      tf.constant(SCORES), tf.constant(targets, tf.int64), tf.constant(labels, tf.int64),
      settings.HParams.from_dict(hparams))
  return {name: float(value.numpy()) for name, value in losses.items()}


def test_played_through_targets_get_the_full_softmax_cross_entropy():
  # Row 0: target 1 -> -log(3/4); row 1: target 0 -> -log(1/2); rows 2, 3 are not positive.
  losses = _losses([1, 0, 1, 0], [POS, POS, NEG, NEITHER])
  assert losses['positive_loss'] == pytest.approx(-math.log(0.75) - math.log(0.5))


def test_skipped_targets_get_the_weighted_sigmoid_loss_of_their_score():
  # Row 2: target 0 scores 2 -> log(1 + e^2), times neg_weight.
  losses = _losses([1, 0, 0, 0], [POS, NEITHER, NEG, NEITHER], neg_weight=0.5)
  assert losses['negative_loss'] == pytest.approx(0.5 * math.log(1.0 + math.exp(2.0)))
  assert _losses([1, 0, 0, 0], [POS, NEITHER, NEG, NEITHER], variant='b')['negative_loss'] == 0


def test_out_of_vocabulary_targets_are_in_no_loss():
  losses = _losses([2, 2, 2, 2], [POS, POS, NEG, NEG])  # 2 is the OOV bucket of V = 2
  assert losses == {'positive_loss': 0.0, 'negative_loss': 0.0}
