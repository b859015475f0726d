"""The store: faceledger's source of truth (SQLite, WAL, migrated schema)."""

from faceledger.store.records import (
    CollectionRecord,
    FaceRecord,
    ImageRecord,
    UserRecord,
)
from faceledger.store.sqlite import SQLiteStore

__all__ = ["CollectionRecord", "FaceRecord", "ImageRecord", "SQLiteStore", "UserRecord"]
