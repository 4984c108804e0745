"""A real S3-protocol server for tests: moto's, in a thread of the test process, on a free
loopback port, with the environment a process needs to reach it the standard way."""

from typing import Dict, List

import boto3
from moto.server import ThreadedMotoServer

from contract import storage as storage_names

CREDENTIALS = {storage_names.ACCESS_KEY_ID_ENV: 'test-access-key',
               storage_names.SECRET_ACCESS_KEY_ENV: 'test-secret-key',
               storage_names.REGION_ENV: storage_names.DEFAULT_REGION}


class S3Server:
  """Start with start(), stop with stop(); `env` reaches it through the endpoint variable boto3
  reads only (storage.share_environment gives tensorflow-io its own)."""

  def __init__(self):
    self._server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    self.endpoint = None

  def start(self) -> 'S3Server':
    self._server.start()
    host, port = self._server.get_host_and_port()
    self.endpoint = f'http://{host}:{port}'
    return self

  def stop(self) -> None:
    self._server.stop()

  @property
  def env(self) -> Dict[str, str]:
    return dict(CREDENTIALS, **{storage_names.BOTO_ENDPOINT_ENV: self.endpoint})

  def client(self):
    return boto3.client(
        's3', endpoint_url=self.endpoint,
        aws_access_key_id=CREDENTIALS[storage_names.ACCESS_KEY_ID_ENV],
        aws_secret_access_key=CREDENTIALS[storage_names.SECRET_ACCESS_KEY_ENV],
        region_name=CREDENTIALS[storage_names.REGION_ENV])

  def create_bucket(self, bucket: str):
    client = self.client()
    client.create_bucket(Bucket=bucket)
    return client


def keys(client, bucket: str, prefix: str = '') -> List[str]:
  pages = client.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix)
  return [o['Key'] for page in pages for o in page.get('Contents', [])]
