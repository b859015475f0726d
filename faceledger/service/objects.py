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
import threading
from dataclasses import dataclass, field
from typing import Any

from faceledger.config import ObjectStorage
from faceledger.errors import (
    ImageTooLargeException,
    InvalidParameterException,
    InvalidS3ObjectException,
    ServiceUnavailableException,
)

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

    def read(self, ref: S3Object, max_bytes: int, kind: str = "image") -> bytes:
        """The object's bytes (at most ``max_bytes``, else ImageTooLargeException without reading
        them); records the version read and their SHA-256 in ``ref``."""
        if not isinstance(ref, S3Object):
            raise InvalidParameterException(f"An S3Object names a Bucket and a Name, not {type(ref).__name__}.")
        self._check_allowed(ref)
        client = self._s3()
        where: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.name}
        if ref.version:
            where["VersionId"] = ref.version
        head = self._call(ref, lambda: client.head_object(**where))
        size = int(head.get("ContentLength", 0))
        if size > max_bytes:
            raise ImageTooLargeException(
                f"{ref.uri} is {size:,} bytes; the limit for an {kind} is {max_bytes:,} (nothing of it was read)."
            )
        version = head.get("VersionId")
        if version and version != "null":
            where["VersionId"] = version
        if head.get("ETag"):
            where["IfMatch"] = head["ETag"]  # the object the HEAD saw, or none
        body = self._call(ref, lambda: client.get_object(**where))["Body"]
        data = bytearray()
        try:
            while chunk := body.read(_READ_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise ImageTooLargeException(f"{ref.uri} is over the limit of {max_bytes:,} bytes for an {kind}.")
        finally:
            body.close()
        ref.version_read = version if version and version != "null" else None
        ref.sha256 = hashlib.sha256(data).hexdigest()
        return bytes(data)

    def _check_allowed(self, ref: S3Object) -> None:
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
        except BotoCoreError as error:  # unreachable endpoint, timeouts
            raise ServiceUnavailableException(f"The object store cannot be reached just now: {error}.") from None
