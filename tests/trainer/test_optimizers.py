"""LazyAdam: sparse gradients update only their rows, by Adam's formula; dense ones are Adam's."""

import numpy as np
import tensorflow as tf
import tf_keras

from contract import settings
from trainer import optimizers


def _adam_rows(weights, gradients, steps, lr=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
  """Adam by hand, applied `steps` times with the same gradient."""
  m = np.zeros_like(weights)
  v = np.zeros_like(weights)
  for t in range(1, steps + 1):
    m = beta_1 * m + (1 - beta_1) * gradients
    v = beta_2 * v + (1 - beta_2) * gradients ** 2
    alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    weights = weights - alpha * m / (np.sqrt(v) + epsilon)
  return weights, m, v


class LazyAdamTest(tf.test.TestCase):

  def test_sparse_gradient_updates_its_rows_only_as_adam_would(self):
    start = np.arange(10, dtype=np.float32).reshape(5, 2)
    table = tf.Variable(start)
    optimizer = optimizers.LazyAdam(learning_rate=0.1)
    optimizer.build([table])
    rows_gradient = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    for _ in range(3):
      # Row 3 twice: apply_gradients sums duplicates first.
      optimizer.apply_gradients([(tf.IndexedSlices(
          tf.constant(np.concatenate([rows_gradient, [[0.0, 0.0]]]), tf.float32),
          tf.constant([1, 3, 3]), tf.constant([5, 2])), table)])
    want, m, v = _adam_rows(start[[1, 3]], rows_gradient, steps=3)
    got = table.numpy()
    self.assertAllClose(got[[1, 3]], want, rtol=1e-5)
    self.assertAllEqual(got[[0, 2, 4]], start[[0, 2, 4]])
    m_slot, v_slot = optimizer.variables[1:3]
    self.assertAllClose(m_slot.numpy()[[1, 3]], m, rtol=1e-5)
    self.assertAllEqual(m_slot.numpy()[[0, 2, 4]], np.zeros([3, 2]))
    self.assertAllClose(v_slot.numpy()[[1, 3]], v, rtol=1e-5)

  def test_untouched_rows_keep_their_moments_where_adam_decays_them(self):
    lazy, plain = tf.Variable(tf.zeros([3, 1])), tf.Variable(tf.zeros([3, 1]))
    lazy_optimizer = optimizers.LazyAdam(learning_rate=0.1)
    plain_optimizer = tf_keras.optimizers.Adam(learning_rate=0.1)
    for variable, optimizer in ((lazy, lazy_optimizer), (plain, plain_optimizer)):
      for rows in ([0, 1], [1]):
        optimizer.apply_gradients([(tf.IndexedSlices(tf.ones([len(rows), 1]), tf.constant(rows),
                                                     tf.constant([3, 1])), variable)])
    # Row 0 was touched at step 1 only: Adam moves it again at step 2 (decayed momentum), lazily not.
    self.assertAllClose(lazy.numpy()[0], [-0.1], rtol=1e-5)
    self.assertLess(float(plain.numpy()[0, 0]), -0.1 - 1e-3)
    self.assertAllClose(lazy.numpy()[1], plain.numpy()[1], rtol=1e-5)

  def test_dense_gradient_is_plain_adam(self):
    lazy, plain = tf.Variable([[1.0, -2.0]]), tf.Variable([[1.0, -2.0]])
    lazy_optimizer = optimizers.LazyAdam(learning_rate=0.05)
    plain_optimizer = tf_keras.optimizers.Adam(learning_rate=0.05)
    for _ in range(4):
      lazy_optimizer.apply_gradients([(tf.constant([[0.3, -0.7]]), lazy)])
      plain_optimizer.apply_gradients([(tf.constant([[0.3, -0.7]]), plain)])
    self.assertAllClose(lazy, plain)

  def test_make_optimizer_follows_the_hyper_parameter(self):
    hparams = settings.HParams(learning_rate=0.02)
    self.assertIsInstance(optimizers.make_optimizer(hparams), optimizers.LazyAdam)
    adam = optimizers.make_optimizer(hparams.replace(optimizer='adam'))
    self.assertNotIsInstance(adam, optimizers.LazyAdam)
    self.assertAllClose(float(adam.learning_rate), 0.02)
    with self.assertRaisesRegex(ValueError, 'optimizer'):
      hparams.replace(optimizer='sgd')


if __name__ == '__main__':
  tf.test.main()
