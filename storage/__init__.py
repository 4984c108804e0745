"""s3:// (AWS S3, MinIO) beside gs:// and local paths, in every process of a run.

TensorFlow 2.16 has no s3:// file system of its own: importing tensorflow_io registers one in
tf.io.gfile, and so in TFX's fileio, the Trainer's checkpoints and SavedModel export, in the
process that imports it. Beam-based steps read and write through Beam's own file systems, where
s3:// is apache_beam.io.aws over boto3. Each process of a run gets them here:
  - the runner process (local_runner.py, beam_runner.py; every component of LocalDagRunner runs
    in it): pipeline/local_paths.py calls register_filesystems() with the run's paths;
  - Beam's worker processes (the DirectRunner's multi_processing workers, a portable runner's
    SDK harness): beam_pipeline_args() names storage.beam_plugin in --beam_plugins, which Beam
    imports in every worker before it runs any code of the pipeline;
  - a Kubeflow Pipelines step's container: its command is storage.kfp_executor, which registers
    them before TFX's executor entrypoint runs.
Credentials, region and endpoint come from the standard environment variables
(contract/storage.py), never from flags: flags end up in compiled specs and process listings.
"""

import atexit
import logging
import os
import re
import sys
import traceback
from typing import (Callable, Iterable, List, Mapping, MutableMapping, NoReturn, Optional,
                    Sequence)

from contract import storage as names

BEAM_PLUGIN = 'storage.beam_plugin'
BEAM_PLUGINS_FLAG = '--beam_plugins'
# Each pair names one setting under the variable boto3 reads and the one the AWS C++ SDK in
# tensorflow-io reads; either is enough, the other is filled in from it.
_SHARED_ENV = ((names.BOTO_ENDPOINT_ENV, names.TFIO_ENDPOINT_ENV),
               (names.BOTO_REGION_ENV, names.REGION_ENV))

_registered = False


def uses_s3(uris: Iterable[Optional[str]]) -> bool:
  return any(uri and uri.startswith(names.S3_SCHEME) for uri in uris)


def share_environment(environ: MutableMapping[str, str]) -> None:
  """Fills in the variable of each pair in _SHARED_ENV that is unset from the one that is set.

  boto3 needs a scheme in its endpoint URL; tensorflow-io takes a bare host:port as https.
  """
  for boto_name, tfio_name in _SHARED_ENV:
    boto_value, tfio_value = environ.get(boto_name), environ.get(tfio_name)
    if boto_value and not tfio_value:
      environ[tfio_name] = boto_value
    elif tfio_value and not boto_value:
      environ[boto_name] = (tfio_value if boto_name != names.BOTO_ENDPOINT_ENV
                            or '://' in tfio_value else 'https://' + tfio_value)


def register_filesystems(uris: Iterable[Optional[str]],
                         beam_args: Sequence[str] = ()) -> None:
  """Makes s3:// readable and writable by tf.io.gfile and by Beam in this process, if any of
  uris is on s3://; beam_args configure Beam's file systems for calls outside a pipeline (a
  driver listing the input files) until a pipeline sets its own. A process about to run steps
  calls check_buckets too (building a pipeline needs no store)."""
  if not uses_s3(uris):
    return
  register_s3()
  # pylint: disable=g-import-not-at-top
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  # pylint: enable=g-import-not-at-top
  FileSystems.set_options(PipelineOptions(list(beam_args)))


# How long the bucket check waits for the endpoint (connect, then each read), with no retries: a
# wrong endpoint fails the step in seconds, not after the SDKs' minutes of retries.
BUCKET_CHECK_TIMEOUT_SECONDS = 5


class StorageError(RuntimeError):
  """An object store a run needs cannot be used: names the endpoint and the bucket."""


def s3_buckets(texts: Iterable[Optional[str]]) -> List[str]:
  """The buckets of the s3:// URIs anywhere in texts (paths, or a step's JSON arguments)."""
  found = set()
  for text in texts:
    for match in re.finditer(r's3://([^/\s"\'\\]+)', text or ''):
      found.add(match.group(1))
  return sorted(found)


def endpoint_name(environ: Mapping[str, str] = os.environ) -> str:
  """The S3 endpoint the environment names, as a message should show it."""
  endpoint = environ.get(names.BOTO_ENDPOINT_ENV) or environ.get(names.TFIO_ENDPOINT_ENV)
  if endpoint:
    return f'{endpoint} ({names.BOTO_ENDPOINT_ENV})'
  region = environ.get(names.BOTO_REGION_ENV) or environ.get(names.REGION_ENV) or 'no region'
  return f'AWS S3 ({region}; {names.BOTO_ENDPOINT_ENV} is not set)'


def check_buckets(uris: Iterable[Optional[str]],
                  timeout_seconds: float = BUCKET_CHECK_TIMEOUT_SECONDS) -> None:
  """Asks the endpoint for each s3:// bucket of uris once (HeadBucket, no retries); raises
  StorageError naming the endpoint and the bucket when it cannot be reached, the bucket does not
  exist, or the credentials are refused. Without it, tensorflow-io answers `exists()` False
  after a minute (a silent cold start, "nothing pushed") and Beam retries for minutes."""
  buckets = s3_buckets(uris)
  if not buckets:
    return
  share_environment(os.environ)
  # pylint: disable=g-import-not-at-top
  import boto3
  from botocore import exceptions
  from botocore.config import Config
  # pylint: enable=g-import-not-at-top
  client = boto3.client(
      's3', endpoint_url=os.environ.get(names.BOTO_ENDPOINT_ENV) or None,
      config=Config(connect_timeout=timeout_seconds, read_timeout=timeout_seconds,
                    retries={'max_attempts': 1, 'mode': 'standard'},
                    s3={'addressing_style': 'path'}))
  where = endpoint_name()
  for bucket in buckets:
    try:
      client.head_bucket(Bucket=bucket)
    except (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError,
            exceptions.ReadTimeoutError, exceptions.ConnectionClosedError) as error:
      raise StorageError(f'cannot reach the S3 endpoint {where} for s3://{bucket}/: {error}; '
                         f'check {names.BOTO_ENDPOINT_ENV}') from None
    except exceptions.NoCredentialsError:
      raise StorageError(f's3://{bucket}/ at {where}: no credentials; set '
                         f'{names.ACCESS_KEY_ID_ENV} and {names.SECRET_ACCESS_KEY_ENV}') from None
    except exceptions.ClientError as error:
      code = str(error.response.get('Error', {}).get('Code', ''))
      if code in ('404', 'NoSuchBucket', 'NotFound'):
        problem = 'no such bucket'
      elif code in ('403', 'AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch'):
        problem = (f'access denied ({code}); check {names.ACCESS_KEY_ID_ENV}, '
                   f'{names.SECRET_ACCESS_KEY_ENV} and {names.REGION_ENV}')
      else:
        problem = f'{code}: {error}'
      raise StorageError(f's3://{bucket}/ at the S3 endpoint {where}: {problem}') from None


def register_s3() -> None:
  """s3:// for tf.io.gfile and Beam in this process, whatever its paths (storage.beam_plugin
  runs it in Beam's workers)."""
  global _registered
  if _registered:
    return
  share_environment(os.environ)  # before any S3 client exists: both SDKs read it once
  import tensorflow_io  # pylint: disable=g-import-not-at-top,unused-import  # registers s3://
  _write_empty_s3_files_with_one_part()
  _registered = True


def _write_empty_s3_files_with_one_part() -> None:
  """Beam's S3 writer completes the multipart upload of an empty file with no part at all,
  which S3 (and MinIO) refuse as MalformedXML (apache/beam#21369, open): every empty output,
  such as an empty shard Beam's FinalizeWrite creates when no record was written, would fail
  its step. An empty part, which S3 allows as the last one, makes it an empty object."""
  from apache_beam.io.aws import s3io  # pylint: disable=g-import-not-at-top
  finish = s3io.S3Uploader.finish
  if getattr(finish, 'writes_empty_files', False):
    return

  def finish_with_a_part(uploader):
    if not uploader.parts and not uploader.buffer:
      uploader._write_to_s3(b'')  # pylint: disable=protected-access
    finish(uploader)

  finish_with_a_part.writes_empty_files = True
  s3io.S3Uploader.finish = finish_with_a_part


def beam_pipeline_args(args: Sequence[str], uris: Iterable[Optional[str]]) -> List[str]:
  """args, with storage.beam_plugin among Beam's plugins if any of uris is on s3://."""
  args = list(args)
  if uses_s3(uris) and not any(arg.startswith(BEAM_PLUGINS_FLAG) and BEAM_PLUGIN in arg
                               for arg in args):
    args.append(f'{BEAM_PLUGINS_FLAG}={BEAM_PLUGIN}')  # the flag appends: others stay
  return args


def exit_process(code: int) -> NoReturn:
  """Ends the process with exit status `code`.

  Once tensorflow-io's S3 file system has made a request, the end of the process aborts in the
  AWS SDK's static destructors ("pure virtual method called", exit status 134;
  tensorflow/io#2039, fixed upstream after 0.37.1, the last release), which would fail a run or
  a Kubeflow step that succeeded. So after s3:// was registered, Python's own shutdown runs here
  (atexit handlers, logging, buffered output) and the process ends without the C++ destructors.
  """
  if not _registered:
    sys.exit(code)
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def exit_at_interpreter_exit() -> None:
  """For a process whose main function is not ours (a Beam worker): when its interpreter exits,
  ends it through exit_process() with status 1 after an uncaught exception (Python has printed
  it and kept it in sys.last_value by then), else 0."""
  def end():
    atexit.unregister(end)  # exit_process runs the other handlers
    exit_process(1 if hasattr(sys, 'last_value') else 0)
  atexit.register(end)


def run(main: Callable[[], object]) -> None:
  """Runs main(), a function of the process's main module; once s3:// is registered, ends the
  process through exit_process() with the exit status Python would give (0, SystemExit's code,
  or 1 after printing the traceback). Until then everything is as without it.

  A main module executed inside another program's process returns to it instead: TFX's CLI
  runs the runner file in its own process to read the pipeline (with LocalDagRunner.run
  patched to record it), and goes on to save it.
  """
  if main.__globals__ is not vars(sys.modules['__main__']):
    main()
    return
  try:
    main()
  except SystemExit as e:
    if not _registered:
      raise
    code = e.code
    if code is None:
      code = 0
    elif not isinstance(code, int):
      print(code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    if not _registered:
      raise
    traceback.print_exc()
    code = 1
  else:
    code = 0
  exit_process(code)
