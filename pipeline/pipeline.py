"""The playrecall pipeline: play logs -> examples -> vocabularies -> model -> gate -> serving.

create_pipeline knows no paths and no engine: the runners (local_runner.py, beam_runner.py,
kubeflow_runner.py) choose where things go and which orchestrator runs it.
"""

import dataclasses
import os
from typing import List, Optional

from tfx import v1 as tfx
from ml_metadata.proto import metadata_store_pb2

from components.play_log_example_gen.component import PlayLogExampleGen
from components.pushed_model_baseline.component import PushedModelBaseline
from components.serving_pusher.component import ServingPusher
from contract import features
from contract import settings
from evaluation import eval_config as eval_config_lib

PREPROCESSING_FN = 'transform.preprocessing.preprocessing_fn'
RUN_FN = 'trainer.run.run_fn'
# Trains on a TFJob (chief, workers, parameter servers) from the Trainer's pod: config.train.tfjob.
TFJOB_RUN_FN = 'trainer.tfjob_launcher.run_fn'
BASELINES = ('resolver', 'pushed_model')
# Node ids of the two nodes that read the push directory (Kubeflow): the Evaluator's baseline and
# the Trainer's warm-start base.
PUSHED_MODEL_BASELINE_ID = 'pushed_model_baseline'
PUSHED_MODEL_BASE_ID = 'pushed_model_base'


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    config: settings.PipelineConfig,
    baseline: str = 'resolver',
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
  """Builds the pipeline.

  Args:
    pipeline_name: the name runs are recorded under.
    pipeline_root: where every component writes its outputs.
    data_root: the directory (or glob) of play-log files.
    serving_model_dir: the TF Serving model directory Pusher writes numbered versions into.
    config: every setting of the pipeline (contract/settings.py).
    baseline: how the Evaluator finds the model to compare against: 'resolver' (the latest
      blessed model in MLMD; local and Beam runners) or 'pushed_model' (the newest version in
      serving_model_dir; for Kubeflow Pipelines v2, which cannot run a Resolver).
    beam_pipeline_args: passed to every Beam-based component.
    metadata_connection_config: the MLMD store (None: the orchestrator's default).
    enable_cache: reuse outputs of unchanged components from MLMD.
  """
  if baseline not in BASELINES:
    raise ValueError(f'baseline={baseline!r}; choose one of {list(BASELINES)}')
  ingest = config.ingest
  example_gen = PlayLogExampleGen(
      input_base=data_root,
      input_format=ingest.input_format,
      column_mapping=ingest.column_mapping,
      history_length=ingest.history_length,
      pos_threshold=ingest.pos_threshold,
      neg_threshold=ingest.neg_threshold,
      eval_plays_per_user=ingest.eval_plays_per_user,
      eval_start_ts=ingest.eval_start_ts,
      eval_fraction=ingest.eval_fraction,
      valid_plays_per_user=ingest.valid_plays_per_user,
      max_bad_fraction=ingest.max_bad_fraction,
      ts_unit=ingest.ts_unit,
      min_ts_ms=ingest.min_ts_ms,
      max_ts_ms=ingest.max_ts_ms,
      partition_pattern=ingest.partition_pattern,
      window_partitions=ingest.window_partitions)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.SchemaGen(
      statistics=statistics_gen.outputs['statistics'], infer_feature_shape=True)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config=dataclasses.asdict(config.vocabulary))
  trainer_config = {
      # The hyper-parameters as the config holds them: history_length, pos_threshold and
      # train_steps already set from ingest and train (contract/settings.py).
      settings.TRAINER_HPARAMS_KEY: dataclasses.asdict(config.train.hparams),
      # Checkpoints outlive the execution, so a re-run of the same training resumes.
      settings.TRAINER_CHECKPOINT_ROOT_KEY: os.path.join(pipeline_root,
                                                         settings.CHECKPOINT_ROOT_DIR),
  }
  if config.train.tfjob is not None:
    trainer_config[settings.TRAINER_TFJOB_KEY] = dataclasses.asdict(config.train.tfjob)
  resolver = _latest_blessed_model() if baseline == 'resolver' else None
  base_model_node = None
  if config.train.warm_start:
    trainer_config[settings.TRAINER_WARM_START_STEPS_KEY] = (config.train.warm_start_steps
                                                             or config.train.train_steps)
    # The model in service is the base: the latest blessed model, or on Kubeflow the newest
    # pushed version (a node of its own: the Evaluator's baseline node waits for the candidate).
    base_model_node = resolver or PushedModelBaseline(
        serving_model_dir=serving_model_dir).with_id(PUSHED_MODEL_BASE_ID)
  trainer = tfx.components.Trainer(
      run_fn=RUN_FN if config.train.tfjob is None else TFJOB_RUN_FN,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=tfx.proto.TrainArgs(num_steps=config.train.train_steps),
      # The checkpoint to export is chosen on the valid split; the Evaluator gates on 'eval'.
      eval_args=tfx.proto.EvalArgs(splits=[features.VALID_SPLIT],
                                   num_steps=config.train.eval_steps),
      base_model=base_model_node.outputs['model'] if base_model_node else None,
      custom_config=trainer_config)
  # Nothing pushed yet: the candidate is its own baseline, so only absolute thresholds gate it.
  baseline_node = resolver or PushedModelBaseline(
      candidate_model=trainer.outputs['model'], serving_model_dir=serving_model_dir,
  ).with_id(PUSHED_MODEL_BASELINE_ID)
  evaluator = tfx.components.Evaluator(
      # The exported model takes raw tf.Examples (Transform's graph is inside it).
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline_node.outputs['model'],
      example_splits=[features.EVAL_SPLIT],
      eval_config=eval_config_lib.make_eval_config(config.gate))
  pusher = ServingPusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
  ).with_id('Pusher')  # the id TFX's own Pusher has: runs, caches and dashboards keep their name

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, statistics_gen, schema_gen, example_validator, transform,
                  trainer, baseline_node, evaluator, pusher]
      + ([base_model_node] if base_model_node not in (None, baseline_node) else []),
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [])


def _latest_blessed_model() -> tfx.dsl.Resolver:
  return tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')
