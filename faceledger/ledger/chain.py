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
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from faceledger.keys.files import write_private_file
from faceledger.store import LedgerEntry, LedgerRepository
from faceledger.store.records import GENESIS

LEDGER_KEY_FILE = "ledger.key"
SIGN_EVERY = 100  # entries; the head is also signed on demand and by the server's timer


def entry_hash(prev_hash: str, entry: LedgerEntry) -> str:
    return hashlib.sha256((prev_hash + "\n" + entry.content()).encode()).hexdigest()


class Ledger:
    """Hashes and signs the entries its repository (the store's) keeps."""

    def __init__(self, rows: LedgerRepository, data_dir: Path) -> None:
        self._rows = rows
        self._key_path = data_dir / LEDGER_KEY_FILE

    # -- writing -----------------------------------------------------------------------------

    def append(self, entry: LedgerEntry) -> int:
        """Append ``entry`` (inside the caller's unit of work, if any); returns its sequence number."""
        digest = self._rows.append(entry, entry_hash)
        assert entry.seq is not None
        if entry.seq % SIGN_EVERY == 0:
            self._sign(entry.seq, digest)
        return entry.seq

    def sign_head(self) -> int | None:
        """Sign the current head; returns its sequence number (None for an empty ledger)."""
        head = self._rows.head()
        if head is None:
            return None
        self._sign(*head)
        return head[0]

    def _sign(self, seq: int, digest: str) -> None:
        signature = self._private_key().sign(f"{seq}:{digest}".encode())
        self._rows.put_signature(seq, digest, signature, time.time())

    def _private_key(self) -> Ed25519PrivateKey:
        if not self._key_path.exists():
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            write_private_file(self._key_path, raw)
        return Ed25519PrivateKey.from_private_bytes(self._key_path.read_bytes())

    def public_key(self) -> Ed25519PublicKey:
        return self._private_key().public_key()

    # -- reading -----------------------------------------------------------------------------

    def entries(self, **filters: object) -> Iterator[LedgerEntry]:
        """Entries in ledger order, filtered (see LedgerRepository.entries)."""
        return self._rows.entries(**filters)  # type: ignore[arg-type]

    def verify(self) -> list[str]:
        """Every problem found, in ledger order (empty: the ledger is intact)."""
        problems: list[str] = []
        expected_seq, previous = 1, GENESIS
        hashes: dict[int, str] = {}
        for entry, prev_hash, stored_hash in self._rows.chained():
            seq = entry.seq or 0
            if seq != expected_seq:
                problems.append(
                    f"entries {expected_seq}..{seq - 1} are missing (deleted)"
                    if seq > expected_seq
                    else f"entry {seq} appears out of order (inserted or reordered)"
                )
            if prev_hash != previous:
                problems.append(
                    f"entry {seq} does not follow entry {seq - 1}: the chain was cut here "
                    "(an entry inserted, deleted or reordered)"
                )
            if entry_hash(prev_hash, entry) != stored_hash:
                problems.append(f"entry {seq} ({entry.operation}) was edited: its content no longer matches its hash")
            hashes[seq] = stored_hash
            expected_seq, previous = seq + 1, stored_hash
        key = self.public_key()
        for seq, digest, signature in self._rows.signatures():
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
