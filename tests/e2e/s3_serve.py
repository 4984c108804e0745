"""Loads a pushed SavedModel from s3:// and asks its serving signature, in a process of its own.

  python -m tests.e2e.s3_serve s3://BUCKET/serving/VERSION    (prints the answer as JSON)

Once tensorflow-io's S3 file system has been used, a process must end through storage.run (it
aborts at exit otherwise, see storage.exit_process); pytest's own process cannot, so the test
reads the model through this command. Credentials and endpoint come from the environment.
"""

import json
import sys

from contract import storage as storage_names
from datagen import ground_truth
import storage
from tests.e2e.cli_workspace import NUM_ITEMS, serve

# Two users: one who played the two most popular songs, one with an empty history.
HISTORIES = [[(ground_truth.item_id(0, NUM_ITEMS), 1.0, 'on_demand'),
              (ground_truth.item_id(1, NUM_ITEMS), 0.1, 'recommend')], []]


def main() -> None:
  version_dir = sys.argv[1]
  storage.register_filesystems([version_dir])
  assert version_dir.startswith(storage_names.S3_SCHEME), version_dir
  item_ids, scores = serve(version_dir, HISTORIES)
  print(json.dumps({'item_ids': [[i.decode() for i in row] for row in item_ids],
                    'scores': scores.tolist()}))


if __name__ == '__main__':
  storage.run(main)
