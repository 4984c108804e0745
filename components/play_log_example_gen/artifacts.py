"""Artifact types of PlayLogExampleGen."""

from tfx.types import artifact


class Quarantine(artifact.Artifact):
  """Rows ExampleGen refused, one JSON object per line in quarantine-*.jsonl.

  Each object has `source` (file), `line` (CSV/JSON-lines line, or Parquet row number),
  `reason`, `detail` and `raw` (the row as read). `ingestion_counts.json` beside them holds the
  counts that are also recorded as custom properties.
  """
  # Kubeflow V2 runs recover a custom artifact's class by importing its type name, which the KFP
  # schema title limits to '<top-level module>.<Class>': components/__init__.py provides it.
  TYPE_NAME = 'components.PlayLogQuarantine'
