"""Moving a collection to another face model, keeping its face ids.

Templates of two models cannot be compared, so a collection moves whole: every image is read
again, from the pixels kept with it (IndexFaces with store_image) or from the file it was indexed
from (folder indexing records its path below the folder: give that folder again), checked by its
SHA-256; its faces are found again (the detector does not depend on the model, so each stored
face is the detection at the same place) and embedded by the new model under the same face id,
with the same ExternalImageId, user and consent. An image that is available neither way cannot
be moved: the migration is refused, naming them, unless the caller accepts that their faces are
erased (with a receipt in the ledger). All of it is one transaction.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from faceledger.errors import InvalidParameterException
from faceledger.index import VectorIndexRegistry
from faceledger.service.images import MAX_FACES_PER_IMAGE, ImageReader
from faceledger.service.models import FaceModels
from faceledger.service.policy_operations import PolicyOperations
from faceledger.service.results import Reply
from faceledger.service.templates import TemplateVault
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import FaceRecord, ImageRecord, Store
from faceledger.vision import BoundingBox, Face

SAME_FACE_OVERLAP = 0.5  # intersection over union of a stored box and a new detection


class ModelMigration:
    def __init__(
        self,
        store: Store,
        indexes: VectorIndexRegistry,
        images: ImageReader,
        templates: TemplateVault,
        models: FaceModels,
        policies: PolicyOperations,
    ) -> None:
        self._store = store
        self._indexes = indexes
        self._images = images
        self._templates = templates
        self._models = models
        self._policies = policies

    def migrate(self, collection_id: str, face_model: str, source_root: Path | None, drop_unavailable: bool) -> Reply:
        target = self._models.named(face_model)
        analyzer = self._models.analyzer(target.version)
        if self._store.face_model_version(collection_id) == target.version:
            raise InvalidParameterException(f"Collection {collection_id!r} is of face model {target.version} already.")
        faces = self._faces_by_image(collection_id)
        templates: dict[str, bytes] = {}
        unavailable: list[str] = []
        for image in self._store.list_images(collection_id):
            data = self._bytes_of(image, source_root)
            if data is None:
                unavailable.append(image.source_path or image.image_id)
                continue
            decoded = self._images.decode(data)
            detected = analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
            pairs = [
                (record, _same_face(record, detected, decoded.width, decoded.height))
                for record in faces.get(image.image_id, [])
            ]
            analyzer.embed_faces([face for _, face in pairs if face is not None])
            for record, face in pairs:
                if face is not None:
                    templates[record.face_id] = self._templates.seal(record.face_id, face.embedding)  # type: ignore[arg-type]
        lost = [record.face_id for records in faces.values() for record in records if record.face_id not in templates]
        if lost and not drop_unavailable:
            raise InvalidParameterException(
                f"{len(lost)} face(s) of collection {collection_id!r} cannot be moved: {len(unavailable)} image(s) are "
                f"neither stored nor found under the folder given ({', '.join(unavailable[:5])}"
                f"{', ...' if len(unavailable) > 5 else ''}). Give the folder they were indexed from, or accept "
                "that their faces are erased (drop_unavailable)."
            )
        erased = self._policies.erase(collection_id, lost)  # a receipt in this operation's ledger entry
        self._store.move_to_model(collection_id, target.version, templates)
        self._store.after_commit(lambda: self._indexes.drop(collection_id))  # another dimension: rebuilt
        response = {
            "CollectionId": collection_id,
            "FaceModelVersion": target.version,
            "MovedFaces": len(templates),
            "ErasedFaceIds": erased,
            "UnavailableImages": unavailable,
        }
        return Reply(
            response,
            {"FaceModelVersion": target.version, "MovedFaces": len(templates), "ErasedFaceIds": erased},
        )

    def _faces_by_image(self, collection_id: str) -> dict[str, list[FaceRecord]]:
        by_image: dict[str, list[FaceRecord]] = {}
        after = 0
        while True:
            page = self._store.list_faces(collection_id, after_seq=after, limit=MAX_PAGE_SIZE)
            for _, record in page:
                by_image.setdefault(record.image_id, []).append(record)
            if len(page) < MAX_PAGE_SIZE:
                return by_image
            after = page[-1][0]

    @staticmethod
    def _bytes_of(image: ImageRecord, source_root: Path | None) -> bytes | None:
        """The image's bytes, from the store or from its file, if they are the bytes indexed."""
        candidates = [image.content] if image.content is not None else []
        if source_root is not None and image.source_path is not None:
            try:
                candidates.append((source_root / image.source_path).read_bytes())
            except OSError:
                pass
        for data in candidates:
            if hashlib.sha256(data).hexdigest() == image.image_sha256:
                return data
        return None


def _same_face(record: FaceRecord, detected: list[Face], width: int, height: int) -> Face | None:
    """The detection at the stored face's place (best overlap, at least SAME_FACE_OVERLAP)."""
    stored = BoundingBox.from_relative(record.bounding_box, width, height)
    best, best_overlap = None, SAME_FACE_OVERLAP
    for face in detected:
        overlap = stored.overlap(face.box)
        if overlap >= best_overlap:
            best, best_overlap = face, overlap
    return best


__all__ = ["ModelMigration"]
