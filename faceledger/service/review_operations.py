"""Human review of matches (EU AI Act Art. 14(5)): in a review_required collection a search
returns its matches as unverified candidates and opens a review case; a candidate becomes
verified only when two different reviewers have confirmed it, and the searcher cannot review
their own search. Every decision is ledgered."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from faceledger.errors import (
    AccessDeniedException,
    FaceledgerError,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.results import Reply, ReviewHold
from faceledger.service.search_limits import SearchLimits
from faceledger.service.templates import TemplateVault
from faceledger.store import Candidate, FaceRecord, ReviewCase, Store
from faceledger.store.interface import crop_label, probe_crop_label
from faceledger.vision.calibration import ThresholdTable

DECISIONS = ("confirm", "reject")
CASE_STATUSES = ("OPEN", "CLOSED")
MAX_CASES_PAGE = 1000


class ReviewOperations:
    def __init__(self, store: Store, templates: TemplateVault, limits: SearchLimits) -> None:
        self._store = store
        self._templates = templates
        self._limits = limits

    def hold(
        self,
        collection_id: str,
        operation: str,
        probe: str,
        matches: list[tuple[float, FaceRecord]],
        probe_crop: Callable[[], bytes] | None = None,
    ) -> ReviewHold | None:
        """In a review_required collection, open a review case for the matches of a search
        (they are then reported unverified), keeping the crop ``probe_crop`` makes of the probe
        face (a search by image that matched someone) for the reviewers to see; elsewhere None."""
        if not self._store.policies.policy(collection_id).review_required:
            return None
        context = current_context()
        case_id = str(uuid.uuid4())
        # a probe that matched nobody leaves nothing to review: its face is not kept
        sealed_probe = (
            self._templates.seal_crop(probe_crop_label(case_id), probe_crop())
            if probe_crop is not None and matches
            else None
        )
        case = ReviewCase(
            case_id,
            collection_id,
            operation,
            context.caller.access_key_id,
            time.time(),
            context.purpose,
            context.case_ref,
            probe,
            [Candidate(record.face_id, similarity) for similarity, record in matches],
            sealed_probe,
        )
        self._store.reviews.open_case(case)
        return ReviewHold(case.case_id, bool(matches))

    def decide(self, case_id: str, face_id: str, decision: str, note: str) -> Reply:
        """Confirm or reject one candidate of a case, as the calling reviewer, with a note."""
        if decision not in DECISIONS:
            raise InvalidParameterException(f"Decision must be one of {', '.join(DECISIONS)}, not {decision!r}.")
        if not isinstance(note, str) or not 1 <= len(note) <= 2000:
            raise InvalidParameterException("A review decision needs a note of 1-2000 characters.")
        case = self._case(case_id)
        if face_id not in {c.face_id for c in case.candidates}:
            raise ResourceNotFoundException(f"Face {face_id!r} is not a candidate of review case {case_id!r}.")
        reviewer = current_context().caller.access_key_id
        if reviewer == case.opened_by:
            raise AccessDeniedException("The searcher cannot review their own search: another person must.")
        self._store.reviews.decide(case_id, face_id, reviewer, decision, note, time.time())
        return self._reply(self._case(case_id))

    def get(self, case_id: str, include_face_crops: bool = False) -> Reply:
        """The case; with ``include_face_crops``, the JPEG crops kept of the probe face
        (ProbeFaceCrop) and of each candidate (FaceCrop), where the collection kept them."""
        if not isinstance(include_face_crops, bool):
            raise InvalidParameterException("IncludeFaceCrops must be true or false.")
        case = self._case(case_id)
        reply = self._reply(case)
        if include_face_crops:
            self._add_crops(case, reply)
        return reply

    def _add_crops(self, case: ReviewCase, reply: Reply) -> None:
        """Open the crops of the case's faces into ``reply`` (the ledger notes they were shown)."""
        face_ids = [c.face_id for c in case.candidates]
        if case.operation == "SearchFaces":  # the probe is a face of the collection
            face_ids.append(case.probe)
        crops = {
            face_id: self._templates.open_crop(crop_label(face_id), sealed)
            for face_id, sealed in self._store.face_crops(case.collection_id, face_ids).items()
        }
        sealed_probe = self._store.reviews.probe_crop(case.case_id)
        probe = (
            self._templates.open_crop(probe_crop_label(case.case_id), sealed_probe)
            if sealed_probe is not None
            else crops.get(case.probe)
        )
        reply.response["ProbeFaceCrop"] = probe
        for candidate in reply.response["Candidates"]:
            candidate["FaceCrop"] = crops.get(candidate["FaceId"])
        reply.summary["FaceCropsShown"] = len(crops) + (sealed_probe is not None)

    def _reply(self, case: ReviewCase) -> Reply:
        """The case, each candidate with the image it was indexed from (what a reviewer opens to
        decide), or marked erased since, and what its similarity means (its false-match rate)."""
        sources: dict[str, dict[str, Any]] = {}
        for candidate in case.candidates:
            try:
                _, record = self._store.get_face(case.collection_id, candidate.face_id)
            except ResourceNotFoundException:
                sources[candidate.face_id] = {"Erased": True}
                continue
            sources[candidate.face_id] = {
                "ExternalImageId": record.external_image_id,
                "ImageId": record.image_id,
                "ImageSha256": record.image_sha256,
            }
        table = self._threshold_table(case.collection_id)
        for candidate in case.candidates:
            sources[candidate.face_id].update(similarity_meaning(table, candidate.similarity))
        return _case_reply(case, sources)

    def _threshold_table(self, collection_id: str) -> ThresholdTable | None:
        """The table the collection's similarities are read by (None: it has none yet, e.g. a
        model not calibrated)."""
        try:
            return self._limits.threshold_table(collection_id)
        except FaceledgerError:
            return None

    def collection_of(self, case_id: str) -> str | None:
        """The collection a case belongs to, so that access is decided by it (None: no such case)."""
        case = self._stored_case(case_id)
        return None if case is None else case.collection_id

    def _stored_case(self, case_id: object) -> ReviewCase | None:
        """The case, or None; a case id is a UUID, and nothing else is looked up (a NUL, which the
        web console's address can carry, is refused by PostgreSQL's text as an error)."""
        if not isinstance(case_id, str) or not validation.FACE_ID.fullmatch(case_id):
            return None
        return self._store.reviews.case(case_id)

    def list(
        self,
        collection_id: str | None,
        visible: tuple[str, ...] | None,
        *,
        status: str | None,
        opened_by: str | None,
        awaiting_my_decision: bool,
        max_results: int | None,
        next_token: str | None,
    ) -> Reply:
        """Cases oldest first, a page at a time: of ``collection_id`` (or of all), only among the
        ``visible`` collections (None: all), OPEN or CLOSED, opened by one key, or awaiting the
        caller's decision (open, not the caller's own search, a candidate still UNVERIFIED that the
        caller has not decided: a reviewer's queue)."""
        if status is not None and status not in CASE_STATUSES:
            raise InvalidParameterException(f"Status must be one of {', '.join(CASE_STATUSES)}, not {status!r}.")
        if opened_by is not None and (
            not isinstance(opened_by, str) or not 1 <= len(opened_by) <= 128 or not opened_by.isprintable()
        ):
            raise InvalidParameterException("OpenedBy must be an access key id.")
        if not isinstance(awaiting_my_decision, bool):
            raise InvalidParameterException("AwaitingMyDecision must be true or false.")
        limit = validation.integer(max_results, "MaxResults", 1, MAX_CASES_PAGE) if max_results is not None else 100
        listing = f"reviews:{collection_id or ''}:{status or ''}:{opened_by or ''}:{int(awaiting_my_decision)}"
        after = _case_position(decode_token(listing, next_token))
        positions = self._store.reviews.case_positions(
            collection_id,
            visible=visible,
            status=status,
            opened_by=opened_by,
            awaiting=current_context().caller.access_key_id if awaiting_my_decision else None,
            after=after,
            limit=limit + 1,
        )
        # a case deleted since (with its collection) is left out; the page goes on from where it was
        cases = [case for _, case_id in positions[:limit] if (case := self._store.reviews.case(case_id)) is not None]
        response: dict[str, Any] = {"Cases": [{**_case_summary(c), "Candidates": len(c.candidates)} for c in cases]}
        if len(positions) > limit:
            opened_at, case_id = positions[limit - 1]
            response["NextToken"] = encode_token(listing, f"{opened_at!r} {case_id}")
        return Reply(response, {"CasesCount": len(cases)})

    def _case(self, case_id: str) -> ReviewCase:
        case = self._stored_case(case_id)
        if case is None:
            raise ResourceNotFoundException(f"Review case {case_id!r} does not exist.")
        return case


def _case_position(position: str | int | None) -> tuple[float, str] | None:
    """The (opened_at, case_id) a NextToken of ListReviewCases stopped at."""
    if position is None:
        return None
    opened_at, _, case_id = str(position).partition(" ")
    try:
        if not validation.FACE_ID.fullmatch(case_id):  # case ids are UUIDs, as face ids
            raise ValueError(case_id)
        return float(opened_at), case_id
    except ValueError:
        raise InvalidPaginationTokenException("NextToken is not valid for this request.") from None


def similarity_meaning(table: ThresholdTable | None, similarity: float) -> dict[str, float | None]:
    """What a similarity means by ``table``: the false-match rate measured at it (FalseMatchRate)
    and the bound every promise rests on (FalseMatchRateUpper95); None for both where the table
    cannot say (no table, or a score below its range)."""
    rates = table.false_match_rate_at(similarity) if table is not None else None
    return {
        "FalseMatchRate": None if rates is None else rates[0],
        "FalseMatchRateUpper95": None if rates is None else rates[1],
    }


def _case_summary(case: ReviewCase) -> dict[str, Any]:
    """What ListReviewCases and GetReviewCase both answer of a case."""
    return {
        "CaseId": case.case_id,
        "CollectionId": case.collection_id,
        "Status": case.status,
        "Operation": case.operation,
        "OpenedBy": case.opened_by,
        "OpenedAt": case.opened_at,
        "Purpose": case.purpose,
        "CaseReference": case.case_ref,
    }


def _case_reply(case: ReviewCase, sources: dict[str, dict[str, Any]]) -> Reply:
    response: dict[str, Any] = {
        **_case_summary(case),
        "Probe": case.probe,
        "Candidates": [
            {
                "FaceId": c.face_id,
                **sources[c.face_id],
                "Similarity": c.similarity,
                "Status": c.status,
                "Decisions": [
                    {
                        "Reviewer": d["reviewer"],
                        "Decision": d["decision"],
                        "Note": d["note"],
                        "DecidedAt": d["decided_at"],
                    }
                    for d in c.decisions
                ],
            }
            for c in case.candidates
        ],
    }
    return Reply(response, {"CaseId": case.case_id, "Status": case.status, "OpenedAt": case.opened_at})
