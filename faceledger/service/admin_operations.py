"""Operations on the service itself: access keys, the template key, the audit ledger. Each is
ledgered like a face operation (a key change is as accountable as a search)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from faceledger.errors import ConflictException
from faceledger.index import VectorIndexRegistry
from faceledger.ledger.chain import Ledger
from faceledger.service.access import AccessControl
from faceledger.service.data_directory import DataDirectory
from faceledger.service.results import Reply
from faceledger.service.templates import TemplateVault
from faceledger.store import LedgerEntry, Store

# How long erased templates may stay readable with the key in use (on an engine that keeps deleted
# rows) before `check` calls it a problem: GDPR Art. 12(3)'s month to act on an erasure request.
RESIDUE_DAYS = 30


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).date().isoformat()


class AdminOperations:
    def __init__(
        self,
        store: Store,
        access: Callable[[], AccessControl],
        templates: TemplateVault,
        indexes: VectorIndexRegistry,
        ledger: Ledger,
    ) -> None:
        self._store = store
        self._access = access
        self._templates = templates
        self._indexes = indexes
        self._ledger = ledger

    def create_key(self, role: str, collections: list[str] | None, description: str | None) -> Reply:
        """A new API key; the response holds its secret, the only time it is ever shown."""
        key, secret = self._access().create_key(role, collections, description)
        return Reply(
            {
                "AccessKeyId": key.access_key_id,
                "SecretAccessKey": secret,
                "Role": key.role,
                "Collections": list(key.collections) if key.collections is not None else None,
            },
            {"AccessKeyId": key.access_key_id, "Role": key.role},
        )  # never the secret

    def set_key_enabled(self, access_key_id: str, enabled: bool) -> Reply:
        self._access().keys.set_enabled(access_key_id, enabled)
        return Reply({"AccessKeyId": access_key_id, "Enabled": enabled}, {"AccessKeyId": access_key_id})

    def delete_key(self, access_key_id: str) -> Reply:
        self._access().keys.delete(access_key_id)
        return Reply({"AccessKeyId": access_key_id}, {"AccessKeyId": access_key_id})

    def rotate_template_key(self, alone: bool) -> Reply:
        """Re-encrypt every face template under a new template key (saved vector indexes, sealed
        with the old key, are deleted and rebuilt when next needed). ``alone``: no other process
        has the data directory open; a server that had would go on sealing with the old key."""
        if not alone:
            raise ConflictException(
                "The data directory is open in another process (a running 'faceledger serve', or another "
                "command): stop it first. A key changed under a running server would leave it sealing new "
                "faces with a key that no longer exists."
            )
        nodes = self._store.other_clients()
        if nodes:
            raise ConflictException(
                f"{nodes} other faceledger process(es) use the store {self._store.describe()}: stop every node "
                "first, rotate, then copy the new template.key to each node before starting it again."
            )
        count = self._templates.rotate()
        self._store.after_commit(self._indexes.forget_saved)
        return Reply({"Reencrypted": count}, {"Reencrypted": count})

    def check(self, data_dir: DataDirectory) -> Reply:
        """Everything that can be wrong with the data directory: a ledger that does not verify,
        templates that do not decrypt under the current key, files others may read."""
        problems = list(self._ledger.verify())
        collections = self._store.list_collection_ids(None, 1_000_000)
        for collection_id in collections:
            failures = self._templates.undecryptable(collection_id)
            if failures:
                problems.append(
                    f"{failures} face template(s) in collection {collection_id!r} do not decrypt under the "
                    "current template key (sealed with a key that is gone: re-index them)"
                )
        problems += data_dir.loose_modes()
        residue = self._store.erasure_residue()
        pending = [r for r in residue if r.retired_at is None]
        for r in pending:
            if time.time() - r.first_erased_at > RESIDUE_DAYS * 86400:
                problems.append(
                    f"{r.faces} face(s) erased since {_day(r.first_erased_at)} are still sealed under the template "
                    f"key in use ({r.template_key}), and {self._store.describe()} may keep their ciphertext (dead "
                    "rows, WAL, replicas, backups) until that key is retired: rotate it (faceledger keys "
                    "rotate-template-key, every node stopped) and destroy every copy of the old key"
                )
        return Reply(
            {
                "Problems": problems,
                "Collections": len(collections),
                "ErasureResidue": [
                    {
                        "TemplateKey": r.template_key,
                        "Faces": r.faces,
                        "FirstErasedAt": r.first_erased_at,
                        "LastErasedAt": r.last_erased_at,
                        "RetiredAt": r.retired_at,
                    }
                    for r in residue
                ],
            },
            {
                "ProblemsCount": len(problems),
                "Collections": len(collections),
                "PendingErasures": sum(r.faces for r in pending),
            },
        )

    def export_ledger(self, write: Callable[[LedgerEntry], None], filters: dict[str, Any]) -> Reply:
        """Pass every entry matching ``filters`` (see LedgerRepository.entries) to ``write``, in order."""
        count = 0
        for entry in self._ledger.entries(**filters):
            write(entry)
            count += 1
        return Reply({"ExportedCount": count}, {"ExportedCount": count})
