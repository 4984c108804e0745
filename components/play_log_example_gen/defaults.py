"""Default parameters of PlayLogExampleGen: the one place they are defined."""

INPUT_FORMATS = ('csv', 'jsonl', 'parquet')
DEFAULT_INPUT_FORMAT = 'csv'
DEFAULT_COLUMN_MAPPING = 'canonical'
HISTORY_LENGTH = 50
POS_THRESHOLD = 0.8
NEG_THRESHOLD = 0.3
# Each user's last plays form the eval split (unless a cut time is given).
EVAL_PLAYS_PER_USER = 2
MAX_BAD_FRACTION = 0.01

# Validation limits.
MAX_DURATION_MS = 2 * 60 * 60 * 1000  # no song is longer than 2 h; longer means a logging bug
# play_ms up to this many times duration_ms is a play to the end (seeking back, crossfades,
# rounding): its rate is recorded as 1.0 and counted as capped. Past it, the row is quarantined.
MAX_PLAY_OVERRUN = 1.05
# Numeric timestamps are in this unit ('s' or 'ms'); ISO-8601 strings carry their own.
TS_UNIT = 'ms'
TS_UNITS = {'s': 1000, 'ms': 1}
# Plays before MIN_TS_MS (epoch ms) or more than MAX_FUTURE_MS after the run started are
# quarantined. The defaults accept any plausible epoch-ms log; narrow them to catch unit errors.
MIN_TS_MS = 0  # 1970-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 60 * 60 * 1000  # clock skew margin

# Files are read in blocks of whole lines of about this many bytes, parsed and checked
# column-wise by pyarrow; Parquet in record batches of this many rows.
READ_BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 131_072
# Plays are grouped by a hash of the user into buckets, each built into examples in memory:
# about one bucket per this many bytes of (uncompressed) input, and at least MIN_USER_BUCKETS so
# that every worker of a small run has work.
INPUT_BYTES_PER_USER_BUCKET = 64 << 20
MIN_USER_BUCKETS = 4
# zlib level of the examples' gzipped TFRecords: 1 is ~4x faster than the default 6 for ~11 %
# more bytes, and the files are read once or twice before the next run replaces them.
GZIP_LEVEL = 1
# Each split is shuffled in random groups of about this many examples, one group in memory at a
# time (a train example of 50 + 1 plays takes a few kB).
EXAMPLES_PER_SHUFFLE_GROUP = 1000
