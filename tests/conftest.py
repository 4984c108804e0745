"""How `make test` spreads the suite over pytest-xdist workers: the longest test files first.

`--dist loadfile` runs each test file whole on one worker (its module and session fixtures are
built once) and queues the files by their number of tests, most first. The end-to-end,
benchmark and cluster files hold few tests that each take minutes, so they came last and one
worker ran them alone while the other had finished. Started first, the short files fill in
around them.
"""

import pytest

# Test files of several minutes each on 2 cores (pytest --durations, .ci/run), longest first.
LONGEST_FILES_FIRST = (
    'tests/e2e/test_daily_chain.py',
    'tests/benchmarks/test_quick.py',
    'tests/e2e/test_beam_s3.py',
    'tests/trainer/test_cluster.py',
    'tests/trainer/test_run.py',
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  """The loadfile scheduler, with LONGEST_FILES_FIRST at the head of its queue."""
  if config.getoption('dist') != 'loadfile':
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=g-import-not-at-top

  class LongestFilesFirst(LoadFileScheduling):

    def _assign_work_unit(self, node):
      for scope in reversed(LONGEST_FILES_FIRST):
        if scope in self.workqueue:
          self.workqueue.move_to_end(scope, last=False)
      super()._assign_work_unit(node)

  return LongestFilesFirst(config, log)
