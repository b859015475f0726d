"""Face templates (embeddings) protected at rest, as ISO/IEC 24745 asks: AES-256-GCM with a key
kept outside the database, the face id as associated data (a ciphertext moved to another face's
row does not decrypt). Decrypted vectors exist only in memory (the vector index).

``template.key`` (0600) in the data directory, or ``$FACELEDGER_TEMPLATE_KEY``, holds the key;
``faceledger keys rotate-template-key`` re-encrypts every template under a new one (see
:class:`faceledger.service.templates.TemplateVault`, which owns the order of the steps).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from faceledger.errors import InternalServerError, InvalidParameterException
from faceledger.keys.files import KEY_BYTES, load_or_create_key, write_private_file
from faceledger.keys.sealing import LabelMismatch, SealingKey

TEMPLATE_KEY_ENV = "FACELEDGER_TEMPLATE_KEY"
TEMPLATE_KEY_FILE = "template.key"


class TemplateCipher:
    """Encrypts templates with one key; ``fingerprint`` identifies the key without revealing it."""

    def __init__(self, key: bytes) -> None:
        self._key = SealingKey(key)
        self.fingerprint = "aesgcm:" + hashlib.sha256(b"faceledger template key" + key).hexdigest()[:16]

    def seal(self, face_id: str, vector: np.ndarray) -> bytes:
        return self.seal_bytes(face_id, np.ascontiguousarray(vector, dtype=np.float32).tobytes())

    def open(self, face_id: str, sealed: bytes) -> np.ndarray:
        return np.frombuffer(self.open_bytes(face_id, sealed), dtype=np.float32)

    def seal_bytes(self, label: str, data: bytes) -> bytes:
        """Encrypt ``data`` bound to ``label`` (it decrypts only under the same label)."""
        return self._key.seal(label, data)

    def open_bytes(self, label: str, sealed: bytes) -> bytes:
        try:
            return self._key.open(label, sealed)
        except LabelMismatch:
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


def _pending_path(data_dir: Path) -> Path:
    path = template_key_path(data_dir)
    return path.with_name(path.name + ".next")


def template_key_present(data_dir: Path) -> bool:
    """Whether a template key is configured (set in the environment, or a file, or the new key
    of a rotation interrupted after it committed) rather than still to be made."""
    return (
        bool(os.environ.get(TEMPLATE_KEY_ENV))
        or template_key_path(data_dir).exists()
        or _pending_path(data_dir).exists()
    )


def open_template_cipher(data_dir: Path, recorded_fingerprint: str | None) -> TemplateCipher:
    """The cipher of the configured template key. A rotation interrupted after its transaction
    committed left the new key in ``template.key.next``: it is the right key then, and is
    promoted; otherwise the leftover is discarded."""
    path = template_key_path(data_dir)
    pending = _pending_path(data_dir)
    if pending.exists() and not os.environ.get(TEMPLATE_KEY_ENV):
        if recorded_fingerprint == TemplateCipher(pending.read_bytes()).fingerprint:
            pending.replace(path)
        else:
            pending.unlink()
    return TemplateCipher(load_or_create_key(path, TEMPLATE_KEY_ENV))


def stage_new_template_key(data_dir: Path) -> TemplateCipher:
    """Write a fresh key beside the current one (``template.key.next``) and return its cipher;
    :func:`promote_new_template_key` moves it into place once the re-encryption has committed."""
    if os.environ.get(TEMPLATE_KEY_ENV):
        raise InvalidParameterException(
            f"The template key comes from {TEMPLATE_KEY_ENV}: rotate it where that variable is set."
        )
    new_key = os.urandom(KEY_BYTES)
    write_private_file(_pending_path(data_dir), new_key)
    return TemplateCipher(new_key)


def promote_new_template_key(data_dir: Path) -> None:
    """Move the staged key into place (unless a process that opened the directory meanwhile did)."""
    pending = _pending_path(data_dir)
    if pending.exists():
        pending.replace(template_key_path(data_dir))
