"""A metadata store written by hand, with runs of pipelines as TFX records them, for the tests of
what reads it (pipeline.summary)."""

import io
import time

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import summary

PIPELINE = 'playrecall'


class Store:
  """A SQLite metadata store with runs of pipelines, as TFX records them."""

  def __init__(self, path: str):
    self.path = path
    self.store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(path))
    self._types = {}

  def _type_id(self, name: str) -> int:
    if name not in self._types:
      self._types[name] = self.store.put_artifact_type(metadata_store_pb2.ArtifactType(name=name))
    return self._types[name]

  def _context(self, type_name: str, name: str) -> metadata_store_pb2.Context:
    type_id = self.store.put_context_type(metadata_store_pb2.ContextType(name=type_name))
    found = self.store.get_context_by_type_and_name(type_name, name)
    if found:
      return found
    [context_id] = self.store.put_contexts([metadata_store_pb2.Context(type_id=type_id,
                                                                        name=name)])
    return self.store.get_contexts_by_id([context_id])[0]

  def add_run(self, pipeline: str, run_id: str, artifacts):
    """artifacts: (type name, uri, {property: int or str}) in the run's context."""
    parent = self._context('pipeline', pipeline)
    time.sleep(0.01)  # the newest run is told by its context's creation time, in ms
    run = self._context('pipeline_run', run_id)
    self.store.put_parent_contexts([metadata_store_pb2.ParentContext(child_id=run.id,
                                                                     parent_id=parent.id)])
    ids = []
    for type_name, uri, properties in artifacts:
      artifact = metadata_store_pb2.Artifact(type_id=self._type_id(type_name), uri=uri)
      for name, value in properties.items():
        if isinstance(value, int):
          artifact.custom_properties[name].int_value = value
        else:
          artifact.custom_properties[name].string_value = value
      ids.extend(self.store.put_artifacts([artifact]))
    self.store.put_attributions_and_associations(
        [metadata_store_pb2.Attribution(artifact_id=i, context_id=run.id) for i in ids], [])
    return ids

  def summary(self, reports_dir, pipeline: str = PIPELINE) -> str:
    """What pipeline.summary prints of the newest run of `pipeline`."""
    out = io.StringIO()
    summary.print_summary(self.store, pipeline, str(reports_dir), out=out)
    return out.getvalue()
