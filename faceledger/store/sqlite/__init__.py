"""The embedded store: one SQLite file in WAL mode (the default, no server to run)."""

from __future__ import annotations

from pathlib import Path

from faceledger.store.sql.store import SQLStore
from faceledger.store.sqlite.connection import SQLiteDatabase


class SQLiteStore(SQLStore):
    """Everything of one data directory in one SQLite file (WAL, a connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(SQLiteDatabase(path))

    @property
    def path(self) -> Path:
        return self.database.path  # type: ignore[attr-defined]


__all__ = ["SQLiteStore"]
