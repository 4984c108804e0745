"""Registers s3:// in a Beam worker process: named in --beam_plugins by
storage.beam_pipeline_args() when a run has s3:// paths, so Beam imports it in every worker (the
DirectRunner's multi_processing workers, a portable runner's SDK harness) before any DoFn runs.

A worker sets its file systems' options from the pipeline's; tf.io.gfile in DoFns (Transform
writing its outputs, the Evaluator loading models) needs tensorflow-io's s3://. A worker whose
harness ends normally would then abort at exit (storage.exit_process), which its runner reports
as a failed worker.
"""

import storage

storage.register_s3()
storage.exit_at_interpreter_exit()
