"""The command of every Kubeflow Pipelines step (pipeline/kubeflow_runner.py compiles it in):
TFX's KFP v2 executor entrypoint, with s3:// registered first when the step's arguments name an
s3:// URI, and the process ended by storage.run so that tensorflow-io's crash at exit does not
fail a step that succeeded.

  python -m storage.kfp_executor --executor_class_path=... --json_serialized_invocation_args=...

takes exactly the arguments of `python -m tfx.orchestration.kubeflow.v2.container.
kubeflow_v2_run_executor`; KFP's launcher passes them.
"""

import runpy
import sys

from contract import storage as names
import storage

COMMAND = ('python', '-m', 'storage.kfp_executor')
TFX_EXECUTOR_ENTRYPOINT = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'


def main() -> None:
  # The invocation (one JSON argument) holds every URI the step reads or writes: its input and
  # output artifacts under the pipeline root, and its execution properties (data root, push
  # directory).
  if any(names.S3_SCHEME in arg for arg in sys.argv[1:]):
    storage.register_filesystems([names.S3_SCHEME])
    # The step's buckets answer, or it fails in seconds naming the endpoint.
    storage.check_buckets(sys.argv[1:])
  sys.argv[0] = TFX_EXECUTOR_ENTRYPOINT
  runpy.run_module(TFX_EXECUTOR_ENTRYPOINT, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  storage.run(main)
