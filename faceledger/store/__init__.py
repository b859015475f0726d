"""The store: faceledger's source of truth, behind one interface (interface.py), with the
embedded SQLite backend in store/sqlite/. Open one with :func:`open_store`."""

from pathlib import Path

from faceledger.store.interface import (
    AccessKeyRepository,
    LedgerRepository,
    PolicyRepository,
    RequestTokenRepository,
    ReviewRepository,
    Store,
)
from faceledger.store.records import (
    AccessKey,
    Candidate,
    CollectionPolicy,
    CollectionRecord,
    ConsentRecord,
    FaceChange,
    FaceRecord,
    ImageRecord,
    LedgerEntry,
    ReviewCase,
    UserRecord,
)


def open_store(database: str | Path) -> Store:
    """The store at ``database``: today the path of an SQLite file (created if missing)."""
    from faceledger.store.sqlite import SQLiteStore

    return SQLiteStore(database)


__all__ = [
    "AccessKey",
    "AccessKeyRepository",
    "Candidate",
    "CollectionPolicy",
    "CollectionRecord",
    "ConsentRecord",
    "FaceChange",
    "FaceRecord",
    "ImageRecord",
    "LedgerEntry",
    "LedgerRepository",
    "PolicyRepository",
    "RequestTokenRepository",
    "ReviewCase",
    "ReviewRepository",
    "Store",
    "UserRecord",
    "open_store",
]
