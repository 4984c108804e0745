"""The single place of settings: defaults, JSON overrides, and errors at load that name the file,
the key, the value and what is allowed."""

import ast
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from contract import settings
from contract.typed import SettingError

REPO = pathlib.Path(__file__).resolve().parents[2]


def load(tmp_path, values, monkeypatch):
  path = tmp_path / 'config.json'
  path.write_text(values if isinstance(values, str) else json.dumps(values))
  monkeypatch.setenv(settings.CONFIG_ENV, str(path))
  return settings.load_config()


def test_json_overrides_only_what_it_names(tmp_path, monkeypatch):
  config = load(tmp_path, {'ingest': {'history_length': 30},
                           'gate': {'ns': [5, 20], 'gate_n': 5}}, monkeypatch)
  assert config.ingest.history_length == 30
  assert config.ingest.pos_threshold == settings.IngestConfig().pos_threshold
  assert config.gate.ns == (5, 20)
  assert config.train == dataclasses.replace(
      settings.TrainConfig(), hparams=settings.HParams(history_length=30))


def test_no_file_means_defaults(monkeypatch):
  monkeypatch.delenv(settings.CONFIG_ENV, raising=False)
  assert settings.load_config() == settings.PipelineConfig()


def test_round_trip_through_a_dict():
  config = settings.PipelineConfig.from_dict(
      {'train': {'train_steps': 7, 'hparams': {'batch_size': 4}, 'tfjob': {}}})
  assert settings.PipelineConfig.from_dict(config.to_dict()) == config


def test_the_trainer_gets_the_history_labels_and_steps_of_the_pipeline():
  config = settings.PipelineConfig.from_dict(
      {'ingest': {'history_length': 20, 'pos_threshold': 0.7}, 'train': {'train_steps': 9}})
  assert (config.train.hparams.history_length, config.train.hparams.pos_threshold,
          config.train.hparams.train_steps) == (20, 0.7, 9)


# Each bad value the faults issue found, and the message that now names it at load.
BAD_CONFIGS = [
    ({'train': {'train_steps': -1}}, r'train\.train_steps: -1 is not allowed; must be >= 1'),
    ({'vocabulary': {'item_min_count': '2'}},
     r"vocabulary\.item_min_count: '2' is not an integer"),
    ({'train': {'hparams': {'batch_size': '128'}}},
     r"train\.hparams\.batch_size: '128' is not an integer"),
    ({'train': {'hparams': {'lerning_rate': 0.1}}},
     r"train\.hparams\.lerning_rate: unknown setting; did you mean 'learning_rate'\?"),
    ({'train': {'hparams': {'history_length': 20}}},
     r'train\.hparams\.history_length: set it as ingest\.history_length instead'),
    ({'train': {'hparams': {'hidden_dim': 33}}},
     r'train\.hparams\.hidden_dim: 33 is not allowed; must be divisible by num_heads \(2\)'),
    ({'train': {'hparams': {'unique_gather': 1}}},
     r'train\.hparams\.unique_gather: 1 is not true or false'),
    ({'train': {'tfjob': {'replicas': {'Worker': '4'}}}},
     r"train\.tfjob\.replicas\.Worker: '4' is not an integer"),
    ({'train': {'tfjob': {'namespace': 'Play Recall'}}},
     r"train\.tfjob\.namespace: 'Play Recall' is not allowed; must be a Kubernetes namespace"),
    ({'train': {'tfjob': 4}}, r'train\.tfjob: expected an object with keys from'),
    ({'gate': {'ns': 50}}, r'gate\.ns: 50 is not a list'),
    ({'gate': {'ns': [10, 100], 'gate_n': 50}},
     r'gate\.gate_n: 50 is not allowed; choose one of \[10, 100\]'),
    ({'gate': {'pos_floor': 'high'}}, r"gate\.pos_floor: 'high' is not a finite number"),
    ({'ingest': {'neg_threshold': 0.9}},
     r'ingest\.neg_threshold: 0\.9 is not allowed; need 0 <= neg_threshold < pos_threshold'),
    ({'ingest': {'eval_fraction': 0.1, 'eval_plays_per_user': 2}},
     r'ingest\.eval_fraction: .* give at most one of'),
    ({'ingest': {'ts_unit': 'us'}}, r"ingest\.ts_unit: 'us' is not allowed; choose one of"),
    ({'pipeline_name': '../elsewhere'},
     r"pipeline_name: '\.\./elsewhere' is not allowed; letters, digits, _ and - only"),
    ({'ingest': []}, r'ingest: expected an object with keys from'),
    ({'ingest': {'partition_pattern': '{YYYY}-{MM}'}},
     r"ingest\.partition_pattern: '\{YYYY\}-\{MM\}' is not allowed; must hold \{SPAN\} once, "
     r'or each of \{YYYY\} \{MM\} \{DD\} once'),
    ({'ingest': {'partition_pattern': 'logs/span-{SPAN}'}},
     r"ingest\.partition_pattern: .* names one top-level folder or file: no \"/\""),
    ({'ingest': {'window_partitions': 3}},
     r'ingest\.window_partitions: 3 is not allowed; needs partition_pattern'),
    ({'ingest': {'partition_pattern': 'span-{SPAN}', 'window_partitions': 0}},
     r'ingest\.window_partitions: 0 is not allowed; must be >= 1'),
    ({'train': {'warm_start_steps': 100}},
     r'train\.warm_start_steps: 100 is not allowed; needs warm_start: true'),
]


@pytest.mark.parametrize('values, message', BAD_CONFIGS)
def test_a_bad_value_fails_at_load_naming_file_key_value_and_rule(tmp_path, monkeypatch, values,
                                                                  message):
  with pytest.raises(SettingError, match=f'^{tmp_path / "config.json"}: {message}'):
    load(tmp_path, values, monkeypatch)


def test_a_json_syntax_error_names_the_file_and_line(tmp_path, monkeypatch):
  with pytest.raises(SettingError, match=r'config\.json:3:1: not valid JSON'):
    load(tmp_path, '{"ingest": {\n  "history_length": 30,\n}}', monkeypatch)
  monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / 'missing.json'))
  with pytest.raises(SettingError, match=r'missing\.json: cannot read the config file'):
    settings.load_config()


def test_settings_are_checked_when_built_in_code_too():
  with pytest.raises(SettingError, match=r'^batch_size: 0 is not allowed; must be >= 1'):
    settings.HParams(batch_size=0)
  with pytest.raises(SettingError, match=r'^train\.hparams\.variant: .d. is not allowed'):
    settings.PipelineConfig(train={'hparams': {'variant': 'd'}})
  assert settings.GateConfig(pos_floor=0).pos_floor == 0.0  # JSON's 0 is a float setting


def test_the_contract_package_imports_nothing_outside_the_standard_library():
  code = ('import sys; import contract.settings, contract.features, contract.typed, '
          'contract.storage; '
          'print(sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tfx", "apache_beam", "numpy", "pyarrow", "yaml")))')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                       check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert out.stdout.strip() == '[]'


def _setting_names():
  names = set()
  for cls in (settings.IngestConfig, settings.VocabularyConfig, settings.HParams,
              settings.TFJobConfig, settings.TrainConfig, settings.GateConfig):
    names |= {f.name for f in dataclasses.fields(cls)}
  # The data generator's seed is the generator's own setting, not the trainer's.
  return names - {'hparams', 'tfjob', 'seed'}


def _literal_definitions(path: pathlib.Path, names):
  """(line, name) of each place in a module that gives a setting a literal value of its own: a
  module constant, a class field, or a keyword default."""
  tree = ast.parse(path.read_text(), str(path))
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      targets, value = [node.target.id], node.value
    elif isinstance(node, ast.Assign):
      names_and_values = []
      for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
          names_and_values += zip(target.elts, node.value.elts)  # A, B = 1, 2
        else:
          names_and_values.append((target, node.value))
      found += [(node.lineno, t.id) for t, v in names_and_values
                if isinstance(t, ast.Name) and _is_setting(t.id, names)
                and isinstance(v, ast.Constant) and v.value is not None]
      continue
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      arguments = node.args.args + node.args.kwonlyargs
      defaults = ([None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                  + node.args.kw_defaults)
      found += [(node.lineno, a.arg) for a, d in zip(arguments, defaults)
                if a.arg in names and isinstance(d, ast.Constant) and d.value is not None]
      continue
    else:
      continue
    if isinstance(value, ast.Constant) and value.value is not None:
      found += [(node.lineno, t) for t in targets if _is_setting(t, names)]
  return found


def _is_setting(name: str, names) -> bool:
  """A setting's own name, or its module constant (history_length, HISTORY_LENGTH)."""
  return name in names or (name.isupper() and name.lower() in names)


def test_every_setting_is_defined_only_in_the_contract_package():
  names = _setting_names()
  sources = [p for p in REPO.rglob('*.py')
             if not {'.venv', 'tests', 'contract', 'build'} & set(
                 p.relative_to(REPO).parts)]
  redefined = [f'{p.relative_to(REPO)}:{line}: {name}'
               for p in sources for line, name in _literal_definitions(p, names)]
  assert not redefined, 'settings given their own value outside contract/settings.py:\n' + (
      '\n'.join(redefined))
