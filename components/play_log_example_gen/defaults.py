"""PlayLogExampleGen's own limits and tuning. Its settings and their defaults are in
contract/settings.py."""

# The eval_fraction cut is placed on a histogram of this many equal bins of the log's time range.
TIME_HISTOGRAM_BINS = 100_000

# Validation limits.
MAX_DURATION_MS = 2 * 60 * 60 * 1000  # no song is longer than 2 h; longer means a logging bug
# play_ms up to this many times duration_ms is a play to the end (seeking back, crossfades,
# rounding): its rate is recorded as 1.0 and counted as capped. Past it, the row is quarantined.
MAX_PLAY_OVERRUN = 1.05

# Files are read in blocks of whole lines of about this many bytes, parsed and checked
# column-wise by pyarrow; Parquet in record batches of this many rows.
READ_BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 131_072
# A CSV or JSON-lines file (not gzipped) larger than this is read in byte ranges of about this
# size by as many readers, so one large daily export spreads over the workers.
RANGE_BYTES = 64 << 20
# Plays are grouped by a hash of the user into buckets, each built into examples in memory:
# about one bucket per this many bytes of (uncompressed) input, and at least MIN_USER_BUCKETS so
# that every worker of a small run has work.
INPUT_BYTES_PER_USER_BUCKET = 64 << 20
MIN_USER_BUCKETS = 4
# zlib level of the examples' gzipped TFRecords: 1 is ~4x faster than the default 6 for ~11 %
# more bytes, and the files are read once or twice before the next run replaces them.
GZIP_LEVEL = 1
# Each split is shuffled in this many random groups per user bucket, one group in memory at a
# time: a bucket (about 64 MB of input) yields some 200 MB of examples, so a group holds ~6 MB.
SHUFFLE_GROUPS_PER_USER_BUCKET = 32
