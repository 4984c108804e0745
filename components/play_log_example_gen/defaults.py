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
MIN_TS_MS = 946684800000  # 2000-01-01T00:00:00Z: older timestamps are units or clock errors
# A play may not start more than this long after the run started (clock skew margin).
MAX_FUTURE_MS = 24 * 60 * 60 * 1000

# Rows of one input file are grouped per user in chunks of at most this many rows before the
# shuffle, so the shuffle moves one element per (file chunk, user) instead of one per play.
ROWS_PER_CHUNK = 200_000
# Each split is shuffled in random groups of about this many examples, one group in memory at a
# time (a train example of 50 + 1 plays takes a few kB).
EXAMPLES_PER_SHUFFLE_GROUP = 1000
