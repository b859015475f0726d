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
from datetime import datetime, timezone
from typing import Any

import numpy as np

from faceledger.config import Settings
from faceledger.errors import InvalidParameterException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.shapes import face_detail, quality_record, relative_landmarks, searched_face, stored_face
from faceledger.service.similarity import (
    max_squared_distance,
    similarity_between,
    similarity_from_squared_distance,
)
from faceledger.store import FaceRecord, ImageRecord, SQLiteStore
from faceledger.vision import DecodedImage, Face, FaceAnalyzer, decode_image
from faceledger.vision.embed import EMBEDDING_DIM
from faceledger.vision.quality import QualityFilter, quality_failures

ImageInput = bytes | DecodedImage
Response = dict[str, Any]

DEFAULT_FACE_MATCH_THRESHOLD = 80.0  # Rekognition's default; equals dlib's d = 0.6 (similarity.py)
DEFAULT_USER_MATCH_THRESHOLD = 80.0
DEFAULT_ASSOCIATION_THRESHOLD = 75.0
DEFAULT_MAX_FACES = 100
MAX_FACES_PER_IMAGE = 100  # DetectFaces and CompareFaces report at most the 100 largest faces
MAX_SEARCH_RESULTS = 4096
_NO_FACE = "There are no faces in the image. Should be at least 1."


class FaceService:
    """All face operations over one data directory (store + vector index + face engine).

    Thread-safe: each thread gets its own store connection; the index guards itself.
    """

    def __init__(self, settings: Settings | None = None, analyzer: FaceAnalyzer | None = None) -> None:
        self.settings = settings or Settings()
        self.store = SQLiteStore(self.settings.database_path)
        self.analyzer = analyzer or FaceAnalyzer()
        self.indexes = VectorIndexRegistry(EMBEDDING_DIM, self.store.load_embeddings, self.store.generation)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FaceService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def face_model_version(self) -> str:
        return self.analyzer.model_version

    def collection_arn(self, collection_id: str) -> str:
        return (
            f"arn:aws:rekognition:{self.settings.region}:{self.settings.account_id}"
            f":collection/{collection_id}"
        )

    # -- collections -----------------------------------------------------------------------

    def create_collection(self, *, collection_id: str) -> Response:
        validation.collection_id(collection_id)
        self.store.create_collection(collection_id, self.face_model_version, time.time())
        return {
            "StatusCode": 200,
            "CollectionArn": self.collection_arn(collection_id),
            "FaceModelVersion": self.face_model_version,
        }

    def describe_collection(self, *, collection_id: str) -> Response:
        validation.collection_id(collection_id)
        record = self.store.get_collection(collection_id)
        return {
            "FaceCount": record.face_count,
            "FaceModelVersion": record.face_model_version,
            "CollectionARN": self.collection_arn(collection_id),
            "CreationTimestamp": datetime.fromtimestamp(record.created_at, tz=timezone.utc),
            "UserCount": record.user_count,
        }

    def list_collections(self, *, next_token: str | None = None, max_results: int = 1000) -> Response:
        limit = validation.integer(max_results, "MaxResults", 1, MAX_SEARCH_RESULTS)
        after = decode_token("collections", next_token)
        ids = self.store.list_collection_ids(str(after) if after is not None else None, limit + 1)
        response: Response = {
            "CollectionIds": ids[:limit],
            "FaceModelVersions": [self.face_model_version] * len(ids[:limit]),
        }
        if len(ids) > limit:
            response["NextToken"] = encode_token("collections", ids[limit - 1])
        return response

    def delete_collection(self, *, collection_id: str) -> Response:
        validation.collection_id(collection_id)
        self.store.delete_collection(collection_id)
        self.indexes.drop(collection_id)
        return {"StatusCode": 200}

    # -- images in, faces out ----------------------------------------------------------------

    def decode(self, image: ImageInput) -> DecodedImage:
        """Decode request bytes under the configured limits (already-decoded input passes)."""
        if isinstance(image, DecodedImage):
            return image
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise InvalidParameterException("Image must be the encoded bytes of a JPEG or PNG image.")
        return decode_image(bytes(image), self.settings.image_limits)

    def detect_faces(self, *, image: ImageInput, attributes: Sequence[str] | None = None) -> Response:
        """Faces in an image, largest first (at most 100). ``attributes`` is accepted for
        compatibility; faceledger never estimates age, gender or emotion, whatever is asked."""
        decoded = self.decode(image)
        faces = self.analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
        return {"FaceDetails": [face_detail(f, decoded.width, decoded.height) for f in faces]}

    def compare_faces(
        self,
        *,
        source_image: ImageInput,
        target_image: ImageInput,
        similarity_threshold: float = DEFAULT_FACE_MATCH_THRESHOLD,
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
        decoded = self.decode(image)
        faces = self.analyzer.analyze(decoded.pixels, embed=False)
        accepted: list[Face] = []
        unindexed: list[Response] = []
        for face in faces:
            reasons = quality_failures(face, level)
            if not reasons and max_faces is not None and len(accepted) >= max_faces:
                reasons = ["EXCEEDS_MAX_FACES"]
            if reasons:
                unindexed.append(
                    {"Reasons": reasons, "FaceDetail": face_detail(face, decoded.width, decoded.height)}
                )
            else:
                accepted.append(face)
        self.analyzer.embed_faces(accepted)

        now = time.time()
        image_id = str(uuid.uuid4())
        records = [
            FaceRecord(
                face_id=str(uuid.uuid4()),
                collection_id=collection_id,
                image_id=image_id,
                external_image_id=external_image_id,
                image_sha256=decoded.sha256,
                bounding_box=face.box.relative(decoded.width, decoded.height),
                confidence=face.confidence,
                landmarks=relative_landmarks(face, decoded.width, decoded.height),
                quality=quality_record(face),
                embedding=face.embedding,  # type: ignore[arg-type]
                created_at=now,
            )
            for face in accepted
        ]
        image_record = ImageRecord(
            image_id=image_id,
            collection_id=collection_id,
            image_sha256=decoded.sha256,
            external_image_id=external_image_id,
            width=decoded.width,
            height=decoded.height,
            face_count=len(records),
            indexed_at=now,
            source_path=source_path,
            content=bytes(image) if store_image and not isinstance(image, DecodedImage) else None,
        )
        seqs, before, after = self.store.add_image(image_record, records)
        vectors = np.stack([r.embedding for r in records]) if records else np.empty((0, EMBEDDING_DIM))
        self.indexes.apply(collection_id, before, after, added=(seqs, vectors))
        return {
            "FaceRecords": [
                {
                    "Face": stored_face(record, self.face_model_version),
                    "FaceDetail": face_detail(face, decoded.width, decoded.height),
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
        limit = validation.integer(max_results, "MaxResults", 0, MAX_SEARCH_RESULTS) or 1000
        if user_id is not None:
            validation.user_id(user_id)
        if face_ids is not None:
            face_ids = validation.face_ids(face_ids, maximum=MAX_SEARCH_RESULTS)
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

    def delete_faces(self, *, collection_id: str, face_ids: Sequence[str]) -> Response:
        """Delete faces from the store and the index. A face still associated with a user is
        not deleted (disassociate it first), as in Rekognition."""
        validation.collection_id(collection_id)
        wanted = validation.face_ids(face_ids, maximum=MAX_SEARCH_RESULTS)
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
            self.indexes.apply(collection_id, before, after, removed=list(deleted.values()))
        return {"DeletedFaces": list(deleted), "UnsuccessfulFaceDeletions": unsuccessful}

    # -- search ----------------------------------------------------------------------------

    def search_by_embedding(
        self,
        collection_id: str,
        embedding: np.ndarray,
        *,
        face_match_threshold: float = DEFAULT_FACE_MATCH_THRESHOLD,
        max_faces: int = DEFAULT_MAX_FACES,
        exclude_face_ids: Sequence[str] = (),
    ) -> list[tuple[float, FaceRecord]]:
        """The collection's faces with similarity >= threshold, most similar first."""
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

    def search_faces(
        self,
        *,
        collection_id: str,
        face_id: str,
        max_faces: int = DEFAULT_MAX_FACES,
        face_match_threshold: float = DEFAULT_FACE_MATCH_THRESHOLD,
    ) -> Response:
        """Faces of the collection similar to one of its own faces (itself excluded)."""
        validation.collection_id(collection_id)
        validation.face_id(face_id)
        validation.integer(max_faces, "MaxFaces", 1, MAX_SEARCH_RESULTS)
        threshold = validation.percent(face_match_threshold, "FaceMatchThreshold")
        self.store.require_collection(collection_id)
        _, probe = self.store.get_face(collection_id, face_id)
        matches = self.search_by_embedding(
            collection_id, probe.embedding, face_match_threshold=threshold, max_faces=max_faces,
            exclude_face_ids=[face_id],
        )
        return {
            "SearchedFaceId": face_id,
            "FaceMatches": self._face_matches(matches),
            "FaceModelVersion": self.face_model_version,
        }

    def search_faces_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        max_faces: int = DEFAULT_MAX_FACES,
        face_match_threshold: float = DEFAULT_FACE_MATCH_THRESHOLD,
        quality_filter: str = "NONE",
    ) -> Response:
        """Search the collection with the largest face of the image."""
        validation.collection_id(collection_id)
        validation.integer(max_faces, "MaxFaces", 1, MAX_SEARCH_RESULTS)
        threshold = validation.percent(face_match_threshold, "FaceMatchThreshold")
        level = validation.quality_filter(quality_filter)
        self.store.require_collection(collection_id)
        decoded = self.decode(image)
        probe, _ = self._largest_face(decoded, level)
        matches = self.search_by_embedding(
            collection_id, probe.embedding, face_match_threshold=threshold, max_faces=max_faces  # type: ignore[arg-type]
        )
        return {
            "SearchedFaceBoundingBox": probe.box.relative(decoded.width, decoded.height),
            "SearchedFaceConfidence": probe.confidence,
            "FaceMatches": self._face_matches(matches),
            "FaceModelVersion": self.face_model_version,
        }

    def _face_matches(self, matches: list[tuple[float, FaceRecord]]) -> list[Response]:
        return [
            {"Similarity": similarity, "Face": stored_face(record, self.face_model_version)}
            for similarity, record in matches
        ]

    def _largest_face(self, decoded: DecodedImage, level: QualityFilter) -> tuple[Face, list[Face]]:
        """The embedded largest face (which must pass ``level``) and the other faces, unembedded."""
        faces = self.analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
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

    # -- users -----------------------------------------------------------------------------

    def create_user(self, *, collection_id: str, user_id: str) -> Response:
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        self.store.create_user(collection_id, user_id, time.time())
        return {}

    def delete_user(self, *, collection_id: str, user_id: str) -> Response:
        """Delete a user; its faces stay indexed, no longer associated with anyone."""
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        self.store.delete_user(collection_id, user_id)
        return {}

    def list_users(
        self, *, collection_id: str, next_token: str | None = None, max_results: int = 100
    ) -> Response:
        validation.collection_id(collection_id)
        limit = validation.integer(max_results, "MaxResults", 1, 500)
        after = decode_token(f"users:{collection_id}", next_token)
        self.store.require_collection(collection_id)
        users = self.store.list_users(collection_id, str(after) if after is not None else None, limit + 1)
        response: Response = {
            "Users": [
                {"UserId": user.user_id, "UserStatus": _user_status(user.face_count)} for user in users[:limit]
            ]
        }
        if len(users) > limit:
            response["NextToken"] = encode_token(f"users:{collection_id}", users[limit - 1].user_id)
        return response

    def associate_faces(
        self,
        *,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        user_match_threshold: float = DEFAULT_ASSOCIATION_THRESHOLD,
    ) -> Response:
        """Associate faces with a user. Once the user has faces, a new face must match them
        (best similarity >= ``user_match_threshold``), so one person's faces are not mixed
        with another's by mistake."""
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        threshold = validation.percent(user_match_threshold, "UserMatchThreshold")
        self.store.get_user(collection_id, user_id)
        records = {r.face_id: r for _, r in self.store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        owned = [record.embedding for _, record in self.store.list_faces(collection_id, user_id=user_id, limit=MAX_SEARCH_RESULTS)]
        associated: list[str] = []
        unsuccessful: list[Response] = []
        for face_id in dict.fromkeys(wanted):
            record = records.get(face_id)
            if record is None:
                unsuccessful.append({"FaceId": face_id, "UserId": user_id, "Reasons": ["FACE_NOT_FOUND"]})
                continue
            if record.user_id == user_id:
                associated.append(face_id)
                continue
            if record.user_id is not None:
                unsuccessful.append(
                    {"FaceId": face_id, "UserId": record.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                )
                continue
            if owned:
                confidence = max(similarity_between(record.embedding, vector) for vector in owned)
                if confidence < threshold:
                    unsuccessful.append(
                        {"FaceId": face_id, "UserId": user_id, "Confidence": confidence,
                         "Reasons": ["LOW_MATCH_CONFIDENCE"]}
                    )
                    continue
            associated.append(face_id)
            owned.append(record.embedding)
        if associated:
            self.store.set_face_users(collection_id, associated, user_id)
        return {
            "AssociatedFaces": [{"FaceId": face_id} for face_id in associated],
            "UnsuccessfulFaceAssociations": unsuccessful,
            "UserStatus": _user_status(len(owned)),
        }

    def disassociate_faces(self, *, collection_id: str, user_id: str, face_ids: Sequence[str]) -> Response:
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        self.store.get_user(collection_id, user_id)
        records = {r.face_id: r for _, r in self.store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        done: list[str] = []
        unsuccessful: list[Response] = []
        for face_id in dict.fromkeys(wanted):
            record = records.get(face_id)
            if record is None:
                unsuccessful.append({"FaceId": face_id, "UserId": user_id, "Reasons": ["FACE_NOT_FOUND"]})
            elif record.user_id != user_id:
                unsuccessful.append(
                    {"FaceId": face_id, "UserId": user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                )
            else:
                done.append(face_id)
        if done:
            self.store.set_face_users(collection_id, done, None)
        remaining = self.store.get_user(collection_id, user_id).face_count
        return {
            "DisassociatedFaces": [{"FaceId": face_id} for face_id in done],
            "UnsuccessfulFaceDisassociations": unsuccessful,
            "UserStatus": _user_status(remaining),
        }

    def search_users(
        self,
        *,
        collection_id: str,
        user_id: str | None = None,
        face_id: str | None = None,
        user_match_threshold: float = DEFAULT_USER_MATCH_THRESHOLD,
        max_users: int = DEFAULT_MAX_FACES,
    ) -> Response:
        """Users whose faces match a face of the collection, or the faces of a user."""
        validation.collection_id(collection_id)
        threshold = validation.percent(user_match_threshold, "UserMatchThreshold")
        validation.integer(max_users, "MaxUsers", 1, 500)
        if (user_id is None) == (face_id is None):
            raise InvalidParameterException("Give exactly one of UserId and FaceId.")
        self.store.require_collection(collection_id)
        response: Response = {"FaceModelVersion": self.face_model_version}
        if face_id is not None:
            validation.face_id(face_id)
            _, record = self.store.get_face(collection_id, face_id)
            probes = [record.embedding]
            response["SearchedFace"] = {"FaceId": face_id}
        else:
            validation.user_id(user_id)
            self.store.get_user(collection_id, user_id)  # type: ignore[arg-type]
            probes = [r.embedding for _, r in self.store.list_faces(collection_id, user_id=user_id, limit=MAX_SEARCH_RESULTS)]
            response["SearchedUser"] = {"UserId": user_id}
        response["UserMatches"] = self._user_matches(collection_id, probes, threshold, max_users, exclude_user=user_id)
        return response

    def search_users_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        user_match_threshold: float = DEFAULT_USER_MATCH_THRESHOLD,
        max_users: int = DEFAULT_MAX_FACES,
        quality_filter: str = "NONE",
    ) -> Response:
        """Users matching the largest face of the image; the other faces are listed as unsearched."""
        validation.collection_id(collection_id)
        threshold = validation.percent(user_match_threshold, "UserMatchThreshold")
        validation.integer(max_users, "MaxUsers", 1, 500)
        level = validation.quality_filter(quality_filter)
        self.store.require_collection(collection_id)
        decoded = self.decode(image)
        probe, others = self._largest_face(decoded, level)
        return {
            "UserMatches": self._user_matches(collection_id, [probe.embedding], threshold, max_users),  # type: ignore[list-item]
            "FaceModelVersion": self.face_model_version,
            "SearchedFace": {"FaceDetail": face_detail(probe, decoded.width, decoded.height)},
            "UnsearchedFaces": [
                {"FaceDetails": face_detail(face, decoded.width, decoded.height), "Reasons": ["FACE_NOT_LARGEST"]}
                for face in others
            ],
        }

    def _user_matches(
        self,
        collection_id: str,
        probes: list[np.ndarray],
        threshold: float,
        max_users: int,
        exclude_user: str | None = None,
    ) -> list[Response]:
        """A user's similarity is the best similarity between any probe and any of its faces."""
        best: dict[str, float] = {}
        for probe in probes:
            for similarity, record in self.search_by_embedding(
                collection_id, probe, face_match_threshold=threshold, max_faces=MAX_SEARCH_RESULTS
            ):
                if record.user_id is not None and record.user_id != exclude_user:
                    best[record.user_id] = max(similarity, best.get(record.user_id, 0.0))
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:max_users]
        return [{"Similarity": similarity, "User": {"UserId": uid, "UserStatus": "ACTIVE"}} for uid, similarity in ranked]


def _user_status(face_count: int) -> str:
    """ACTIVE once a user has faces to be searched by; CREATED before."""
    return "ACTIVE" if face_count else "CREATED"
