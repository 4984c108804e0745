"""Warm start that tells the truth (issue 27): another variant or other sizes start cold with that
exact reason; a damaged base fails or starts cold, as train.damaged_base says, naming the base and
what is wrong; vocabularies are read exactly as Transform writes them. On real exports."""

import json
import os
import re
import shutil

import pytest
import tensorflow as tf
import tensorflow_transform as tft

from tests.trainer.test_warm_start import HPARAMS
from trainer import export
from trainer import model as model_lib
from trainer import vocabulary
from trainer import warm_start


def _export(output, hparams, directory):
  tf.keras.utils.set_random_seed(5)
  model = model_lib.build_model(hparams, vocabulary.num_items(output),
                                vocabulary.num_intents(output))
  export.export_serving_model(model, output, hparams, directory, log=lambda _: None)
  return directory


@pytest.fixture(scope='module')
def bases(tiny_transform, tmp_path_factory):
  """Exports over the first catalogue: variant c with 1 layer (HPARAMS), and with 2 layers."""
  output = tft.TFTransformOutput(tiny_transform.transform_output)
  root = tmp_path_factory.mktemp('bases')
  return {'c1': _export(output, HPARAMS, str(root / 'c1')),
          'c2': _export(output, HPARAMS.replace(num_layers=2), str(root / 'c2'))}


@pytest.fixture(scope='module')
def new_vocabularies(drifted_transform):
  return vocabulary.vocabularies(tft.TFTransformOutput(drifted_transform.transform_output))


def _start(base, hparams, new, run_dir, damaged_base='fail'):
  logged = []
  done = warm_start.initial_weights(base, hparams, new, str(run_dir), logged.append,
                                    damaged_base=damaged_base)
  record = json.loads((run_dir / warm_start.RECORD_FILE).read_text())
  assert record['reason'] == done.reason and record['warm'] == done.warm
  return done, logged


def test_the_export_records_its_hyper_parameters(bases):
  with open(os.path.join(bases['c2'], warm_start.ASSETS_EXTRA, warm_start.HPARAMS_FILE)) as f:
    assert json.load(f) == json.loads(HPARAMS.replace(num_layers=2).to_json())


@pytest.mark.parametrize('base, hparams, reason', [
    ('c1', HPARAMS.replace(variant='a'), 'base is variant c, this training is variant a'),
    ('c1', HPARAMS.replace(variant='b'), 'base is variant c, this training is variant b'),
    ('c2', HPARAMS, 'base has 2 layers, this has 1'),
    ('c1', HPARAMS.replace(hidden_dim=16, ffn_dim=32),
     'base has hidden_dim 8, this has 16; base has ffn_dim 8, this has 32'),
    ('c1', HPARAMS.replace(repeat_bonus=False), 'base has repeat_bonus true, this has false'),
])
def test_a_base_of_another_variant_or_other_sizes_starts_cold_saying_so(
    bases, new_vocabularies, tmp_path, base, hparams, reason):
  done, logged = _start(bases[base], hparams, new_vocabularies, tmp_path)
  assert not done.warm
  assert done.reason == f'the base {bases[base]} is another model: {reason}'
  assert logged == [f'cold start: {done.reason}']


def test_the_same_model_still_warm_starts(bases, new_vocabularies, tmp_path):
  done, logged = _start(bases['c1'], HPARAMS, new_vocabularies, tmp_path)
  assert done.warm and done.reason == 'warm start from the base model'
  assert logged[0].startswith(f'warm start from {bases["c1"]}: ')


def test_an_older_export_without_its_hyper_parameters_is_judged_by_its_weights(
    bases, new_vocabularies, tmp_path):
  base = str(tmp_path / 'old')
  shutil.copytree(bases['c1'], base)
  os.remove(os.path.join(base, warm_start.ASSETS_EXTRA, warm_start.HPARAMS_FILE))
  done, _ = _start(base, HPARAMS.replace(hidden_dim=16), new_vocabularies, tmp_path / 'run')
  assert not done.warm
  assert done.reason.startswith('its weights do not fit this model (')
  assert done.reason.endswith('its sizes or variant differ (the base records no hparams.json '
                              'to say which)')


def _truncate_weights(base):
  [data] = tf.io.gfile.glob(os.path.join(base, 'variables', 'variables.data-*'))
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)


def _remove(relative):
  def damage(base):
    path = os.path.join(base, relative)
    (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
  return damage


def _write_garbage(relative):
  def damage(base):
    with open(os.path.join(base, relative), 'w') as f:
      f.write('{"variant": ')
  return damage


DAMAGES = {
    'truncated weights': (
        _truncate_weights,
        r'its weights cannot be read: variables/variables\.data-00000-of-00001 is truncated or '
        r'corrupt \('),
    'missing item vocabulary': (_remove('assets/item_id'),
                                r'assets/item_id \(its vocabulary\) is missing$'),
    'missing intent vocabulary': (_remove('assets/intent'),
                                  r'assets/intent \(its vocabulary\) is missing$'),
    'missing variables': (_remove('variables'),
                          r'its variables/ folder is missing \(the weights\)$'),
    'missing index': (_remove('variables/variables.index'),
                      r'variables/variables\.index is missing$'),
    'missing graph': (_remove('saved_model.pb'), r"saved_model\.pb is missing \(the folder holds "),
    'broken hyper-parameters': (_write_garbage('assets.extra/hparams.json'),
                                r'assets\.extra/hparams\.json is not JSON \('),
}


@pytest.mark.parametrize('case', list(DAMAGES))
def test_a_damaged_base_fails_or_starts_cold_as_set_naming_the_base_and_the_damage(
    bases, new_vocabularies, tmp_path, case):
  damage, what = DAMAGES[case]
  base = str(tmp_path / 'base')
  shutil.copytree(bases['c1'], base)
  damage(base)
  prefix = f'the base model {base} is damaged: '
  with pytest.raises(warm_start.DamagedBaseError) as raised:
    warm_start.initial_weights(base, HPARAMS, new_vocabularies, str(tmp_path / 'fail'),
                               lambda _: None)  # damaged_base defaults to 'fail'
  message = str(raised.value)
  assert message.startswith(f'warm start: {prefix}'), message
  assert message.endswith('. Replace or remove it, or set train.damaged_base to "cold" to train '
                          'from scratch'), message
  assert re.search(what, message.split(prefix)[1].split('. Replace')[0]), message

  done, logged = _start(base, HPARAMS, new_vocabularies, tmp_path / 'cold', damaged_base='cold')
  assert not done.warm and done.base_model == base
  assert done.reason.startswith(prefix) and done.reason.endswith(' (train.damaged_base: cold)')
  assert logged == [f'cold start: {done.reason}']


# Every character str.splitlines() splits on besides '\n' and '\r'.
SPLITLINES_CHARACTERS = ['\x0b', '\x0c', '\x1c', '\x1d', '\x1e', '\x85', '\u2028', '\u2029']


@pytest.mark.parametrize('char', SPLITLINES_CHARACTERS)
def test_vocabularies_are_read_as_transform_writes_them(tmp_path, char):
  terms = ['song_a', f'so{char}ng', 'song_c', f'{char}', 'song_e']
  os.makedirs(tmp_path / 'assets')
  (tmp_path / 'assets' / 'item_id').write_bytes(''.join(t + '\n' for t in terms).encode())
  assert warm_start.base_vocabulary(str(tmp_path), 'item_id') == terms


def test_a_base_whose_vocabulary_holds_such_a_term_still_warm_starts(bases, new_vocabularies,
                                                                     tmp_path):
  base = str(tmp_path / 'base')
  shutil.copytree(bases['c1'], base)
  path = os.path.join(base, 'assets', 'item_id')
  with open(path, encoding='utf-8') as f:
    terms = f.read().split('\n')[:-1]
  terms[1] = 'odd\u2028song\x85with\x1cbreaks'  # the same number of lines, one term renamed
  with open(path, 'w', encoding='utf-8', newline='') as f:
    f.write(''.join(t + '\n' for t in terms))
  done, _ = _start(base, HPARAMS, new_vocabularies, tmp_path / 'run')
  assert done.warm, done.reason
