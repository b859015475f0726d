"""Operations on the service itself: access keys, the template key, the audit ledger. Each is
ledgered like a face operation (a key change is as accountable as a search)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faceledger.config import Settings
from faceledger.index import VectorIndexRegistry
from faceledger.ledger.chain import Ledger, LedgerEntry
from faceledger.service.access import AccessControl
from faceledger.service.ledgering import ledgered
from faceledger.store import SQLiteStore
from faceledger.store.templates import rotate_template_key


class AdminOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    settings: Settings
    store: SQLiteStore
    ledger: Ledger
    access: AccessControl
    indexes: VectorIndexRegistry

    @ledgered("CreateAccessKey")
    def create_access_key(
        self, *, role: str, collections: list[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """A new API key; the response holds its secret, the only time it is ever shown."""
        key, secret = self.access.create_key(role, collections, description)
        return {"AccessKeyId": key.access_key_id, "SecretAccessKey": secret, "Role": key.role,
                "Collections": list(key.collections) if key.collections is not None else None}

    @ledgered("SetAccessKeyEnabled")
    def set_access_key_enabled(self, *, access_key_id: str, enabled: bool) -> dict[str, Any]:
        self.access.keys.set_enabled(access_key_id, enabled)
        return {"AccessKeyId": access_key_id, "Enabled": enabled}

    @ledgered("DeleteAccessKey")
    def delete_access_key(self, *, access_key_id: str) -> dict[str, Any]:
        self.access.keys.delete(access_key_id)
        return {"AccessKeyId": access_key_id}

    @ledgered("RotateTemplateKey")
    def rotate_template_key(self) -> dict[str, Any]:
        """Re-encrypt every face template under a new template key (saved vector indexes, sealed
        with the old key, are deleted and rebuilt when next needed)."""
        count = rotate_template_key(self.store, self.settings.data_dir)
        self.store.after_commit(self.indexes.forget_saved)
        return {"Reencrypted": count}

    @ledgered("ExportLedger")
    def export_ledger(self, *, write: Callable[[LedgerEntry], None], **filters: Any) -> dict[str, Any]:
        """Pass every entry matching ``filters`` (see Ledger.entries) to ``write``, in order."""
        count = 0
        for entry in self.ledger.entries(**filters):
            write(entry)
            count += 1
        return {"ExportedCount": count}
