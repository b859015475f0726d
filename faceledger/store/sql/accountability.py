"""The SQL repositories of accountability: policies and consent, review cases, access keys,
idempotency tokens and the audit ledger's rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields

from faceledger.errors import ResourceNotFoundException
from faceledger.keys.sealing import NONCE_BYTES
from faceledger.store.interface import (
    AccessKeyRepository,
    ConsoleSessionRepository,
    LedgerRepository,
    PolicyRepository,
    RequestTokenRepository,
    ReviewRepository,
)
from faceledger.store.records import (
    CONFIRMATIONS_TO_VERIFY,
    GENESIS,
    AccessKey,
    Candidate,
    CollectionPolicy,
    ConsentRecord,
    ConsoleSession,
    LedgerEntry,
    ReviewCase,
)
from faceledger.store.sql.database import Connection, Database

_POLICY_COLUMNS = ", ".join(f.name for f in fields(CollectionPolicy))
_CONSENT_COLUMNS = ", ".join(f.name for f in fields(ConsentRecord))


class SQLPolicies(PolicyRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def policy(self, collection_id: str) -> CollectionPolicy:
        row = (
            self._db.connection()
            .execute(f"SELECT {_POLICY_COLUMNS} FROM collection_policies WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        if row is None:
            return CollectionPolicy()
        purpose, floor, max_results, retention, consent, review = row
        return CollectionPolicy(bool(purpose), floor, max_results, retention, bool(consent), bool(review))

    def update_policy(
        self, collection_id: str, change: Callable[[CollectionPolicy], CollectionPolicy], updated_at: float
    ) -> tuple[CollectionPolicy, CollectionPolicy]:
        with self._db.write() as db:  # the read below is then inside the write transaction
            before = self.policy(collection_id)
            after = change(before)
            if after != before:
                _write_policy(db, collection_id, after, updated_at)
        return before, after

    def retained_collections(self) -> list[tuple[str, int]]:
        return (
            self._db.connection()
            .execute("SELECT collection_id, retention_days FROM collection_policies WHERE retention_days IS NOT NULL")
            .fetchall()
        )

    def add_consent(self, record: ConsentRecord) -> None:
        with self._db.write() as db:
            db.execute(
                f"INSERT INTO consents ({_CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(asdict(record).values()),
            )

    def consents(self, collection_id: str, external_image_id: str | None = None) -> list[ConsentRecord]:
        sql, params = f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE collection_id = ?", [collection_id]
        if external_image_id is not None:
            sql += " AND external_image_id = ?"
            params.append(external_image_id)
        return [ConsentRecord(*row) for row in self._db.connection().execute(sql + " ORDER BY created_at", params)]

    def withdraw(self, consent_id: str, at: float) -> ConsentRecord | None:
        with self._db.write() as db:
            db.execute(
                "UPDATE consents SET withdrawn_at = ? WHERE consent_id = ? AND withdrawn_at IS NULL", (at, consent_id)
            )
            row = db.execute(f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE consent_id = ?", (consent_id,)).fetchone()
        return None if row is None else ConsentRecord(*row)

    def expired_consents(self, now: float) -> list[ConsentRecord]:
        rows = self._db.connection().execute(
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE withdrawn_at IS NULL AND expires_at IS NOT NULL"
            " AND expires_at <= ?",
            (now,),
        )
        return [ConsentRecord(*row) for row in rows]


_CASE_COLUMNS = "case_id, collection_id, operation, opened_by, opened_at, purpose, case_ref, probe"
# the candidates of a case (review_cases in the outer query) still UNVERIFIED, as Candidate.status
# decides: nobody rejected, fewer than CONFIRMATIONS_TO_VERIFY confirmed (one decision per reviewer)
_UNVERIFIED_CANDIDATES = (
    "SELECT 1 FROM review_candidates c WHERE c.case_id = review_cases.case_id"
    " AND NOT EXISTS (SELECT 1 FROM review_decisions d"
    " WHERE d.case_id = c.case_id AND d.face_id = c.face_id AND d.decision = 'reject')"
    " AND (SELECT COUNT(*) FROM review_decisions d"
    f" WHERE d.case_id = c.case_id AND d.face_id = c.face_id AND d.decision = 'confirm') < {CONFIRMATIONS_TO_VERIFY}"
)


class SQLReviews(ReviewRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def open_case(self, case: ReviewCase) -> None:
        with self._db.write() as db:
            db.execute(
                f"INSERT INTO review_cases ({_CASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    case.case_id,
                    case.collection_id,
                    case.operation,
                    case.opened_by,
                    case.opened_at,
                    case.purpose,
                    case.case_ref,
                    case.probe,
                ),
            )
            db.executemany(
                "INSERT INTO review_candidates (case_id, face_id, similarity) VALUES (?, ?, ?)",
                [(case.case_id, c.face_id, c.similarity) for c in case.candidates],
            )
            if case.probe_crop is not None:
                db.execute(
                    "INSERT INTO review_probe_crops (case_id, crop) VALUES (?, ?)", (case.case_id, case.probe_crop)
                )

    def case(self, case_id: str) -> ReviewCase | None:
        db = self._db.connection()
        row = db.execute(f"SELECT {_CASE_COLUMNS} FROM review_cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            return None
        candidates = {
            face_id: Candidate(face_id, similarity)
            for face_id, similarity in db.execute(
                "SELECT face_id, similarity FROM review_candidates WHERE case_id = ? ORDER BY similarity DESC",
                (case_id,),
            )
        }
        for face_id, reviewer, decision, note, decided_at in db.execute(
            "SELECT face_id, reviewer, decision, note, decided_at FROM review_decisions WHERE case_id = ?"
            " ORDER BY decided_at",
            (case_id,),
        ):
            candidates[face_id].decisions.append(
                {"reviewer": reviewer, "decision": decision, "note": note, "decided_at": decided_at}
            )
        return ReviewCase(*row, candidates=list(candidates.values()))

    def case_positions(
        self,
        collection_id: str | None = None,
        *,
        visible: Sequence[str] | None = None,
        status: str | None = None,
        opened_by: str | None = None,
        awaiting: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int | None = None,
    ) -> list[tuple[float, str]]:
        where: list[str] = []
        params: list[object] = []
        if collection_id is not None:
            where.append("collection_id = ?")
            params.append(collection_id)
        if visible is not None:
            if not visible:
                return []
            where.append(f"collection_id IN ({', '.join('?' * len(visible))})")
            params.extend(visible)
        if status is not None:
            where.append(("" if status == "OPEN" else "NOT ") + f"EXISTS ({_UNVERIFIED_CANDIDATES})")
        if opened_by is not None:
            where.append("opened_by = ?")
            params.append(opened_by)
        if awaiting is not None:
            where.append(
                f"opened_by <> ? AND EXISTS ({_UNVERIFIED_CANDIDATES} AND NOT EXISTS (SELECT 1 FROM review_decisions d"
                " WHERE d.case_id = c.case_id AND d.face_id = c.face_id AND d.reviewer = ?))"
            )
            params.extend([awaiting, awaiting])
        if after is not None:
            where.append("(opened_at > ? OR (opened_at = ? AND case_id > ?))")
            params.extend([after[0], after[0], after[1]])
        sql = "SELECT opened_at, case_id FROM review_cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY opened_at, case_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [(float(opened_at), case_id) for opened_at, case_id in self._db.connection().execute(sql, params)]

    def decide(self, case_id: str, face_id: str, reviewer: str, decision: str, note: str, at: float) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT INTO review_decisions (case_id, face_id, reviewer, decision, note, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, face_id, reviewer) DO UPDATE SET"
                " decision = excluded.decision, note = excluded.note, decided_at = excluded.decided_at",
                (case_id, face_id, reviewer, decision, note, at),
            )

    def probe_crop(self, case_id: str) -> bytes | None:
        row = (
            self._db.connection()
            .execute("SELECT crop FROM review_probe_crops WHERE case_id = ?", (case_id,))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def drop_probe_crops(self, collection_id: str, opened_before: float) -> int:
        with self._db.write() as db:
            return db.execute(
                "DELETE FROM review_probe_crops WHERE case_id IN"
                " (SELECT case_id FROM review_cases WHERE collection_id = ? AND opened_at < ?)",
                (collection_id, opened_before),
            ).rowcount


_SESSION_COLUMNS = ", ".join(f.name for f in fields(ConsoleSession))


class SQLConsoleSessions(ConsoleSessionRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def start(self, session: ConsoleSession, expired_before: float) -> None:
        with self._db.write() as db:
            db.execute("DELETE FROM console_sessions WHERE expires_at < ?", (expired_before,))
            db.execute(
                f"INSERT INTO console_sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                tuple(getattr(session, f.name) for f in fields(ConsoleSession)),
            )

    def get(self, token_sha256: str) -> ConsoleSession | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_SESSION_COLUMNS} FROM console_sessions WHERE token_sha256 = ?", (token_sha256,))
            .fetchone()
        )
        return None if row is None else ConsoleSession(*row)

    def touch(self, token_sha256: str, at: float) -> None:
        with self._db.write() as db:
            db.execute("UPDATE console_sessions SET last_seen_at = ? WHERE token_sha256 = ?", (at, token_sha256))

    def end(self, token_sha256: str) -> bool:
        with self._db.write() as db:
            return db.execute("DELETE FROM console_sessions WHERE token_sha256 = ?", (token_sha256,)).rowcount == 1


_KEY_COLUMNS = "access_key_id, role, collections, enabled, created_at, description"


class SQLAccessKeys(AccessKeyRepository):
    """The nonce of a sealed secret is kept in its own column (the schema predates one sealing
    wrapper for everything); it is split off on the way in and joined on the way out."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def add(self, key: AccessKey, sealed_secret: bytes) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT INTO access_keys (access_key_id, secret_ciphertext, secret_nonce, role,"
                " collections, enabled, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.access_key_id,
                    sealed_secret[NONCE_BYTES:],
                    sealed_secret[:NONCE_BYTES],
                    key.role,
                    json.dumps(list(key.collections)) if key.collections is not None else None,
                    int(key.enabled),
                    key.description,
                    key.created_at,
                ),
            )

    def get(self, access_key_id: str) -> AccessKey | None:
        row = (
            self._db.connection()
            .execute(f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE access_key_id = ?", (access_key_id,))
            .fetchone()
        )
        return None if row is None else _access_key(row)

    def sealed_secret(self, access_key_id: str) -> bytes | None:
        row = (
            self._db.connection()
            .execute(
                "SELECT secret_nonce, secret_ciphertext FROM access_keys WHERE access_key_id = ?", (access_key_id,)
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0]) + bytes(row[1])

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
                raise _key_not_found(access_key_id)

    def delete(self, access_key_id: str) -> None:
        with self._db.write() as db:
            deleted = db.execute("DELETE FROM access_keys WHERE access_key_id = ?", (access_key_id,))
            if deleted.rowcount == 0:
                raise _key_not_found(access_key_id)


def _key_not_found(access_key_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Access key {access_key_id!r} does not exist.")


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


class SQLRequestTokens(RequestTokenRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def find(self, operation: str, token: str, newer_than: float) -> tuple[str, dict] | None:
        row = (
            self._db.connection()
            .execute(
                "SELECT request_hash, response FROM request_tokens"
                " WHERE operation = ? AND token = ? AND created_at > ?",
                (operation, token, newer_than),
            )
            .fetchone()
        )
        return None if row is None else (row[0], json.loads(row[1]))

    def record(self, operation: str, token: str, digest: str, response: dict, now: float, expire_before: float) -> None:
        with self._db.write() as db:
            db.execute("DELETE FROM request_tokens WHERE created_at <= ?", (expire_before,))
            # a concurrent retry that recorded it first keeps its answer
            db.execute(
                "INSERT INTO request_tokens (token, operation, request_hash, response, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (operation, token) DO NOTHING",
                (token, operation, digest, json.dumps(response), now),
            )


_LEDGER_COLUMNS = (
    "seq, operation, started_at, ended_at, access_key_id, role, collection_id, input_sha256, purpose,"
    " case_ref, outcome, error, result"
)


class SQLLedger(LedgerRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def append(self, entry: LedgerEntry, chain: Callable[[str, LedgerEntry], str]) -> str:
        with self._db.write() as db:  # BEGIN IMMEDIATE: no other writer between reading the head and appending
            last = db.execute("SELECT seq, entry_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
            entry.seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            digest = chain(prev, entry)
            db.execute(
                f"INSERT INTO ledger ({_LEDGER_COLUMNS}, prev_hash, entry_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.seq,
                    entry.operation,
                    entry.started_at,
                    entry.ended_at,
                    entry.access_key_id,
                    entry.role,
                    entry.collection_id,
                    json.dumps(entry.input_sha256),
                    entry.purpose,
                    entry.case_ref,
                    entry.outcome,
                    entry.error,
                    json.dumps(entry.result, sort_keys=True),
                    prev,
                    digest,
                ),
            )
        return digest

    def head(self) -> tuple[int, str] | None:
        row = self._db.connection().execute("SELECT seq, entry_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def put_signature(self, seq: int, digest: str, signature: bytes, signed_at: float) -> None:
        with self._db.write() as db:
            db.execute(
                "INSERT INTO ledger_signatures (seq, entry_hash, signature, signed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (seq) DO UPDATE SET entry_hash = excluded.entry_hash,"
                " signature = excluded.signature, signed_at = excluded.signed_at",
                (seq, digest, signature, signed_at),
            )

    def entries(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        access_key_id: str | None = None,
        collection_id: str | None = None,
        case_ref: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        purpose: str | None = None,
        collections: Sequence[str] | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[LedgerEntry]:
        sql, params = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE 1 = 1", []
        for column, value, operator in (
            ("started_at", since, ">="),
            ("started_at", until, "<="),
            ("access_key_id", access_key_id, "="),
            ("collection_id", collection_id, "="),
            ("case_ref", case_ref, "="),
            ("operation", operation, "="),
            ("outcome", outcome, "="),
            ("purpose", purpose, "="),
            ("seq", before_seq, "<"),
        ):
            if value is not None:
                sql += f" AND {column} {operator} ?"
                params.append(value)
        if collections is not None:
            sql += f" AND collection_id IN ({','.join('?' * len(collections)) or 'NULL'})"
            params.extend(collections)
        sql += " ORDER BY seq" + (" DESC" if newest_first else "") + (" LIMIT ?" if limit is not None else "")
        if limit is not None:
            params.append(limit)
        for row in self._db.connection().execute(sql, params):
            yield _ledger_entry(row)

    def chained(self) -> Iterator[tuple[LedgerEntry, str, str]]:
        rows = self._db.connection().execute(
            f"SELECT {_LEDGER_COLUMNS}, prev_hash, entry_hash FROM ledger ORDER BY seq"
        )
        for row in rows:
            yield _ledger_entry(row[:-2]), row[-2], row[-1]

    def signatures(self) -> Iterator[tuple[int, str, bytes]]:
        yield from self._db.connection().execute(
            "SELECT seq, entry_hash, signature FROM ledger_signatures ORDER BY seq"
        )

    def last_signed(self) -> tuple[int, float] | None:
        row = (
            self._db.connection()
            .execute("SELECT seq, signed_at FROM ledger_signatures ORDER BY seq DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else (int(row[0]), float(row[1]))


def _ledger_entry(row: tuple) -> LedgerEntry:
    (
        seq,
        operation,
        started_at,
        ended_at,
        access_key_id,
        role,
        collection_id,
        input_sha256,
        purpose,
        case_ref,
        outcome,
        error,
        result,
    ) = row
    return LedgerEntry(
        operation=operation,
        started_at=started_at,
        access_key_id=access_key_id,
        role=role,
        collection_id=collection_id,
        input_sha256=json.loads(input_sha256),
        purpose=purpose,
        case_ref=case_ref,
        ended_at=ended_at,
        outcome=outcome,
        error=error,
        result=json.loads(result),
        seq=seq,
    )


def _write_policy(db: Connection, collection_id: str, policy: CollectionPolicy, updated_at: float) -> None:
    # flags as 0/1: the columns are INTEGER on every engine (PostgreSQL has no implicit cast from boolean)
    values = [_column_value(getattr(policy, f.name)) for f in fields(CollectionPolicy)]
    db.execute(
        f"INSERT INTO collection_policies (collection_id, {_POLICY_COLUMNS}, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection_id) DO UPDATE SET "
        + ", ".join(f"{f.name} = excluded.{f.name}" for f in fields(CollectionPolicy))
        + ", updated_at = excluded.updated_at",
        (collection_id, *values, updated_at),
    )


def _column_value(value: object) -> object:
    return int(value) if isinstance(value, bool) else value
