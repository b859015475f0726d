"""The store: faceledger's source of truth, behind one interface (interface.py), written once in
SQL (store/sql/) over two engines: the embedded SQLite (store/sqlite/, the default) and
PostgreSQL for server mode (store/postgresql/). Open one with :func:`open_store`."""

from pathlib import Path

from faceledger.store.interface import (
    AccessKeyRepository,
    LedgerRepository,
    PolicyRepository,
    RequestTokenRepository,
    ReviewRepository,
    Store,
)
from faceledger.store.location import is_postgresql_url, same_database, without_password
from faceledger.store.records import (
    AccessKey,
    Candidate,
    CollectionPolicy,
    CollectionRecord,
    ConsentRecord,
    ErasureResidue,
    FaceChange,
    FaceChanges,
    FaceRecord,
    ImageRecord,
    LedgerEntry,
    ReviewCase,
    UserRecord,
)


def open_store(database: str | Path) -> Store:
    """The store at ``database``: a ``postgresql://`` URL (store/postgresql/), else the path of
    an SQLite file (created if missing)."""
    if isinstance(database, str) and is_postgresql_url(database):
        from faceledger.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(database)
    from faceledger.store.sqlite import SQLiteStore

    return SQLiteStore(database)


__all__ = [
    "AccessKey",
    "AccessKeyRepository",
    "Candidate",
    "CollectionPolicy",
    "CollectionRecord",
    "ConsentRecord",
    "ErasureResidue",
    "FaceChange",
    "FaceChanges",
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
    "is_postgresql_url",
    "open_store",
    "same_database",
    "without_password",
]
