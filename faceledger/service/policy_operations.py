"""Collection policies, consent records, retention and erasure.

A collection's policy (set by an admin, every change ledgered) may demand a declared purpose and
case reference for searches, a similarity floor, a cap on results, a retention period, consent
records before indexing, and human review of matches. Erasure removes a template from the store,
the index and any stored image, makes the store's files keep no trace of it
(:meth:`Store.erase_traces`), and leaves a receipt in the ledger.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.results import Erasure, Reply
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import CollectionPolicy, ConsentRecord, Store

SECONDS_PER_DAY = 86_400.0
VIDEO_RESULTS_KEPT_SECONDS = 7 * SECONDS_PER_DAY  # as Rekognition keeps a video job's results


class Unchanged(enum.Enum):
    """A policy demand left as it is by UpdateCollectionPolicy (None lifts it instead)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


class PolicyOperations:
    def __init__(self, store: Store, indexes: VectorIndexRegistry) -> None:
        self._store = store
        self._indexes = indexes

    def put(self, collection_id: str, policy: CollectionPolicy) -> Reply:
        """Replace the collection's policy (every demand not given is lifted)."""
        _validate(policy)
        self._store.require_collection(collection_id)
        # through update_policy, so that the 'before' the ledger keeps is the policy replaced
        before, _ = self._store.policies.update_policy(collection_id, lambda _: policy, time.time())
        self._forget_crops_if_review_lifted(collection_id, before, policy)
        return _policy_reply(collection_id, policy, before)

    def update(self, collection_id: str, changes: Mapping[str, Any]) -> Reply:
        """Change only the demands in ``changes`` (field name: new value; None lifts a numeric
        demand), read and written in one transaction; the reply and the ledger entry say what
        changed, before -> after."""
        known = {f.name for f in dataclasses.fields(CollectionPolicy)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidParameterException(f"Not policy demands: {', '.join(unknown)}.")
        for name in ("purpose_required", "consent_required", "review_required"):
            if name in changes and not isinstance(changes[name], bool):
                raise InvalidParameterException(f"{_member(name)} must be true or false.")
        self._store.require_collection(collection_id)

        def change(policy: CollectionPolicy) -> CollectionPolicy:
            changed = dataclasses.replace(policy, **changes)
            _validate(changed)
            return changed

        before, after = self._store.policies.update_policy(collection_id, change, time.time())
        self._forget_crops_if_review_lifted(collection_id, before, after)
        return _policy_reply(collection_id, after, before)

    def _forget_crops_if_review_lifted(
        self, collection_id: str, before: CollectionPolicy, after: CollectionPolicy
    ) -> None:
        """The face crops exist for human review only: a collection that stops requiring it
        keeps none (of its faces, nor of its cases' probes)."""
        if before.review_required and not after.review_required:
            self._store.drop_face_crops(collection_id)
            self._store.reviews.drop_probe_crops(collection_id, opened_before=math.inf)

    def get(self, collection_id: str) -> Reply:
        self._store.require_collection(collection_id)
        return _policy_reply(collection_id, self._store.policies.policy(collection_id))

    def require_consent(self, collection_id: str, external_image_id: str | None) -> None:
        if not self._store.policies.policy(collection_id).consent_required:
            return
        now = time.time()
        if external_image_id is None or not any(
            c.active(now) for c in self._store.policies.consents(collection_id, external_image_id)
        ):
            raise AccessDeniedException(
                f"Collection {collection_id!r} requires consent: no active consent record for "
                f"ExternalImageId {external_image_id!r}. Record one first: 'faceledger consent record "
                f"{external_image_id or 'EXTERNAL_IMAGE_ID'} --collection {collection_id} --basis ... --reference ...' "
                "(over the API: RecordConsent)."
            )

    def record_consent(
        self,
        collection_id: str,
        external_image_id: str,
        basis: str,
        reference: str,
        obtained_at: float | None,
        expires_at: float | None,
    ) -> Reply:
        validation.external_image_id(external_image_id)
        for name, text in (("Basis", basis), ("Reference", reference)):
            if not isinstance(text, str) or not 1 <= len(text) <= 1000:
                raise InvalidParameterException(f"{name} must be 1-1000 characters.")
        for name, moment in (("ObtainedAt", obtained_at), ("ExpiresAt", expires_at)):
            if moment is not None and (isinstance(moment, bool) or not isinstance(moment, (int, float))):
                raise InvalidParameterException(f"{name} must be a time in seconds since the Unix epoch.")
        self._store.require_collection(collection_id)
        now = time.time()
        if expires_at is not None and expires_at <= max(now, obtained_at or now):
            raise InvalidParameterException(
                "ExpiresAt is in the past (or before ObtainedAt): a consent that has ended cannot be recorded."
            )
        record = ConsentRecord(
            str(uuid.uuid4()),
            collection_id,
            external_image_id,
            basis,
            reference,
            obtained_at if obtained_at is not None else now,
            expires_at,
            None,
            now,
        )
        self._store.policies.add_consent(record)
        return Reply(
            {"ConsentId": record.consent_id, "ExternalImageId": external_image_id}, {"ConsentId": record.consent_id}
        )

    def list_consents(self, collection_id: str, external_image_id: str | None) -> Reply:
        if external_image_id is not None:
            validation.external_image_id(external_image_id)
        self._store.require_collection(collection_id)
        now = time.time()
        records = self._store.policies.consents(collection_id, external_image_id)
        return Reply(
            {"Consents": [_consent(record, now) for record in records]},
            {"Count": len(records)},
        )

    def withdraw_consent(self, collection_id: str, consent_id: str) -> Erasure:
        """Withdraw a consent and erase every face it covered (GDPR Art. 17)."""
        record = self._store.policies.withdraw(consent_id, time.time())
        if record is None or record.collection_id != collection_id:
            raise ResourceNotFoundException(f"Consent {consent_id!r} does not exist in {collection_id!r}.")
        erased = self.erase(
            collection_id, self._store.face_ids_where(collection_id, external_image_id=record.external_image_id)
        )
        return Erasure(erased, {"ConsentId": consent_id})

    def erase_faces(self, collection_id: str, face_ids: Sequence[str] | None, external_image_id: str | None) -> Erasure:
        """Erase the faces ``face_ids``, or every face indexed under ``external_image_id`` (one of
        the two), whatever user they belong to."""
        if (face_ids is None) == (external_image_id is None):
            raise InvalidParameterException("Give FaceIds or ExternalImageId (one of the two) to erase.")
        self._store.require_collection(collection_id)
        if external_image_id is not None:
            validation.external_image_id(external_image_id)
            return Erasure(
                self.erase(
                    collection_id, self._store.face_ids_where(collection_id, external_image_id=external_image_id)
                ),
                {"ExternalImageId": external_image_id},
            )
        wanted = validation.face_ids(face_ids, maximum=MAX_PAGE_SIZE)
        found = {r.face_id for _, r in self._store.list_faces(collection_id, face_ids=wanted, limit=len(wanted))}
        missing = [face_id for face_id in dict.fromkeys(wanted) if face_id not in found]
        return Erasure(self.erase(collection_id, sorted(found)), {"NotFoundFaceIds": missing})

    def purge(self, now: float, limit: int) -> Erasure:
        """Erase at most ``limit`` faces past their collection's retention period or their
        consent's expiry (fewer than ``limit``: nothing more is due)."""
        receipts: list[dict[str, Any]] = []
        # a video job's results (who was seen and matched when) are kept as long as Rekognition keeps them
        self._store.video_jobs.forget_finished(now - VIDEO_RESULTS_KEPT_SECONDS)
        # a review case's probe crop is a face kept like the collection's own: as long, no longer
        for collection_id, days in self._store.policies.retained_collections():
            self._store.reviews.drop_probe_crops(collection_id, now - days * SECONDS_PER_DAY)
        due = [
            (collection_id, {"Reason": "retention"}, {"created_before": now - days * SECONDS_PER_DAY})
            for collection_id, days in self._store.policies.retained_collections()
        ] + [
            (
                c.collection_id,
                {"Reason": "consent expired", "ConsentId": c.consent_id},
                {"external_image_id": c.external_image_id},
            )
            for c in self._store.policies.expired_consents(now)
        ]
        left = limit
        for collection_id, reason, which in due:
            face_ids = self._store.face_ids_where(collection_id, limit=left, **which) if left else []
            if face_ids:
                left -= len(face_ids)
                receipts.append(
                    {"CollectionId": collection_id, **reason, "ErasedFaceIds": self.erase(collection_id, face_ids)}
                )
        return Erasure([f for r in receipts for f in r["ErasedFaceIds"]], {"Receipts": receipts})

    def erase(self, collection_id: str, face_ids: list[str]) -> list[str]:
        """Remove faces for good, whatever user they belong to; the calling operation's ledger
        entry is the receipt. The index follows at commit, and the store's traces after it."""
        if not face_ids:
            return []
        self._store.set_face_users(collection_id, face_ids, None)
        change = self._store.delete_faces(collection_id, face_ids)
        self._store.after_commit(lambda: self._indexes.apply(change))
        self._store.after_commit(self._store.erase_traces)
        return sorted(change.seqs)


def _consent(record: ConsentRecord, now: float) -> dict[str, Any]:
    if record.withdrawn_at is not None:
        status = "WITHDRAWN"
    elif record.obtained_at > now:
        status = "NOT_YET_VALID"
    else:
        status = "ACTIVE" if record.active(now) else "EXPIRED"
    return {
        "ConsentId": record.consent_id,
        "ExternalImageId": record.external_image_id,
        "Basis": record.basis,
        "Reference": record.reference,
        "ObtainedAt": record.obtained_at,
        "ExpiresAt": record.expires_at,
        "WithdrawnAt": record.withdrawn_at,
        "Status": status,
    }


def _validate(policy: CollectionPolicy) -> None:
    if policy.min_threshold is not None:
        validation.percent(policy.min_threshold, "MinThreshold")
    if policy.max_results is not None:
        validation.integer(policy.max_results, "MaxResults", 1, MAX_PAGE_SIZE)
    if policy.retention_days is not None:
        validation.integer(policy.retention_days, "RetentionDays", 1)


def _member(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _policy_reply(collection_id: str, policy: CollectionPolicy, before: CollectionPolicy | None = None) -> Reply:
    """The policy; after a change also ``Changes`` (each changed demand, before and after),
    which is what the ledger keeps of it."""
    values = {_member(k): v for k, v in policy.as_dict().items()}
    if before is None:
        return Reply({"CollectionId": collection_id, **values})
    old = {_member(k): v for k, v in before.as_dict().items()}
    changes = {k: {"Before": old[k], "After": v} for k, v in values.items() if old[k] != v}
    return Reply({"CollectionId": collection_id, **values, "Changes": changes}, {"Changes": changes})
