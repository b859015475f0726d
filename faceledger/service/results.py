"""What operations return inside faceledger: typed results, shaped into Rekognition's response
dicts in one place (:meth:`to_response`) for the Python API, the HTTP API and ``--json`` alike,
and summarised for the audit ledger (:meth:`ledger_summary`: ids, similarities and counts, never
free text or secrets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faceledger.service.search_limits import ThresholdMeaning
from faceledger.service.shapes import Response, face_detail, searched_face, stored_face
from faceledger.store import FaceRecord
from faceledger.vision import Face


def _matches_summary(matches: list[tuple[str, float]], kind: str) -> list[dict[str, Any]]:
    return [{kind: ident, "Similarity": round(similarity, 4)} for ident, similarity in matches]


@dataclass(frozen=True)
class Reply:
    """A result that is its response: ``summary`` says what of it the ledger keeps."""

    response: Response
    summary: dict[str, Any] = field(default_factory=dict)

    def to_response(self) -> Response:
        return self.response

    def ledger_summary(self) -> dict[str, Any]:
        return self.summary


@dataclass(frozen=True)
class FacesInImage:
    """DetectFaces: the faces of one image, largest first."""

    faces: list[Face]
    width: int
    height: int

    def to_response(self) -> Response:
        return {"FaceDetails": [face_detail(f, self.width, self.height) for f in self.faces]}

    def ledger_summary(self) -> dict[str, Any]:
        return {"FaceDetailsCount": len(self.faces)}


@dataclass(frozen=True)
class Comparison:
    """CompareFaces: the source's largest face against every face of the target."""

    source: Face
    source_size: tuple[int, int]
    matches: list[tuple[float, Face]]  # most similar first
    unmatched: list[Face]
    target_size: tuple[int, int]

    def to_response(self) -> Response:
        return {
            "SourceImageFace": searched_face(self.source, *self.source_size),
            "FaceMatches": [{"Similarity": s, "Face": face_detail(f, *self.target_size)} for s, f in self.matches],
            "UnmatchedFaces": [face_detail(f, *self.target_size) for f in self.unmatched],
        }

    def ledger_summary(self) -> dict[str, Any]:
        return {
            "FaceMatches": [{"Similarity": round(s, 4)} for s, _ in self.matches],
            "UnmatchedFacesCount": len(self.unmatched),
        }


@dataclass(frozen=True)
class IndexFacesResult:
    """IndexFaces: the faces stored (with the detection they came from) and those refused."""

    indexed: list[tuple[FaceRecord, Face]]
    unindexed: list[tuple[Face, list[str]]]  # with Rekognition's reasons
    width: int
    height: int
    model_version: str
    already_indexed: bool = False  # asked to index only new images, and this one was not

    def to_response(self) -> Response:
        return {
            "FaceRecords": [
                {
                    "Face": stored_face(record, self.model_version),
                    "FaceDetail": face_detail(face, self.width, self.height),
                }
                for record, face in self.indexed
            ],
            "FaceModelVersion": self.model_version,
            "UnindexedFaces": [
                {"Reasons": reasons, "FaceDetail": face_detail(face, self.width, self.height)}
                for face, reasons in self.unindexed
            ],
        }

    def ledger_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "IndexedFaceIds": [record.face_id for record, _ in self.indexed],
            "UnindexedFacesCount": len(self.unindexed),
        }
        if self.already_indexed:
            summary["AlreadyIndexed"] = True
        return summary


@dataclass(frozen=True)
class FaceListing:
    """ListFaces: one page of faces."""

    faces: list[FaceRecord]
    model_version: str
    next_token: str | None

    def to_response(self) -> Response:
        response: Response = {
            "Faces": [stored_face(r, self.model_version) for r in self.faces],
            "FaceModelVersion": self.model_version,
        }
        if self.next_token is not None:
            response["NextToken"] = self.next_token
        return response

    def ledger_summary(self) -> dict[str, Any]:
        return {"FacesCount": len(self.faces)}


@dataclass(frozen=True)
class FaceDeletion:
    """DeleteFaces."""

    deleted: list[str]
    unsuccessful: list[Response]  # FaceId, UserId, Reasons

    def to_response(self) -> Response:
        return {"DeletedFaces": self.deleted, "UnsuccessfulFaceDeletions": self.unsuccessful}

    def ledger_summary(self) -> dict[str, Any]:
        return {"DeletedFaces": self.deleted, "UnsuccessfulFaceDeletionsCount": len(self.unsuccessful)}


@dataclass(frozen=True)
class ReviewHold:
    """The review case a search opened in a review_required collection."""

    case_id: str
    has_candidates: bool

    def to_response(self) -> Response:
        return {"CaseId": self.case_id, "Status": "UNVERIFIED" if self.has_candidates else "NO_CANDIDATES"}


@dataclass(frozen=True)
class FaceSearchResult:
    """SearchFaces (``searched_face_id``) or SearchFacesByImage (``probe`` and its image size)."""

    matches: list[tuple[float, FaceRecord]]  # most similar first
    model_version: str
    threshold: ThresholdMeaning
    searched_face_id: str | None = None
    probe: Face | None = None
    probe_size: tuple[int, int] = (0, 0)
    review: ReviewHold | None = None

    def to_response(self) -> Response:
        response: Response = {}
        if self.searched_face_id is not None:
            response["SearchedFaceId"] = self.searched_face_id
        if self.probe is not None:
            response["SearchedFaceBoundingBox"] = self.probe.box.relative(*self.probe_size)
            response["SearchedFaceConfidence"] = self.probe.confidence
        response["FaceMatches"] = _face_matches(self.matches, self.model_version, self.review)
        response["FaceModelVersion"] = self.model_version
        response["FaceledgerThreshold"] = self.threshold.to_response()
        if self.review is not None:
            response["FaceledgerReview"] = self.review.to_response()
        return response

    def ledger_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "FaceMatches": _matches_summary([(r.face_id, s) for s, r in self.matches], "FaceId"),
            **self.threshold.ledger_summary(),
        }
        if self.searched_face_id is not None:
            summary["SearchedFaceId"] = self.searched_face_id
        if self.probe is not None:
            summary["SearchedFaceConfidence"] = self.probe.confidence
        if self.review is not None:
            summary["ReviewCaseId"] = self.review.case_id
        return summary


def _face_matches(
    matches: list[tuple[float, FaceRecord]], model_version: str, review: ReviewHold | None
) -> list[Response]:
    """FaceMatches, each marked unverified where a review case holds them."""
    shaped = [{"Similarity": s, "Face": stored_face(r, model_version)} for s, r in matches]
    if review is not None:
        for match in shaped:
            match["Verified"] = False
    return shaped


@dataclass(frozen=True)
class SearchedFace:
    """One face of an image searched by SearchAllFacesByImage, with its matches."""

    face: Face
    matches: list[tuple[float, FaceRecord]]  # most similar first
    review: ReviewHold | None = None


@dataclass(frozen=True)
class AllFacesSearchResult:
    """SearchAllFacesByImage: every face of an image that passed the quality filter, searched
    (largest first), and those that did not, with the reasons."""

    searched: list[SearchedFace]
    unsearched: list[tuple[Face, list[str]]]
    model_version: str
    threshold: ThresholdMeaning
    image_size: tuple[int, int]

    def to_response(self) -> Response:
        searched = []
        for item in self.searched:
            shaped: Response = {
                "FaceDetail": face_detail(item.face, *self.image_size),
                "FaceMatches": _face_matches(item.matches, self.model_version, item.review),
            }
            if item.review is not None:
                shaped["FaceledgerReview"] = item.review.to_response()
            searched.append(shaped)
        return {
            "SearchedFaces": searched,
            "UnsearchedFaces": [
                {"FaceDetails": face_detail(face, *self.image_size), "Reasons": reasons}
                for face, reasons in self.unsearched
            ],
            "FaceModelVersion": self.model_version,
            "FaceledgerThreshold": self.threshold.to_response(),
        }

    def ledger_summary(self) -> dict[str, Any]:
        searched = []
        for item in self.searched:
            summary: dict[str, Any] = {
                "FaceMatches": _matches_summary([(r.face_id, s) for s, r in item.matches], "FaceId")
            }
            if item.review is not None:
                summary["ReviewCaseId"] = item.review.case_id
            searched.append(summary)
        return {
            "SearchedFaces": searched,
            "UnsearchedFacesCount": len(self.unsearched),
            **self.threshold.ledger_summary(),
        }


@dataclass(frozen=True)
class UserSearchResult:
    """SearchUsers (``searched`` names the user or face) or SearchUsersByImage (``probe``)."""

    matches: list[tuple[float, str]]  # (similarity, user id), most similar first
    model_version: str
    threshold: ThresholdMeaning
    searched: Response | None = None
    probe: Face | None = None
    others: list[Face] = field(default_factory=list)  # faces of the image that were not searched
    image_size: tuple[int, int] = (0, 0)

    def to_response(self) -> Response:
        response: Response = {
            "UserMatches": [{"Similarity": s, "User": {"UserId": u, "UserStatus": "ACTIVE"}} for s, u in self.matches],
            "FaceModelVersion": self.model_version,
            "FaceledgerThreshold": self.threshold.to_response(),
        }
        if self.searched is not None:
            response.update(self.searched)
        if self.probe is not None:
            response["SearchedFace"] = {"FaceDetail": face_detail(self.probe, *self.image_size)}
            response["UnsearchedFaces"] = [
                {"FaceDetails": face_detail(face, *self.image_size), "Reasons": ["FACE_NOT_LARGEST"]}
                for face in self.others
            ]
        return response

    def ledger_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "UserMatches": _matches_summary([(u, s) for s, u in self.matches], "UserId"),
            **self.threshold.ledger_summary(),
        }
        if self.probe is not None:
            summary["UnsearchedFacesCount"] = len(self.others)
        return summary


@dataclass(frozen=True)
class Erasure:
    """Faces erased for good (WithdrawConsent, Purge): the ledger entry is the receipt."""

    erased: list[str]
    response: Response  # the operation's own members besides ErasedFaceIds

    def to_response(self) -> Response:
        return {**self.response, "ErasedFaceIds": self.erased}

    def ledger_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"ErasedFaceIds": self.erased}
        if "ConsentId" in self.response:
            summary["ConsentId"] = self.response["ConsentId"]
        if "Receipts" in self.response:
            summary["ReceiptsCount"] = len(self.response["Receipts"])
        return summary
