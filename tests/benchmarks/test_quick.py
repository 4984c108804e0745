"""Every benchmark's --quick mode, run as its documented command line: each must finish and print
its tables with the load average beside them, so that the commands docs/ prints beside the
figures keep working. The figures themselves are not checked (tiny sizes, a shared machine).

benchmarks/quality.py's --quick has a test of its own.
"""

import os
import re
import subprocess
import sys
from typing import List

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_SECONDS = 600
LOAD_AVERAGE = re.compile(r'load average[^\n]*\d+\.\d\d / \d+\.\d\d / \d+\.\d\d')
NUMBER = r'[\d,]+(\.\d+)?'


def run_quick(script: str) -> str:
  """Runs `python benchmarks/<script> --quick` from the repository root; returns its stdout."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT)
  result = subprocess.run([sys.executable, os.path.join('benchmarks', script), '--quick'],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
  assert result.returncode == 0, f'{script} --quick failed:\n{result.stdout[-3000:]}\n' \
                                 f'{result.stderr[-5000:]}'
  assert '(--quick: a smoke run; the figures are not meaningful)' in result.stdout
  assert LOAD_AVERAGE.search(result.stdout), result.stdout[-3000:]
  return result.stdout


def table_rows(stdout: str, header: str, names: List[str]) -> None:
  """Asserts that a table whose header line starts with `header` is printed with one row per
  name, each giving a figure."""
  lines = stdout.splitlines()
  assert any(line.startswith(header) for line in lines), (header, stdout[-3000:])
  for name in names:
    assert any(re.match(re.escape(name) + r'\s+\|?\s*' + NUMBER, line) for line in lines), (
        name, stdout[-3000:])


def test_train_speed_quick_prints_a_table_per_catalogue_and_the_scaling():
  stdout = run_quick('train_speed.py')
  assert stdout.count('Training speed at ') == 2  # the two --quick catalogues
  table_rows(stdout, 'row ', ['project (LazyAdam)', 'project (tf_keras Adam)',
                              'reference (plain tf_keras)'])
  assert 'Catalogue scaling: ms per step' in stdout
  assert 'load average (1/5/15 min) after the timed passes' in stdout


def test_scale_quick_prints_the_strategies_and_the_catalogue_tables():
  stdout = run_quick('scale.py')
  table_rows(stdout, 'configuration', ['one process', '1 PS + 1 worker', '2 PS + 2 workers'])
  table_rows(stdout, 'optimizer', ['lazy_adam', 'adam'])
  assert '(projected, linear)' in stdout


def test_ingest_throughput_quick_prints_the_stages_and_the_bytes_per_event():
  stdout = run_quick('ingest_throughput.py')
  table_rows(stdout, 'stage', ['reference: pyarrow.csv.read_csv',
                               'PlayLogExampleGen executor (DirectRunner)',
                               'Transform executor (DirectRunner)'])
  table_rows(stdout, 'output', ['PlayLogExampleGen', 'Transform'])
  # One file in byte ranges over 1 and 2 workers.
  assert re.search(r'One [\d.,]+ MB CSV file in byte ranges of .* \(\d+ ranges\)', stdout), (
      stdout[-3000:])
  table_rows(stdout, 'workers', ['1', '2'])


def test_serving_quick_prints_the_latency_tables_and_the_summary():
  stdout = run_quick('serving.py')
  assert re.search(r'items, batch \d+: median over', stdout), stdout[-3000:]
  table_rows(stdout, 'row ', ['numpy floor'])
  assert '\nSummary: p50 latency in ms' in stdout


def test_daily_quick_prints_the_ingestion_and_the_warm_start_tables():
  stdout = run_quick('daily.py')
  lines = stdout.splitlines()
  assert any(line.startswith('| day | window of') for line in lines), stdout[-3000:]
  for day in (1, 2, 3):  # --quick's days, each a row: | day (YYYY-MM-DD) | seconds ...
    assert any(re.match(rf'\| {day} \(\d{{4}}-\d\d-\d\d\) \| {NUMBER}', line) for line in lines), (
        day, stdout[-3000:])
  # The partition cache: a row per day, its examples those of the run without the cache.
  assert any(line.startswith('| day | newest day alone: s') for line in lines), stdout[-3000:]
  for day in (1, 2, 3):
    assert any(re.match(rf'\| {day} \(\d{{4}}-\d\d-\d\d\) \| {NUMBER}.* \| yes \|', line)
               for line in lines), (day, stdout[-3000:])
  assert 'cached / newest day alone from day 3 on: at most' in stdout
  assert any(line.startswith('| seed | cold POS@50') for line in lines), stdout[-3000:]
  assert any(re.match(rf'\| 0 \| {NUMBER} \|', line) for line in lines), stdout[-3000:]
  assert "share of the cold run's time: mean" in stdout


def test_fingerprint_quick_prints_the_hash_against_a_plain_read():
  stdout = run_quick('fingerprint.py')
  table_rows(stdout, 'what ', ['content_digest (SHA-256)', 'read only', 'path, size, mtime (old)'])
