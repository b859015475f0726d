"""Collection policies and consent records (see faceledger/service/policy_operations.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

from faceledger.store.database import Database


@dataclass(frozen=True)
class CollectionPolicy:
    """What a collection demands of its users. None / False: no such demand."""

    purpose_required: bool = False
    min_threshold: float | None = None
    max_results: int | None = None
    retention_days: int | None = None
    consent_required: bool = False
    review_required: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ConsentRecord:
    consent_id: str
    collection_id: str
    external_image_id: str
    basis: str
    reference: str
    obtained_at: float
    expires_at: float | None
    withdrawn_at: float | None
    created_at: float

    def active(self, now: float) -> bool:
        return self.withdrawn_at is None and self.obtained_at <= now and (self.expires_at is None or now < self.expires_at)


_POLICY_COLUMNS = ", ".join(f.name for f in fields(CollectionPolicy))
_CONSENT_COLUMNS = ", ".join(f.name for f in fields(ConsentRecord))


class PolicyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def policy(self, collection_id: str) -> CollectionPolicy:
        row = self._db.connection().execute(
            f"SELECT {_POLICY_COLUMNS} FROM collection_policies WHERE collection_id = ?", (collection_id,)
        ).fetchone()
        if row is None:
            return CollectionPolicy()
        purpose, floor, max_results, retention, consent, review = row
        return CollectionPolicy(bool(purpose), floor, max_results, retention, bool(consent), bool(review))

    def put_policy(self, collection_id: str, policy: CollectionPolicy) -> None:
        values = [policy.purpose_required, policy.min_threshold, policy.max_results, policy.retention_days,
                  policy.consent_required, policy.review_required]
        with self._db.write() as db:
            db.execute(
                f"INSERT INTO collection_policies (collection_id, {_POLICY_COLUMNS}, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection_id) DO UPDATE SET "
                + ", ".join(f"{f.name} = excluded.{f.name}" for f in fields(CollectionPolicy))
                + ", updated_at = excluded.updated_at",
                (collection_id, *values, time.time()),
            )

    def retained_collections(self) -> list[tuple[str, int]]:
        return self._db.connection().execute(
            "SELECT collection_id, retention_days FROM collection_policies WHERE retention_days IS NOT NULL"
        ).fetchall()

    def add_consent(self, record: ConsentRecord) -> None:
        with self._db.write() as db:
            db.execute(f"INSERT INTO consents ({_CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       tuple(asdict(record).values()))

    def consents(self, collection_id: str, external_image_id: str | None = None) -> list[ConsentRecord]:
        sql, params = f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE collection_id = ?", [collection_id]
        if external_image_id is not None:
            sql += " AND external_image_id = ?"
            params.append(external_image_id)
        return [ConsentRecord(*row) for row in self._db.connection().execute(sql + " ORDER BY created_at", params)]

    def withdraw(self, consent_id: str, at: float) -> ConsentRecord | None:
        with self._db.write() as db:
            db.execute("UPDATE consents SET withdrawn_at = ? WHERE consent_id = ? AND withdrawn_at IS NULL",
                       (at, consent_id))
            row = db.execute(f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE consent_id = ?", (consent_id,)).fetchone()
        return None if row is None else ConsentRecord(*row)

    def expired_consents(self, now: float) -> list[ConsentRecord]:
        rows = self._db.connection().execute(
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE withdrawn_at IS NULL AND expires_at IS NOT NULL"
            " AND expires_at <= ?", (now,)
        )
        return [ConsentRecord(*row) for row in rows]
