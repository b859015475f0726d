"""The keys that every node on one store must hold alike, checked when a node opens its data
directory.

Several ``faceledger serve`` nodes (each with a data directory of its own, on its own machine)
share one PostgreSQL store. The keys stay outside the database (a copy of it alone must reveal
nothing), so each node's data directory holds copies: the template key (which seals the face
templates; service/templates.py checks it against the fingerprint the store records), the ledger
signing key (a head signed under another key fails ``audit verify``) and the secrets key (access
key secrets sealed under another key fail every signature check). The store records the
fingerprint of each (never the key) the first time a node uses it; a node holding another key,
or none where the store has one recorded, is refused when it opens, naming the file to copy,
instead of making a key of its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from faceledger.errors import DataDirectoryError
from faceledger.ledger.chain import LEDGER_KEY_ENV, Ledger, ledger_key_path
from faceledger.service.access import SECRETS_KEY_ENV, load_secrets_key, secrets_key_path
from faceledger.store import Store


@dataclass(frozen=True)
class SharedKey:
    """One key: its file, the environment variable that can stand in for it, whether this node
    has it, and its fingerprint (loading it, created if missing)."""

    name: str  # under which the store records its fingerprint
    path: Path
    environment: str
    present: Callable[[], bool]
    fingerprint: Callable[[], str]


def shared_keys(data_dir: Path, ledger: Ledger) -> list[SharedKey]:
    def ledger_fingerprint() -> str:
        public = ledger.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519:" + hashlib.sha256(public).hexdigest()[:16]

    def secrets_fingerprint() -> str:
        return "aesgcm:" + hashlib.sha256(b"faceledger secrets key" + load_secrets_key(data_dir)).hexdigest()[:16]

    ledger_file, secrets_file = ledger_key_path(data_dir), secrets_key_path(data_dir)
    return [
        SharedKey("ledger_key", ledger_file, LEDGER_KEY_ENV, ledger_file.exists, ledger_fingerprint),
        SharedKey(
            "secrets_key",
            secrets_file,
            SECRETS_KEY_ENV,
            lambda: bool(os.environ.get(SECRETS_KEY_ENV)) or secrets_file.exists(),
            secrets_fingerprint,
        ),
    ]


def check_shared_keys(store: Store, keys: list[SharedKey]) -> None:
    """Refuse (DataDirectoryError) a data directory whose keys are not those the store's other
    nodes use; record the fingerprints the store does not know yet."""
    for key in keys:
        recorded = store.store_fact(key.name)
        if recorded is not None and not key.present():
            raise DataDirectoryError(
                f"The store {store.describe()} is used with a {key.path.name} this data directory does not "
                f"hold: copy {key.path.name} (mode 0600) from the data directory of a node already using "
                f"the store (or set {key.environment})."
            )
        mine = key.fingerprint()
        if recorded is None:
            recorded = store.record_store_fact(key.name, mine)
        if recorded != mine:
            raise DataDirectoryError(
                f"This data directory's {key.path.name} ({mine}) is not the key the store {store.describe()} "
                f"is used with ({recorded}): copy {key.path.name} (mode 0600) from the data directory of a "
                f"node already using the store (or set {key.environment})."
            )
