"""Image and face operations: detect, compare, index, list and delete faces."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np

from faceledger.errors import about
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.images import ImageInput, ImageReader
from faceledger.service.models import FaceModels
from faceledger.service.objects import S3Object
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.policy_operations import PolicyOperations
from faceledger.service.results import Comparison, FaceDeletion, FaceListing, FacesInImage, IndexFacesResult
from faceledger.service.shapes import Response, quality_record, relative_landmarks
from faceledger.service.templates import TemplateVault
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import FaceRecord, ImageRecord, Store
from faceledger.store.interface import crop_label
from faceledger.vision import AnalyzedImage, DecodedImage, Face
from faceledger.vision.quality import QualityFilter, quality_failures, select_for_indexing


class FaceOperations:
    def __init__(
        self,
        store: Store,
        indexes: VectorIndexRegistry,
        images: ImageReader,
        templates: TemplateVault,
        policies: PolicyOperations,
        models: FaceModels,
    ) -> None:
        self._store = store
        self._indexes = indexes
        self._images = images
        self._templates = templates
        self._policies = policies
        self._models = models

    def detect(self, image: ImageInput) -> FacesInImage:
        decoded = self._images.decode(image)
        return FacesInImage(self._images.faces(decoded), decoded.width, decoded.height)

    def compare(
        self, source_image: ImageInput, target_image: ImageInput, threshold: float, level: QualityFilter
    ) -> Comparison:
        with about("SourceImage"):
            source = self._images.decode(source_image)
        with about("TargetImage"):
            target = self._images.decode(target_image)
        with about("SourceImage"):
            probe, _ = self._images.largest_face(source, level)
        candidates = [face for face in self._images.faces(target) if not quality_failures(face, level)]
        self._images.analyzer.embed_faces(candidates)
        matches: list[tuple[float, Face]] = []
        unmatched: list[Face] = []
        for face in candidates:
            similarity = self._models.default.model.similarity.between(probe.embedding, face.embedding)  # type: ignore[arg-type]
            if similarity >= threshold:
                matches.append((similarity, face))
            else:
                unmatched.append(face)
        matches.sort(key=lambda match: match[0], reverse=True)
        return Comparison(probe, (source.width, source.height), matches, unmatched, (target.width, target.height))

    def index(
        self,
        collection_id: str,
        image: ImageInput,
        external_image_id: str | None,
        max_faces: int | None,
        level: QualityFilter,
        store_image: bool,
        source_path: str | None,
        unique: bool = False,
    ) -> IndexFacesResult:
        """Detect faces and add them to a collection, all of them or none (one transaction).
        ``unique``: index nothing if the collection already holds the same image (by SHA-256)."""
        analyzer = self._models.for_collection(collection_id)
        self._policies.require_consent(collection_id, external_image_id)
        # an image analysed ahead (bulk indexing) was aligned by the collection's model already
        analyzed = image if isinstance(image, AnalyzedImage) else analyzer.analyze_image(self._images.decode(image))
        accepted, refused = select_for_indexing(analyzed.faces, level, max_faces)
        analyzer.embed_faces(accepted)
        now = time.time()
        image_id = str(uuid.uuid4())
        # what a reviewer must see to decide (docs/console.md): kept only where review is required
        keep_crops = self._store.policies.policy(collection_id).review_required
        records = [
            self._face_record(face, collection_id, image_id, external_image_id, analyzed, now, keep_crops)
            for face in accepted
        ]
        change = self._store.add_image(
            ImageRecord(
                image_id=image_id,
                collection_id=collection_id,
                image_sha256=analyzed.sha256,
                external_image_id=external_image_id,
                width=analyzed.width,
                height=analyzed.height,
                face_count=len(records),
                indexed_at=now,
                source_path=source_path,
                content=_encoded(image) if store_image else None,
            ),
            records,
            unique=unique,
        )
        if change is None:
            return IndexFacesResult(
                [], [], analyzed.width, analyzed.height, analyzer.model.version, already_indexed=True
            )
        vectors = np.stack([face.embedding for face in accepted]) if accepted else None
        self._store.after_commit(lambda: self._indexes.apply(change, vectors))
        return IndexFacesResult(
            list(zip(records, accepted, strict=True)), refused, analyzed.width, analyzed.height, analyzer.model.version
        )

    def _face_record(
        self,
        face: Face,
        collection_id: str,
        image_id: str,
        external_image_id: str | None,
        image: AnalyzedImage,
        now: float,
        keep_crop: bool,
    ) -> FaceRecord:
        face_id = str(uuid.uuid4())
        crop = self._templates.seal_crop(crop_label(face_id), face.crop) if keep_crop and face.crop else None
        return FaceRecord(
            face_id=face_id,
            collection_id=collection_id,
            image_id=image_id,
            external_image_id=external_image_id,
            image_sha256=image.sha256,
            bounding_box=face.box.relative(image.width, image.height),
            confidence=face.confidence,
            landmarks=relative_landmarks(face, image.width, image.height),
            quality=quality_record(face),
            template=self._templates.seal(face_id, face.embedding),  # type: ignore[arg-type]
            created_at=now,
            crop=crop,
        )

    def find_indexed_image(self, collection_id: str, image_sha256: str) -> ImageRecord | None:
        return self._store.find_image(collection_id, image_sha256)

    def list(
        self,
        collection_id: str,
        next_token: str | None,
        max_results: int,
        user_id: str | None,
        face_ids: Sequence[str] | None,
    ) -> FaceListing:
        limit = validation.integer(max_results, "MaxResults", 0, MAX_PAGE_SIZE) or 1000
        if user_id is not None:
            validation.user_id(user_id)
        if face_ids is not None:
            face_ids = validation.face_ids(face_ids, maximum=MAX_PAGE_SIZE)
        after = decode_token(f"faces:{collection_id}", next_token)
        version = self._store.face_model_version(collection_id)
        rows = self._store.list_faces(
            collection_id, after_seq=int(after or 0), limit=limit + 1, user_id=user_id, face_ids=face_ids
        )
        token = encode_token(f"faces:{collection_id}", rows[limit - 1][0]) if len(rows) > limit else None
        return FaceListing([record for _, record in rows[:limit]], version, token)

    def delete(self, collection_id: str, face_ids: Sequence[str]) -> FaceDeletion:
        """Delete faces from the store and the index. A face still associated with a user is
        not deleted (disassociate it first), as in Rekognition."""
        wanted = validation.face_ids(face_ids, maximum=MAX_PAGE_SIZE)
        self._store.require_collection(collection_id)
        existing = {r.face_id: r for _, r in self._store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        unsuccessful: list[Response] = []
        deletable = []
        for face_id in dict.fromkeys(wanted):
            record = existing.get(face_id)
            if record is None:
                unsuccessful.append({"FaceId": face_id, "Reasons": ["FACE_NOT_FOUND"]})
            elif record.user_id is not None:
                unsuccessful.append(
                    {"FaceId": face_id, "UserId": record.user_id, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}
                )
            else:
                deletable.append(face_id)
        if not deletable:
            return FaceDeletion([], unsuccessful)
        change = self._store.delete_faces(collection_id, deletable)
        self._store.after_commit(lambda: self._indexes.apply(change))
        return FaceDeletion(list(change.seqs), unsuccessful)


def _encoded(image: ImageInput) -> bytes | None:
    """The encoded file behind ``image``, where the caller still has it."""
    if isinstance(image, AnalyzedImage):
        return image.encoded
    if isinstance(image, S3Object):
        return image.content
    return None if isinstance(image, DecodedImage) else bytes(image)
