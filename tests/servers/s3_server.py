"""An S3-compatible object store on 127.0.0.1: moto's server (PyPI ``moto[server]``), started here.

A real HTTP endpoint, so the tests and the bench go through s3fs, aiobotocore and botocore exactly
as a deployment against AWS, MinIO or Ceph would; only ``MATCHING_S3_ENDPOINT_URL`` differs.
The credentials are moto's throw-away ones, given to the processes as the standard AWS variables.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""What every client of the local store uses; moto accepts any."""


@dataclass(frozen=True)
class LocalS3:
    endpoint_url: str
    bucket: str

    def url(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    def env(self) -> dict[str, str]:
        """The variables a worker process needs to reach this store."""
        return {**FAKE_CREDENTIALS, "MATCHING_S3_ENDPOINT_URL": self.endpoint_url}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3(bucket: str = "matching") -> Iterator[LocalS3]:
    """moto's server on a free port of 127.0.0.1 with ``bucket`` created; stopped on exit.

    The caller puts :data:`FAKE_CREDENTIALS` in the environment (tests: ``monkeypatch.setenv``).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=bucket)
        yield LocalS3(endpoint, bucket)
    finally:
        server.stop()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
