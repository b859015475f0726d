"""User operations: identities that group the faces of one person (Rekognition's users API)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from faceledger.errors import (
    IdempotentParameterMismatchException,
    InvalidParameterException,
)
from faceledger.service import validation
from faceledger.service.ledgering import ledgered
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.shapes import ImageInput, Response, face_detail
from faceledger.service.similarity import similarity_between
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import FaceRecord, SQLiteStore
from faceledger.store.request_tokens import RequestTokenStore, request_hash
from faceledger.vision import DecodedImage, Face

DEFAULT_ASSOCIATION_THRESHOLD = 75.0


class UserOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    store: SQLiteStore
    request_tokens: RequestTokenStore
    face_model_version: str
    decode: Callable[[Any], DecodedImage]
    search_by_embedding: Callable[..., list[tuple[float, FaceRecord]]]
    _largest_face: Callable[..., tuple[Face, list[Face]]]
    search_limits: Callable[[str, float | None, int | None, str], tuple[float, int]]

    def _idempotent(
        self, operation: str, token: str | None, parameters: list[Any], perform: Callable[[], Response]
    ) -> Response:
        """Run ``perform`` once per ClientRequestToken: a retry with the same token and
        parameters gets the recorded answer; the same token with other parameters is refused."""
        if token is None:
            return perform()
        validation.client_request_token(token)
        digest = request_hash({"parameters": parameters})
        recorded = self.request_tokens.find(operation, token)
        if recorded is not None:
            if recorded[0] != digest:
                raise IdempotentParameterMismatchException(
                    f"ClientRequestToken {token!r} was used with other parameters."
                )
            return recorded[1]
        response = perform()
        self.request_tokens.record(operation, token, digest, response)
        return response

    @ledgered("CreateUser")
    def create_user(self, *, collection_id: str, user_id: str, client_request_token: str | None = None) -> Response:
        validation.collection_id(collection_id)
        validation.user_id(user_id)

        def perform() -> Response:
            self.store.create_user(collection_id, user_id, time.time())
            return {}

        return self._idempotent("CreateUser", client_request_token, [collection_id, user_id], perform)

    @ledgered("DeleteUser")
    def delete_user(self, *, collection_id: str, user_id: str, client_request_token: str | None = None) -> Response:
        """Delete a user; its faces stay indexed, no longer associated with anyone."""
        validation.collection_id(collection_id)
        validation.user_id(user_id)

        def perform() -> Response:
            self.store.delete_user(collection_id, user_id)
            return {}

        return self._idempotent("DeleteUser", client_request_token, [collection_id, user_id], perform)

    @ledgered("ListUsers")
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

    @ledgered("AssociateFaces")
    def associate_faces(
        self,
        *,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        user_match_threshold: float = DEFAULT_ASSOCIATION_THRESHOLD,
        client_request_token: str | None = None,
    ) -> Response:
        """Associate faces with a user. Once the user has faces, a new face must match them
        (best similarity >= ``user_match_threshold``), so one person's faces are not mixed
        with another's by mistake."""
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        threshold = validation.percent(user_match_threshold, "UserMatchThreshold")
        return self._idempotent(
            "AssociateFaces",
            client_request_token,
            [collection_id, user_id, wanted, threshold],
            lambda: self._associate(collection_id, user_id, wanted, threshold),
        )

    def _associate(self, collection_id: str, user_id: str, wanted: list[str], threshold: float) -> Response:
        self.store.get_user(collection_id, user_id)
        records = {r.face_id: r for _, r in self.store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        owned = [record.embedding for _, record in self.store.list_faces(collection_id, user_id=user_id, limit=MAX_PAGE_SIZE)]
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

    @ledgered("DisassociateFaces")
    def disassociate_faces(
        self, *, collection_id: str, user_id: str, face_ids: Sequence[str], client_request_token: str | None = None
    ) -> Response:
        validation.collection_id(collection_id)
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        return self._idempotent(
            "DisassociateFaces",
            client_request_token,
            [collection_id, user_id, wanted],
            lambda: self._disassociate(collection_id, user_id, wanted),
        )

    def _disassociate(self, collection_id: str, user_id: str, wanted: list[str]) -> Response:
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

    @ledgered("SearchUsers")
    def search_users(
        self,
        *,
        collection_id: str,
        user_id: str | None = None,
        face_id: str | None = None,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
    ) -> Response:
        """Users whose faces match a face of the collection, or the faces of a user.
        ``user_match_threshold`` defaults to the collection's calibrated search threshold."""
        validation.collection_id(collection_id)
        if max_users is not None:
            validation.integer(max_users, "MaxUsers", 1, 500)
        if (user_id is None) == (face_id is None):
            raise InvalidParameterException("Give exactly one of UserId and FaceId.")
        self.store.require_collection(collection_id)
        threshold, max_users = self.search_limits(collection_id, user_match_threshold, max_users, "UserMatchThreshold")
        response: Response = {"FaceModelVersion": self.face_model_version}
        if face_id is not None:
            validation.face_id(face_id)
            _, record = self.store.get_face(collection_id, face_id)
            probes = [record.embedding]
            response["SearchedFace"] = {"FaceId": face_id}
        else:
            validation.user_id(user_id)
            self.store.get_user(collection_id, user_id)  # type: ignore[arg-type]
            probes = [r.embedding for _, r in self.store.list_faces(collection_id, user_id=user_id, limit=MAX_PAGE_SIZE)]
            response["SearchedUser"] = {"UserId": user_id}
        response["UserMatches"] = self._user_matches(collection_id, probes, threshold, max_users, exclude_user=user_id)
        return response

    @ledgered("SearchUsersByImage")
    def search_users_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
        quality_filter: str = "NONE",
    ) -> Response:
        """Users matching the largest face of the image; the other faces are listed as unsearched.
        ``user_match_threshold`` defaults to the collection's calibrated search threshold."""
        validation.collection_id(collection_id)
        if max_users is not None:
            validation.integer(max_users, "MaxUsers", 1, 500)
        level = validation.quality_filter(quality_filter)
        self.store.require_collection(collection_id)
        threshold, max_users = self.search_limits(collection_id, user_match_threshold, max_users, "UserMatchThreshold")
        decoded = self.decode(image)
        probe, others = self._largest_face(decoded, level, with_others=True)
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
                collection_id, probe, face_match_threshold=threshold, max_faces=MAX_PAGE_SIZE
            ):
                if record.user_id is not None and record.user_id != exclude_user:
                    best[record.user_id] = max(similarity, best.get(record.user_id, 0.0))
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:max_users]
        return [{"Similarity": similarity, "User": {"UserId": uid, "UserStatus": "ACTIVE"}} for uid, similarity in ranked]

def _user_status(face_count: int) -> str:
    """ACTIVE once a user has faces to be searched by; CREATED before."""
    return "ACTIVE" if face_count else "CREATED"
