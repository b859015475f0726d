"""The audit ledger: an append-only, hash-chained record of every operation on biometric data.

Each entry carries the SHA-256 of the previous entry's hash and its own canonical content, so
editing, deleting, inserting or reordering any entry breaks the chain from that point. The chain
head is signed (Ed25519) with the server's ledger key, kept outside the database: rewriting the
whole chain after a signed head is detected too, and so is cutting off signed entries at the end.
Entries after the last signature are protected by the chain alone (sign often: ``audit sign``
and ``serve`` do it). Every hundredth entry is signed as it is appended, so a missing signature of
such an entry is itself evidence.

Whoever can rewrite the database and read the ledger key can rewrite and re-sign everything. Two
defences: keep the key elsewhere (``$FACELEDGER_LEDGER_KEY_FILE``, e.g. on a volume the server
mounts read-only for others), and *anchor* signed heads outside the data directory
(``audit anchor``: a JSON line per head, to a file or a system someone else keeps); ``audit
verify --anchor`` then proves the ledger still holds every anchored head unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from faceledger.keys.files import create_once
from faceledger.store import LedgerEntry, LedgerRepository
from faceledger.store.records import GENESIS

LEDGER_KEY_FILE = "ledger.key"
LEDGER_KEY_ENV = "FACELEDGER_LEDGER_KEY_FILE"
SIGN_EVERY = 100  # entries; the head is also signed on demand and by the server's timer


def ledger_key_path(data_dir: Path) -> Path:
    """``$FACELEDGER_LEDGER_KEY_FILE`` if set, else ``ledger.key`` in the data directory."""
    configured = os.environ.get(LEDGER_KEY_ENV)
    return Path(configured).expanduser() if configured else data_dir / LEDGER_KEY_FILE


def entry_hash(prev_hash: str, entry: LedgerEntry) -> str:
    return hashlib.sha256((prev_hash + "\n" + entry.content()).encode()).hexdigest()


class Ledger:
    """Hashes and signs the entries its repository (the store's) keeps."""

    def __init__(self, rows: LedgerRepository, key_path: Path) -> None:
        """``key_path``: the Ed25519 private key (created on first use), see ledger_key_path."""
        self._rows = rows
        self._key_path = key_path

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

    def anchor(self) -> dict[str, object] | None:
        """Sign the current head and return it as an anchor to keep outside the data directory:
        sequence number, entry hash, signature and public key (None for an empty ledger)."""
        head = self._rows.head()
        if head is None:
            return None
        seq, digest = head
        signed_at = time.time()
        signature = self._sign(seq, digest, signed_at)
        public = self.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "seq": seq,
            "hash": digest,
            "signature": base64.b64encode(signature).decode(),
            "public_key": base64.b64encode(public).decode(),
            "signed_at": signed_at,
        }

    def _sign(self, seq: int, digest: str, at: float | None = None) -> bytes:
        signature = self._private_key().sign(f"{seq}:{digest}".encode())
        self._rows.put_signature(seq, digest, signature, time.time() if at is None else at)
        return signature

    def _private_key(self) -> Ed25519PrivateKey:
        if not self._key_path.exists():
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return Ed25519PrivateKey.from_private_bytes(create_once(self._key_path, raw))
        return Ed25519PrivateKey.from_private_bytes(self._key_path.read_bytes())

    def public_key(self) -> Ed25519PublicKey:
        return self._private_key().public_key()

    # -- reading -----------------------------------------------------------------------------

    def entries(self, **filters: object) -> Iterator[LedgerEntry]:
        """Entries in ledger order, filtered (see LedgerRepository.entries)."""
        return self._rows.entries(**filters)  # type: ignore[arg-type]

    def verify(self, anchors: list[dict] | None = None) -> list[str]:
        """Every problem found, in ledger order (empty: the ledger is intact); ``anchors`` are
        heads kept elsewhere (see :meth:`anchor`) that the ledger must still hold unchanged."""
        problems: list[str] = []
        expected_seq, previous = 1, GENESIS
        hashes: dict[int, str] = {}
        for entry, prev_hash, stored_hash in self._rows.chained():
            seq = entry.seq or 0
            if seq > expected_seq:
                # the link of the entry after a gap can only fail: one problem says both
                gap = (
                    f"entry {expected_seq} is" if seq == expected_seq + 1 else f"entries {expected_seq}..{seq - 1} are"
                )
                where = "deleted from the start of the chain" if expected_seq == 1 else "deleted from the middle"
                problems.append(f"{gap} missing: {where} (entry {seq} no longer follows the entry before it)")
            elif seq < expected_seq:
                problems.append(f"entry {seq} appears out of order (inserted or reordered)")
            if prev_hash != previous and seq <= expected_seq:
                problems.append(
                    f"entry {seq} does not follow entry {seq - 1}: the chain was cut here "
                    "(an entry inserted, deleted or reordered)"
                )
            if entry_hash(prev_hash, entry) != stored_hash:
                problems.append(f"entry {seq} ({entry.operation}) was edited: its content no longer matches its hash")
            hashes[seq] = stored_hash
            expected_seq, previous = seq + 1, stored_hash
        key = self.public_key()
        signed = set()
        for seq, digest, signature in self._rows.signatures():
            signed.add(seq)
            try:
                key.verify(signature, f"{seq}:{digest}".encode())
            except InvalidSignature:
                problems.append(f"the signature of head {seq} is not the ledger key's (forged or key replaced)")
                continue
            if seq not in hashes:
                where = "from the end" if seq > max(hashes, default=0) else "from the middle"
                problems.append(f"entry {seq} was signed but is gone: entries were deleted {where}")
            elif hashes[seq] != digest:
                problems.append(f"entries up to {seq} were rewritten after the head was signed")
        for seq in range(SIGN_EVERY, max(hashes, default=0) + 1, SIGN_EVERY):
            if seq not in signed:  # signed as it was appended: its signature was deleted
                problems.append(f"the signature of entry {seq} is missing: signatures were deleted")
        for anchored in anchors or []:
            seq, digest = int(anchored["seq"]), str(anchored["hash"])
            if hashes.get(seq) != digest:
                problems.append(
                    f"anchored head {seq} is "
                    + ("gone" if seq not in hashes else "no longer what was anchored")
                    + ": the ledger was cut or rewritten after it was anchored"
                )
        return problems
