"""The curated schema of the raw examples, generated from their one definition (RAW_FEATURES).

  python -m contract.schema --write contract/raw_examples.schema.pbtxt   # after changing RAW_FEATURES
  python -m contract.schema --check                                      # the file is up to date

The pipeline loads the checked-in file with ImportSchemaGen, so ExampleValidator checks each
run's statistics against what the examples must be, not against a schema inferred from those
same statistics: every feature present in every example (a missing one is SCHEMA_MISSING_COLUMN,
an unknown one SCHEMA_NEW_COLUMN), of its type, one value for the user and target features,
play rates in [0, 1] and labels in {-1, 0, 1} (LABELS). Intents have no closed domain: unknown
intents are kept by design (README "Intents"). History lengths are not bounded here, since
history_length is a setting; the Trainer checks its own against the examples'.

Standard library at module level, like the rest of contract/: the proto is built on demand.
"""

import argparse
import os
import sys
from typing import List, Optional

from contract import features

SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'raw_examples.schema.pbtxt')
# Where SCHEMA_FILE is inside the pipeline image (k8s/Dockerfile copies contract/ under its
# WORKDIR): Kubeflow steps read it there.
IMAGE_SCHEMA_FILE = '/opt/playrecall/contract/raw_examples.schema.pbtxt'
_HEADER = ('# Generated from contract/features.py (RAW_FEATURES) by\n'
           '#   python -m contract.schema --write contract/raw_examples.schema.pbtxt\n'
           '# Do not edit: change the definition and generate it again.\n')


def raw_schema():
  """The schema (tensorflow_metadata Schema proto) of RAW_FEATURES."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  types = {features.BYTES: schema_pb2.BYTES, features.INT64: schema_pb2.INT,
           features.FLOAT: schema_pb2.FLOAT}
  schema = schema_pb2.Schema()
  for definition in features.RAW_FEATURES:
    feature = schema.feature.add(name=definition.name, type=types[definition.dtype])
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
    if definition.scalar:
      feature.shape.SetInParent()  # a scalar: exactly one value (Transform: FixedLenFeature([]))
    else:
      feature.value_count.min = 0  # one value per history play; an empty history has none
    if definition.min_value is not None or definition.max_value is not None:
      domain = feature.float_domain if definition.dtype == features.FLOAT else feature.int_domain
      if definition.min_value is not None:
        domain.min = definition.min_value
      if definition.max_value is not None:
        domain.max = definition.max_value
    if definition.note:
      feature.annotation.comment.append(definition.note)
    if definition.read_by:
      feature.annotation.tag.extend(f'read_by:{reader}' for reader in definition.read_by)
    else:
      feature.annotation.tag.append('read_by:nothing')
  return schema


def schema_text() -> str:
  """The checked-in file's text."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  return _HEADER + text_format.MessageToString(raw_schema())


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument('--write', metavar='PATH', help='write the schema to PATH')
  group.add_argument('--check', nargs='?', const=SCHEMA_FILE, metavar='PATH',
                     help=f'exit 1 unless PATH (default {SCHEMA_FILE}) is what the definition '
                          'generates')
  args = parser.parse_args(argv)
  text = schema_text()
  if args.write:
    with open(args.write, 'w', encoding='utf-8') as f:
      f.write(text)
    print(f'wrote {args.write}')
    return 0
  with open(args.check, encoding='utf-8') as f:
    if f.read() != text:
      print(f'{args.check} is not what contract/features.py defines: run python -m '
            f'contract.schema --write {args.check}', file=sys.stderr)
      return 1
  print(f'{args.check} is up to date')
  return 0


if __name__ == '__main__':
  sys.exit(main())
