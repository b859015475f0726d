"""Human review of matches (EU AI Act Art. 14(5)): in a review_required collection a search
returns its matches as unverified candidates and opens a review case; a candidate becomes
verified only when two different reviewers have confirmed it, and the searcher cannot review
their own search. Every decision is ledgered."""

from __future__ import annotations

from typing import Any

from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.service.context import current_context
from faceledger.service.ledgering import ledgered
from faceledger.store.policies import PolicyStore
from faceledger.store.reviews import ReviewCase, ReviewStore

DECISIONS = ("confirm", "reject")


class ReviewOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    policies: PolicyStore
    reviews: ReviewStore

    def hold_for_review(self, collection_id: str, operation: str, probe: str, response: dict[str, Any]) -> dict[str, Any]:
        """In a review_required collection: mark every match unverified and open a review case
        (its id in ``FaceledgerReview``); elsewhere the response is returned as it is."""
        if not self.policies.policy(collection_id).review_required:
            return response
        context = current_context()
        matches = response.get("FaceMatches", [])
        case_id = self.reviews.open_case(
            collection_id, operation, context.caller.access_key_id, context.purpose, context.case_ref, probe,
            [(m["Face"]["FaceId"], m["Similarity"]) for m in matches],
        )
        for match in matches:
            match["Verified"] = False
        response["FaceledgerReview"] = {"CaseId": case_id, "Status": "UNVERIFIED" if matches else "NO_CANDIDATES"}
        return response

    @ledgered("DecideReview")
    def decide_review(self, *, case_id: str, face_id: str, decision: str, note: str) -> dict[str, Any]:
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
        self.reviews.decide(case_id, face_id, reviewer, decision, note)
        return self._case_response(self._case(case_id))

    @ledgered("GetReviewCase")
    def get_review_case(self, *, case_id: str) -> dict[str, Any]:
        return self._case_response(self._case(case_id))

    @ledgered("ListReviewCases")
    def list_review_cases(self, *, collection_id: str | None = None) -> dict[str, Any]:
        cases = [self._case(case_id) for case_id in self.reviews.case_ids(collection_id)]
        return {"Cases": [{"CaseId": c.case_id, "CollectionId": c.collection_id, "Status": c.status,
                           "OpenedAt": c.opened_at, "Candidates": len(c.candidates)} for c in cases]}

    def _case(self, case_id: str) -> ReviewCase:
        case = self.reviews.case(case_id) if isinstance(case_id, str) else None
        if case is None:
            raise ResourceNotFoundException(f"Review case {case_id!r} does not exist.")
        return case

    @staticmethod
    def _case_response(case: ReviewCase) -> dict[str, Any]:
        return {
            "CaseId": case.case_id, "CollectionId": case.collection_id, "Operation": case.operation,
            "OpenedBy": case.opened_by, "OpenedAt": case.opened_at, "Purpose": case.purpose,
            "CaseReference": case.case_ref, "Probe": case.probe, "Status": case.status,
            "Candidates": [
                {"FaceId": c.face_id, "Similarity": c.similarity, "Status": c.status,
                 "Decisions": [{"Reviewer": d["reviewer"], "Decision": d["decision"], "Note": d["note"],
                                "DecidedAt": d["decided_at"]} for d in c.decisions]}
                for c in case.candidates
            ],
        }
