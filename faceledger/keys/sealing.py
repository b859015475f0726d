"""AES-256-GCM sealing bound to a label: the one authenticated-encryption wrapper of faceledger
(face templates, saved vector indexes, API secrets)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class LabelMismatch(Exception):
    """The sealed bytes do not open under this key and label (another key, label or tampering)."""


class SealingKey:
    """Seals bytes under one 256-bit key; the label is GCM's associated data, so a ciphertext moved
    to another label (another face, another access key) does not open."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, label: str, data: bytes) -> bytes:
        """A fresh nonce followed by the ciphertext and its tag."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, label.encode())

    def open(self, label: str, sealed: bytes) -> bytes:
        # A memoryview, not a slice: a slice would copy the whole ciphertext (877 MiB for the
        # saved index of a million faces) and raise peak memory by as much.
        view = memoryview(sealed)
        try:
            return self._aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], label.encode())
        except InvalidTag:
            raise LabelMismatch(label) from None
