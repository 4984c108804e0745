"""Prints what the latest local run of the pipeline produced: where every output is, the
ingestion counts, the pushed model, and the Evaluator's gate decision with its metrics table:
the model beside most-popular, the repeat baseline (the user's own history) and the baseline
model (and a plot of POS@N and NEG@N against N beside the evaluation).

  python -m pipeline.summary          (paths from $PLAYRECALL_HOME, as the local runner uses)
"""

import argparse
import os
import sys
from typing import Dict, List

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from contract import settings
from evaluation import report
from pipeline import local_paths
import storage
from trainer import warm_start

# Artifact types in pipeline order, with the properties worth a line each.
_SHOWN = (
    ('Examples', None),
    # Its counts are the Examples' own; only where the quarantined rows are is new.
    ('components.PlayLogQuarantine', ()),
    ('ExampleStatistics', ()),
    ('Schema', ()),
    ('ExampleAnomalies', ()),
    ('TransformGraph', ()),
    ('Model', ()),
    ('ModelRun', ()),
    ('ModelEvaluation', ()),
    ('ModelBlessing', ('blessed',)),
    ('PushedModel', ('pushed', 'pushed_destination', 'pushed_version')),
)
# Bookkeeping properties TFX puts on every artifact.
_HIDDEN_PROPERTIES = ('tfx_version', 'state', 'is_external', 'span', 'version', 'split_names',
                      'name', 'producer', 'artifact_')


def latest_run_artifacts(store: metadata_store.MetadataStore,
                         pipeline_name: str) -> List[metadata_store_pb2.Artifact]:
  """The artifacts attached to the newest run of `pipeline_name`."""
  runs = [c for c in store.get_contexts_by_type('pipeline_run')
          if _run_belongs_to(store, c, pipeline_name)]
  if not runs:
    raise SystemExit(f'no run of pipeline {pipeline_name!r} recorded in this metadata store')
  newest = max(runs, key=lambda c: c.create_time_since_epoch)
  return store.get_artifacts_by_context(newest.id)


def _run_belongs_to(store, run_context, pipeline_name: str) -> bool:
  parents = store.get_parent_contexts_by_context(run_context.id)
  # A store written without parent links holds one pipeline's runs only.
  return any(p.name == pipeline_name for p in parents) or not parents


def property_values(artifact: metadata_store_pb2.Artifact, names=None) -> Dict[str, object]:
  values = {}
  for source in (artifact.properties, artifact.custom_properties):
    for name, value in source.items():
      if names is None or name in names:
        values[name] = getattr(value, value.WhichOneof('value'))
  return values


def print_summary(store: metadata_store.MetadataStore, pipeline_name: str, reports_dir: str,
                  out=sys.stdout):
  by_type = _artifacts_by_type(store, latest_run_artifacts(store, pipeline_name))
  print(f'Latest run of {pipeline_name}:', file=out)
  for type_name, names in _SHOWN:
    for artifact in by_type.get(type_name, []):
      print(f'  {type_name:18s} {artifact.uri}', file=out)
      shown = property_values(artifact, names)
      for name in sorted(shown):
        if not name.startswith(_HIDDEN_PROPERTIES):
          print(f'  {"":18s}   {name} = {shown[name]}', file=out)
      started = warm_start.read_record(artifact.uri) if type_name == 'ModelRun' else None
      if started:
        print(f'  {"":18s}   {started.summary()}', file=out)
  for evaluation in by_type.get('ModelEvaluation', []):
    run = report.load_run(evaluation.uri)
    print('\n' + report.format_report(run, run.baseline), file=out)
    os.makedirs(reports_dir, exist_ok=True)
    plot = report.write_plot(os.path.join(reports_dir, f'hit_rates-{evaluation.id}.png'), run,
                             run.baseline)
    print(f'\nplot: {plot}', file=out)


def _artifacts_by_type(store, artifacts) -> Dict[str, List[metadata_store_pb2.Artifact]]:
  types = {t.id: t.name for t in store.get_artifact_types()}
  by_type: Dict[str, List[metadata_store_pb2.Artifact]] = {}
  for artifact in artifacts:
    by_type.setdefault(types[artifact.type_id], []).append(artifact)
  return by_type


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--pipeline_name', default=settings.load_config().pipeline_name)
  parser.add_argument('--metadata_path', help='MLMD sqlite file (default: from $PLAYRECALL_HOME)')
  args = parser.parse_args(argv)
  paths = local_paths.LocalPaths.from_env(args.pipeline_name)
  storage.register_filesystems(paths.uris())  # the outputs it reads may be on s3://
  path = args.metadata_path or paths.metadata_path
  if not os.path.exists(path):
    raise SystemExit(f'no metadata store at {path}: run the pipeline first (make demo)')
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(path))
  print_summary(store, args.pipeline_name, paths.reports_dir)


if __name__ == '__main__':
  storage.run(main)  # past tensorflow-io's crash at exit after s3:// (storage.exit_process)
