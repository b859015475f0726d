"""Who may call what: access keys, their roles and the collections they cover.

Authorisation is protocol-free (the HTTP API authenticates a caller, then asks here), so the
same rules hold whatever wire the request came over.

Roles:

- ``admin``: everything, including creating and deleting collections and tagging them.
- ``indexer``: adds, removes and erases faces and users, lists them; cannot search or compare.
- ``searcher``: searches and compares; cannot change what is stored or list faces.
- ``auditor``: reads what exists (collections, faces, users, tags), the ledger (and verifies it)
  and review cases, without searching.
- ``reviewer``: confirms or rejects the candidates of review cases.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from faceledger.errors import AccessDeniedException, InternalServerError, InvalidParameterException
from faceledger.keys.files import load_or_create_key
from faceledger.keys.sealing import LabelMismatch, SealingKey
from faceledger.service import validation
from faceledger.service.operations import OPERATIONS, operation_names
from faceledger.store import AccessKey, AccessKeyRepository

SECRETS_KEY_ENV = "FACELEDGER_SECRETS_KEY"
_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
KEY_ID = re.compile(r"FL[A-Z2-7]{18}")  # what create_key makes


def load_secrets_key(data_dir: Path) -> bytes:
    """The secrets key: ``$FACELEDGER_SECRETS_KEY`` or ``secrets.key`` (0600) in the data directory.

    A SigV4 server must know each secret to recompute the HMAC, so secrets cannot be hashed like
    passwords; they are sealed under this key, which lives outside the database, so that a copy of
    the database alone reveals no secret. The access key id is the label, so a ciphertext moved
    to another key's row does not open."""
    return load_or_create_key(secrets_key_path(data_dir), SECRETS_KEY_ENV)


def secrets_key_path(data_dir: Path) -> Path:
    return data_dir / "secrets.key"


class Role(str, Enum):
    ADMIN = "admin"
    INDEXER = "indexer"
    SEARCHER = "searcher"
    AUDITOR = "auditor"
    REVIEWER = "reviewer"


# what every role may do: read what collections exist and their policies, sign in to the console
_READ = operation_names(
    "DescribeCollection",
    "ListCollections",
    "ListTagsForResource",
    "GetCollectionPolicy",
    "GetCollectionCohort",
    "StartConsoleSession",
    "EndConsoleSession",
)
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(OPERATIONS),
    Role.INDEXER: _READ
    | operation_names(
        "DetectFaces",
        "IndexFaces",
        "ListFaces",
        "DeleteFaces",
        "CreateUser",
        "DeleteUser",
        "ListUsers",
        "AssociateFaces",
        "DisassociateFaces",
        "RecordConsent",
        "WithdrawConsent",
        "ListConsents",
        "EraseFaces",
        "StartFaceDetection",
        "GetFaceDetection",
        "FaceDetectionJob",
    ),
    Role.SEARCHER: _READ
    | operation_names(
        "DetectFaces",
        "CompareFaces",
        "SearchFaces",
        "SearchFacesByImage",
        "SearchAllFacesByImage",
        "SearchUsers",
        "SearchUsersByImage",
        "StartFaceDetection",
        "GetFaceDetection",
        "FaceDetectionJob",
        "StartFaceSearch",
        "GetFaceSearch",
        "FaceSearchJob",
    ),
    Role.AUDITOR: _READ
    | operation_names(
        "ListFaces",
        "ListUsers",
        "ExportLedger",
        "ListLedgerEntries",
        "VerifyLedger",
        "GetReviewCase",
        "ListReviewCases",
        "ListConsents",
    ),
    Role.REVIEWER: _READ | operation_names("GetReviewCase", "ListReviewCases", "DecideReview"),
}


@dataclass(frozen=True)
class Caller:
    """A caller; ``None`` collections means every collection. ``role`` None: not authenticated
    (a refused request in the name of an unknown key, kept in the ledger); it may call nothing."""

    access_key_id: str
    role: Role | None
    collections: tuple[str, ...] | None

    @property
    def role_name(self) -> str:
        return "unauthenticated" if self.role is None else self.role.value

    def covers(self, collection_id: str) -> bool:
        return self.collections is None or collection_id in self.collections


def unknown_caller(claimed: object) -> Caller:
    """The caller a request names that is no key here: ``unknown:`` and the first characters of
    the claimed id that are of the key alphabet (it is the sender's text), with no role."""
    shown = "".join(c for c in (claimed if isinstance(claimed, str) else "")[:32] if c.isascii() and c.isalnum())
    return Caller(f"unknown:{shown}", None, ())


class AccessControl:
    """Access keys (their secrets sealed under the secrets key) and the rules of who may call what."""

    def __init__(self, keys: AccessKeyRepository, secrets_key: bytes) -> None:
        self.keys = keys
        self._sealing = SealingKey(secrets_key)

    def create_key(
        self, role: str, collections: list[str] | None = None, description: str | None = None
    ) -> tuple[AccessKey, str]:
        """A new key and its secret; the secret is returned here once and never again."""
        try:
            Role(role)
        except ValueError:
            choices = ", ".join(r.value for r in Role)
            raise InvalidParameterException(f"Role must be one of {choices}, not {role!r}.") from None
        if collections is not None:
            collections = [validation.collection_id(c) for c in collections]
        access_key_id = "FL" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(18))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        key = AccessKey(
            access_key_id, role, tuple(collections) if collections is not None else None, True, time.time(), description
        )
        self.keys.add(key, self._sealing.seal(access_key_id, secret.encode()))
        return key, secret

    def secret(self, access_key_id: str) -> str | None:
        """The key's secret, to verify a signature with (None for an unknown key)."""
        sealed = self.keys.sealed_secret(access_key_id)
        if sealed is None:
            return None
        try:
            return self._sealing.open(access_key_id, sealed).decode()
        except LabelMismatch:
            raise InternalServerError(
                "An access key secret does not decrypt: the secrets key is not the one it was made with."
            ) from None

    def verify(self, access_key_id: str, secret: str) -> Caller:
        """The caller of an enabled key whose secret is ``secret`` (compared in constant time);
        AccessDeniedException otherwise, saying no more than that."""
        key = self.keys.get(access_key_id)
        known = self.secret(access_key_id) if key is not None and key.enabled else None
        if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
            raise AccessDeniedException(f"Access key {access_key_id!r} and that secret do not sign in here.")
        return self.caller(key)  # type: ignore[arg-type]

    def caller(self, key: AccessKey) -> Caller:
        return Caller(key.access_key_id, Role(key.role), key.collections)

    @staticmethod
    def authorize(caller: Caller, operation: str, collection_id: str | None) -> None:
        """Raise AccessDeniedException unless ``caller`` may run ``operation`` on the collection."""
        if caller.role is None or operation not in PERMISSIONS[caller.role]:
            raise AccessDeniedException(
                f"Access key {caller.access_key_id} (role {caller.role_name}) may not call {operation}."
            )
        if collection_id is not None and not caller.covers(collection_id):
            raise AccessDeniedException(
                f"Access key {caller.access_key_id} does not cover collection {collection_id!r}."
            )
