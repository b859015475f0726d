"""ClientRequestToken idempotency: a retried request gets the first answer, not a second effect."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

from faceledger.store.database import Database

TOKEN_LIFETIME_SECONDS = 24 * 3600


def request_hash(parameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()


class RequestTokenStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def find(self, operation: str, token: str) -> tuple[str, dict[str, Any]] | None:
        """(request hash, response) recorded for this token within its lifetime."""
        row = self._db.connection().execute(
            "SELECT request_hash, response FROM request_tokens"
            " WHERE operation = ? AND token = ? AND created_at > ?",
            (operation, token, time.time() - TOKEN_LIFETIME_SECONDS),
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def record(self, operation: str, token: str, digest: str, response: dict[str, Any]) -> None:
        now = time.time()
        with self._db.write() as db:
            db.execute("DELETE FROM request_tokens WHERE created_at <= ?", (now - TOKEN_LIFETIME_SECONDS,))
            try:
                db.execute(
                    "INSERT INTO request_tokens (token, operation, request_hash, response, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (token, operation, digest, json.dumps(response), now),
                )
            except sqlite3.IntegrityError:
                pass  # a concurrent retry recorded it first; its answer stands
