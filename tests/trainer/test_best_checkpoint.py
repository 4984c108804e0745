"""Checks that training keeps the weights of its best validation checkpoint, and exports them."""

import math
import os

import tensorflow as tf
import tf_keras

from contract import settings
from trainer import run
from trainer import train_loop

METRIC = settings.SELECTION_METRIC


def _model(value: float) -> tf_keras.Model:
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, use_bias=False, input_shape=[1])])
  model.layers[0].kernel.assign([[value]])
  return model


def _kernel_in(path: str) -> float:
  model = _model(0.0)
  tf.train.Checkpoint(model=model).read(path).assert_existing_objects_matched()
  return float(model.layers[0].kernel.numpy()[0, 0])


class BestCheckpointTest(tf.test.TestCase):

  def test_keeps_the_best_so_far_and_its_state_survives_a_restart(self):
    directory = self.get_temp_dir()
    lines = []
    best = train_loop.BestCheckpoint(directory, lines.append)
    self.assertIsNone(best.path)
    best.offer(_model(1.0), 100, {METRIC: 0.2, 'loss': 3.0})
    best.offer(_model(2.0), 200, {METRIC: 0.3})
    best.offer(_model(3.0), 300, {METRIC: 0.25})  # worse: kept out
    best.offer(_model(4.0), 400, {METRIC: 0.3})  # a tie keeps the earlier step
    best.offer(_model(5.0), 500, {METRIC: math.nan})  # no validation targets: never best
    self.assertEqual(best.step, 200)
    self.assertEqual(_kernel_in(best.path), 2.0)
    # The beaten step's files are gone; one set of weights is kept.
    names = sorted(os.listdir(os.path.join(directory, train_loop.BestCheckpoint.DIR)))
    self.assertEqual([name for name in names if name.startswith('model-100')], [])
    self.assertIn(train_loop.BestCheckpoint.STATE_FILE, names)
    self.assertEqual(len(lines), 2)
    self.assertIn('step 200 is the best so far', lines[-1])

    resumed = train_loop.BestCheckpoint(directory, lines.append)
    self.assertEqual((resumed.step, resumed.value), (200, 0.3))
    resumed.offer(_model(6.0), 600, {METRIC: 0.29})
    self.assertEqual(resumed.step, 200)  # compared with the best of the run before the restart
    resumed.offer(_model(7.0), 700, {METRIC: 0.31})
    self.assertEqual(_kernel_in(resumed.path), 7.0)


class ExportedCheckpointTest(tf.test.TestCase):

  def _result(self, best_path):
    return train_loop.TrainResult(
        start_step=0, final_step=2000, checkpoint_path='/run/ckpt-2000',
        best_checkpoint_path=best_path, best_step=800 if best_path else None,
        examples_per_second=1.0, targets_per_second=1.0)

  def test_best_unless_told_last_or_there_is_none(self):
    hparams = settings.HParams()
    self.assertEqual(hparams.export_checkpoint, 'best')
    self.assertEqual(run.exported_checkpoint(hparams, self._result('/b/model-800')),
                     '/b/model-800')
    self.assertEqual(run.exported_checkpoint(hparams, self._result(None)), '/run/ckpt-2000')
    self.assertEqual(run.exported_checkpoint(hparams.replace(export_checkpoint='last'),
                                             self._result('/b/model-800')), '/run/ckpt-2000')


if __name__ == '__main__':
  tf.test.main()
