"""The template key in use: seals embeddings before the store sees them, opens them for search.

The store keeps only sealed templates and the fingerprint of the key that sealed them; this vault
holds the key (keys/templates.py) and checks, before anything is read, that it is that key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceledger.errors import DataDirectoryError, InternalServerError
from faceledger.index import IndexChanges
from faceledger.keys.templates import (
    TEMPLATE_KEY_ENV,
    PlainTemplates,
    TemplateCodec,
    open_template_cipher,
    promote_new_template_key,
    stage_new_template_key,
    template_key_present,
)
from faceledger.store import FaceRecord, Store


class TemplateVault:
    """Seals and opens face templates with the data directory's template key."""

    def __init__(self, store: Store, data_dir: Path, *, encrypt: bool = True) -> None:
        """``encrypt`` False: plain templates, only to measure what encryption costs."""
        self._store = store
        self._data_dir = data_dir
        recorded = store.template_key()
        if encrypt and recorded not in (None, PlainTemplates.fingerprint) and not template_key_present(data_dir):
            raise DataDirectoryError(
                f"The face templates in {store.describe()} are sealed with a template key this data directory "
                f"does not hold: copy template.key (mode 0600) from the data directory of a node already using "
                f"the store (or set {TEMPLATE_KEY_ENV})."
            )
        self.codec: TemplateCodec = open_template_cipher(data_dir, recorded) if encrypt else PlainTemplates()
        if recorded is None:
            # a store made before templates were sealed: seal them now, and record the key
            store.reseal_templates(self.codec.seal_bytes, self.codec.fingerprint)
        elif recorded != self.codec.fingerprint:
            raise InternalServerError(
                f"The face templates were sealed with key {recorded}, not with the configured key "
                f"{self.codec.fingerprint}: set the right template key (template.key or FACELEDGER_TEMPLATE_KEY)."
            )

    def seal(self, face_id: str, embedding: np.ndarray) -> bytes:
        return self.codec.seal(face_id, embedding)

    def seal_crop(self, label: str, jpeg: bytes) -> bytes:
        """Seal a face crop (a review-required collection's, vision/crop.py) like a template;
        ``label``: store.crop_label or store.probe_crop_label."""
        return self.codec.seal_bytes(label, jpeg)

    def open_crop(self, label: str, sealed: bytes) -> bytes:
        return self.codec.open_bytes(label, sealed)

    def embedding(self, face: FaceRecord) -> np.ndarray:
        """The face's embedding, in the clear (memory only)."""
        return self.codec.open(face.face_id, face.template)

    def load(self, collection_id: str) -> tuple[np.ndarray, np.ndarray, int]:
        """A collection's (index ids, embeddings, generation), for building its vector index."""
        seqs, templates, generation = self._store.load_templates(collection_id)
        ids = np.asarray(seqs, dtype=np.int64)
        if not templates:
            return ids, np.empty((0, 0), dtype=np.float32), generation
        return ids, np.stack([self.codec.open(face_id, sealed) for face_id, sealed in templates]), generation

    def changes_since(self, collection_id: str, generation: int) -> IndexChanges | None:
        """The collection's faces added (with their embeddings) and removed since ``generation``,
        for an index to catch up; None when the store cannot say (read it all again)."""
        changes = self._store.face_changes_since(collection_id, generation)
        if changes is None:
            return None
        vectors = [self.codec.open(face_id, sealed) for face_id, sealed in changes.added_templates]
        return IndexChanges(
            changes.added_seqs,
            np.stack(vectors) if vectors else np.empty((0, 0), dtype=np.float32),
            changes.removed_seqs,
            changes.generation,
        )

    def undecryptable(self, collection_id: str) -> int:
        """How many of the collection's templates do not open under the current key."""
        _, templates, _ = self._store.load_templates(collection_id)
        failures = 0
        for face_id, sealed in templates:
            try:
                self.codec.open(face_id, sealed)
            except InternalServerError:
                failures += 1
        return failures

    def rotate(self) -> int:
        """Re-encrypt every template under a fresh key; returns how many (inside a unit of work).

        Order: new key written beside the old one, templates re-encrypted in the unit's
        transaction, new key moved into place after it commits. A crash at any point leaves a
        store that opens with one of the two keys (see open_template_cipher).
        """
        new = stage_new_template_key(self._data_dir)
        old = self.codec
        count = self._store.reseal_templates(
            lambda face_id, sealed: new.seal_bytes(face_id, old.open_bytes(face_id, sealed)), new.fingerprint
        )
        self._store.after_commit(lambda: promote_new_template_key(self._data_dir))
        self._store.after_commit(lambda: setattr(self, "codec", new))
        return count
