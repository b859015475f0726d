"""Operations on the service itself: access keys, the template key, the audit ledger. Each is
ledgered like a face operation (a key change is as accountable as a search)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceledger.index import VectorIndexRegistry
from faceledger.ledger.chain import Ledger
from faceledger.service.access import AccessControl
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

    def rotate_template_key(self) -> Reply:
        """Re-encrypt every face template under a new template key (saved vector indexes, sealed
        with the old key, are deleted and rebuilt when next needed)."""
        count = self._templates.rotate()
        self._store.after_commit(self._indexes.forget_saved)
        return Reply({"Reencrypted": count}, {"Reencrypted": count})

    def export_ledger(self, write: Callable[[LedgerEntry], None], filters: dict[str, Any]) -> Reply:
        """Pass every entry matching ``filters`` (see LedgerRepository.entries) to ``write``, in order."""
        count = 0
        for entry in self._ledger.entries(**filters):
            write(entry)
            count += 1
        return Reply({"ExportedCount": count}, {"ExportedCount": count})
