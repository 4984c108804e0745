"""Every setting of playrecall, in one tree of typed dataclasses, validated when it is loaded.

  PipelineConfig
    ingest: IngestConfig          PlayLogExampleGen: formats, labels, split, validation bounds
    vocabulary: VocabularyConfig  Transform: which items get their own id
    train: TrainConfig            Trainer: steps, hparams (HParams), tfjob (TFJobConfig or None)
    gate: GateConfig              Evaluator: the thresholds a model must clear to be pushed

Runners choose where things go (paths, engines); everything about *what* the pipeline does is
here. A JSON file overrides any field (`load_config()` reads the file named by
$PLAYRECALL_CONFIG). Every value is checked when the file loads, before any component runs: its
type (the string "128" is not an integer), its range and its name (a misspelt key names the
closest known one). The error names the file, the key, the value and what is allowed.

Standard library only, so kfp_submit, the runners and Beam workers read it without TFX.
"""

import dataclasses
import json
import os
import re
from typing import Any, Dict, Optional, Tuple, Union

from contract.typed import SettingError, Settings, build, require

PIPELINE_NAME = 'playrecall'
CONFIG_ENV = 'PLAYRECALL_CONFIG'
# The Beam runner named when none is given (pipeline/beam_direct.py): Beam's local FnApiRunner
# without the DirectRunner's first try of Prism, a binary Beam would download at run time.
BEAM_RUNNER = 'pipeline.beam_direct.LocalRunner'
# Beam arguments when a runner is given none: that runner on every local core.
BEAM_PIPELINE_ARGS = (f'--runner={BEAM_RUNNER}', '--direct_running_mode=multi_processing',
                      '--direct_num_workers=0')
# A pipeline name is a directory name under PLAYRECALL_HOME and a Kubernetes label.
PIPELINE_NAME_PATTERN = r'[A-Za-z0-9][A-Za-z0-9_-]{0,62}'

# --- Defaults of the data contract (ExampleGen and the trainer share them) ----------------------
INPUT_FORMATS = ('csv', 'jsonl', 'parquet')
DEFAULT_INPUT_FORMAT = 'csv'
DEFAULT_COLUMN_MAPPING = 'canonical'
HISTORY_LENGTH = 50  # plays of history per example, and positions of the model
POS_THRESHOLD = 0.8  # play rate at or above which a play is positive
NEG_THRESHOLD = 0.3  # play rate at or below which a play is negative (a skip)
# The eval split, unless a cut time or a number of plays per user is given: the latest tenth of
# the plays, from one global cut time on (as production evaluation sees it).
EVAL_FRACTION = 0.1
# Each user's last plays before the eval split that form the validation split.
VALID_PLAYS_PER_USER = 2
MAX_BAD_FRACTION = 0.01
# Numeric timestamps are in this unit ('s' or 'ms'); ISO-8601 strings carry their own.
TS_UNIT = 'ms'
TS_UNITS = {'s': 1000, 'ms': 1}
# Plays before MIN_TS_MS (epoch ms) or more than MAX_FUTURE_MS after the run started are
# quarantined. The defaults accept any plausible epoch-ms log; narrow them to catch unit errors.
MIN_TS_MS = 0  # 1970-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 60 * 60 * 1000  # clock skew margin
# Placeholders of a partition pattern, as in TFX ExampleGen's input patterns: a partition's name
# carries a span number ({SPAN}) or a date ({YYYY}, {MM} and {DD}, all three).
SPAN_PLACEHOLDER = '{SPAN}'
DATE_PLACEHOLDERS = ('{YYYY}', '{MM}', '{DD}')
# Daily partitions as the generator writes them (and the demo reads them): 2024-01-31/.
DAILY_PARTITION_PATTERN = '{YYYY}-{MM}-{DD}'
DAILY_PARTITION_FORMAT = '%Y-%m-%d'  # the same, for strftime
# When a partition is complete (ingest.partition_completeness): 'auto' needs the marker file
# (partition_marker) in a partition once any partition of the input has one, else takes every
# partition as complete; 'marker' always needs it; 'settled' needs no file of the partition
# modified within partition_settle_seconds; 'none' reads partitions as they are.
PARTITION_COMPLETENESS_MODES = ('auto', 'marker', 'settled', 'none')
PARTITION_COMPLETENESS = 'auto'
PARTITION_MARKER = '_SUCCESS'  # what Hadoop, Spark and Beam writers leave in a finished folder
PARTITION_SETTLE_SECONDS = 600
# What an incomplete partition of the window does: 'fail' the run (the day is still being
# delivered: run again later) or 'skip' it (listed) and read the newest complete ones.
INCOMPLETE_PARTITION_ACTIONS = ('fail', 'skip')
INCOMPLETE_PARTITIONS = 'fail'
# Names that copies and writers in progress leave (`hdfs dfs -put`'s `._COPYING_`, `.tmp`
# files): never data, whatever the partition's state; ignored and listed like '.' and '_' names.
IN_PROGRESS_SUFFIXES = ('._COPYING_', '.tmp', '.temp', '.inprogress', '.partial')
IN_PROGRESS_DIRECTORIES = ('_temporary',)  # Hadoop's and Spark's job output in progress
# Plays of a date partition whose ts lies outside the partition's day (UTC, widened by
# off_day_margin_ms on each side): always counted (off_day_plays); 'quarantine' also
# quarantines them.
OFF_DAY_ACTIONS = ('count', 'quarantine')
OFF_DAY_PLAYS = 'count'
OFF_DAY_MARGIN_MS = 0
# The validated plays of each partition are cached (ingest.partition_cache), by default in this
# folder under the pipeline root (pipeline/pipeline.py sets ingest.partition_cache_dir to it), so
# that it lives where the run's outputs do: a local folder, gs:// or s3://.
PARTITION_CACHE_DIR = 'partition_cache'

# Upper bounds of integer settings: far beyond any real run, so that a typo (10^12 steps, a
# history of a million plays) fails at load naming its key rather than later without one.
MAX_STEPS = 10**9
MAX_HISTORY_LENGTH = 10_000
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_PLAYS_PER_USER = 1_000_000
MAX_WINDOW_PARTITIONS = 100_000
MAX_EVAL_USERS = 10**9
MAX_SETTLE_SECONDS = 7 * 24 * 3600
MAX_VOCABULARY_SIZE = 2**31 - 1  # ids are int64, but tables of more rows fit no machine
# The trainer's sizes (HParams), checked where the pipeline's config holds them (train.hparams).
HPARAMS_MAXIMA = {'history_length': MAX_HISTORY_LENGTH, 'item_embedding_dim': 1 << 14,
                  'hidden_dim': 1 << 14, 'num_layers': 256, 'num_heads': 1024,
                  'ffn_dim': 1 << 16, 'num_sampled': 1 << 24, 'batch_size': 1 << 20,
                  'train_steps': MAX_STEPS, 'steps_per_checkpoint': MAX_STEPS,
                  'steps_per_log': MAX_STEPS, 'num_shards': 4096, 'top_k': 100_000,
                  'ann_min_items': MAX_VOCABULARY_SIZE}

# The Ns of POS@N and NEG@N reported by the Evaluator, the trainer's checkpoints and benchmarks.
METRIC_NS = (10, 50, 100)

# --- Choices of the trainer ----------------------------------------------------------------------
VARIANTS = ('a', 'b', 'c')
SAMPLERS = ('log_uniform', 'uniform', 'mixed', 'learned_unigram', 'fixed_unigram')
USER_VECTOR_MODES = ('last', 'mean')
# lazy_adam updates only the item-table rows a batch touches (trainer/optimizers.py); adam is
# tf_keras Adam, whose work per step grows with the catalogue.
OPTIMIZERS = ('lazy_adam', 'adam')
# Which checkpoint the Trainer exports: the one with the best validation SELECTION_METRIC (when
# it evaluates: in one process), or the last one.
EXPORT_CHECKPOINTS = ('best', 'last')
SELECTION_METRIC = 'pos_at_50'  # higher is better; one of checkpoint_eval's metrics
# Replica groups of the TFJob template (k8s/tfjob.yaml).
TFJOB_REPLICA_TYPES = ('Chief', 'Worker', 'PS')
# The ConfigMap k8s/kustomization.yaml generates from k8s/tfjob.yaml.
TFJOB_TEMPLATE_CONFIG_MAP = 'playrecall-tfjob-template'
# The keys of the Trainer's custom_config: pipeline/pipeline.py writes them, trainer/ reads them.
TRAINER_HPARAMS_KEY = 'hparams'  # the HParams fields
TRAINER_TFJOB_KEY = 'tfjob'  # the TFJobConfig fields, when training runs on a TFJob
# Where checkpoints outlive the Trainer execution that wrote them (trainer/checkpoints.py):
# the pipeline's own folder, so a re-run of the same training resumes.
TRAINER_CHECKPOINT_ROOT_KEY = 'checkpoint_root'
# Steps to train when warm-started from a base model (train.warm_start_steps).
TRAINER_WARM_START_STEPS_KEY = 'warm_start_steps'
# What a damaged base model (truncated weights, missing assets or variables) does
# (train.damaged_base): 'fail' the Trainer naming the base and what is wrong, or start 'cold'.
TRAINER_DAMAGED_BASE_KEY = 'damaged_base'
DAMAGED_BASE_ACTIONS = ('fail', 'cold')
DAMAGED_BASE = 'fail'
CHECKPOINT_ROOT_DIR = 'checkpoints'  # under the pipeline root
_DNS_LABEL = r'[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'


def _at_least(key: str, value, low) -> None:
  require(value >= low, key, value, f'must be >= {low}')


def _within(key: str, value, low, high) -> None:
  require(low <= value <= high, key, value, f'must be in [{low}, {high}]')


def _one_of(key: str, value, choices) -> None:
  require(value in choices, key, value, f'choose one of {list(choices)}')


def _at_most(key: str, value, high) -> None:
  require(value <= high, key, value, f'must be <= {high:,}')


@dataclasses.dataclass(frozen=True)
class IngestConfig(Settings):
  """PlayLogExampleGen: how play logs become examples (train windows, eval targets)."""
  input_format: str = DEFAULT_INPUT_FORMAT  # csv | jsonl | parquet
  column_mapping: str = DEFAULT_COLUMN_MAPPING  # a name or a JSON object
  history_length: int = HISTORY_LENGTH
  pos_threshold: float = POS_THRESHOLD
  neg_threshold: float = NEG_THRESHOLD
  # The eval split, chosen by at most one of these: every play from one global cut time on, the
  # cut given as eval_start_ts (epoch ms) or as eval_fraction (the latest share of the plays;
  # EVAL_FRACTION when none is given), or each user's last eval_plays_per_user plays.
  eval_plays_per_user: Optional[int] = None
  eval_start_ts: Optional[int] = None
  eval_fraction: Optional[float] = None
  # The validation split: each user's last this many plays before the eval split (from users who
  # keep at least as many train plays), on which the Trainer chooses the checkpoint it exports;
  # 0: no validation split, and the Trainer exports its last step.
  valid_plays_per_user: int = VALID_PLAYS_PER_USER
  max_bad_fraction: float = MAX_BAD_FRACTION
  # Numeric timestamps in 'ms' or 's'; plays outside [min_ts_ms, max_ts_ms] are quarantined
  # (max_ts_ms None: one day after the run starts).
  ts_unit: str = TS_UNIT
  min_ts_ms: int = MIN_TS_MS
  max_ts_ms: Optional[int] = None
  # Partitioned input: the top-level folders (or files) of the input whose names match this
  # pattern, e.g. '{YYYY}-{MM}-{DD}' or 'span-{SPAN}', are partitions, ordered by date or span.
  # None reads every file under the input as one log.
  partition_pattern: Optional[str] = None
  # A rolling window: read only the newest this many partitions. Histories reach back into the
  # window's earlier partitions, and a run's cost stays flat as partitions accumulate. None: all.
  window_partitions: Optional[int] = None
  # A partition is read only once complete (PARTITION_COMPLETENESS_MODES above): by its marker
  # file, or once settled; an incomplete one in the window fails the run or is skipped and
  # listed (incomplete_partitions). In-progress names (IN_PROGRESS_SUFFIXES) are never read.
  partition_completeness: str = PARTITION_COMPLETENESS
  partition_marker: str = PARTITION_MARKER
  partition_settle_seconds: int = PARTITION_SETTLE_SECONDS
  incomplete_partitions: str = INCOMPLETE_PARTITIONS
  # Plays outside their date partition's day: counted, and with 'quarantine' quarantined.
  off_day_plays: str = OFF_DAY_PLAYS
  off_day_margin_ms: int = OFF_DAY_MARGIN_MS
  # Partitioned input: each partition's validated plays, quarantined rows and counts are cached
  # in partition_cache_dir (None: PARTITION_CACHE_DIR under the pipeline root, which the
  # pipeline sets), keyed by the partition's content and the settings that validate it, so a
  # daily run parses only new or changed partitions. false: every run parses its whole window.
  partition_cache: bool = True
  partition_cache_dir: Optional[str] = None
  # At most this many users' plays form the eval split (a fixed hash sample of the users who
  # have eval plays, the same on every rerun); the examples record it. None: every user.
  eval_max_users: Optional[int] = None

  def check(self) -> None:
    _one_of('input_format', self.input_format, INPUT_FORMATS)
    _at_least('history_length', self.history_length, 0)
    _at_most('history_length', self.history_length, MAX_HISTORY_LENGTH)
    _within('pos_threshold', self.pos_threshold, 0.0, 1.0)
    require(0.0 <= self.neg_threshold < self.pos_threshold, 'neg_threshold', self.neg_threshold,
            f'need 0 <= neg_threshold < pos_threshold ({self.pos_threshold})')
    split = {'eval_plays_per_user': self.eval_plays_per_user,
             'eval_start_ts': self.eval_start_ts, 'eval_fraction': self.eval_fraction}
    given = {name: value for name, value in split.items() if value is not None}
    require(len(given) <= 1, list(given)[-1] if given else '', given,
            f'give at most one of {list(split)} (three ways to choose the eval split)')
    if self.eval_plays_per_user is not None:
      _at_least('eval_plays_per_user', self.eval_plays_per_user, 0)
      _at_most('eval_plays_per_user', self.eval_plays_per_user, MAX_PLAYS_PER_USER)
    if self.eval_start_ts is not None:
      _within('eval_start_ts', self.eval_start_ts, 0, MAX_TS_MS)
    if self.eval_fraction is not None:
      require(0.0 < self.eval_fraction < 1.0, 'eval_fraction', self.eval_fraction,
              'must be in (0, 1)')
    _at_least('valid_plays_per_user', self.valid_plays_per_user, 0)
    _at_most('valid_plays_per_user', self.valid_plays_per_user, MAX_PLAYS_PER_USER)
    _within('max_bad_fraction', self.max_bad_fraction, 0.0, 1.0)
    _one_of('ts_unit', self.ts_unit, TS_UNITS)
    _at_least('min_ts_ms', self.min_ts_ms, 0)
    _at_most('min_ts_ms', self.min_ts_ms, MAX_TS_MS)
    if self.max_ts_ms is not None:
      _at_least('max_ts_ms', self.max_ts_ms, self.min_ts_ms)
      _at_most('max_ts_ms', self.max_ts_ms, MAX_TS_MS)
    if self.partition_pattern is not None:
      _check_partition_pattern(self.partition_pattern)
    if self.window_partitions is not None:
      _at_least('window_partitions', self.window_partitions, 1)
      _at_most('window_partitions', self.window_partitions, MAX_WINDOW_PARTITIONS)
      require(self.partition_pattern is not None, 'window_partitions', self.window_partitions,
              'needs partition_pattern (which names are partitions)')
    _one_of('partition_completeness', self.partition_completeness, PARTITION_COMPLETENESS_MODES)
    require(self.partition_marker.startswith(('.', '_')) and '/' not in self.partition_marker
            and len(self.partition_marker) > 1, 'partition_marker', self.partition_marker,
            'a file name starting with "_" or "." (such names are never read as data), no "/"')
    _within('partition_settle_seconds', self.partition_settle_seconds, 0, MAX_SETTLE_SECONDS)
    _one_of('incomplete_partitions', self.incomplete_partitions, INCOMPLETE_PARTITION_ACTIONS)
    _one_of('off_day_plays', self.off_day_plays, OFF_DAY_ACTIONS)
    _within('off_day_margin_ms', self.off_day_margin_ms, 0, MAX_TS_MS)
    if self.partition_cache_dir is not None:
      require(self.partition_cache_dir.strip() != '', 'partition_cache_dir',
              self.partition_cache_dir, 'a folder (None: under the pipeline root)')
    if self.eval_max_users is not None:
      _at_least('eval_max_users', self.eval_max_users, 1)
      _at_most('eval_max_users', self.eval_max_users, MAX_EVAL_USERS)


def _check_partition_pattern(pattern: str) -> None:
  has_span = pattern.count(SPAN_PLACEHOLDER)
  has_date = [pattern.count(p) for p in DATE_PLACEHOLDERS]
  require((has_span, has_date) in ((1, [0, 0, 0]), (0, [1, 1, 1])), 'partition_pattern', pattern,
          f'must hold {SPAN_PLACEHOLDER} once, or each of {" ".join(DATE_PLACEHOLDERS)} once')
  require('/' not in pattern and not pattern.startswith(('.', '_')), 'partition_pattern',
          pattern, 'names one top-level folder or file: no "/", and no leading "." or "_" '
          '(those names are never data)')


@dataclasses.dataclass(frozen=True)
class VocabularyConfig(Settings):
  """Transform: which items get their own id (the rest share the OOV bucket)."""
  # Items seen fewer times than this in training map to the OOV bucket: it bounds the catalogue
  # the model scores and keeps one-off ids (often logging noise) out of the vocabulary.
  item_min_count: int = 1
  item_vocab_size: Optional[int] = None  # None keeps every item seen item_min_count times

  def check(self) -> None:
    _at_least('item_min_count', self.item_min_count, 1)
    if self.item_vocab_size is not None:
      _at_least('item_vocab_size', self.item_vocab_size, 1)
      _at_most('item_vocab_size', self.item_vocab_size, MAX_VOCABULARY_SIZE)


@dataclasses.dataclass(frozen=True)
class HParams(Settings):
  """Every size and switch of the model, the losses and the training loop.

  `variant` sets the three flags the design names (feedback_features, negative_loss, history_filter):
    a: history keeps only well-played songs, no feedback features, positive loss only;
    b: a + play-rate and intent features, full history;
    c: b + the negative-feedback loss (the default).
  In a pipeline, history_length and pos_threshold come from `ingest` and train_steps from
  `train` (PipelineConfig sets them); `python -m trainer.run --hparams` takes them all.
  """
  variant: str = 'c'
  # Model sizes.
  history_length: int = HISTORY_LENGTH
  item_embedding_dim: int = 32  # E: the factorized V x E table
  hidden_dim: int = 64  # H: E -> H projection, attention width, user and item vector size
  num_layers: int = 2
  num_heads: int = 2
  ffn_dim: int = 128
  dropout: float = 0.1
  user_vector: str = 'last'  # 'last' real position or masked 'mean'
  # The next play may return to a play of the history (model.RepeatBonus): people replay songs.
  repeat_bonus: bool = True
  # Losses.
  num_sampled: int = 1024
  sampler: str = 'log_uniform'
  unique_gather: bool = True
  neg_weight: float = 1.0
  pos_threshold: float = POS_THRESHOLD  # history_filter of variant a keeps plays with rate >= this
  # Training loop.
  # Sequences (training windows) per step, each training up to history_length + 1 plays: 32 gives
  # about 1,600 targets per update; more per step buys fewer updates per second, which is what
  # time-to-quality follows (docs/results.md).
  batch_size: int = 32
  optimizer: str = 'lazy_adam'
  learning_rate: float = 1e-3
  train_steps: int = 2000
  steps_per_checkpoint: int = 500
  steps_per_log: int = 100
  export_checkpoint: str = 'best'
  seed: int = 7
  # Parameter-server sharding: number of shards of each item table (1 means unsharded).
  num_shards: int = 1
  # Serving.
  top_k: int = 100
  # An approximate nearest-neighbour (ScaNN) index is exported beside the model from this many
  # vocabulary items on: below it, exact scoring of every item is cheap enough.
  ann_min_items: int = 100_000
  # The index is exported only if its recall@top_k against exact scoring is at least this.
  ann_min_recall: float = 0.95

  def check(self) -> None:
    _one_of('variant', self.variant, VARIANTS)
    _one_of('sampler', self.sampler, SAMPLERS)
    _one_of('user_vector', self.user_vector, USER_VECTOR_MODES)
    _one_of('optimizer', self.optimizer, OPTIMIZERS)
    _one_of('export_checkpoint', self.export_checkpoint, EXPORT_CHECKPOINTS)
    for key in ('history_length', 'item_embedding_dim', 'hidden_dim', 'num_layers', 'num_heads',
                'ffn_dim', 'num_sampled', 'batch_size', 'train_steps', 'steps_per_checkpoint',
                'steps_per_log', 'num_shards', 'top_k', 'ann_min_items'):
      _at_least(key, getattr(self, key), 1)
    require(0.0 <= self.dropout < 1.0, 'dropout', self.dropout, 'must be in [0, 1)')
    _at_least('neg_weight', self.neg_weight, 0.0)
    _within('pos_threshold', self.pos_threshold, 0.0, 1.0)
    _within('ann_min_recall', self.ann_min_recall, 0.0, 1.0)
    require(self.learning_rate > 0, 'learning_rate', self.learning_rate, 'must be > 0')
    require(self.hidden_dim % self.num_heads == 0, 'hidden_dim', self.hidden_dim,
            f'must be divisible by num_heads ({self.num_heads})')

  @property
  def feedback_features(self) -> bool:
    return self.variant in ('b', 'c')

  @property
  def negative_loss(self) -> bool:
    return self.variant == 'c'

  @property
  def history_filter(self) -> bool:
    return self.variant == 'a'

  def replace(self, **changes: Any) -> 'HParams':
    return dataclasses.replace(self, **changes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class TFJobConfig(Settings):
  """Training on a TFJob launched by the Trainer (Kubeflow only): trainer/tfjob_launcher.py."""
  # An image named by digest (NAME[:TAG]@sha256:<64 hex digits>) is the same image for good; a tag
  # can be pushed again with other code. kubeflow_runner holds the pipeline image to it too.
  IMAGE_BY_DIGEST = r'[^\s@]+@sha256:[0-9a-f]{64}'
  namespace: str = 'playrecall'  # of the TFJob and its template ConfigMap
  template_config_map: str = TFJOB_TEMPLATE_CONFIG_MAP
  manifest: Optional[str] = None  # a TFJob template file to use instead of the ConfigMap
  image: Optional[str] = None  # by digest; None: the template's, which must be by digest too
  replicas: Dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. {'Worker': 4, 'PS': 2}
  poll_seconds: float = 30.0
  timeout_seconds: float = 24 * 3600.0

  def check(self) -> None:
    require(re.fullmatch(_DNS_LABEL, self.namespace) is not None, 'namespace', self.namespace,
            'must be a Kubernetes namespace name (lower-case letters, digits, -)')
    require(re.fullmatch(_DNS_LABEL, self.template_config_map) is not None,
            'template_config_map', self.template_config_map,
            'must be a ConfigMap name (lower-case letters, digits, -)')
    require(self.image is None or re.fullmatch(self.IMAGE_BY_DIGEST, self.image) is not None,
            'image', self.image, 'must be by digest, REGISTRY/playrecall@sha256:<64 hex '
            'digits> (`docker push` prints it): a tag can be pushed again with other code')
    for role, count in self.replicas.items():
      _one_of('replicas', role, TFJOB_REPLICA_TYPES)
      _at_least(f'replicas.{role}', count, 1 if role != 'PS' else 0)
    _at_least('poll_seconds', self.poll_seconds, 0.0)
    require(self.timeout_seconds > 0, 'timeout_seconds', self.timeout_seconds, 'must be > 0')


@dataclasses.dataclass(frozen=True)
class TrainConfig(Settings):
  """Trainer: step counts, hyper-parameters, and where training runs."""
  train_steps: int = 2000
  # Batches of the eval split on which the Trainer measures POS@N / NEG@N at every checkpoint.
  eval_steps: int = 100
  hparams: HParams = HParams()
  # None trains in the Trainer's own pod. A TFJobConfig (JSON: an object, possibly empty) trains
  # on a TFJob of k8s/tfjob.yaml launched by the Trainer (Kubeflow only).
  tfjob: Optional[TFJobConfig] = None
  # Start from the model in service: the latest blessed model (local and Beam runners) or the
  # newest pushed version (Kubeflow), its item rows remapped to the new vocabulary
  # (trainer/warm_start.py). The first run, with no such model, starts cold.
  warm_start: bool = False
  # Steps when warm-started (None: train_steps): a day of new plays on top of a trained model
  # needs fewer steps than a model from scratch.
  warm_start_steps: Optional[int] = None
  # A base model that is damaged (truncated weights, missing assets or variables): 'fail' the
  # Trainer, naming the base and what is wrong, or start 'cold' (recorded with that reason).
  damaged_base: str = DAMAGED_BASE

  def check(self) -> None:
    _at_least('train_steps', self.train_steps, 1)
    _at_most('train_steps', self.train_steps, MAX_STEPS)
    _at_least('eval_steps', self.eval_steps, 1)
    _at_most('eval_steps', self.eval_steps, MAX_STEPS)
    if self.warm_start_steps is not None:
      _at_least('warm_start_steps', self.warm_start_steps, 1)
      _at_most('warm_start_steps', self.warm_start_steps, MAX_STEPS)
      require(self.warm_start, 'warm_start_steps', self.warm_start_steps,
              'needs warm_start: true')
    _one_of('damaged_base', self.damaged_base, DAMAGED_BASE_ACTIONS)
    for key, high in HPARAMS_MAXIMA.items():
      _at_most(f'hparams.{key}', getattr(self.hparams, key), high)


@dataclasses.dataclass(frozen=True)
class GateConfig(Settings):
  """Evaluator: on each gated N, POS@N must clear pos_floor and NEG@N stay under neg_ceiling;
  the model must beat most-popular (from the training plays) on the same targets: POS@N at least
  (1 + popularity_margin) times its POS@N and NEG@N no higher, and POS@N at least that many
  times the repeat baseline's too (the user's own history: the better of the two sets the bar);
  and neither POS@N nor NEG@N may be worse than the baseline model's by more than
  noise_standard_errors standard errors of the paired difference plus its tolerance (absolute,
  in hit-rate units)."""
  ns: Tuple[int, ...] = METRIC_NS
  gate_n: Union[int, Tuple[int, ...]] = 50  # the N (or several) whose POS@N / NEG@N are gated
  # On the generated demo data most-popular reaches POS@50 0.20 / NEG@50 0.54 and the trained
  # model about 0.3 / 0.2 (docs/results.md): a model below the floor or above the ceiling has
  # learnt less than a popularity count and is broken. Set both for your own catalogue.
  pos_floor: float = 0.10
  neg_ceiling: float = 0.5
  # Popularity, global (most-popular) and per user (repeat: the user's own played-through songs
  # by play count), is what any recall model must beat; 0.1 asks for 10 % more positives hit
  # than the better of the two.
  popularity_margin: float = 0.1
  # A change vs the baseline model smaller than this many standard errors (computed from the
  # eval targets on which the two models disagree) is noise: with 2, a retrain of the same
  # quality passes each of the two checks (POS@N, NEG@N) about 97.7 % of the time, whatever the
  # size of the eval set.
  noise_standard_errors: float = 2.0
  # Room beyond the noise; 0 rejects any drop the eval set can tell apart from noise.
  pos_tolerance: float = 0.0
  neg_tolerance: float = 0.0

  def check(self) -> None:
    require(len(self.ns) > 0 and all(n >= 1 for n in self.ns)
            and list(self.ns) == sorted(set(self.ns)), 'ns', list(self.ns),
            'must be distinct Ns >= 1, in increasing order')
    for n in self.gated_ns:
      _one_of('gate_n', n, self.ns)
    for key in ('pos_floor', 'neg_ceiling', 'pos_tolerance', 'neg_tolerance'):
      _within(key, getattr(self, key), 0.0, 1.0)
    _within('popularity_margin', self.popularity_margin, -1.0, 10.0)
    _within('noise_standard_errors', self.noise_standard_errors, 0.0, 10.0)

  @property
  def gated_ns(self) -> Tuple[int, ...]:
    return self.gate_n if isinstance(self.gate_n, tuple) else (self.gate_n,)


# The trainer's hyper-parameters a pipeline sets from other settings: the model is built for the
# histories ExampleGen cuts and the labels it gives, and trains the Trainer's step count.
HPARAMS_SET_BY = {'history_length': 'ingest.history_length',
                  'pos_threshold': 'ingest.pos_threshold',
                  'train_steps': 'train.train_steps'}


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Settings):
  pipeline_name: str = PIPELINE_NAME
  ingest: IngestConfig = IngestConfig()
  vocabulary: VocabularyConfig = VocabularyConfig()
  train: TrainConfig = TrainConfig()
  gate: GateConfig = GateConfig()

  def check(self) -> None:
    require(re.fullmatch(PIPELINE_NAME_PATTERN, self.pipeline_name) is not None,
            'pipeline_name', self.pipeline_name,
            'letters, digits, _ and - only (it names a directory), starting with a letter or digit')
    require(self.ingest.history_length >= 1, 'ingest.history_length', self.ingest.history_length,
            'must be >= 1: the model has one position per history play')

  def __post_init__(self):
    super().__post_init__()
    hparams = self.train.hparams.replace(
        history_length=self.ingest.history_length, pos_threshold=self.ingest.pos_threshold,
        train_steps=self.train.train_steps)
    object.__setattr__(self, 'train', dataclasses.replace(self.train, hparams=hparams))

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> 'PipelineConfig':
    """The config from a dict, refusing the hyper-parameters the pipeline sets itself."""
    hparams = ((values.get('train') or {}) if isinstance(values, dict) else {}).get('hparams')
    for key in (hparams if isinstance(hparams, dict) else {}):
      if key in HPARAMS_SET_BY:
        raise SettingError(f'train.hparams.{key}', f'set it as {HPARAMS_SET_BY[key]} instead '
                           '(the pipeline sets the hyper-parameter from there)')
    return build(cls, values)

  @classmethod
  def from_json_file(cls, path: str) -> 'PipelineConfig':
    """Loads a JSON config; every error names the file (and the line of a syntax error, the
    key given twice, the first byte that is not UTF-8)."""
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as error:
      raise SettingError(path, f'cannot read the config file: {error.strerror}') from None
    try:
      values = json.loads(_utf8_text(data), object_pairs_hook=_JsonObject.of)
    except UnicodeDecodeError as error:
      bom = next((name for mark, name in _OTHER_BOMS if data.startswith(mark)), None)
      raise SettingError(path, f'not UTF-8 text: byte 0x{data[error.start]:02x} at offset '
                         f'{error.start}' + (f' (the file starts with a {bom} byte-order mark: '
                                             f'it is {bom})' if bom else '')
                         + '; save the config as UTF-8') from None
    except json.JSONDecodeError as error:
      raise SettingError(f'{path}:{error.lineno}:{error.colno}',
                         f'not valid JSON: {error.msg}') from None
    try:
      _refuse_duplicate_keys(values)
      return cls.from_dict(values)
    except SettingError as error:
      raise SettingError(f'{path}: {error.path}' if error.path else path, error.problem) from None

  def to_dict(self) -> Dict[str, Any]:
    """The settings as from_dict takes them (without the hyper-parameters set from others)."""
    values = dataclasses.asdict(self)
    for key in HPARAMS_SET_BY:
      del values['train']['hparams'][key]
    return values


# Byte-order marks of encodings other than UTF-8, named when a config is not UTF-8 (UTF-32
# first: its little-endian mark starts with UTF-16's).
_OTHER_BOMS = ((b'\xff\xfe\x00\x00', 'UTF-32'), (b'\x00\x00\xfe\xff', 'UTF-32'),
               (b'\xff\xfe', 'UTF-16'), (b'\xfe\xff', 'UTF-16'))


def _utf8_text(data: bytes) -> str:
  """The file's text; a UTF-8 byte-order mark (some editors write one) is dropped."""
  return data.decode('utf-8-sig')


class _JsonObject(dict):
  """A JSON object as json.loads makes it, remembering the keys it was given more than once
  (json keeps the last value silently, so one of the two would be ignored)."""
  duplicates: Tuple[str, ...] = ()

  @classmethod
  def of(cls, pairs) -> '_JsonObject':
    made = cls()
    duplicates = []
    for key, value in pairs:
      if key in made:
        duplicates.append(key)
      made[key] = value
    made.duplicates = tuple(duplicates)
    return made


def _refuse_duplicate_keys(values: Any, path: str = '') -> None:
  """Raises SettingError naming the first key a JSON object of values holds twice."""
  if isinstance(values, _JsonObject):
    for key in values.duplicates:
      raise SettingError(f'{path}{key}', 'given twice in one object; JSON would keep only the '
                         'last value and silently drop the other: keep one')
    for key, value in values.items():
      _refuse_duplicate_keys(value, f'{path}{key}.')
  elif isinstance(values, list):
    for i, value in enumerate(values):
      _refuse_duplicate_keys(value, f'{path.rstrip(".")}[{i}].')


def load_config() -> PipelineConfig:
  """The defaults, overridden by the JSON file named in $PLAYRECALL_CONFIG when it is set."""
  path = os.environ.get(CONFIG_ENV)
  return PipelineConfig.from_json_file(path) if path else PipelineConfig()
