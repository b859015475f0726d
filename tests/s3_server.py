"""An S3-compatible server for the tests: moto's, on a loopback port, in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from faceledger.config import ImageLimits, ObjectStorage, Settings, VideoLimits

from api_server import free_loopback_port

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@contextmanager
def s3_server() -> Iterator[str]:
    """The endpoint URL of a fresh S3 server, stopped at the end."""
    from moto.server import ThreadedMotoServer

    port = free_loopback_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def settings_reading(
    data_dir: Path,
    endpoint: str,
    *,
    image_limits: ImageLimits | None = None,
    video_limits: VideoLimits | None = None,
    buckets: tuple[str, ...] = ("photos",),
) -> Settings:
    """Service settings that read S3 objects of ``buckets`` from ``endpoint``."""
    storage = ObjectStorage(
        buckets=buckets,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
    )
    return Settings(
        data_dir=data_dir,
        object_storage=storage,
        image_limits=image_limits or ImageLimits(),
        video_limits=video_limits or VideoLimits(),
    )
