"""Human review of matches (EU AI Act Art. 14(5)): in a review_required collection a search
returns its matches as unverified candidates and opens a review case; a candidate becomes
verified only when two different reviewers have confirmed it, and the searcher cannot review
their own search. Every decision is ledgered."""

from __future__ import annotations

import time
import uuid
from typing import Any

from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.service.context import current_context
from faceledger.service.results import Reply, ReviewHold
from faceledger.store import Candidate, FaceRecord, ReviewCase, Store

DECISIONS = ("confirm", "reject")


class ReviewOperations:
    def __init__(self, store: Store) -> None:
        self._store = store

    def hold(
        self, collection_id: str, operation: str, probe: str, matches: list[tuple[float, FaceRecord]]
    ) -> ReviewHold | None:
        """In a review_required collection, open a review case for the matches of a search
        (they are then reported unverified); elsewhere None."""
        if not self._store.policies.policy(collection_id).review_required:
            return None
        context = current_context()
        case = ReviewCase(
            str(uuid.uuid4()),
            collection_id,
            operation,
            context.caller.access_key_id,
            time.time(),
            context.purpose,
            context.case_ref,
            probe,
            [Candidate(record.face_id, similarity) for similarity, record in matches],
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

    def get(self, case_id: str) -> Reply:
        return self._reply(self._case(case_id))

    def _reply(self, case: ReviewCase) -> Reply:
        """The case, each candidate with the image it was indexed from (what a reviewer opens to
        decide), or marked erased since."""
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
        return _case_reply(case, sources)

    def collection_of(self, case_id: str) -> str | None:
        """The collection a case belongs to, so that access is decided by it (None: no such case)."""
        case = self._store.reviews.case(case_id) if isinstance(case_id, str) else None
        return None if case is None else case.collection_id

    def list(self, collection_id: str | None, visible: tuple[str, ...] | None) -> Reply:
        """Cases of ``collection_id`` (or of all), only among the ``visible`` collections (None: all)."""
        cases = [self._case(case_id) for case_id in self._store.reviews.case_ids(collection_id)]
        cases = [case for case in cases if visible is None or case.collection_id in visible]
        return Reply(
            {
                "Cases": [
                    {
                        "CaseId": c.case_id,
                        "CollectionId": c.collection_id,
                        "Status": c.status,
                        "OpenedAt": c.opened_at,
                        "Candidates": len(c.candidates),
                    }
                    for c in cases
                ]
            },
            {"CasesCount": len(cases)},
        )

    def _case(self, case_id: str) -> ReviewCase:
        case = self._store.reviews.case(case_id) if isinstance(case_id, str) else None
        if case is None:
            raise ResourceNotFoundException(f"Review case {case_id!r} does not exist.")
        return case


def _case_reply(case: ReviewCase, sources: dict[str, dict[str, Any]]) -> Reply:
    response: dict[str, Any] = {
        "CaseId": case.case_id,
        "CollectionId": case.collection_id,
        "Operation": case.operation,
        "OpenedBy": case.opened_by,
        "OpenedAt": case.opened_at,
        "Purpose": case.purpose,
        "CaseReference": case.case_ref,
        "Probe": case.probe,
        "Status": case.status,
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
