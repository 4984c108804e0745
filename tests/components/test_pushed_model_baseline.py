"""PushedModelBaseline: picks the served version, and the Evaluator gates against it.

The pipeline test runs real TFX components on LocalDagRunner: Importers for a tiny eval split and
a candidate model, PushedModelBaseline, and the real Evaluator (TFMA on Beam's DirectRunner) with
an absolute threshold and a change threshold, the two kinds the playrecall gate uses.
"""

import json
import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration import metadata
from tfx.types import standard_artifacts
import tensorflow_model_analysis as tfma

from components.pushed_model_baseline import executor
from components.pushed_model_baseline.component import PushedModelBaseline

NUM_EXAMPLES = 40
POSITIVE_FRACTION = 0.8  # a model that always says "positive" scores this accuracy
ACCURACY_FLOOR = 0.6
ACCURACY_TOLERANCE = 0.05


def _write_saved_model(path: str, always_positive: bool) -> None:
  """A SavedModel whose default signature scores serialized tf.Examples, as the trainer's does:
  either the perfect model (predicts the feature that equals the label) or a constant 0.9."""

  class Model(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
    def serve(self, examples):
      x = tf.io.parse_example(examples, {'x': tf.io.FixedLenFeature([1], tf.float32)})['x']
      return {'output': tf.fill(tf.shape(x), 0.9) if always_positive else x}

  model = Model()
  tf.saved_model.save(model, path, signatures={'serving_default': model.serve})


def _write_eval_split(uri: str) -> None:
  split_dir = os.path.join(uri, 'Split-eval')
  os.makedirs(split_dir)
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'data_tfrecord-00000-of-00001.gz'),
                            options) as writer:
    for i in range(NUM_EXAMPLES):
      label = float(i < POSITIVE_FRACTION * NUM_EXAMPLES)
      example = tf.train.Example(features=tf.train.Features(feature={
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
          'y': tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
      }))
      writer.write(example.SerializeToString())


def _eval_config() -> tfma.EvalConfig:
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name='candidate', label_key='y'),
                   tfma.ModelSpec(name='baseline', label_key='y', is_baseline=True)],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
          class_name='BinaryAccuracy',
          threshold=tfma.MetricThreshold(
              value_threshold=tfma.GenericValueThreshold(lower_bound={'value': ACCURACY_FLOOR}),
              change_threshold=tfma.GenericChangeThreshold(
                  direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                  absolute={'value': -ACCURACY_TOLERANCE})))])])


def _run_gate(tmp_path, serving_model_dir: str, candidate_dir: str, examples_dir: str, run: str):
  """Runs Importers -> PushedModelBaseline -> Evaluator.

  Returns (the baseline Model artifact, whether the candidate was blessed, TFMA's validation result).
  """
  examples = tfx.dsl.Importer(
      source_uri=examples_dir, artifact_type=standard_artifacts.Examples,
      properties={'split_names': '["eval"]'}).with_id('examples')
  candidate = tfx.dsl.Importer(
      source_uri=candidate_dir, artifact_type=standard_artifacts.Model).with_id('candidate')
  baseline = PushedModelBaseline(
      candidate_model=candidate.outputs['result'], serving_model_dir=serving_model_dir)
  evaluator = tfx.components.Evaluator(
      examples=examples.outputs['result'], model=candidate.outputs['result'],
      baseline_model=baseline.outputs['model'], eval_config=_eval_config())
  metadata_path = str(tmp_path / 'metadata.sqlite')
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='baseline_gate', pipeline_root=str(tmp_path / 'root' / run),
      components=[examples, candidate, baseline, evaluator], enable_cache=False,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          metadata_path)))
  with metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(
      metadata_path)) as store:
    baseline_artifact = _latest_artifact(store, standard_artifacts.Model.TYPE_NAME, 'model')
    blessing = _latest_artifact(store, standard_artifacts.ModelBlessing.TYPE_NAME, 'blessing')
    evaluation = _latest_artifact(
        store, standard_artifacts.ModelEvaluation.TYPE_NAME, 'evaluation')
  return (baseline_artifact, blessing.custom_properties['blessed'].int_value == 1,
          tfma.load_validation_result(evaluation.uri))


def _latest_artifact(store, type_name: str, output_key: str):
  """The newest artifact of a type that some execution emitted under output_key."""
  artifacts = store.store.get_artifacts_by_type(type_name)
  events = store.store.get_events_by_artifact_ids([a.id for a in artifacts])
  emitted = {e.artifact_id for e in events
             if e.type == e.OUTPUT and e.path.steps[0].key == output_key}
  return max((a for a in artifacts if a.id in emitted), key=lambda a: a.id)


def test_newest_pushed_version_is_the_one_tf_serving_would_serve(tmp_path):
  serving_dir = tmp_path / 'serving'
  assert executor.newest_pushed_version(str(serving_dir)) is None  # no directory yet
  serving_dir.mkdir()
  assert executor.newest_pushed_version(str(serving_dir)) is None  # empty
  for version, has_model in (('7', True), ('12', True), ('30', False), ('99-tmp', True)):
    (serving_dir / version).mkdir()
    if has_model:
      (serving_dir / version / 'saved_model.pb').write_bytes(b'')
  # 30 has no SavedModel (a push still copying, or a broken one) and 99-tmp is not a version.
  assert executor.newest_pushed_version(str(serving_dir)) == 12


def test_gate_uses_the_pushed_model_and_blesses_on_absolute_thresholds_first(tmp_path):
  examples_dir = str(tmp_path / 'examples')
  _write_eval_split(examples_dir)
  # The candidate always answers "positive": accuracy 0.8, above the floor of 0.6.
  candidate_dir = str(tmp_path / 'candidate')
  _write_saved_model(os.path.join(candidate_dir, 'Format-Serving'), always_positive=True)
  serving_model_dir = str(tmp_path / 'serving')

  # First run: nothing pushed. The candidate is its own baseline and passes the floor.
  baseline, blessed, validation = _run_gate(
      tmp_path, serving_model_dir, candidate_dir, examples_dir, 'first')
  assert baseline.custom_properties[executor.BASELINE_SOURCE_PROPERTY].string_value == 'candidate'
  assert blessed and validation.validation_ok

  # A perfect model (accuracy 1.0) is in service: the same candidate is now 0.2 worse than the
  # baseline, beyond the 0.05 tolerance, and must not be blessed.
  _write_saved_model(os.path.join(serving_model_dir, '1700000000'), always_positive=False)
  _write_saved_model(os.path.join(serving_model_dir, '1600000000'), always_positive=True)
  baseline, blessed, validation = _run_gate(
      tmp_path, serving_model_dir, candidate_dir, examples_dir, 'second')
  assert baseline.custom_properties[executor.BASELINE_SOURCE_PROPERTY].string_value == 'pushed'
  assert baseline.custom_properties[executor.PUSHED_VERSION_PROPERTY].int_value == 1700000000
  assert os.path.exists(os.path.join(baseline.uri, 'Format-Serving', 'saved_model.pb'))
  assert not blessed
  [failure] = validation.metric_validations_per_slice[0].failures
  assert failure.metric_key.is_diff and failure.metric_threshold.HasField('change_threshold')
  assert abs(failure.metric_value.double_value.value - (POSITIVE_FRACTION - 1.0)) < 1e-6
