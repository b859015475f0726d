"""Operations on the service itself: access keys, the template key, the audit ledger. Each is
ledgered like a face operation (a key change is as accountable as a search)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceledger.errors import ConflictException
from faceledger.index import VectorIndexRegistry
from faceledger.ledger.chain import Ledger
from faceledger.service.access import AccessControl
from faceledger.service.data_directory import DataDirectory
from faceledger.service.results import Reply
from faceledger.service.templates import TemplateVault
from faceledger.store import LedgerEntry, Store


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
        return Reply(
            {"Problems": problems, "Collections": len(collections)},
            {"ProblemsCount": len(problems), "Collections": len(collections)},
        )

    def export_ledger(self, write: Callable[[LedgerEntry], None], filters: dict[str, Any]) -> Reply:
        """Pass every entry matching ``filters`` (see LedgerRepository.entries) to ``write``, in order."""
        count = 0
        for entry in self._ledger.entries(**filters):
            write(entry)
            count += 1
        return Reply({"ExportedCount": count}, {"ExportedCount": count})
