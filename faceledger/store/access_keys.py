"""Access keys of the HTTP API, their secrets encrypted at rest.

A SigV4 server must know each secret to recompute the HMAC, so secrets cannot be hashed like
passwords; they are encrypted with AES-GCM under a 256-bit *secrets key* that lives outside the
database (a 0600 file in the data directory, or ``$FACELEDGER_SECRETS_KEY``), so that a copy of the
database alone reveals no secret. The access key id is the GCM associated data, so a ciphertext
moved to another key's row does not decrypt.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceledger.errors import InternalServerError, ResourceNotFoundException
from faceledger.store.database import Database
from faceledger.store.key_files import load_or_create_key

SECRETS_KEY_ENV = "FACELEDGER_SECRETS_KEY"
_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True)
class AccessKey:
    """An API credential. ``collections`` None means every collection."""

    access_key_id: str
    role: str
    collections: tuple[str, ...] | None
    enabled: bool
    created_at: float
    description: str | None = None


def load_secrets_key(data_dir: Path) -> bytes:
    """The secrets key: ``$FACELEDGER_SECRETS_KEY`` or ``secrets.key`` in the data directory."""
    return load_or_create_key(data_dir / "secrets.key", SECRETS_KEY_ENV)


class AccessKeyStore:
    def __init__(self, database: Database, secrets_key: bytes) -> None:
        self._db = database
        self._aead = AESGCM(secrets_key)

    def create(
        self, role: str, collections: list[str] | None, description: str | None = None
    ) -> tuple[AccessKey, str]:
        """A new enabled key and its secret (returned once, never shown again)."""
        access_key_id = "FL" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(18))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        nonce = secrets.token_bytes(12)
        ciphertext = self._aead.encrypt(nonce, secret.encode(), access_key_id.encode())
        key = AccessKey(access_key_id, role, tuple(collections) if collections is not None else None,
                        True, time.time(), description)
        with self._db.write() as db:
            db.execute(
                "INSERT INTO access_keys (access_key_id, secret_ciphertext, secret_nonce, role,"
                " collections, enabled, description, created_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                (access_key_id, ciphertext, nonce, role,
                 json.dumps(list(collections)) if collections is not None else None,
                 description, key.created_at),
            )
        return key, secret

    def get(self, access_key_id: str) -> AccessKey | None:
        row = self._db.connection().execute(
            f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE access_key_id = ?", (access_key_id,)
        ).fetchone()
        return None if row is None else _access_key(row)

    def secret(self, access_key_id: str) -> str | None:
        row = self._db.connection().execute(
            "SELECT secret_ciphertext, secret_nonce FROM access_keys WHERE access_key_id = ?",
            (access_key_id,),
        ).fetchone()
        if row is None:
            return None
        try:
            return self._aead.decrypt(row[1], row[0], access_key_id.encode()).decode()
        except InvalidTag:
            raise InternalServerError(
                "An access key secret does not decrypt: the secrets key is not the one it was made with."
            ) from None

    def list(self) -> list[AccessKey]:
        rows = self._db.connection().execute(
            f"SELECT {_KEY_COLUMNS} FROM access_keys ORDER BY created_at, access_key_id"
        )
        return [_access_key(row) for row in rows]

    def set_enabled(self, access_key_id: str, enabled: bool) -> None:
        with self._db.write() as db:
            changed = db.execute(
                "UPDATE access_keys SET enabled = ? WHERE access_key_id = ?", (int(enabled), access_key_id)
            )
            if changed.rowcount == 0:
                raise ResourceNotFoundException(f"Access key {access_key_id!r} does not exist.")

    def delete(self, access_key_id: str) -> None:
        with self._db.write() as db:
            deleted = db.execute("DELETE FROM access_keys WHERE access_key_id = ?", (access_key_id,))
            if deleted.rowcount == 0:
                raise ResourceNotFoundException(f"Access key {access_key_id!r} does not exist.")


_KEY_COLUMNS = "access_key_id, role, collections, enabled, created_at, description"


def _access_key(row: tuple) -> AccessKey:
    access_key_id, role, collections, enabled, created_at, description = row
    return AccessKey(
        access_key_id=access_key_id,
        role=role,
        collections=tuple(json.loads(collections)) if collections is not None else None,
        enabled=bool(enabled),
        created_at=created_at,
        description=description,
    )
