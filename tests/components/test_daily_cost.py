"""A daily run's cost follows the new day (issue 24, part 4): validated partitions come from a
cache keyed by their content and validation settings, a large file is read in byte ranges by
several readers, and the eval split is bounded by a sample of users. Each test checks that the
output is what a run without the shortcut writes."""

import glob
import json
import os
import re

import pytest

from components.play_log_example_gen import defaults
from components.play_log_example_gen import executor
from components.play_log_example_gen import input_files
from components.play_log_example_gen import partition_cache
from components.play_log_example_gen import play_log_reader as r
from components.play_log_example_gen import user_examples
from contract import features
from contract import settings
from contract.typed import SettingError
from tests.components.test_daily_inputs import DAILY
from tests.components.test_daily_inputs import DAYS
from tests.components.test_daily_inputs import write_days
from tests.components.test_play_log_example_gen import counts_of
from tests.components.test_play_log_example_gen import read_quarantine
from tests.components.test_play_log_example_gen import read_split
from tests.components.test_play_log_example_gen import run_executor

T0 = 1_700_000_000_000
# Counts that say how the run read its input, not what it read.
HOW_READ = ('partitions_from_cache', 'partitions_parsed')
DAY_START = [1_795_996_800_000 + k * 24 * 3600 * 1000 for k in range(3)]  # of DAYS, epoch ms
SETTINGS = dict(eval_plays_per_user=1, max_bad_fraction=0.5, **DAILY)


def output_files(examples):
  """{path under the examples: bytes} of every split's files."""
  return {os.path.relpath(path, examples.uri): open(path, 'rb').read()
          for path in sorted(glob.glob(os.path.join(examples.uri, 'Split-*', '*')))}


def quarantined(quarantine):
  return sorted((q['source'], q['line'], q['reason'], q['detail'], q['raw'])
                for q in read_quarantine(quarantine))


def properties(artifact):
  """Every custom property of the artifact: {name: value}."""
  return {name: artifact.get_custom_property(name)
          for name in artifact.mlmd_artifact.custom_properties}


def what_was_read(examples, quarantine):
  """The run's output: the examples' bytes, the quarantined rows, the counts and settings
  recorded on both artifacts."""
  recorded = [{k: v for k, v in properties(a).items() if k not in HOW_READ}
              for a in (examples, quarantine)]
  return output_files(examples), quarantined(quarantine), recorded


def read_from_cache(examples):
  """(partitions read from the cache, partitions parsed)."""
  return tuple(examples.get_int_custom_property(name) for name in HOW_READ)


def write_daily_log(logs):
  """Three days of two users, with a blank line, a row that is not a number, a quoted field, a
  duplicate and an id holding a line separator (U+2028) in the middle day."""
  write_days(logs, DAYS, plays_per_day=6)
  day = DAY_START[1]
  with open(logs / DAYS[1] / 'part-0.csv', 'a', encoding='utf-8') as f:
    f.write(f'\nu2,"song, with a comma",{day + 5},150000,200000,recommend\n')
    f.write(f'u2,x,{day + 6},abc,200000,on_demand\n')
    f.write(f'u2,line\u2028separator,{day + 7},150000,200000,recommend\n')
    f.write(f'u1,{DAYS[1]}-i0,{day + 3600 * 1000},190000,200000,on_demand\n')


def run(tmp_path, name, logs, cache, **ingest):
  return run_executor(tmp_path / name, logs, partition_cache_dir=str(cache),
                      **{**SETTINGS, **ingest})


def entries(cache):
  return sorted(glob.glob(os.path.join(cache, '*', '*', partition_cache.ENTRY_MANIFEST)))


def test_a_cached_run_writes_what_an_uncached_run_writes(tmp_path):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  uncached = run_executor(tmp_path / 'uncached', logs, partition_cache=False, **SETTINGS)
  first = run(tmp_path, 'first', logs, cache)
  assert read_from_cache(first[0]) == (0, 3)
  assert len(entries(cache)) == 3
  second = run(tmp_path, 'second', logs, cache)
  assert read_from_cache(second[0]) == (3, 0)
  reference = what_was_read(*uncached)
  assert reference[0] and reference[1]  # examples and quarantined rows to compare
  assert what_was_read(*first) == reference
  assert what_was_read(*second) == reference  # byte for byte, counts and quarantine alike
  counts = properties(second[0])
  assert (counts['rows_read'], counts['rows_quarantined'], counts['blank_lines']) == (22, 3, 1)
  assert json.loads(second[0].get_string_custom_property('quarantined_by_reason')) == {
      r.BAD_TYPE: 1, r.CONTROL_CHARACTER: 1, r.DUPLICATE_EVENT: 1}


def test_a_changed_partition_is_parsed_again_and_the_others_come_from_the_cache(tmp_path):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  run(tmp_path, 'first', logs, cache)
  path = logs / DAYS[2] / 'part-0.csv'
  stat = os.stat(path)
  path.write_bytes(path.read_bytes().replace(b'190000', b'010000'))  # the same size, other plays
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  again = run(tmp_path, 'again', logs, cache)
  assert read_from_cache(again[0]) == (2, 1)
  uncached = run_executor(tmp_path / 'uncached', logs, partition_cache=False, **SETTINGS)
  assert what_was_read(*again) == what_was_read(*uncached)
  # A setting validation reads is part of the key: every partition is parsed again.
  other = run(tmp_path, 'other', logs, cache, min_ts_ms=1)
  assert read_from_cache(other[0])[1] == 3


@pytest.mark.parametrize('damage', ['no_manifest', 'truncated_piece', 'garbage_manifest',
                                    'missing_piece'])
def test_a_half_or_damaged_entry_is_ignored_and_rebuilt(tmp_path, damage):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  reference = what_was_read(*run(tmp_path, 'first', logs, cache))
  manifest_path = [m for m in entries(cache) if f'/{DAYS[1]}/' in m][0]
  entry = os.path.dirname(manifest_path)
  piece = json.load(open(manifest_path))['pieces'][0]
  if damage == 'no_manifest':  # a run killed after writing the pieces, before the commit
    os.remove(manifest_path)
  elif damage == 'truncated_piece':
    plays = os.path.join(entry, piece['plays'])
    open(plays, 'r+b').truncate(os.path.getsize(plays) // 2)
  elif damage == 'garbage_manifest':
    open(manifest_path, 'w').write('{"key": ')
  else:
    os.remove(os.path.join(entry, piece['quarantined']))
  again = run(tmp_path, 'again', logs, cache)
  assert read_from_cache(again[0]) == (2, 1)
  assert what_was_read(*again) == reference
  # Rebuilt: whole again, and nothing it does not list is left in its folder.
  manifest = json.load(open(manifest_path))
  listed = {partition_cache.ENTRY_MANIFEST} | {p[k] for p in manifest['pieces']
                                         for k in ('plays', 'quarantined') if p[k]}
  assert set(os.listdir(entry)) == listed
  third = run(tmp_path, 'third', logs, cache)
  assert read_from_cache(third[0])[0] == 3
  assert what_was_read(*third) == reference


def plan_of(logs, cache, known_digests=None):
  """The read plan the executor makes, before its pipeline, for the daily log with the cache."""
  ingest = settings.IngestConfig.from_dict(
      {**SETTINGS, 'input_format': 'csv', 'partition_cache_dir': str(cache)})
  found = input_files.find_input_files(str(logs), ingest.partition_pattern,
                                       ingest.window_partitions,
                                       input_files.Completeness.of(ingest))
  return executor.read_plan(found, executor.file_sizes(found.data), ingest, 2**62, str(cache),
                            known_digests)


def count_hashed_files(monkeypatch):
  """The paths input_files.content_digest reads from now on, one entry per call."""
  hashed, content_digest = [], input_files.content_digest

  def counted(path):
    hashed.append(path)
    return content_digest(path)
  monkeypatch.setattr(input_files, 'content_digest', counted)
  return hashed


def test_with_the_drivers_digests_the_executor_hashes_no_input_file_again(tmp_path,
                                                                         monkeypatch):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  files = sorted(str(path) for path in logs.glob('*/*.csv'))
  hashed = count_hashed_files(monkeypatch)
  # Without the driver (the benchmarks, most tests), the executor hashes each file itself.
  alone = run(tmp_path, 'alone', logs, cache)
  assert sorted(hashed) == files
  # As a pipeline runs it: the driver hashes each file once, the executor none again, and the
  # keys it makes of the driver's digests are those it made of its own.
  del hashed[:]
  driven = run(tmp_path, 'driven', logs, cache, with_driver=True)
  assert sorted(hashed) == files
  assert read_from_cache(driven[0]) == (3, 0)
  assert what_was_read(*driven) == what_was_read(*alone)
  # A file the driver did not hand over (one delivered in between) is hashed, alone.
  digests = input_files.content_digests(files)
  del hashed[:]
  plan = plan_of(logs, cache, {path: digests[path] for path in files[1:]})
  assert hashed == files[:1]
  assert len(plan.partitions_from_cache) == 3


@pytest.mark.parametrize('kind', ['plays', 'quarantined'])
def test_a_piece_damaged_in_place_fails_the_run_naming_it_and_the_next_run_rebuilds_it(
    tmp_path, monkeypatch, kind):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  reference = what_was_read(*run(tmp_path, 'first', logs, cache))
  manifest_path = [m for m in entries(cache) if f'/{DAYS[1]}/' in m][0]
  piece = [p for p in json.load(open(manifest_path))['pieces'] if p['quarantined']][0]
  damaged = os.path.join(os.path.dirname(manifest_path), piece[kind])
  with open(damaged, 'r+b') as f:  # one byte flipped: the same size
    f.seek(os.path.getsize(damaged) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  # Before the run the entries are checked without reading a piece: manifests and sizes only.
  opened, open_file = [], partition_cache.FileSystems.open

  def counted_open(path, *args, **kwargs):
    opened.append(path)
    return open_file(path, *args, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(partition_cache.FileSystems, 'open', staticmethod(counted_open))
    assert len(plan_of(logs, cache).partitions_from_cache) == 3
  assert sorted(opened) == entries(cache)
  # The worker that reads the piece checks its digest: the run fails naming the file.
  with pytest.raises(Exception, match=re.escape(f'partition cache: {damaged} is not the piece '
                                                'its manifest lists')):
    run(tmp_path, 'damaged', logs, cache)
  assert not os.path.exists(manifest_path)
  again = run(tmp_path, 'again', logs, cache)
  assert read_from_cache(again[0]) == (2, 1)
  assert what_was_read(*again) == reference


def test_an_entry_with_a_ts_past_the_clocks_bound_is_parsed_again(tmp_path):
  """With max_ts_ms None the bound moves with the clock: a play quarantined as in the future
  may be accepted by a later run, so its partition is never taken from the cache."""
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  with open(logs / DAYS[0] / 'part-0.csv', 'a') as f:
    f.write(f'u1,future,{T0 * 10},190000,200000,on_demand\n')
  run(tmp_path, 'first', logs, cache)
  again = run(tmp_path, 'again', logs, cache)
  assert read_from_cache(again[0]) == (2, 1)
  # With a fixed bound, the bound is part of the key and the entry is reused.
  run(tmp_path, 'fixed', logs, cache, max_ts_ms=T0 * 2)
  fixed = run(tmp_path, 'fixed_again', logs, cache, max_ts_ms=T0 * 2)
  assert read_from_cache(fixed[0])[0] == 3


def test_partitions_that_left_the_window_leave_the_cache(tmp_path):
  logs, cache = tmp_path / 'logs', tmp_path / 'cache'
  write_daily_log(logs)
  run(tmp_path, 'first', logs, cache, window_partitions=3)
  run(tmp_path, 'second', logs, cache, window_partitions=2)
  assert sorted(os.listdir(cache)) == list(DAYS[1:])


# --- Byte ranges ---------------------------------------------------------------------------------

def csv_log(path):
  """A CSV with a byte-order mark, CRLF line ends, blank lines, quoted fields (one with a comma,
  one with an escaped quote), an open quote and a ts that is no number."""
  lines = ['user_id,item_id,ts,play_ms,duration_ms,intent']
  for k in range(120):
    kind = k % 11
    if kind == 3:
      lines.append('')
    elif kind == 5:
      lines.append(f'u{k % 4},"it,em ""{k}""",{T0 + k},100000,200000,on_demand')
    elif kind == 7:
      lines.append(f'u{k % 4},"open,{T0 + k},100000,200000,on_demand')
    elif kind == 9:
      lines.append(f'u{k % 4},i{k},noon,100000,200000,on_demand')
    else:
      lines.append(f'u{k % 4},i{k},{T0 + k},{1000 * k},200000,recommend')
  path.write_bytes(('\ufeff' + '\r\n'.join(lines) + '\r\n').encode('utf-8'))


def jsonl_log(path):
  """JSON lines whose seq key appears in one late line only, with bad JSON and blank lines."""
  lines = []
  for k in range(120):
    if k % 13 == 4:
      lines.append('{"user_id": "u1", "item_id": ')
    elif k % 13 == 8:
      lines.append('')
    else:
      row = {'user_id': f'u{k % 3}', 'item_id': f'i{k}', 'ts': T0 + k, 'play_rate': k / 120}
      lines.append(json.dumps({**row, **({'seq': 7} if k == 110 else {})}))
  path.write_text('\n'.join(lines))  # no line break after the last line


def read_in_ranges(path, input_format, range_bytes):
  """The blocks of every byte range of the file, each numbered as the executor numbers it."""
  read_settings = r.ReadSettings(input_format,
                                 r.column_mapping_lib.parse_column_mapping('canonical'),
                                 r.TimestampRule(0, 2**62))
  size = os.path.getsize(path)
  ranges = input_files.byte_ranges(size, range_bytes)
  keys = None
  if input_format == 'jsonl':
    wanted = r.json_source_keys(read_settings.mapping)
    keys = sorted(set().union(*(r.json_keys_in_range(str(path), r.ByteRange(s, e), wanted)
                                for s, e in ranges)))
  blocks, before = [], 0
  for start, end in ranges:
    blocks += r.read_file(str(path), 0, read_settings, r.ByteRange(start, end, before), keys)
    before += r.count_newlines(str(path), start, size if end is None else end)
  return len(ranges), blocks


def rows_of(blocks):
  plays = sorted(tuple(play.values()) for b in blocks for play in b.plays.to_pylist())
  bad = sorted((q.line, q.reason, q.detail, q.raw) for b in blocks for q in b.quarantined)
  return plays, bad, [sum(getattr(b, name) for b in blocks) for name in (
      'rows_read', 'blank_lines', 'capped_play_rates', 'default_play_rates')]


@pytest.mark.parametrize('input_format, write', [('csv', csv_log), ('jsonl', jsonl_log)])
def test_byte_ranges_give_the_rows_and_line_numbers_of_the_whole_file(tmp_path, input_format,
                                                                      write):
  path = tmp_path / f'log.{input_format}'
  write(path)
  _, whole = read_in_ranges(path, input_format, os.path.getsize(path))
  expected = rows_of(whole)
  assert expected[0] and expected[1]
  # From ranges inside every line (1 byte: most start and end inside a line, inside a quoted
  # field, inside the header) to ranges of several lines.
  for range_bytes in (1, 2, 17, 40, 97, 500):
    count, blocks = read_in_ranges(path, input_format, range_bytes)
    assert count > 1
    assert rows_of(blocks) == expected, range_bytes


def test_the_executor_reads_a_large_file_in_ranges_with_the_same_output(tmp_path, monkeypatch):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  csv_log(logs / 'a.csv')
  settings_ = dict(eval_plays_per_user=1, max_bad_fraction=0.5)
  whole = what_was_read(*run_executor(tmp_path / 'whole', logs, **settings_))
  monkeypatch.setattr(defaults, 'RANGE_BYTES', 300)
  assert len(executor._read_tasks(0, str(logs / 'a.csv'), os.path.getsize(logs / 'a.csv'),
                                  'csv')) > 5
  split = what_was_read(*run_executor(tmp_path / 'split', logs, **settings_))
  assert split == whole
  assert [line for _, line, reason, _, _ in split[1] if reason == r.UNPARSEABLE_ROW] == [
      9, 20, 31, 42, 53, 64, 75, 86, 97, 108, 119]


# --- The eval sample -----------------------------------------------------------------------------

def test_the_eval_split_is_a_fixed_sample_of_users_recorded_on_the_examples(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  users = [f'user{k}' for k in range(20)]
  rows = [[user, f'i{k}', T0 + 1000 * k + n, 190_000, 200_000, 'on_demand']
          for n, user in enumerate(users) for k in range(6)]
  (logs / 'a.csv').write_text('user_id,item_id,ts,play_ms,duration_ms,intent\n'
                              + ''.join(','.join(map(str, row)) + '\n' for row in rows))
  full, _ = run_executor(tmp_path / 'full', logs, eval_plays_per_user=2)
  sampled, _ = run_executor(tmp_path / 'sampled', logs, eval_plays_per_user=2, eval_max_users=5)
  rerun, _ = run_executor(tmp_path / 'rerun', logs, eval_plays_per_user=2, eval_max_users=5)
  expected_users = sorted(sorted(users, key=user_examples.eval_sample_key)[:5])
  eval_rows = read_split(sampled, features.EVAL_SPLIT)
  assert sorted({row[features.USER_ID] for row in eval_rows}) == expected_users
  assert len(eval_rows) == 5 * 2
  # The rest of the eval plays are left out and counted; the other splits are unchanged.
  assert sampled.get_int_custom_property('eval_plays_left_out') == 15 * 2
  assert counts_of(sampled)['train_examples'] == counts_of(full)['train_examples']
  assert output_files(rerun) == output_files(sampled)
  # Recorded: the bound, the users in the split and the users before the sample.
  assert sampled.get_int_custom_property(features.EXAMPLE_EVAL_MAX_USERS) == 5
  assert sampled.get_int_custom_property(features.EXAMPLE_EVAL_USERS) == 5
  assert sampled.get_int_custom_property(features.EXAMPLE_EVAL_USERS_BEFORE_SAMPLE) == 20
  with open(os.path.join(sampled.uri, features.EXAMPLE_SETTINGS_FILE)) as f:
    assert json.load(f)[features.EXAMPLE_EVAL_MAX_USERS] == 5
  assert not full.has_custom_property(features.EXAMPLE_EVAL_MAX_USERS)
  # A bound above the users with eval plays keeps every one of them.
  loose, _ = run_executor(tmp_path / 'loose', logs, eval_plays_per_user=2, eval_max_users=50)
  assert output_files(loose) == output_files(full)
  assert loose.get_int_custom_property(features.EXAMPLE_EVAL_USERS) == 20


def test_the_eval_sample_counts_only_users_with_eval_plays_at_a_global_cut(tmp_path):
  logs = tmp_path / 'logs'
  os.makedirs(logs)
  # Users 0-9 play before the cut only; users 10-19 play after it too.
  rows = [[f'user{n}', f'i{k}', T0 + 1000 * k + n + (10**6 if n >= 10 and k >= 4 else 0),
           190_000, 200_000, 'on_demand'] for n in range(20) for k in range(6)]
  (logs / 'a.csv').write_text('user_id,item_id,ts,play_ms,duration_ms,intent\n'
                              + ''.join(','.join(map(str, row)) + '\n' for row in rows))
  sampled, _ = run_executor(tmp_path / 'sampled', logs, eval_start_ts=T0 + 10**6,
                            eval_max_users=4)
  assert sampled.get_int_custom_property(features.EXAMPLE_EVAL_USERS_BEFORE_SAMPLE) == 10
  expected = sorted(sorted([f'user{n}' for n in range(10, 20)],
                           key=user_examples.eval_sample_key)[:4])
  assert sorted({e[features.USER_ID] for e in read_split(sampled, features.EVAL_SPLIT)}) == (
      expected)


@pytest.mark.parametrize('key, value, problem', [
    ('eval_max_users', 0, 'must be >= 1'),
    ('partition_cache_dir', ' ', r'a folder \(None: under the pipeline root\)'),
    ('partition_cache', 'yes', 'true or false')])
def test_the_new_settings_are_checked_naming_their_key(key, value, problem):
  with pytest.raises(SettingError, match=rf'^{key}: .*{problem}'):
    settings.IngestConfig.from_dict({key: value})
