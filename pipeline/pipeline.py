"""The playrecall pipeline: play logs -> examples -> vocabularies -> model -> gate -> serving.

create_pipeline knows no paths and no engine: the runners (local_runner.py, beam_runner.py,
kubeflow_runner.py) choose where things go and which orchestrator runs it.
"""

import dataclasses
import os
from typing import List, Optional

from tfx import v1 as tfx
from ml_metadata.proto import metadata_store_pb2

from components.example_validator.component import ExampleValidator
from components.play_log_example_gen.component import PlayLogExampleGen
from components.pushed_model_baseline.component import PushedModelBaseline
from components.serving_pusher.component import ServingPusher
from components.transform.component import Transform
from contract import features
from contract import schema as schema_lib
from contract import settings
from evaluation import eval_config as eval_config_lib
from pipeline import beam_direct

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
    schema_file: Optional[str] = None,
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
    beam_pipeline_args: passed to every Beam-based component; without a `--runner`, the
      project's local runner is named (pipeline/beam_direct.py: Beam's default would try to
      download the Prism runner at run time).
    metadata_connection_config: the MLMD store (None: the orchestrator's default).
    enable_cache: reuse outputs of unchanged components from MLMD.
    schema_file: the curated schema of the raw examples where the steps run (None: the
      repository's, contract/raw_examples.schema.pbtxt; Kubeflow: its path in the image).
  """
  if baseline not in BASELINES:
    raise ValueError(f'baseline={baseline!r}; choose one of {list(BASELINES)}')
  example_gen = PlayLogExampleGen(input_base=data_root, ingest_config=ingest_settings(
      config.ingest, pipeline_root))
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  # The curated schema, generated from the example's one definition (contract/features.py), not
  # one inferred from the statistics it is to check: ExampleValidator fails the run on any
  # anomaly, naming it, and Transform waits for it.
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file or schema_lib.SCHEMA_FILE)
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config=dataclasses.asdict(config.vocabulary))
  transform.add_upstream_node(example_validator)
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
    trainer_config[settings.TRAINER_DAMAGED_BASE_KEY] = config.train.damaged_base
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
      beam_pipeline_args=beam_direct.with_runner(beam_pipeline_args or []))


def ingest_settings(ingest: settings.IngestConfig, pipeline_root: str) -> settings.IngestConfig:
  """The ingest settings, the partition cache under the pipeline root unless they name a
  folder: it then lives where the run's outputs do (a local folder, gs://, s3://)."""
  if ingest.partition_cache_dir is not None:
    return ingest
  return dataclasses.replace(ingest, partition_cache_dir=os.path.join(
      pipeline_root, settings.PARTITION_CACHE_DIR))


def _latest_blessed_model() -> tfx.dsl.Resolver:
  return tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')
