"""The audit ledger: an append-only, hash-chained record of every operation on biometric data.

Each entry carries the SHA-256 of the previous entry's hash and its own canonical content, so
editing, deleting, inserting or reordering any entry breaks the chain from that point. The chain
head is signed (Ed25519) with the server's ledger key, kept outside the database: rewriting the
whole chain after a signed head is detected too, and so is cutting off signed entries at the end.
Entries after the last signature are protected by the chain alone (sign often: ``audit sign``
and ``serve`` do it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from faceledger.store.database import Database
from faceledger.store.key_files import write_key_file

GENESIS = "0" * 64
LEDGER_KEY_FILE = "ledger.key"
SIGN_EVERY = 100  # entries; the head is also signed on demand and by the server's timer


@dataclass
class LedgerEntry:
    """One operation. Times are Unix seconds; ``input_sha256`` hashes each input image;
    ``result`` summarises what came back (face ids and similarities, or counts); ``outcome`` is
    ``ok``, ``denied`` or ``error`` (then ``error`` names it)."""

    operation: str
    started_at: float
    access_key_id: str
    role: str
    collection_id: str | None = None
    input_sha256: list[str] = field(default_factory=list)
    purpose: str | None = None
    case_ref: str | None = None
    ended_at: float | None = None
    outcome: str = "ok"
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def content(self) -> str:
        fields = asdict(self)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


_COLUMNS = (
    "seq, operation, started_at, ended_at, access_key_id, role, collection_id, input_sha256, purpose,"
    " case_ref, outcome, error, result"
)


def entry_hash(prev_hash: str, entry: LedgerEntry) -> str:
    return hashlib.sha256((prev_hash + "\n" + entry.content()).encode()).hexdigest()


class Ledger:
    def __init__(self, database: Database, data_dir: Path) -> None:
        self._db = database
        self._key_path = data_dir / LEDGER_KEY_FILE

    # -- writing -----------------------------------------------------------------------------

    def append(self, entry: LedgerEntry) -> int:
        """Append ``entry`` (inside the caller's unit of work, if any); returns its sequence number."""
        with self._db.write() as db:
            last = db.execute("SELECT seq, entry_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            entry.seq = seq
            digest = entry_hash(prev, entry)
            db.execute(
                f"INSERT INTO ledger ({_COLUMNS}, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, entry.operation, entry.started_at, entry.ended_at, entry.access_key_id, entry.role,
                 entry.collection_id, json.dumps(entry.input_sha256), entry.purpose, entry.case_ref,
                 entry.outcome, entry.error, json.dumps(entry.result, sort_keys=True), prev, digest),
            )
            if seq % SIGN_EVERY == 0:
                self._sign(db, seq, digest)
        return seq

    def sign_head(self) -> int | None:
        """Sign the current head; returns its sequence number (None for an empty ledger)."""
        with self._db.write() as db:
            head = db.execute("SELECT seq, entry_hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
            if head is None:
                return None
            self._sign(db, head[0], head[1])
            return int(head[0])

    def _sign(self, db: sqlite3.Connection, seq: int, digest: str) -> None:
        signature = self._private_key().sign(f"{seq}:{digest}".encode())
        db.execute(
            "INSERT OR REPLACE INTO ledger_signatures (seq, entry_hash, signature, signed_at) VALUES (?, ?, ?, ?)",
            (seq, digest, signature, time.time()),
        )

    def _private_key(self) -> Ed25519PrivateKey:
        if not self._key_path.exists():
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            write_key_file(self._key_path, raw)
        return Ed25519PrivateKey.from_private_bytes(self._key_path.read_bytes())

    def public_key(self) -> Ed25519PublicKey:
        return self._private_key().public_key()

    # -- reading -----------------------------------------------------------------------------

    def entries(
        self, *, since: float | None = None, until: float | None = None, access_key_id: str | None = None,
        collection_id: str | None = None, case_ref: str | None = None, limit: int | None = None,
    ) -> Iterator[LedgerEntry]:
        sql, params = f"SELECT {_COLUMNS} FROM ledger WHERE 1 = 1", []
        for column, value, operator in (("started_at", since, ">="), ("started_at", until, "<="),
                                        ("access_key_id", access_key_id, "="), ("collection_id", collection_id, "="),
                                        ("case_ref", case_ref, "=")):
            if value is not None:
                sql += f" AND {column} {operator} ?"
                params.append(value)
        sql += " ORDER BY seq" + (" LIMIT ?" if limit is not None else "")
        if limit is not None:
            params.append(limit)
        for row in self._db.connection().execute(sql, params):
            yield _entry(row)

    def verify(self) -> list[str]:
        """Every problem found, in ledger order (empty: the ledger is intact)."""
        problems: list[str] = []
        expected_seq, previous = 1, GENESIS
        hashes: dict[int, str] = {}
        rows = self._db.connection().execute(f"SELECT {_COLUMNS}, prev_hash, entry_hash FROM ledger ORDER BY seq")
        for row in rows:
            entry, prev_hash, stored_hash = _entry(row[:-2]), row[-2], row[-1]
            seq = entry.seq or 0
            if seq != expected_seq:
                problems.append(f"entries {expected_seq}..{seq - 1} are missing (deleted)" if seq > expected_seq
                                else f"entry {seq} appears out of order (inserted or reordered)")
            if prev_hash != previous:
                problems.append(f"entry {seq} does not follow entry {seq - 1}: the chain was cut here "
                                "(an entry inserted, deleted or reordered)")
            if entry_hash(prev_hash, entry) != stored_hash:
                problems.append(f"entry {seq} ({entry.operation}) was edited: its content no longer matches its hash")
            hashes[seq] = stored_hash
            expected_seq, previous = seq + 1, stored_hash
        key = self.public_key()
        for seq, digest, signature in self._db.connection().execute(
            "SELECT seq, entry_hash, signature FROM ledger_signatures ORDER BY seq"
        ):
            try:
                key.verify(signature, f"{seq}:{digest}".encode())
            except InvalidSignature:
                problems.append(f"the signature of head {seq} is not the ledger key's (forged or key replaced)")
                continue
            if seq not in hashes:
                problems.append(f"entry {seq} was signed but is gone: entries were deleted from the end")
            elif hashes[seq] != digest:
                problems.append(f"entries up to {seq} were rewritten after the head was signed")
        return problems


def _entry(row: tuple) -> LedgerEntry:
    (seq, operation, started_at, ended_at, access_key_id, role, collection_id, input_sha256, purpose,
     case_ref, outcome, error, result) = row
    return LedgerEntry(
        operation=operation, started_at=started_at, access_key_id=access_key_id, role=role,
        collection_id=collection_id, input_sha256=json.loads(input_sha256), purpose=purpose, case_ref=case_ref,
        ended_at=ended_at, outcome=outcome, error=error, result=json.loads(result), seq=seq,
    )
