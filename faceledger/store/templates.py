"""Face templates (embeddings) protected at rest, as ISO/IEC 24745 asks: AES-256-GCM with a key
kept outside the database, the face id as associated data (a ciphertext moved to another face's
row does not decrypt). Decrypted vectors exist only in memory (the vector index).

``template.key`` (0600) in the data directory, or ``$FACELEDGER_TEMPLATE_KEY``, holds the key;
``faceledger keys rotate-template-key`` re-encrypts every template under a new one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceledger.errors import InternalServerError, InvalidParameterException
from faceledger.store.key_files import KEY_BYTES, load_or_create_key, write_key_file

if TYPE_CHECKING:
    from faceledger.store.sqlite import SQLiteStore

TEMPLATE_KEY_ENV = "FACELEDGER_TEMPLATE_KEY"
TEMPLATE_KEY_FILE = "template.key"
_NONCE = 12


class TemplateCipher:
    """Encrypts templates with one key; ``fingerprint`` identifies the key without revealing it."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.fingerprint = "aesgcm:" + hashlib.sha256(b"faceledger template key" + key).hexdigest()[:16]

    def seal(self, face_id: str, vector: np.ndarray) -> bytes:
        return self.seal_bytes(face_id, np.ascontiguousarray(vector, dtype=np.float32).tobytes())

    def open(self, face_id: str, sealed: bytes) -> np.ndarray:
        return np.frombuffer(self.open_bytes(face_id, sealed), dtype=np.float32)

    def seal_bytes(self, label: str, data: bytes) -> bytes:
        """Encrypt ``data`` bound to ``label`` (it decrypts only under the same label)."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, label.encode())

    def open_bytes(self, label: str, sealed: bytes) -> bytes:
        try:
            # A memoryview, not a slice: a slice would copy the whole ciphertext (877 MiB for the
            # saved index of a million faces) and raise peak memory by as much.
            view = memoryview(sealed)
            return self._aead.decrypt(view[:_NONCE], view[_NONCE:], label.encode())
        except InvalidTag:
            raise InternalServerError(
                f"{label} does not decrypt: the template key is not the one it was sealed with."
            ) from None


class PlainTemplates:
    """No encryption: only for measuring what encryption costs (benchmarks), never the default."""

    fingerprint = "plain"

    def seal(self, face_id: str, vector: np.ndarray) -> bytes:
        return np.ascontiguousarray(vector, dtype=np.float32).tobytes()

    def open(self, face_id: str, sealed: bytes) -> np.ndarray:
        return np.frombuffer(sealed, dtype=np.float32)

    def seal_bytes(self, label: str, data: bytes) -> bytes:
        return data

    def open_bytes(self, label: str, sealed: bytes) -> bytes:
        return sealed


TemplateCodec = TemplateCipher | PlainTemplates


def template_key_path(data_dir: Path) -> Path:
    return data_dir / TEMPLATE_KEY_FILE


def open_template_cipher(data_dir: Path, recorded_fingerprint: str | None) -> TemplateCipher:
    """The cipher of the configured template key. A rotation interrupted after its transaction
    committed left the new key in ``template.key.next``: it is the right key then, and is
    promoted; otherwise the leftover is discarded."""
    path = template_key_path(data_dir)
    pending = path.with_name(path.name + ".next")
    if pending.exists() and not os.environ.get(TEMPLATE_KEY_ENV):
        if recorded_fingerprint == TemplateCipher(pending.read_bytes()).fingerprint:
            pending.replace(path)
        else:
            pending.unlink()
    return TemplateCipher(load_or_create_key(path, TEMPLATE_KEY_ENV))


def rotate_template_key(store: SQLiteStore, data_dir: Path) -> int:
    """Re-encrypt every template under a fresh key; returns how many were re-encrypted.

    Order: new key written beside the old one, templates re-encrypted in one transaction, new key
    moved into place. A crash at any point leaves a store that opens with one of the two keys.
    """
    if os.environ.get(TEMPLATE_KEY_ENV):
        raise InvalidParameterException(
            f"The template key comes from {TEMPLATE_KEY_ENV}: rotate it where that variable is set."
        )
    path = template_key_path(data_dir)
    pending = path.with_name(path.name + ".next")
    new_key = os.urandom(KEY_BYTES)
    write_key_file(pending, new_key)
    count = store.reseal_templates(TemplateCipher(new_key))
    # inside a unit of work the re-encryption commits later: only then may the key file change
    store.after_commit(lambda: pending.replace(path))
    return count
