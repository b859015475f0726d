"""Images and videos named by ``S3Object`` in a request, read from the one S3-compatible store the
operator configured (config.ObjectStorage), within the same limits as bytes sent in the request.

Only buckets on the operator's allow-list are read; nothing else is ever fetched (no URL, no local
path). An object is looked at (HEAD) before a byte of it is read: one larger than the limit is
refused unread; the read then asks for the version and entity tag the HEAD saw, and stops at the
limit, so an object replaced in between is refused rather than read in part or in full. The
operation's ledger entry records the bucket, key, version and the SHA-256 of the bytes read
(runner.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceledger.config import ObjectStorage
from faceledger.errors import (
    FaceledgerError,
    ImageTooLargeException,
    InvalidParameterException,
    InvalidS3ObjectException,
    ServiceUnavailableException,
    VideoTooLargeException,
)

log = logging.getLogger("faceledger.objects")
_READ_CHUNK = 1024 * 1024
# S3's error codes that mean "there is no such object (in that version) to read"
_MISSING = {"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "InvalidArgument"}
_DENIED = {"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass
class S3Object:
    """An object a request names (``Image.S3Object``, ``Video.S3Object``). Once read, it holds what
    the ledger keeps of it (the version read, the SHA-256 of its bytes) and, for IndexFaces with
    store_image, the bytes themselves."""

    bucket: str
    name: str
    version: str | None = None
    version_read: str | None = field(default=None, compare=False)
    sha256: str | None = field(default=None, compare=False)
    content: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.name}" + (f" (version {self.version})" if self.version else "")

    def ledger_record(self) -> dict[str, Any]:
        """What the ledger keeps of the object: where it is, and which bytes were read."""
        return {
            "Bucket": self.bucket,
            "Name": self.name,
            "Version": self.version_read or self.version,
            "Sha256": self.sha256,
        }


class ObjectReader:
    """Reads S3 objects from the configured store (a client made on first use, shared by threads)."""

    def __init__(self, storage: ObjectStorage) -> None:
        self._storage = storage
        self._client: Any = None
        self._lock = threading.Lock()

    def read(self, ref: S3Object, max_bytes: int) -> bytes:
        """The object's bytes (at most ``max_bytes``, else ImageTooLargeException without reading
        them); records the version read and their SHA-256 in ``ref``."""
        data = bytearray()
        self._stream(ref, max_bytes, data.extend, ImageTooLargeException, "an image")
        return bytes(data)

    def download(self, ref: S3Object, path: Path, max_bytes: int) -> None:
        """Write the object (a video: at most ``max_bytes``, else VideoTooLargeException) to
        ``path``, readable by the owner only; records the version read and the SHA-256."""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            self._stream(ref, max_bytes, file.write, VideoTooLargeException, "a video")

    def check(self, ref: S3Object, max_bytes: int) -> None:
        """That the object exists, may be read and is at most ``max_bytes`` (a video: refused when
        its job is asked for, not when it runs)."""
        self._head(ref, max_bytes, VideoTooLargeException, "a video")

    def _head(self, ref: S3Object, max_bytes: int, too_large: type[FaceledgerError], kind: str) -> dict[str, Any]:
        if not isinstance(ref, S3Object):
            raise InvalidParameterException(f"An S3Object names a Bucket and a Name, not {type(ref).__name__}.")
        self._check_allowed(ref)
        where: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.name}
        if ref.version:
            where["VersionId"] = ref.version
        head = self._call(ref, lambda: self._s3().head_object(**where))
        size = int(head.get("ContentLength", 0))
        if size > max_bytes:
            raise too_large(
                f"{ref.uri} is {size:,} bytes; the limit for {kind} is {max_bytes:,} (nothing of it was read)."
            )
        version = head.get("VersionId")
        if version and version != "null":
            where["VersionId"] = version
        if head.get("ETag"):
            where["IfMatch"] = head["ETag"]  # the object the HEAD saw, or none
        return where

    def _stream(
        self,
        ref: S3Object,
        max_bytes: int,
        write: Callable[[bytes], object],
        too_large: type[FaceledgerError],
        kind: str,
    ) -> None:
        where = self._head(ref, max_bytes, too_large, kind)
        body = self._call(ref, lambda: self._s3().get_object(**where))["Body"]
        digest, size = hashlib.sha256(), 0
        try:
            while chunk := body.read(_READ_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(f"{ref.uri} is over the limit of {max_bytes:,} bytes for {kind}.")
                digest.update(chunk)
                write(chunk)
        finally:
            body.close()
        ref.version_read = where.get("VersionId")
        ref.sha256 = digest.hexdigest()

    def _check_allowed(self, ref: S3Object) -> None:
        if (
            not isinstance(ref.name, str)
            or not 1 <= len(ref.name) <= 1024
            or not ref.name.isprintable()
            or ".." in ref.name.split("/")
        ):
            raise InvalidS3ObjectException(
                "An S3Object's Name must be 1-1024 printable characters, without '..' parts."
            )
        if ref.bucket not in self._storage.buckets:
            allowed = ", ".join(self._storage.buckets) or "none"
            raise InvalidS3ObjectException(
                f"Bucket {ref.bucket!r} is not one faceledger may read (allowed: {allowed}; the operator names them "
                "in FACELEDGER_S3_BUCKETS)."
            )

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3  # only where S3 objects are read
                from botocore.config import Config

                session = boto3.session.Session(
                    aws_access_key_id=self._storage.access_key_id,
                    aws_secret_access_key=self._storage.secret_access_key,
                    region_name=self._storage.region,
                )
                self._client = session.client(
                    "s3",
                    endpoint_url=self._storage.endpoint_url,
                    config=Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3}),
                )
            return self._client

    @staticmethod
    def _call(ref: S3Object, request: Any) -> Any:
        """``request()``, its failures as Rekognition names them."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return request()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise InvalidS3ObjectException(f"{ref.uri} does not exist.") from None
            if code in _DENIED:
                raise InvalidS3ObjectException(f"faceledger's credentials may not read {ref.uri}.") from None
            if code in {"PreconditionFailed", "412"}:
                raise InvalidS3ObjectException(f"{ref.uri} changed while it was being read; try again.") from None
            raise ServiceUnavailableException(f"The object store could not give {ref.uri} ({code}).") from None
        except NoCredentialsError:
            raise InvalidS3ObjectException(
                "faceledger has no credentials for the object store (FACELEDGER_S3_ACCESS_KEY_ID or the AWS "
                "configuration)."
            ) from None
        except BotoCoreError as error:  # unreachable endpoint, timeouts: the details are the operator's
            log.warning("object store unreachable for %s: %s", ref.uri, error)
            raise ServiceUnavailableException("The object store cannot be reached just now; try again.") from None
