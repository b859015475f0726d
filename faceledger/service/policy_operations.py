"""Collection policies, consent records, retention and erasure.

A collection's policy (set by an admin, every change ledgered) may demand a declared purpose and
case reference for searches, a similarity floor, a cap on results, a retention period, consent
records before indexing, and human review of matches. Erasure removes a template from the store,
the index and any stored image, zeroes the freed pages (SQLite ``secure_delete``) and folds the
write-ahead log into the file, and leaves a receipt in the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.ledgering import ledgered
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import SQLiteStore
from faceledger.store.policies import CollectionPolicy, ConsentRecord, PolicyStore

DEFAULT_MAX_RESULTS = 100
SECONDS_PER_DAY = 86_400.0


class PolicyOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    store: SQLiteStore
    policies: PolicyStore
    indexes: VectorIndexRegistry
    search_threshold: Callable[[str, float | None, str], float]

    @ledgered("PutCollectionPolicy")
    def put_collection_policy(
        self, *, collection_id: str, purpose_required: bool = False, min_threshold: float | None = None,
        max_results: int | None = None, retention_days: int | None = None, consent_required: bool = False,
        review_required: bool = False,
    ) -> dict[str, Any]:
        """Replace the collection's policy (every demand not given is lifted)."""
        validation.collection_id(collection_id)
        if min_threshold is not None:
            validation.percent(min_threshold, "MinThreshold")
        if max_results is not None:
            validation.integer(max_results, "MaxResults", 1, MAX_PAGE_SIZE)
        if retention_days is not None:
            validation.integer(retention_days, "RetentionDays", 1)
        self.store.require_collection(collection_id)
        policy = CollectionPolicy(bool(purpose_required), min_threshold, max_results, retention_days,
                                  bool(consent_required), bool(review_required))
        self.policies.put_policy(collection_id, policy)
        return {"CollectionId": collection_id, **policy.as_dict()}

    @ledgered("GetCollectionPolicy")
    def get_collection_policy(self, *, collection_id: str) -> dict[str, Any]:
        validation.collection_id(collection_id)
        self.store.require_collection(collection_id)
        return {"CollectionId": collection_id, **self.policies.policy(collection_id).as_dict()}

    def search_limits(self, collection_id: str, threshold: float | None, max_results: int | None,
                      name: str) -> tuple[float, int]:
        """(threshold, result cap) for a search under the collection's policy: a declared
        purpose and case when required, no threshold below the floor, no more results than
        the cap (an unasked-for count becomes the cap)."""
        policy = self.policies.policy(collection_id)
        context = current_context()
        if policy.purpose_required and not (context.purpose and context.case_ref):
            raise AccessDeniedException(
                f"Collection {collection_id!r} requires a declared purpose and case reference for searches "
                "(HTTP headers X-Faceledger-Purpose and X-Faceledger-Case; CLI --purpose and --case)."
            )
        resolved = self.search_threshold(collection_id, threshold, name)
        if policy.min_threshold is not None:
            if threshold is not None and threshold < policy.min_threshold:
                raise InvalidParameterException(
                    f"{name} {threshold:g} is below collection {collection_id!r}'s floor of {policy.min_threshold:g}."
                )
            resolved = max(resolved, policy.min_threshold)
        cap = policy.max_results or MAX_PAGE_SIZE
        if max_results is not None and max_results > cap:
            raise InvalidParameterException(f"Collection {collection_id!r} returns at most {cap} results.")
        return resolved, max_results if max_results is not None else min(cap, DEFAULT_MAX_RESULTS)

    def require_consent(self, collection_id: str, external_image_id: str | None) -> None:
        if not self.policies.policy(collection_id).consent_required:
            return
        now = time.time()
        if external_image_id is None or not any(
            c.active(now) for c in self.policies.consents(collection_id, external_image_id)
        ):
            raise AccessDeniedException(
                f"Collection {collection_id!r} requires consent: no active consent record for "
                f"ExternalImageId {external_image_id!r} (record one with RecordConsent first)."
            )

    @ledgered("RecordConsent")
    def record_consent(
        self, *, collection_id: str, external_image_id: str, basis: str, reference: str,
        obtained_at: float | None = None, expires_at: float | None = None,
    ) -> dict[str, Any]:
        """Record the consent of the person shown in images with ``external_image_id``:
        its legal ``basis`` (e.g. "explicit consent, GDPR 9(2)(a)"), a ``reference`` to the
        signed document, when it was obtained and when it expires."""
        validation.collection_id(collection_id)
        validation.external_image_id(external_image_id)
        for name, text in (("Basis", basis), ("Reference", reference)):
            if not isinstance(text, str) or not 1 <= len(text) <= 1000:
                raise InvalidParameterException(f"{name} must be 1-1000 characters.")
        for name, moment in (("ObtainedAt", obtained_at), ("ExpiresAt", expires_at)):
            if moment is not None and (isinstance(moment, bool) or not isinstance(moment, (int, float))):
                raise InvalidParameterException(f"{name} must be a time in seconds since the Unix epoch.")
        self.store.require_collection(collection_id)
        now = time.time()
        record = ConsentRecord(str(uuid.uuid4()), collection_id, external_image_id, basis, reference,
                               obtained_at if obtained_at is not None else now, expires_at, None, now)
        self.policies.add_consent(record)
        return {"ConsentId": record.consent_id, "ExternalImageId": external_image_id}

    @ledgered("WithdrawConsent")
    def withdraw_consent(self, *, collection_id: str, consent_id: str) -> dict[str, Any]:
        """Withdraw a consent and erase every face it covered (GDPR Art. 17)."""
        validation.collection_id(collection_id)
        record = self.policies.withdraw(consent_id, time.time())
        if record is None or record.collection_id != collection_id:
            raise ResourceNotFoundException(f"Consent {consent_id!r} does not exist in {collection_id!r}.")
        erased = self.erase_faces(collection_id, self.store.face_ids_where(
            collection_id, external_image_id=record.external_image_id), reason="consent withdrawn")
        return {"ConsentId": consent_id, "ErasedFaceIds": erased}

    @ledgered("Purge")
    def purge(self, *, now: float | None = None) -> dict[str, Any]:
        """Erase every face past its collection's retention period or its consent's expiry."""
        now = time.time() if now is None else now
        receipts: list[dict[str, Any]] = []
        for collection_id, days in self.policies.retained_collections():
            expired = self.store.face_ids_where(collection_id, created_before=now - days * SECONDS_PER_DAY)
            if expired:
                erased = self.erase_faces(collection_id, expired, reason=f"retention of {days} days over")
                receipts.append({"CollectionId": collection_id, "Reason": "retention", "ErasedFaceIds": erased})
        for consent in self.policies.expired_consents(now):
            covered = self.store.face_ids_where(consent.collection_id, external_image_id=consent.external_image_id)
            if covered:
                erased = self.erase_faces(consent.collection_id, covered, reason="consent expired")
                receipts.append({"CollectionId": consent.collection_id, "Reason": "consent expired",
                                 "ConsentId": consent.consent_id, "ErasedFaceIds": erased})
        return {"Receipts": receipts, "ErasedFaceIds": [f for r in receipts for f in r["ErasedFaceIds"]]}

    def erase_faces(self, collection_id: str, face_ids: list[str], *, reason: str) -> list[str]:
        """Remove faces for good, whatever user they belong to; the caller's ledger entry is the
        receipt. The index follows at commit, and the write-ahead log is emptied after it."""
        if not face_ids:
            return []
        self.store.set_face_users(collection_id, face_ids, None)
        deleted, before, after = self.store.delete_faces(collection_id, face_ids)
        removed = list(deleted.values())
        self.store.after_commit(lambda: self.indexes.apply(collection_id, before, after, removed=removed))
        self.store.after_commit(self.store.checkpoint)
        return sorted(deleted)
