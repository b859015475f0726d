"""Collection policies: purpose, threshold floor, result cap, consent, retention and erasure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import faceledger
from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as

from conftest import image_bytes

OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_2 = ("facerec_examples", "obama", "obama2.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")
INVESTIGATOR = Caller("FLINVESTIGATOR0000000", Role.SEARCHER, None)


def _with_faces(service: FaceService, **policy) -> list[str]:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", **policy)
    return [
        service.index_faces(collection_id="c", image=image_bytes(*p), external_image_id=p[1])["FaceRecords"][0]["Face"][
            "FaceId"
        ]
        for p in (OBAMA, BIDEN)
    ]


def test_searches_need_a_declared_purpose_and_case_where_required(service: FaceService) -> None:
    _with_faces(service, purpose_required=True)
    probe = image_bytes(*OBAMA_2)
    with acting_as(RequestContext(INVESTIGATOR)), pytest.raises(AccessDeniedException, match="purpose"):
        service.search_faces_by_image(collection_id="c", image=probe)
    with acting_as(RequestContext(INVESTIGATOR, purpose="find a missing person")), pytest.raises(AccessDeniedException):
        service.search_faces_by_image(collection_id="c", image=probe)  # a case reference too
    with acting_as(RequestContext(INVESTIGATOR, purpose="find a missing person", case_ref="MP-2026-17")):
        assert service.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"]
    outcomes = [
        (e.outcome, e.purpose, e.case_ref) for e in service.ledger.entries() if e.operation == "SearchFacesByImage"
    ]
    assert outcomes == [
        ("denied", None, None),
        ("denied", "find a missing person", None),
        ("ok", "find a missing person", "MP-2026-17"),
    ]


def test_threshold_floor_and_result_cap(service: FaceService) -> None:
    ids = _with_faces(service, min_threshold=95.0, max_results=1)
    with pytest.raises(InvalidParameterException, match="floor"):
        service.search_faces(collection_id="c", face_id=ids[0], face_match_threshold=50.0)
    with pytest.raises(InvalidParameterException, match="at most 1"):
        service.search_faces(collection_id="c", face_id=ids[0], max_faces=5)
    # the default threshold is lifted to the floor: Obama's other photo (about 92) no longer matches
    probe = image_bytes(*OBAMA_2)
    assert service.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"] == []
    service.put_collection_policy(collection_id="c")  # lifting every demand is a ledgered change too
    assert len(service.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"]) == 1
    changes = [e for e in service.ledger.entries() if e.operation == "PutCollectionPolicy"]
    assert len(changes) == 2 and all(e.outcome == "ok" for e in changes)


def test_indexing_needs_consent_where_required_and_withdrawal_erases(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", consent_required=True)
    with pytest.raises(AccessDeniedException, match="consent"):
        service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
    with pytest.raises(AccessDeniedException, match="consent"):
        service.index_faces(collection_id="c", image=image_bytes(*OBAMA))  # no subject named at all
    consent = service.record_consent(
        collection_id="c", external_image_id="obama", basis="explicit consent", reference="form 2026-118"
    )["ConsentId"]
    service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
    service.index_faces(collection_id="c", image=image_bytes(*OBAMA_2), external_image_id="obama")
    assert service.describe_collection(collection_id="c")["FaceCount"] == 2
    receipt = service.withdraw_consent(collection_id="c", consent_id=consent)
    assert len(receipt["ErasedFaceIds"]) == 2
    assert service.describe_collection(collection_id="c")["FaceCount"] == 0
    with pytest.raises(AccessDeniedException):  # withdrawn: no more indexing either
        service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
    with pytest.raises(ResourceNotFoundException):
        service.withdraw_consent(collection_id="c", consent_id="no-such-consent")
    entry = [e for e in service.ledger.entries() if e.operation == "WithdrawConsent"][0]
    assert sorted(entry.result["ErasedFaceIds"]) == sorted(receipt["ErasedFaceIds"])


def test_expired_faces_are_purged_and_unfindable_anywhere(tmp_path: Path, store_backend: str) -> None:
    with faceledger.open(tmp_path) as service:
        ids = _with_faces(service, retention_days=30)
        service.create_user(collection_id="c", user_id="barack")
        service.associate_faces(collection_id="c", user_id="barack", face_ids=[ids[0]])
        db = service.store.database.connection()
        sealed = bytes(db.execute("SELECT embedding FROM faces WHERE face_id = ?", (ids[0],)).fetchone()[0])
        probe = image_bytes(*OBAMA_2)
        assert service.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"]
        sqlite_files = lambda: b"".join(p.read_bytes() for p in tmp_path.glob("faceledger.sqlite3*"))  # noqa: E731
        if store_backend == "sqlite":
            assert sealed[12:44] in sqlite_files()
        assert service.purge()["ErasedFaceIds"] == []  # nothing is 30 days old yet
        db.execute("UPDATE faces SET created_at = ? WHERE face_id = ?", (time.time() - 31 * 86_400, ids[0]))
        receipt = service.purge()
        assert receipt["ErasedFaceIds"] == [ids[0]]
        assert (
            service.search_faces_by_image(collection_id="c", image=probe, face_match_threshold=0)["FaceMatches"][0][
                "Face"
            ]["FaceId"]
            == ids[1]
        )
        with pytest.raises(ResourceNotFoundException):
            service.search_faces(collection_id="c", face_id=ids[0])
        assert [f["FaceId"] for f in service.list_faces(collection_id="c")["Faces"]] == [ids[1]]
        purge = [e for e in service.ledger.entries() if e.operation == "Purge"][-1]
        assert purge.result["ErasedFaceIds"] == [ids[0]]
    if store_backend == "sqlite":
        # the template's ciphertext is gone from the database file and its write-ahead log alike
        # (PostgreSQL keeps dead rows until VACUUM, and WAL: docs/scaling.md says what erasure means there)
        files = sqlite_files()
        assert len(files) > 10_000 and sealed[12:44] not in files


@pytest.mark.backends("sqlite")  # a property of SQLite's files (secure_delete, WAL truncation)
def test_erasure_leaves_no_plaintext_even_without_encryption(tmp_path: Path) -> None:
    """With encryption switched off (benchmarks only) the float bytes themselves are stored;
    erasure must still remove every copy from the database file and its write-ahead log."""
    from faceledger.config import Settings

    with FaceService(Settings(data_dir=tmp_path, encrypt_templates=False)) as service:
        ids = _with_faces(service)
        raw = service.store.get_face("c", ids[0])[1].template
        files = lambda: b"".join(p.read_bytes() for p in tmp_path.glob("faceledger.sqlite3*"))  # noqa: E731
        assert raw[:64] in files()
        service.put_collection_policy(collection_id="c", consent_required=True)
        consent = service.record_consent(collection_id="c", external_image_id="obama", basis="b", reference="r")
        assert service.withdraw_consent(collection_id="c", consent_id=consent["ConsentId"])["ErasedFaceIds"] == [ids[0]]
        assert raw[:16] not in files()


def test_purge_works_in_bounded_batches_past_the_databases_variable_limit(
    service: FaceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SQLite's limit on variables per statement (250,000 faces with the default build), one
    DELETE ... IN (...) failed and retention never ran again. A low limit shows it with 120 faces."""
    import uuid

    import numpy as np

    from faceledger.service import face_service
    from faceledger.store import FaceRecord, ImageRecord

    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", retention_days=30)
    old = time.time() - 40 * 86_400
    image_id = str(uuid.uuid4())
    records = []
    for vector in np.random.default_rng(1).normal(0, 1, (120, 128)).astype(np.float32):
        face_id = str(uuid.uuid4())
        records.append(
            FaceRecord(
                face_id,
                "c",
                image_id,
                "old",
                "0" * 64,
                {"Width": 0.1, "Height": 0.1, "Left": 0, "Top": 0},
                99.0,
                {},
                {},
                service.templates.seal(face_id, vector),
                old,
            )
        )
    service.store.add_image(ImageRecord(image_id, "c", "1" * 64, "old", 100, 100, 120, old), records)
    monkeypatch.setattr(service.store.database, "max_parameters", lambda: 50)
    monkeypatch.setattr(face_service, "PURGE_BATCH", 40)
    before = sum(1 for _ in service.ledger.entries())
    receipt = service.purge()
    assert sorted(receipt["ErasedFaceIds"]) == sorted(r.face_id for r in records)
    entries = list(service.ledger.entries())[before:]
    assert [e.operation for e in entries] == ["Purge"] * 4  # three batches of 40, then one that finds none
    assert [len(e.result["ErasedFaceIds"]) for e in entries] == [40, 40, 40, 0]
    assert service.describe_collection(collection_id="c")["FaceCount"] == 0


def test_a_policy_update_changes_only_what_it_names_and_ledgers_before_and_after(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", purpose_required=True, review_required=True)
    changed = service.update_collection_policy(collection_id="c", min_threshold=90.0)
    assert changed["PurposeRequired"] and changed["ReviewRequired"] and changed["MinThreshold"] == 90.0
    assert changed["Changes"] == {"MinThreshold": {"Before": None, "After": 90.0}}
    lifted = service.update_collection_policy(collection_id="c", review_required=False, min_threshold=None)
    assert lifted["Changes"] == {
        "MinThreshold": {"Before": 90.0, "After": None},
        "ReviewRequired": {"Before": True, "After": False},
    }
    assert service.get_collection_policy(collection_id="c")["PurposeRequired"] is True
    entries = [e for e in service.ledger.entries() if e.operation == "UpdateCollectionPolicy"]
    assert [e.result["Changes"] for e in entries] == [changed["Changes"], lifted["Changes"]]
    for bad in ({"max_results": 0}, {"review_required": "no"}, {"min_threshold": 101}):
        with pytest.raises(InvalidParameterException):
            service.update_collection_policy(collection_id="c", **bad)
    assert service.get_collection_policy(collection_id="c")["MaxResults"] is None  # nothing half-written
    with pytest.raises(ResourceNotFoundException):
        service.update_collection_policy(collection_id="nope", max_results=5)


def test_concurrent_policy_updates_both_take_effect(tmp_path: Path) -> None:
    """An update reads the policy inside its write transaction: a change committed by another
    process between its read and its write cannot be lost."""
    import threading

    from faceledger.config import Settings

    first, second = FaceService(Settings(data_dir=tmp_path)), FaceService(Settings(data_dir=tmp_path))
    try:
        first.create_collection(collection_id="c")
        first.put_collection_policy(collection_id="c", review_required=True)
        read = first.store.policies.policy
        other = threading.Thread(target=lambda: second.update_collection_policy(collection_id="c", min_threshold=95.0))

        def read_then_let_the_other_writer_try(collection_id: str):
            policy = read(collection_id)
            if not other.is_alive() and other.ident is None:
                other.start()  # it must wait for this transaction
            return policy

        first.store.policies.policy = read_then_let_the_other_writer_try  # type: ignore[method-assign]
        first.update_collection_policy(collection_id="c", review_required=False)
        other.join(timeout=30)
        final = second.get_collection_policy(collection_id="c")
        assert final["ReviewRequired"] is False and final["MinThreshold"] == 95.0
    finally:
        first.close()
        second.close()
