"""PlayLogExampleGen: play logs -> windows of plays (train) and per-play examples (eval), by time."""

from typing import Any, Mapping, Union

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
INPUT_BASE_KEY = driver.INPUT_BASE_KEY
INGEST_CONFIG_KEY = executor.INGEST_CONFIG_KEY
EXAMPLES_KEY = executor.EXAMPLES_KEY
QUARANTINE_KEY = executor.QUARANTINE_KEY


class PlayLogExampleGenSpec(component_spec.ComponentSpec):
  """PlayLogExampleGen component spec."""

  PARAMETERS = {
      INPUT_BASE_KEY: component_spec.ExecutionParameter(type=str),
      # Every other setting, as Transform and Trainer take custom_config: the JSON of
      # contract.settings.IngestConfig, validated when the component is built.
      INGEST_CONFIG_KEY: component_spec.ExecutionParameter(type=str),
      # Set by the driver at run time: a digest of the input files, part of the cache key.
      driver.INPUT_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      # Set by the driver too: each input file's content digest, which the executor's partition
      # cache keys are made of (so it does not hash the files again).
      executor.INPUT_DIGESTS_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      QUARANTINE_KEY: component_spec.ChannelParameter(type=artifacts.Quarantine),
  }


class PlayLogExampleGen(base_beam_component.BaseBeamComponent):
  """Reads play logs (CSV, JSON lines, Parquet; gzipped or not) and emits tf.Examples.

  Every example is a history of plays (items, play rates, intents, timestamps and labels, oldest
  first; labels positive / negative / neither by the play-rate thresholds) and a target play:
  contract/features.py's RAW_FEATURES, the one definition of the example.
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

  def __init__(self, input_base: str,
               ingest_config: Union[settings.IngestConfig, Mapping[str, Any], None] = None):
    """Constructs a PlayLogExampleGen.

    Args:
      input_base: a directory (read recursively; files and directories whose names start with
        '.' or '_' are ignored and counted) or a glob.
      ingest_config: the ingest settings (contract.settings.IngestConfig, or a dict of its
        fields; None: the defaults): input format and column mapping, history_length and the
        label thresholds, the eval and valid splits (and the eval split's bound), validation
        bounds, partitions, the rolling window and the partition cache. Each field is described
        there. Checked here, naming a bad key; passed on as one JSON parameter. The examples
        record history_length, pos_threshold, neg_threshold and eval_max_users (custom
        properties, and features.EXAMPLE_SETTINGS_FILE beside the splits); the Trainer refuses
        hyper-parameters that disagree with the first two.
    """
    ingest = executor.validate_ingest(ingest_config)
    spec = PlayLogExampleGenSpec(
        input_base=input_base,
        ingest_config=executor.ingest_json(ingest),
        examples=channel.Channel(type=standard_artifacts.Examples),
        quarantine=channel.Channel(type=artifacts.Quarantine))
    super().__init__(spec=spec)
