"""trainer/checkpoints.py: the folder a re-run finds again, and resuming past damaged checkpoints."""

import os

import pytest
import tensorflow as tf

from trainer import checkpoints

KEY = dict(train_files=['t/Split-train/*'], eval_files=['t/Split-eval/*'],
           transform_output='t/transform_graph', hparams_json='{"train_steps": 10, "seed": 7}')


def test_the_same_training_has_the_same_key_and_any_change_a_new_one():
  key = checkpoints.inputs_key(**KEY)
  assert key == checkpoints.inputs_key(**dict(KEY, train_files=list(KEY['train_files'])))
  assert key == checkpoints.inputs_key(**dict(KEY, hparams_json='{"seed": 7, "train_steps": 10}'))
  for changed in (dict(train_files=['u/Split-train/*']), dict(eval_files=[]),
                  dict(transform_output='u/transform_graph'),
                  dict(hparams_json='{"train_steps": 11, "seed": 7}')):
    assert checkpoints.inputs_key(**dict(KEY, **changed)) != key, changed


def test_the_folder_is_under_the_root_by_key_or_else_in_the_run_dir():
  assert checkpoints.resumable_dir('root/checkpoints', 'run/7', 'abc') == 'root/checkpoints/abc'
  assert checkpoints.resumable_dir(None, 'run/7', 'abc') == 'run/7/checkpoints'


class _State(tf.Module):

  def __init__(self):
    super().__init__()
    self.table = tf.Variable(tf.zeros([100, 4]))
    self.step = tf.Variable(0, dtype=tf.int64)


def _saved_steps(directory, steps=(1, 2, 10)):
  """Saves checkpoints at steps (the table filled with the step) as train_loop does."""
  state = _State()
  checkpoint = tf.train.Checkpoint(state=state)
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=5)
  for step in steps:
    state.table.assign(tf.fill([100, 4], float(step)))
    state.step.assign(step)
    manager.save(checkpoint_number=step)
  return directory


def _restore(directory):
  state, lines = _State(), []
  path = checkpoints.restore_newest_valid(tf.train.Checkpoint(state=state), directory,
                                          lines.append)
  return path, int(state.step.numpy()), float(state.table.numpy().mean()), lines


def test_checkpoints_are_listed_by_step_not_by_name(tmp_path):
  directory = _saved_steps(str(tmp_path))
  assert [step for step, _ in checkpoints.numbered_checkpoints(directory)] == [10, 2, 1]
  assert checkpoints.numbered_checkpoints(str(tmp_path / 'missing')) == []


def test_the_newest_checkpoint_is_restored(tmp_path):
  path, step, value, lines = _restore(_saved_steps(str(tmp_path)))
  assert path.endswith('ckpt-10') and (step, value) == (10, 10.0) and not lines


def _truncate_data(directory, step):
  [data] = tf.io.gfile.glob(os.path.join(directory, f'ckpt-{step}.data-*'))
  with open(data, 'r+b') as f:
    f.truncate(64)


def _garble_index(directory, step):
  with open(os.path.join(directory, f'ckpt-{step}.index'), 'wb') as f:
    f.write(b'not an sstable' * 8)


@pytest.mark.parametrize('damage', [_truncate_data, _garble_index])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
  directory = _saved_steps(str(tmp_path))
  damage(directory, 10)
  path, step, value, lines = _restore(directory)
  assert path.endswith('ckpt-2') and (step, value) == (2, 2.0)
  [line] = lines
  assert 'ckpt-10 cannot be restored' in line and 'corrupt-ckpt-10' in line
  # Set aside, not deleted; the state file names the checkpoint restored.
  assert {name for name in os.listdir(directory) if name.startswith('corrupt-')} == {
      'corrupt-ckpt-10.index', 'corrupt-ckpt-10.data-00000-of-00001'}
  assert tf.train.get_checkpoint_state(directory).model_checkpoint_path.endswith('ckpt-2')


def test_a_garbled_state_file_loses_no_checkpoint(tmp_path):
  directory = _saved_steps(str(tmp_path))
  with open(os.path.join(directory, 'checkpoint'), 'w') as f:
    f.write('model_checkpoint_path: {{{ garbage')
  assert tf.train.get_checkpoint_state(directory) is None  # what a CheckpointManager would see
  path, step, _, _ = _restore(directory)
  assert path.endswith('ckpt-10') and step == 10
  state = tf.train.get_checkpoint_state(directory)
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
      'ckpt-1', 'ckpt-2', 'ckpt-10']


def test_nothing_restorable_starts_fresh_and_keeps_the_files(tmp_path):
  directory = _saved_steps(str(tmp_path), steps=(5,))
  _garble_index(directory, 5)
  path, step, value, lines = _restore(directory)
  assert path is None and (step, value) == (0, 0.0) and len(lines) == 1
  assert 'corrupt-ckpt-5.index' in os.listdir(directory)
