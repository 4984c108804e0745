"""pipeline.summary on a metadata store written here: which run it reads, what it prints of each
output and how training started (the gate's report and plot of a real TFMA output:
tests/evaluation/test_report.py, beside the TFMA runs it reuses)."""

import io
import os

import pytest

from pipeline import summary
from tests.pipeline.mlmd_store import PIPELINE, Store
from trainer import warm_start


@pytest.fixture
def store(tmp_path):
  return Store(str(tmp_path / 'metadata.db'))


def _print(store, reports_dir) -> str:
  return store.summary(reports_dir)


def _model_run(directory, record: warm_start.WarmStart) -> str:
  os.makedirs(directory)
  with open(os.path.join(directory, warm_start.RECORD_FILE), 'w') as f:
    f.write(record.to_json())
  return str(directory)


def test_prints_the_newest_run_of_the_pipeline_with_its_counts_and_the_push(store, tmp_path):
  store.add_run(PIPELINE, 'old', [('Examples', '/old/examples', {'rows_read': 1})])
  warm = warm_start.WarmStart(base_model='/base/Format-Serving',
                              initial_weights='/run/warm_start/initial', reason='',
                              items_kept=380, items_new=20, items_dropped=7, intents_kept=3)
  store.add_run(PIPELINE, 'new', [
      ('Examples', '/new/examples', {'rows_read': 5000, 'rows_used': 4990,
                                     'rows_quarantined': 10, 'tfx_version': '1.16.0',
                                     'span': 19753}),
      ('ModelRun', _model_run(tmp_path / 'model_run', warm), {}),
      ('ModelBlessing', '/new/blessing', {'blessed': 1, 'baseline_model_id': 3}),
      ('PushedModel', '/new/pushed', {'pushed': 1, 'pushed_destination': '/serving/17',
                                      'pushed_version': '17', 'state': 'published'}),
  ])
  store.add_run('another_pipeline', 'newest', [('Examples', '/other/examples',
                                                 {'rows_read': 2})])
  out = _print(store, tmp_path / 'reports')
  lines = out.splitlines()
  assert lines[0] == f'Latest run of {PIPELINE}:'
  assert '/new/examples' in out and '/old/examples' not in out and '/other/' not in out
  for shown in ('rows_read = 5000', 'rows_used = 4990', 'rows_quarantined = 10', 'blessed = 1',
                'pushed = 1', 'pushed_destination = /serving/17', 'pushed_version = 17'):
    assert any(line.strip() == shown for line in lines), shown
  # TFX's bookkeeping is left out, and only the blessing's and the push's own properties shown.
  for hidden in ('tfx_version', 'span', 'state', 'baseline_model_id'):
    assert f'{hidden} =' not in out, hidden
  assert (f'warm start from /base/Format-Serving: 380 items keep their vectors, 20 new ones '
          'start fresh, 7 dropped') in out
  order = [next(i for i, line in enumerate(lines) if line.strip().startswith(type_name))
           for type_name in ('Examples', 'ModelRun', 'ModelBlessing', 'PushedModel')]
  assert order == sorted(order), 'in pipeline order'
  assert not os.path.exists(tmp_path / 'reports'), 'no evaluation, no plot'


def test_a_cold_start_says_why(store, tmp_path):
  cold = warm_start.WarmStart(base_model=None, initial_weights=None,
                              reason='no base model (the first training)')
  store.add_run(PIPELINE, 'run', [('ModelRun', _model_run(tmp_path / 'model_run', cold), {})])
  assert 'cold start: no base model (the first training)' in _print(store, tmp_path)


def test_a_store_without_runs_of_the_pipeline_is_a_clear_error(store, tmp_path):
  store.add_run('another_pipeline', 'run', [('Examples', '/other/examples', {})])
  with pytest.raises(SystemExit, match="no run of pipeline 'playrecall'"):
    _print(store, tmp_path)


def test_main_without_a_metadata_store_says_to_run_the_pipeline(tmp_path, monkeypatch):
  monkeypatch.setenv('PLAYRECALL_HOME', str(tmp_path))
  monkeypatch.delenv('PLAYRECALL_CONFIG', raising=False)
  with pytest.raises(SystemExit, match='no metadata store at .*run the pipeline first'):
    summary.main([])


def test_main_reads_the_store_under_playrecall_home(tmp_path, monkeypatch):
  home = tmp_path / 'home'
  path = home / 'metadata' / PIPELINE / 'metadata.db'
  os.makedirs(path.parent)
  Store(str(path)).add_run(PIPELINE, 'run', [('Examples', '/e', {'rows_read': 42})])
  monkeypatch.setenv('PLAYRECALL_HOME', str(home))
  monkeypatch.delenv('PLAYRECALL_CONFIG', raising=False)
  monkeypatch.delenv('PLAYRECALL_PIPELINE_ROOT', raising=False)
  monkeypatch.delenv('PLAYRECALL_SERVING_MODEL_DIR', raising=False)
  monkeypatch.delenv('PLAYRECALL_DATA', raising=False)
  out = io.StringIO()
  # print_summary's default output is the sys.stdout of when it was defined.
  monkeypatch.setattr(summary.print_summary, '__defaults__', (out,))
  summary.main([])
  assert 'rows_read = 42' in out.getvalue()
