"""User operations: identities that group the faces of one person (Rekognition's users API)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from faceledger.service import validation
from faceledger.service.idempotency import run_once
from faceledger.service.models import FaceModels
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.results import Reply
from faceledger.service.shapes import Response
from faceledger.service.templates import TemplateVault
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import Store


class UserOperations:
    def __init__(self, store: Store, templates: TemplateVault, models: FaceModels) -> None:
        self._store = store
        self._templates = templates
        self._models = models

    def create(self, collection_id: str, user_id: str, token: str | None) -> Reply:
        validation.user_id(user_id)

        def perform() -> Response:
            self._store.create_user(collection_id, user_id, time.time())
            return {}

        return self._idempotent("CreateUser", token, [collection_id, user_id], perform)

    def delete(self, collection_id: str, user_id: str, token: str | None) -> Reply:
        """Delete a user; its faces stay indexed, no longer associated with anyone."""
        validation.user_id(user_id)

        def perform() -> Response:
            self._store.delete_user(collection_id, user_id)
            return {}

        return self._idempotent("DeleteUser", token, [collection_id, user_id], perform)

    def list(self, collection_id: str, next_token: str | None, max_results: int) -> Reply:
        limit = validation.integer(max_results, "MaxResults", 1, 500)
        after = decode_token(f"users:{collection_id}", next_token)
        self._store.require_collection(collection_id)
        users = self._store.list_users(collection_id, str(after) if after is not None else None, limit + 1)
        response: Response = {
            "Users": [{"UserId": user.user_id, "UserStatus": _user_status(user.face_count)} for user in users[:limit]]
        }
        if len(users) > limit:
            response["NextToken"] = encode_token(f"users:{collection_id}", users[limit - 1].user_id)
        return Reply(response, {"UsersCount": len(users[:limit])})

    def associate(
        self, collection_id: str, user_id: str, face_ids: Sequence[str], threshold: float, token: str | None
    ) -> Reply:
        """Associate faces with a user. Once the user has faces, a new face must match them
        (best similarity >= ``threshold``), so one person's faces are not mixed with another's."""
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        threshold = validation.percent(threshold, "UserMatchThreshold")
        return self._idempotent(
            "AssociateFaces",
            token,
            [collection_id, user_id, wanted, threshold],
            lambda: self._associate(collection_id, user_id, wanted, threshold),
        )

    def _associate(self, collection_id: str, user_id: str, wanted: list[str], threshold: float) -> Response:
        self._store.get_user(collection_id, user_id)
        scale = self._models.for_collection(collection_id).model.similarity
        records = {r.face_id: r for _, r in self._store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        owned = [
            self._templates.embedding(record)
            for _, record in self._store.list_faces(collection_id, user_id=user_id, limit=MAX_PAGE_SIZE)
        ]
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
            embedding = self._templates.embedding(record)
            if owned:
                confidence = max(scale.between(embedding, vector) for vector in owned)
                if confidence < threshold:
                    unsuccessful.append(
                        {
                            "FaceId": face_id,
                            "UserId": user_id,
                            "Confidence": confidence,
                            "Reasons": ["LOW_MATCH_CONFIDENCE"],
                        }
                    )
                    continue
            associated.append(face_id)
            owned.append(embedding)
        if associated:
            self._store.set_face_users(collection_id, associated, user_id)
        return {
            "AssociatedFaces": [{"FaceId": face_id} for face_id in associated],
            "UnsuccessfulFaceAssociations": unsuccessful,
            "UserStatus": _user_status(len(owned)),
        }

    def disassociate(self, collection_id: str, user_id: str, face_ids: Sequence[str], token: str | None) -> Reply:
        validation.user_id(user_id)
        wanted = validation.face_ids(face_ids, maximum=100)
        return self._idempotent(
            "DisassociateFaces",
            token,
            [collection_id, user_id, wanted],
            lambda: self._disassociate(collection_id, user_id, wanted),
        )

    def _disassociate(self, collection_id: str, user_id: str, wanted: list[str]) -> Response:
        self._store.get_user(collection_id, user_id)
        records = {r.face_id: r for _, r in self._store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
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
            self._store.set_face_users(collection_id, done, None)
        remaining = self._store.get_user(collection_id, user_id).face_count
        return {
            "DisassociatedFaces": [{"FaceId": face_id} for face_id in done],
            "UnsuccessfulFaceDisassociations": unsuccessful,
            "UserStatus": _user_status(remaining),
        }

    def _idempotent(
        self, operation: str, token: str | None, parameters: list[Any], perform: Callable[[], Response]
    ) -> Reply:
        """Run ``perform`` once per ClientRequestToken (service/idempotency.py)."""
        return _association_reply(run_once(self._store, operation, token, parameters, perform))


def _association_reply(response: Response) -> Reply:
    """The ledger keeps which faces were (dis)associated and the user's status."""
    summary: dict[str, Any] = {
        key: [f["FaceId"] for f in response[key]]
        for key in ("AssociatedFaces", "DisassociatedFaces")
        if key in response
    }
    if "UserStatus" in response:
        summary["UserStatus"] = response["UserStatus"]
    return Reply(response, summary)


def _user_status(face_count: int) -> str:
    """ACTIVE once a user has faces to be searched by; CREATED before."""
    return "ACTIVE" if face_count else "CREATED"
