"""PlayLogExampleGen: play logs -> windows of plays (train) and per-play examples (eval), by time."""

from typing import Optional

from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import channel
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.play_log_example_gen import artifacts
from components.play_log_example_gen import driver
from components.play_log_example_gen import executor
from contract import settings

# Parameter and channel names.
INPUT_BASE_KEY = 'input_base'
INPUT_FORMAT_KEY = 'input_format'
COLUMN_MAPPING_KEY = 'column_mapping'
HISTORY_LENGTH_KEY = 'history_length'
POS_THRESHOLD_KEY = 'pos_threshold'
NEG_THRESHOLD_KEY = 'neg_threshold'
EVAL_PLAYS_PER_USER_KEY = 'eval_plays_per_user'
EVAL_START_TS_KEY = 'eval_start_ts'
EVAL_FRACTION_KEY = 'eval_fraction'
VALID_PLAYS_PER_USER_KEY = 'valid_plays_per_user'
MAX_BAD_FRACTION_KEY = 'max_bad_fraction'
TS_UNIT_KEY = 'ts_unit'
MIN_TS_MS_KEY = 'min_ts_ms'
MAX_TS_MS_KEY = 'max_ts_ms'
PARTITION_PATTERN_KEY = driver.PARTITION_PATTERN_KEY
WINDOW_PARTITIONS_KEY = driver.WINDOW_PARTITIONS_KEY
EXAMPLES_KEY = executor.EXAMPLES_KEY
QUARANTINE_KEY = executor.QUARANTINE_KEY


class PlayLogExampleGenSpec(component_spec.ComponentSpec):
  """PlayLogExampleGen component spec."""

  PARAMETERS = {
      INPUT_BASE_KEY: component_spec.ExecutionParameter(type=str),
      INPUT_FORMAT_KEY: component_spec.ExecutionParameter(type=str),
      COLUMN_MAPPING_KEY: component_spec.ExecutionParameter(type=str),
      HISTORY_LENGTH_KEY: component_spec.ExecutionParameter(type=int),
      POS_THRESHOLD_KEY: component_spec.ExecutionParameter(type=float),
      NEG_THRESHOLD_KEY: component_spec.ExecutionParameter(type=float),
      EVAL_PLAYS_PER_USER_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      EVAL_START_TS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      EVAL_FRACTION_KEY: component_spec.ExecutionParameter(type=float, optional=True),
      VALID_PLAYS_PER_USER_KEY: component_spec.ExecutionParameter(type=int),
      MAX_BAD_FRACTION_KEY: component_spec.ExecutionParameter(type=float),
      TS_UNIT_KEY: component_spec.ExecutionParameter(type=str),
      MIN_TS_MS_KEY: component_spec.ExecutionParameter(type=int),
      MAX_TS_MS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      PARTITION_PATTERN_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      WINDOW_PARTITIONS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      # Set by the driver at run time: a digest of the input files, part of the cache key.
      driver.INPUT_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=artifacts.Quarantine),
  }


class PlayLogExampleGen(base_beam_component.BaseBeamComponent):
  """Reads play logs (CSV, JSON lines, Parquet; gzipped or not) and emits tf.Examples.

  Every example is a history of plays (items, play rates, intents, timestamps and labels, oldest
  first; labels positive / negative / neither by the play-rate thresholds) and a target play.
  Splits 'train', 'valid' and 'eval' by time: every play at or after one global cut time is eval, the cut
  being `eval_start_ts` or, by default, the time from which the latest `eval_fraction` (0.1) of
  the plays lie; or, given `eval_plays_per_user`, each user's last plays. The train split cuts
  each user's plays into disjoint windows of up to `history_length` + 1 plays (every play written
  once); the eval split has one example per play with its previous `history_length` plays
  (contract/features.py); the valid split, shaped as eval, holds each user's last
  `valid_plays_per_user` plays before the eval split, for the Trainer's choice of checkpoint.
  Bad rows go to `quarantine` with their file, line and reason; the run fails, leaving no
  examples, when no row is read or more than `max_bad_fraction` of the rows are bad.
  """

  SPEC_CLASS = PlayLogExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.Driver

  def __init__(self,
               input_base: str,
               input_format: str = settings.DEFAULT_INPUT_FORMAT,
               column_mapping: str = settings.DEFAULT_COLUMN_MAPPING,
               history_length: int = settings.HISTORY_LENGTH,
               pos_threshold: float = settings.POS_THRESHOLD,
               neg_threshold: float = settings.NEG_THRESHOLD,
               eval_plays_per_user: Optional[int] = None,
               eval_start_ts: Optional[int] = None,
               eval_fraction: Optional[float] = None,
               valid_plays_per_user: int = settings.VALID_PLAYS_PER_USER,
               max_bad_fraction: float = settings.MAX_BAD_FRACTION,
               ts_unit: str = settings.TS_UNIT,
               min_ts_ms: int = settings.MIN_TS_MS,
               max_ts_ms: Optional[int] = None,
               partition_pattern: Optional[str] = None,
               window_partitions: Optional[int] = None):
    """Constructs a PlayLogExampleGen.

    Args:
      input_base: a directory (read recursively; files and directories whose names start with
        '.' or '_' are ignored and counted) or a glob.
      input_format: 'csv', 'jsonl' or 'parquet'; gzipped files (by content) are gunzipped.
      column_mapping: a shipped mapping name ('canonical', 'mssd') or a JSON dict from
        canonical column to source column or transform (see column_mapping.py).
      history_length: at most this many previous plays per example.
      pos_threshold: play rate at or above which a target is positive.
      neg_threshold: play rate at or below which a target is negative.
      eval_plays_per_user: if given, each user's last this many plays are eval (leave-last-N:
        later plays of other users leak into training, so it flatters the model).
      eval_start_ts: epoch ms; if given, plays at or after it are eval, all others train.
      eval_fraction: in (0, 1), the default split (0.1 when none of the three is given): the
        latest this share of all plays are eval, from one cut time on (at least the share, at
        most 1/100,000 of the time range more). The cut is recorded on the examples as
        `eval_start_ts`. Give at most one of the three.
      valid_plays_per_user: each user's last this many plays before the eval split are the
        valid split (users with fewer than twice as many give none), not trained on.
      max_bad_fraction: the run fails when quarantined / read rows exceeds this.
      ts_unit: 'ms' or 's': the unit of numeric timestamps (ISO-8601 strings carry their own).
      min_ts_ms: plays before this epoch ms are quarantined (default 1970-01-01).
      max_ts_ms: plays after this epoch ms are quarantined (default: one day after the run
        starts).
      partition_pattern: e.g. '{YYYY}-{MM}-{DD}' or 'span-{SPAN}': the top-level folders (or
        files) of input_base whose names match are partitions, ordered by date or span; the
        others are ignored and listed. The examples record the partitions read (`partitions`)
        and the newest one's span (`span`; days since 1970-01-01 for dates).
      window_partitions: read only the newest this many partitions (a rolling window); None
        reads them all.
    """
    executor.validate_parameters(input_format=input_format, column_mapping=column_mapping,
                                 history_length=history_length, pos_threshold=pos_threshold,
                                 neg_threshold=neg_threshold,
                                 eval_plays_per_user=eval_plays_per_user,
                                 eval_start_ts=eval_start_ts, eval_fraction=eval_fraction,
                                 valid_plays_per_user=valid_plays_per_user,
                                 max_bad_fraction=max_bad_fraction, ts_unit=ts_unit,
                                 min_ts_ms=min_ts_ms, max_ts_ms=max_ts_ms,
                                 partition_pattern=partition_pattern,
                                 window_partitions=window_partitions)
    spec = PlayLogExampleGenSpec(
        input_base=input_base,
        input_format=input_format,
        column_mapping=column_mapping,
        history_length=history_length,
        pos_threshold=pos_threshold,
        neg_threshold=neg_threshold,
        eval_plays_per_user=eval_plays_per_user,
        eval_start_ts=eval_start_ts,
        eval_fraction=eval_fraction,
        valid_plays_per_user=valid_plays_per_user,
        max_bad_fraction=max_bad_fraction,
        ts_unit=ts_unit,
        min_ts_ms=min_ts_ms,
        max_ts_ms=max_ts_ms,
        partition_pattern=partition_pattern,
        window_partitions=window_partitions,
        examples=channel.Channel(type=standard_artifacts.Examples),
        quarantine=channel.Channel(type=artifacts.Quarantine))
    super().__init__(spec=spec)
