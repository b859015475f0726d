"""Who may call what: access keys, their roles and the collections they cover.

Authorisation is protocol-free (the HTTP API authenticates a caller, then asks here), so the
same rules hold whatever wire the request came over.

Roles:

- ``admin``: everything, including creating and deleting collections and tagging them.
- ``indexer``: adds and removes faces and users, lists them; cannot search or compare.
- ``searcher``: searches and compares; cannot change what is stored or list faces.
- ``auditor``: reads what exists (collections, faces, users, tags), the ledger and review cases,
  without searching.
- ``reviewer``: confirms or rejects the candidates of review cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from faceledger.errors import AccessDeniedException, InvalidParameterException
from faceledger.service import validation
from faceledger.store.access_keys import AccessKey, AccessKeyStore


class Role(str, Enum):
    ADMIN = "admin"
    INDEXER = "indexer"
    SEARCHER = "searcher"
    AUDITOR = "auditor"
    REVIEWER = "reviewer"


_READ = {"DescribeCollection", "ListCollections", "ListTagsForResource", "GetCollectionPolicy"}
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(
        {
            "CreateCollection", "DeleteCollection", "DescribeCollection", "ListCollections",
            "DetectFaces", "CompareFaces", "IndexFaces", "ListFaces", "DeleteFaces", "SearchFaces",
            "SearchFacesByImage", "CreateUser", "DeleteUser", "ListUsers", "AssociateFaces",
            "DisassociateFaces", "SearchUsers", "SearchUsersByImage", "TagResource", "UntagResource",
            "ListTagsForResource", "SetThresholdTable", "CreateAccessKey", "SetAccessKeyEnabled",
            "DeleteAccessKey", "RotateTemplateKey", "ExportLedger", "PutCollectionPolicy",
            "GetCollectionPolicy", "RecordConsent", "WithdrawConsent", "Purge", "DecideReview",
            "GetReviewCase", "ListReviewCases",
        }
    ),
    Role.INDEXER: frozenset(
        _READ | {"DetectFaces", "IndexFaces", "ListFaces", "DeleteFaces", "CreateUser", "DeleteUser",
                 "ListUsers", "AssociateFaces", "DisassociateFaces", "RecordConsent", "WithdrawConsent"}
    ),
    Role.SEARCHER: frozenset(
        _READ | {"DetectFaces", "CompareFaces", "SearchFaces", "SearchFacesByImage", "SearchUsers",
                 "SearchUsersByImage"}
    ),
    Role.AUDITOR: frozenset(_READ | {"ListFaces", "ListUsers", "ExportLedger", "GetReviewCase", "ListReviewCases"}),
    Role.REVIEWER: frozenset(_READ | {"GetReviewCase", "ListReviewCases", "DecideReview"}),
}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; ``None`` collections means every collection."""

    access_key_id: str
    role: Role
    collections: tuple[str, ...] | None

    def covers(self, collection_id: str) -> bool:
        return self.collections is None or collection_id in self.collections


class AccessControl:
    def __init__(self, keys: AccessKeyStore) -> None:
        self.keys = keys

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
        return self.keys.create(role, collections, description)

    def caller(self, key: AccessKey) -> Caller:
        return Caller(key.access_key_id, Role(key.role), key.collections)

    @staticmethod
    def authorize(caller: Caller, operation: str, collection_id: str | None) -> None:
        """Raise AccessDeniedException unless ``caller`` may run ``operation`` on the collection."""
        if operation not in PERMISSIONS[caller.role]:
            raise AccessDeniedException(
                f"Access key {caller.access_key_id} (role {caller.role.value}) may not call {operation}."
            )
        if collection_id is not None and not caller.covers(collection_id):
            raise AccessDeniedException(
                f"Access key {caller.access_key_id} does not cover collection {collection_id!r}."
            )
