"""A real faceledger HTTP server on a free loopback port, for tests that talk to it with boto3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from botocore.config import Config

from faceledger.api.app import ApiSettings
from faceledger.api.server import serve_in_thread
from faceledger.service import FaceService


@dataclass
class RunningServer:
    url: str
    service: FaceService

    def client(self, access_key_id: str, secret: str, *, retries: int = 1):
        """A boto3 Rekognition client for this server (no retries unless asked)."""
        return boto3.client(
            "rekognition",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"mode": "standard", "total_max_attempts": retries}),
        )

    def client_with_role(self, role: str, collections: list[str] | None = None, **options):
        key, secret = self.service.access.create_key(role, collections)
        return self.client(key.access_key_id, secret, **options)


@contextmanager
def running_server(service: FaceService, settings: ApiSettings | None = None) -> Iterator[RunningServer]:
    with serve_in_thread(service, settings) as url:
        yield RunningServer(url, service)


def free_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send_raw(request, body: bytes | None = None) -> tuple[int, dict]:
    """Send a (signed) botocore AWSRequest as it is, or with another ``body``; (status, JSON)."""
    import json
    import urllib.error
    import urllib.request

    raw = urllib.request.Request(
        request.url,
        data=request.body if body is None else body,
        method=request.method,
        headers=dict(request.headers.items()),
    )
    try:
        with urllib.request.urlopen(raw) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def call_extension(server: RunningServer, key: dict, operation: str, body: dict) -> tuple[int, dict]:
    """Call faceledger's own operation ``operation`` (X-Amz-Target FaceledgerService.*) with a
    SigV4-signed request of ``key`` (as create_access_key answers it); (status, JSON)."""
    import json

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"FaceledgerService.{operation}"},
    )
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "rekognition", "us-east-1").add_auth(request)
    return send_raw(request)
