"""Optimizers whose work per step follows the rows a batch touches, not the catalogue's size."""

import tensorflow as tf
import tf_keras

from contract import settings


class LazyAdam(tf_keras.optimizers.Adam):
  """Adam that updates only the rows of a sparse gradient; dense gradients get plain Adam.

  tf_keras Adam decays both moment slots of a whole embedding table at every step, even when
  the gradient names a few hundred rows (tf.IndexedSlices), and then rewrites the whole table:
  its cost per step grows with the catalogue. Here the moments and the weights of the rows in
  the gradient are updated and every other row is left as it is (its moments are not decayed
  either, as in TF Addons' LazyAdam), so the cost grows with the batch. The bias correction uses
  the global step, as Adam's does.

  Works on the shard variables of a ShardedVariable (what a partitioned model's
  trainable_variables holds): each shard receives the gradient of its own rows.
  """

  def __init__(self, learning_rate, **kwargs):
    if kwargs.get('amsgrad'):
      raise ValueError('LazyAdam does not support amsgrad')
    # XLA would compile the update again for every number of distinct rows.
    super().__init__(learning_rate=learning_rate, jit_compile=False, **kwargs)

  def update_step(self, gradient, variable):
    if not isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    beta_2_power = tf.pow(beta_2, step)
    alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power)
             / (1 - tf.pow(beta_1, step)))
    epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
    slot = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[slot], self._velocities[slot]
    # apply_gradients has summed duplicate indices already: each row appears once.
    rows, values = gradient.indices, gradient.values
    m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
    v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


def make_optimizer(hparams: settings.HParams) -> tf_keras.optimizers.Optimizer:
  """The optimizer hparams.optimizer names, at hparams.learning_rate."""
  if hparams.optimizer == 'lazy_adam':
    return LazyAdam(learning_rate=hparams.learning_rate)
  return tf_keras.optimizers.Adam(learning_rate=hparams.learning_rate)
