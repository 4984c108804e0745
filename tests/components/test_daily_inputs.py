"""Daily runs that cannot be fooled (issue 27): partitions read only once complete, copies in
progress never read, a cache key from the files' content, ids that no vocabulary file can hold,
and plays that lie outside their partition's day. Each test asserts what happens and what is
said."""

import json
import os

import pytest

from components.play_log_example_gen import driver
from components.play_log_example_gen import input_files
from components.play_log_example_gen import play_log_reader as r
from contract import settings
from tests.components.test_play_log_example_gen import counts_of
from tests.components.test_play_log_example_gen import fingerprint
from tests.components.test_play_log_example_gen import read_quarantine
from tests.components.test_play_log_example_gen import run_executor
from tests.components.test_play_log_example_gen import write_csv

DAY_MS = 24 * 3600 * 1000
# 2026-11-30T00:00:00Z and the days after it.
DAYS = ('2026-11-30', '2026-12-01', '2026-12-02')
DAY0_MS = 1_795_996_800_000
DAILY = {'partition_pattern': settings.DAILY_PARTITION_PATTERN}


def write_days(logs, days, marker=(), plays_per_day=3):
  """A folder per day with part-0.csv (user u1's plays, at 01:00 of that day on), and the
  completion marker in the days named in `marker`."""
  for day in days:
    os.makedirs(logs / day, exist_ok=True)
    start = DAY0_MS + DAYS.index(day) * DAY_MS + 3600 * 1000
    write_csv(logs / day / 'part-0.csv', [['u1', f'{day}-i{k}', start + k * 1000, 190_000,
                                          200_000, 'on_demand'] for k in range(plays_per_day)])
    if day in marker:
      (logs / day / settings.PARTITION_MARKER).write_text('')


def find(logs, window=None, now=None, **completeness):
  return input_files.find_input_files(str(logs), settings.DAILY_PARTITION_PATTERN, window,
                                      input_files.Completeness(**completeness), now=now)


# --- 1. Partition completeness ------------------------------------------------------------------

def test_copies_in_progress_are_never_read_and_are_listed_as_ignored(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs / '_temporary' / '0')
  write_csv(logs / 'a.csv', [['u1', 'i1', DAY0_MS, 1000, 200_000, 'on_demand']])
  for name in ('p.csv._COPYING_', 'q.csv.tmp', 'r.csv.temp', 's.csv.inprogress', 't.partial',
               '_temporary/0/part-0.csv'):
    (logs / name).write_text('user_id,item_id,ts\nu1,cut-in-ha')
  found = input_files.find_input_files(str(logs))
  assert found.data == [str(logs / 'a.csv')]
  assert found.ignored == sorted(str(logs / name) for name in (
      'p.csv._COPYING_', 'q.csv.tmp', 'r.csv.temp', 's.csv.inprogress', 't.partial',
      '_temporary/0/part-0.csv'))


def test_an_incomplete_newest_day_fails_the_run_saying_which_and_why(tmp_path):
  logs = tmp_path / 'logs'
  # The day still being delivered: cut in half, no _SUCCESS yet, while the others have one.
  write_days(logs, DAYS, marker=DAYS[:2])
  with open(logs / DAYS[2] / 'part-0.csv', 'a') as f:
    f.write('u1,cut-off,1796263200000,1000,200000,recom')
  message = (f"input_base '{logs}': partition 2026-12-02 is not complete yet: no _SUCCESS in "
             'it (other partitions have one: 2026-11-30, 2026-12-01). Run again once it is '
             'delivered, or set ingest.incomplete_partitions to "skip" to train without it '
             "(ingest.partition_completeness: 'auto')")
  with pytest.raises(input_files.IncompletePartitionError) as raised:
    find(logs, window=2)
  assert str(raised.value) == message
  # The driver fails the same way, before any cache lookup: nothing is trained on it.
  with pytest.raises(input_files.IncompletePartitionError, match='partition 2026-12-02 is not '
                                                                 'complete yet'):
    driver.driver_properties({'input_base': str(logs), 'window_partitions': 2, **DAILY})
  # Once delivered (its marker written), it is read.
  (logs / DAYS[2] / settings.PARTITION_MARKER).write_text('')
  assert [p.name for p in find(logs, window=2).partitions] == list(DAYS[1:])


def test_skip_leaves_the_incomplete_day_out_lists_it_and_the_window_reaches_back(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS, marker=DAYS[:2])
  found = find(logs, window=2, on_incomplete='skip')
  assert [p.name for p in found.partitions] == ['2026-11-30', '2026-12-01']
  assert [(p.name, why) for p, why in found.partitions_incomplete] == [
      ('2026-12-02', 'no _SUCCESS in it (other partitions have one: 2026-11-30, 2026-12-01)')]
  assert found.partitions_outside_window == []
  assert all(DAYS[2] not in path for path in found.data)

  examples, _ = run_executor(tmp_path, logs, window_partitions=2, eval_plays_per_user=1,
                             incomplete_partitions='skip', **DAILY)
  assert json.loads(examples.get_string_custom_property('partitions')) == list(DAYS[:2])
  assert json.loads(examples.get_string_custom_property('partitions_incomplete')) == {
      '2026-12-02': 'no _SUCCESS in it (other partitions have one: 2026-11-30, 2026-12-01)'}
  assert counts_of(examples)['rows_read'] == 6


def test_without_markers_a_copy_in_progress_makes_its_day_incomplete(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS[:2])  # no marker anywhere: every day is complete ('auto')
  assert [p.name for p in find(logs).partitions] == list(DAYS[:2])
  os.makedirs(logs / DAYS[2])
  (logs / DAYS[2] / 'part-0.csv._COPYING_').write_text('user_id,item_id,ts\nu1,i')
  with pytest.raises(input_files.IncompletePartitionError,
                     match=r'partition 2026-12-02 is not complete yet: '
                           r'2026-12-02/part-0\.csv\._COPYING_ is still being written\. '):
    find(logs)
  found = find(logs, on_incomplete='skip')
  assert [p.name for p in found.partitions] == list(DAYS[:2])
  assert [p.name for p, _ in found.partitions_incomplete] == ['2026-12-02']
  assert str(logs / DAYS[2] / 'part-0.csv._COPYING_') in found.ignored


def test_marker_mode_needs_the_marker_in_every_day_of_the_window(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS, marker=DAYS[1:])
  assert [p.name for p in find(logs, window=2, mode='marker').partitions] == list(DAYS[1:])
  with pytest.raises(input_files.IncompletePartitionError,
                     match=r"partition 2026-11-30 is not complete yet: no _SUCCESS in it\. .*"
                           r"\(ingest.partition_completeness: 'marker'\)"):
    find(logs, window=3, mode='marker')
  # Another marker name, as a setting.
  (logs / DAYS[0] / '_DONE').write_text('')
  with pytest.raises(input_files.IncompletePartitionError, match='2026-12-02 is not complete '
                                                                 'yet: no _DONE in it'):
    find(logs, mode='marker', marker='_DONE')


def test_settled_mode_waits_until_no_file_of_the_day_changed_for_the_settle_time(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS)
  written = os.path.getmtime(logs / DAYS[2] / 'part-0.csv')
  for day in DAYS[:2]:
    os.utime(logs / day / 'part-0.csv', (written - 3600, written - 3600))
  with pytest.raises(input_files.IncompletePartitionError,
                     match=r'partition 2026-12-02 is not complete yet: 2026-12-02/part-0\.csv '
                           r'changed 60 s ago, less than partition_settle_seconds=600'):
    find(logs, now=written + 60, mode='settled', settle_seconds=600)
  assert len(find(logs, now=written + 601, mode='settled',
                  settle_seconds=600).partitions) == 3


def test_completeness_none_reads_every_day_as_it_is(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS, marker=DAYS[:1])
  assert len(find(logs, mode='none').partitions) == 3


# --- 2. Content fingerprints ---------------------------------------------------------------------

def test_a_day_redelivered_with_the_same_size_and_mtime_changes_the_fingerprint(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS[:1])
  path = logs / DAYS[0] / 'part-0.csv'
  properties = {'input_base': str(logs), **DAILY}
  first = fingerprint(properties)
  assert fingerprint(properties) == first  # stable
  stat = os.stat(path)
  corrected = path.read_bytes().replace(b'190000', b'010000')  # the same size, other plays
  path.write_bytes(corrected)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -a` keep it
  assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns
  assert fingerprint(properties) != first
  assert input_files.content_digest(str(path)).startswith('sha256:')


# --- 3. Ids that every file format can carry ------------------------------------------------------

# Every character str.splitlines splits on, the other C0 and C1 controls the issue names, and a few
# more: each inside a user id, an item id or an intent.
CONTROL_CHARACTERS = ['\n', '\r', '\x0b', '\x0c', '\x1c', '\x1d', '\x1e', '\x85', '\u2028',
                      '\u2029', '\x00', '\t', '\x1f', '\x7f', '\x9f']


def test_ids_with_line_breaks_or_control_characters_are_quarantined_with_their_own_reason(
    tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  rows = [{'user_id': 'u1', 'item_id': f'song{k}', 'ts': DAY0_MS + k, 'play_rate': 0.9}
          for k in range(40)]
  expected = {}
  for k, char in enumerate(CONTROL_CHARACTERS):
    column = ('item_id', 'user_id', 'intent')[k % 3]
    row = {'user_id': 'u2', 'item_id': f'song{k}', 'ts': DAY0_MS + 100 + k, 'play_rate': 0.9}
    row[column] = f'{column[:4]}{char}x'
    rows.append(row)
    expected[len(rows)] = (column, char)
  (logs / 'a.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  examples, quarantine = run_executor(tmp_path, logs, input_format='jsonl', max_bad_fraction=0.5,
                                      eval_plays_per_user=1)
  counts = counts_of(examples)
  assert counts['rows_read'] == 40 + len(CONTROL_CHARACTERS)
  assert counts['rows_quarantined'] == len(CONTROL_CHARACTERS)
  assert counts['rows_used'] == 40
  assert json.loads(examples.get_string_custom_property('quarantined_by_reason')) == {
      r.CONTROL_CHARACTER: len(CONTROL_CHARACTERS)}
  quarantined = {q['line']: q for q in read_quarantine(quarantine)}
  assert sorted(quarantined) == sorted(expected)
  for line, (column, char) in expected.items():
    detail = quarantined[line]['detail']
    assert quarantined[line]['reason'] == r.CONTROL_CHARACTER
    assert detail.startswith(f'{column} {column[:4] + char + "x"!r} holds U+{ord(char):04X} '), (
        detail)
    assert detail.endswith('which no vocabulary file can hold in one term')


def test_csv_ids_with_control_characters_are_quarantined_on_both_reading_paths(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # In CSV a line break ends the record, so the others: the column-wise path must send these rows
  # to the row-level rules rather than pass them.
  inline = [c for c in CONTROL_CHARACTERS if c not in '\n\r']
  lines = [f'u1,song{k},{DAY0_MS + k},190000,200000,on_demand' for k in range(10)]
  lines += [f'u1,so{c}ng,{DAY0_MS + 100 + k},190000,200000,on_demand'
            for k, c in enumerate(inline)]
  (logs / 'a.csv').write_text('user_id,item_id,ts,play_ms,duration_ms,intent\n'
                              + '\n'.join(lines) + '\n', encoding='utf-8')
  settings_ = r.ReadSettings('csv', r.column_mapping_lib.parse_column_mapping('canonical'),
                             r.TimestampRule(0, 2**62))
  blocks = list(r.read_file(str(logs / 'a.csv'), 0, settings_))
  quarantined = [q for b in blocks for q in b.quarantined]
  assert [q.reason for q in quarantined] == [r.CONTROL_CHARACTER] * len(inline)
  assert [q.line for q in quarantined] == list(range(12, 12 + len(inline)))
  assert sum(b.plays.num_rows for b in blocks) == 10


# --- 6. Plays outside their partition's day ------------------------------------------------------

def test_plays_outside_their_days_partition_are_counted_and_by_setting_quarantined(tmp_path):
  logs = tmp_path / 'logs'
  write_days(logs, DAYS[:2], plays_per_day=4)
  with open(logs / DAYS[1] / 'part-0.csv', 'a') as f:
    f.write(f'u1,late,{DAY0_MS + 3 * DAY_MS + 5},190000,200000,on_demand\n')  # on Dec 3rd
    f.write(f'u1,early,{DAY0_MS - 1},190000,200000,on_demand\n')  # on Nov 29th
  examples, _ = run_executor(tmp_path / 'count', logs, eval_plays_per_user=1, **DAILY)
  assert examples.get_int_custom_property('off_day_plays') == 2
  assert counts_of(examples)['rows_used'] == 10  # counted, still used

  examples, quarantine = run_executor(tmp_path / 'quarantine', logs, eval_plays_per_user=1,
                                      off_day_plays='quarantine', max_bad_fraction=0.5, **DAILY)
  counts = counts_of(examples)
  assert (counts['rows_read'], counts['rows_used'], counts['rows_quarantined']) == (10, 8, 2)
  assert examples.get_int_custom_property('off_day_plays') == 2
  rows = sorted(read_quarantine(quarantine), key=lambda q: q['line'])
  assert [(os.path.basename(q['source']), q['line'], q['reason']) for q in rows] == [
      ('part-0.csv', 6, r.OFF_PARTITION_DAY), ('part-0.csv', 7, r.OFF_PARTITION_DAY)]
  assert rows[0]['detail'] == (
      f'ts {DAY0_MS + 3 * DAY_MS + 5} = 2026-12-03T00:00:00.005000+00:00 is outside partition '
      "2026-12-01's day [2026-12-01T00:00:00+00:00, 2026-12-02T00:00:00+00:00)")
  assert json.loads(rows[1]['raw'])['item_id'] == 'early'
