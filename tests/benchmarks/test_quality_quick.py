"""benchmarks/quality.py --quick, run as its documented command line: every stage on tiny data,
and the table with a row per method (the figures themselves are not checked)."""

import os
import re

from contract import settings
from datagen import oracle
from tests.benchmarks.test_quick import NUMBER, REPO_ROOT, run_quick

# --quick trains variant c only; the oracle rows follow the generator's law.
ROWS = ('most popular', 'co-occurrence (previous play)', 'repeat (own history)',
        'oracle (generator law)', f'oracle, favourites in last {settings.HISTORY_LENGTH} plays',
        f'oracle, favourites inferred from last {settings.HISTORY_LENGTH} plays',
        *oracle.feedback_oracle_names(), 'c')


def test_quality_quick_prints_every_method_and_writes_no_results():
  results = os.path.join(REPO_ROOT, 'docs', 'results.md')
  before = os.stat(results).st_mtime_ns if os.path.exists(results) else None
  stdout = run_quick('quality.py')
  lines = stdout.splitlines()
  header = next(line for line in lines if line.startswith('| method | POS@10 |'))
  assert 'headroom POS@50' in header
  for name in ROWS:
    assert any(re.match(rf'\| {re.escape(name)} \| {NUMBER} ± {NUMBER} \|', line)
               for line in lines), (name, stdout[-3000:])
  assert '| c | ' in stdout and 'step 30' in stdout  # the time-to-quality curve
  assert 'What skips and intents are worth to the oracle on POS@50: ' in stdout
  assert 'written to' not in stdout
  assert (os.stat(results).st_mtime_ns if os.path.exists(results) else None) == before
