"""The face operations, protocol-free, named and shaped after Amazon Rekognition's face API.

Each public method is one Rekognition operation in snake_case (``index_faces`` is IndexFaces),
takes the request members as keyword arguments in snake_case, and returns a dict with exactly
the response members boto3 would return. Errors are :mod:`faceledger.errors` classes named after
Rekognition's. The CLI and the HTTP API both call this class; nothing here knows about either.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import numpy as np

from faceledger.config import Settings
from faceledger.errors import InvalidParameterException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.ledgering import LedgeredOperations, ledgered
from faceledger.service.access import AccessControl
from faceledger.service.admin_operations import AdminOperations
from faceledger.service.policy_operations import PolicyOperations
from faceledger.service.review_operations import ReviewOperations
from faceledger.service.collection_operations import CollectionOperations
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.shapes import (
    ImageInput,
    Response,
    face_detail,
    quality_record,
    relative_landmarks,
    searched_face,
    stored_face,
)
from faceledger.service.similarity import (
    max_squared_distance,
    similarity_between,
    similarity_from_squared_distance,
)
from faceledger.service.user_operations import UserOperations
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.ledger.chain import Ledger
from faceledger.store import FaceRecord, ImageRecord, SQLiteStore
from faceledger.store.access_keys import AccessKeyStore, load_secrets_key
from faceledger.store.policies import PolicyStore
from faceledger.store.request_tokens import RequestTokenStore
from faceledger.store.reviews import ReviewStore
from faceledger.store.templates import PlainTemplates, open_template_cipher
from faceledger.vision import AnalyzedImage, DecodedImage, Face, FaceAnalyzer, decode_image
from faceledger.vision.embed import EMBEDDING_DIM
from faceledger.vision.quality import QualityFilter, quality_failures, select_for_indexing

# CompareFaces keeps Rekognition's default 80 (dlib's d = 0.6, see similarity.py); searches
# default to the calibrated threshold of the collection (see thresholds.py).
DEFAULT_SIMILARITY_THRESHOLD = 80.0
DEFAULT_MAX_FACES = 100
MAX_FACES_PER_IMAGE = 100  # DetectFaces and CompareFaces report at most the 100 largest faces
_NO_FACE = "There are no faces in the image. Should be at least 1."


def _encoded(image: ImageInput) -> bytes | None:
    """The encoded file behind ``image``, where the caller still has it."""
    if isinstance(image, AnalyzedImage):
        return image.encoded
    return None if isinstance(image, DecodedImage) else bytes(image)


class FaceService(
    LedgeredOperations, AdminOperations, PolicyOperations, ReviewOperations, CollectionOperations, UserOperations
):
    """All face operations over one data directory (store + vector index + face engine).

    Collection and user operations live in collections.py and users.py; this class holds the
    image, face and search operations and the parts they share. Thread-safe: each thread gets
    its own store connection; the index and the models guard themselves.
    """

    def __init__(self, settings: Settings | None = None, analyzer: FaceAnalyzer | None = None) -> None:
        self.settings = settings or Settings()
        data_dir = self.settings.data_dir
        self.store = SQLiteStore(
            self.settings.database_path,
            (lambda recorded: open_template_cipher(data_dir, recorded)) if self.settings.encrypt_templates
            else PlainTemplates(),
        )
        self.request_tokens = RequestTokenStore(self.store)
        self.ledger = Ledger(self.store, data_dir)
        self.policies = PolicyStore(self.store)
        self.reviews = ReviewStore(self.store)
        self.analyzer = analyzer or FaceAnalyzer()
        self.indexes = VectorIndexRegistry(
            EMBEDDING_DIM, self.store.load_embeddings, self.store.generation,
            persist_dir=data_dir / "index", cipher=lambda: self.store.templates,
        )
        self._access: AccessControl | None = None

    @property
    def access(self) -> AccessControl:
        """API access keys; the secrets key is read (or created) on first use only."""
        if self._access is None:
            self._access = AccessControl(AccessKeyStore(self.store, load_secrets_key(self.settings.data_dir)))
        return self._access

    def close(self) -> None:
        self.indexes.save()
        self.store.close()

    def __enter__(self) -> FaceService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def face_model_version(self) -> str:
        return self.analyzer.model_version

    # -- images in, faces out ----------------------------------------------------------------

    def decode(self, image: ImageInput) -> DecodedImage:
        """Decode request bytes under the configured limits (already-decoded input passes)."""
        if isinstance(image, DecodedImage):
            return image
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise InvalidParameterException("Image must be the encoded bytes of a JPEG or PNG image.")
        return decode_image(bytes(image), self.settings.image_limits)

    @ledgered("DetectFaces")
    def detect_faces(self, *, image: ImageInput, attributes: Sequence[str] | None = None) -> Response:
        """Faces in an image, largest first (at most 100). ``attributes`` is accepted for
        compatibility; faceledger never estimates age, gender or emotion, whatever is asked."""
        decoded = self.decode(image)
        faces = self.analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
        return {"FaceDetails": [face_detail(f, decoded.width, decoded.height) for f in faces]}

    @ledgered("CompareFaces")
    def compare_faces(
        self,
        *,
        source_image: ImageInput,
        target_image: ImageInput,
        similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        quality_filter: str = "NONE",
    ) -> Response:
        """Compare the largest face of the source with every face of the target."""
        threshold = validation.percent(similarity_threshold, "SimilarityThreshold")
        level = validation.quality_filter(quality_filter)
        source = self.decode(source_image)
        target = self.decode(target_image)
        probe, _ = self._largest_face(source, level)
        candidates = self.analyzer.analyze(target.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
        candidates = [face for face in candidates if not quality_failures(face, level)]
        self.analyzer.embed_faces(candidates)
        matches, unmatched = [], []
        for face in candidates:
            assert probe.embedding is not None and face.embedding is not None
            similarity = similarity_between(probe.embedding, face.embedding)
            detail = face_detail(face, target.width, target.height)
            if similarity >= threshold:
                matches.append({"Similarity": similarity, "Face": detail})
            else:
                unmatched.append(detail)
        matches.sort(key=lambda match: match["Similarity"], reverse=True)
        return {
            "SourceImageFace": searched_face(probe, source.width, source.height),
            "FaceMatches": matches,
            "UnmatchedFaces": unmatched,
        }

    @ledgered("IndexFaces")
    def index_faces(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        detection_attributes: Sequence[str] | None = None,
        store_image: bool = False,
        source_path: str | None = None,
    ) -> Response:
        """Detect faces and add them to a collection, all of them or none (one transaction).

        The largest ``max_faces`` faces that pass ``quality_filter`` are indexed; every other
        face is reported in UnindexedFaces with Rekognition's reasons. The image's pixels are
        kept only when ``store_image`` is true; ``source_path`` records where a file came from.
        """
        validation.collection_id(collection_id)
        validation.external_image_id(external_image_id)
        level = validation.quality_filter(quality_filter)
        if max_faces is not None:
            validation.integer(max_faces, "MaxFaces", 1)
        self.store.require_collection(collection_id)
        self.require_consent(collection_id, external_image_id)
        analyzed = image if isinstance(image, AnalyzedImage) else self.analyzer.analyze_image(self.decode(image))
        accepted, refused = select_for_indexing(analyzed.faces, level, max_faces)
        unindexed = [
            {"Reasons": reasons, "FaceDetail": face_detail(face, analyzed.width, analyzed.height)}
            for face, reasons in refused
        ]
        self.analyzer.embed_faces(accepted)

        now = time.time()
        image_id = str(uuid.uuid4())
        records = [
            FaceRecord(
                face_id=str(uuid.uuid4()),
                collection_id=collection_id,
                image_id=image_id,
                external_image_id=external_image_id,
                image_sha256=analyzed.sha256,
                bounding_box=face.box.relative(analyzed.width, analyzed.height),
                confidence=face.confidence,
                landmarks=relative_landmarks(face, analyzed.width, analyzed.height),
                quality=quality_record(face),
                embedding=face.embedding,  # type: ignore[arg-type]
                created_at=now,
            )
            for face in accepted
        ]
        image_record = ImageRecord(
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
        )
        seqs, before, after = self.store.add_image(image_record, records)
        vectors = np.stack([r.embedding for r in records]) if records else np.empty((0, EMBEDDING_DIM))
        self.store.after_commit(lambda: self.indexes.apply(collection_id, before, after, added=(seqs, vectors)))
        return {
            "FaceRecords": [
                {
                    "Face": stored_face(record, self.face_model_version),
                    "FaceDetail": face_detail(face, analyzed.width, analyzed.height),
                }
                for record, face in zip(records, accepted)
            ],
            "FaceModelVersion": self.face_model_version,
            "UnindexedFaces": unindexed,
        }

    def find_indexed_image(self, *, collection_id: str, image_sha256: str) -> ImageRecord | None:
        """The image with this SHA-256 already indexed into the collection, if any."""
        return self.store.find_image(collection_id, image_sha256)

    # -- faces -----------------------------------------------------------------------------

    @ledgered("ListFaces")
    def list_faces(
        self,
        *,
        collection_id: str,
        next_token: str | None = None,
        max_results: int = 1000,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> Response:
        validation.collection_id(collection_id)
        limit = validation.integer(max_results, "MaxResults", 0, MAX_PAGE_SIZE) or 1000
        if user_id is not None:
            validation.user_id(user_id)
        if face_ids is not None:
            face_ids = validation.face_ids(face_ids, maximum=MAX_PAGE_SIZE)
        after = decode_token(f"faces:{collection_id}", next_token)
        self.store.require_collection(collection_id)
        rows = self.store.list_faces(
            collection_id,
            after_seq=int(after or 0),
            limit=limit + 1,
            user_id=user_id,
            face_ids=face_ids,
        )
        response: Response = {
            "Faces": [stored_face(record, self.face_model_version) for _, record in rows[:limit]],
            "FaceModelVersion": self.face_model_version,
        }
        if len(rows) > limit:
            response["NextToken"] = encode_token(f"faces:{collection_id}", rows[limit - 1][0])
        return response

    @ledgered("DeleteFaces")
    def delete_faces(self, *, collection_id: str, face_ids: Sequence[str]) -> Response:
        """Delete faces from the store and the index. A face still associated with a user is
        not deleted (disassociate it first), as in Rekognition."""
        validation.collection_id(collection_id)
        wanted = validation.face_ids(face_ids, maximum=MAX_PAGE_SIZE)
        self.store.require_collection(collection_id)
        existing = {r.face_id: r for _, r in self.store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
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
        deleted: dict[str, int] = {}
        if deletable:
            deleted, before, after = self.store.delete_faces(collection_id, deletable)
            removed = list(deleted.values())
            self.store.after_commit(lambda: self.indexes.apply(collection_id, before, after, removed=removed))
        return {"DeletedFaces": list(deleted), "UnsuccessfulFaceDeletions": unsuccessful}

    # -- search ----------------------------------------------------------------------------

    def search_by_embedding(
        self,
        collection_id: str,
        embedding: np.ndarray,
        *,
        face_match_threshold: float | None = None,
        max_faces: int = DEFAULT_MAX_FACES,
        exclude_face_ids: Sequence[str] = (),
    ) -> list[tuple[float, FaceRecord]]:
        """The collection's faces with similarity >= threshold (default: the collection's
        calibrated search threshold), most similar first."""
        if face_match_threshold is None:
            face_match_threshold = self.default_search_threshold(collection_id)
        index = self.indexes.for_search(collection_id)
        neighbours = index.search(np.asarray(embedding, dtype=np.float32)[None, :], max_faces + len(exclude_face_ids))[0]
        limit = max_squared_distance(face_match_threshold)
        close = [n for n in neighbours if n.squared_distance <= limit + 1e-9]
        records = self.store.faces_by_seq(collection_id, [n.seq for n in close])
        matches = [
            (similarity_from_squared_distance(n.squared_distance), records[n.seq])
            for n in close
            if n.seq in records and records[n.seq].face_id not in exclude_face_ids
        ]
        return matches[:max_faces]

    @ledgered("SearchFaces")
    def search_faces(
        self,
        *,
        collection_id: str,
        face_id: str,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> Response:
        """Faces of the collection similar to one of its own faces (itself excluded).
        ``face_match_threshold`` defaults to the collection's calibrated search threshold."""
        validation.collection_id(collection_id)
        validation.face_id(face_id)
        if max_faces is not None:
            validation.integer(max_faces, "MaxFaces", 1, MAX_PAGE_SIZE)
        self.store.require_collection(collection_id)
        threshold, max_faces = self.search_limits(collection_id, face_match_threshold, max_faces, "FaceMatchThreshold")
        _, probe = self.store.get_face(collection_id, face_id)
        matches = self.search_by_embedding(
            collection_id, probe.embedding, face_match_threshold=threshold, max_faces=max_faces,
            exclude_face_ids=[face_id],
        )
        return self.hold_for_review(collection_id, "SearchFaces", face_id, {
            "SearchedFaceId": face_id,
            "FaceMatches": self._face_matches(matches),
            "FaceModelVersion": self.face_model_version,
        })

    @ledgered("SearchFacesByImage")
    def search_faces_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> Response:
        """Search the collection with the largest face of the image. ``face_match_threshold``
        defaults to the collection's calibrated search threshold."""
        validation.collection_id(collection_id)
        if max_faces is not None:
            validation.integer(max_faces, "MaxFaces", 1, MAX_PAGE_SIZE)
        level = validation.quality_filter(quality_filter)
        self.store.require_collection(collection_id)
        threshold, max_faces = self.search_limits(collection_id, face_match_threshold, max_faces, "FaceMatchThreshold")
        decoded = self.decode(image)
        probe, _ = self._largest_face(decoded, level)
        matches = self.search_by_embedding(
            collection_id, probe.embedding, face_match_threshold=threshold, max_faces=max_faces  # type: ignore[arg-type]
        )
        return self.hold_for_review(collection_id, "SearchFacesByImage", decoded.sha256, {
            "SearchedFaceBoundingBox": probe.box.relative(decoded.width, decoded.height),
            "SearchedFaceConfidence": probe.confidence,
            "FaceMatches": self._face_matches(matches),
            "FaceModelVersion": self.face_model_version,
        })

    def _face_matches(self, matches: list[tuple[float, FaceRecord]]) -> list[Response]:
        return [
            {"Similarity": similarity, "Face": stored_face(record, self.face_model_version)}
            for similarity, record in matches
        ]

    def _largest_face(
        self, decoded: DecodedImage, level: QualityFilter, *, with_others: bool = False
    ) -> tuple[Face, list[Face]]:
        """The embedded largest face (which must pass ``level``) and, with ``with_others``, the
        other faces, unembedded (otherwise only the largest is analysed)."""
        faces = self.analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE if with_others else 1)
        if not faces:
            raise InvalidParameterException(_NO_FACE)
        reasons = quality_failures(faces[0], level)
        if reasons:
            raise InvalidParameterException(
                "The largest face in the image does not pass QualityFilter "
                f"{level.value}: {', '.join(reasons)}."
            )
        self.analyzer.embed_faces(faces[:1])
        return faces[0], faces[1:]
