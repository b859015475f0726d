"""The embedded store: one SQLite file in WAL mode (the default, no server to run)."""

from faceledger.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
