"""What the web console needs of the service, protocol-free: sign-in sessions, reading and
verifying the ledger under an auditor's key, and erasure with a receipt."""

from __future__ import annotations

import time

import pytest

from faceledger.errors import AccessDeniedException, InvalidParameterException
from faceledger.service import FaceService, console_sessions
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as

from conftest import image_bytes

OBAMA = ("facerec_examples", "obama", "obama.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")


def test_a_session_stands_for_its_key_until_it_ends(service: FaceService, monkeypatch) -> None:
    key = service.create_access_key(role="reviewer", collections=["c"])
    started = service.start_console_session(access_key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])
    token = started["SessionToken"]
    caller = service.console_caller(token)
    assert caller == Caller(key["AccessKeyId"], Role.REVIEWER, ("c",))
    # the store keeps the token's hash only, and the ledger not even that
    assert service.store.console_sessions.get(console_sessions.token_sha256(token)) is not None
    entry = list(service.ledger.entries(operation="StartConsoleSession"))[-1]
    assert (entry.access_key_id, entry.outcome) == (key["AccessKeyId"], "ok") and token not in str(entry.result)

    assert service.console_caller(token + "x") is None and service.console_caller("") is None
    with acting_as(RequestContext(caller)):
        assert service.end_console_session(session_token=token)["Ended"] is True
    assert service.console_caller(token) is None

    # idle too long, past its lifetime, or its key disabled: over
    token = service.start_console_session(access_key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])[
        "SessionToken"
    ]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + console_sessions.IDLE_SECONDS + 1)
    assert service.console_caller(token) is None
    monkeypatch.undo()
    token = service.start_console_session(access_key_id=key["AccessKeyId"], secret=key["SecretAccessKey"])[
        "SessionToken"
    ]
    assert service.console_caller(token) is not None
    service.set_access_key_enabled(access_key_id=key["AccessKeyId"], enabled=False)
    assert service.console_caller(token) is None


def test_a_wrong_secret_signs_nobody_in_and_is_ledgered(service: FaceService) -> None:
    key = service.create_access_key(role="auditor")
    with pytest.raises(AccessDeniedException):
        service.start_console_session(access_key_id=key["AccessKeyId"], secret=key["SecretAccessKey"] + "x")
    with pytest.raises(AccessDeniedException):
        service.start_console_session(access_key_id="FLAAAAAAAAAAAAAAAAAA", secret="whatever")
    # a secret typed in the key id's field never reaches the ledger
    with pytest.raises(AccessDeniedException):
        service.start_console_session(access_key_id=key["SecretAccessKey"], secret=key["AccessKeyId"])
    with pytest.raises(AccessDeniedException):  # the caller (the console) ledgers no flood
        service.start_console_session(access_key_id=key["AccessKeyId"], secret="x", ledger_refusal=False)
    denied = [(e.access_key_id, e.role, e.outcome) for e in service.ledger.entries(operation="StartConsoleSession")]
    assert denied == [
        (key["AccessKeyId"], "auditor", "denied"),
        ("unknown:FLAAAAAAAAAAAAAAAAAA", "unauthenticated", "denied"),
        ("unknown:", "unauthenticated", "denied"),
    ]


def test_an_auditor_reads_the_ledger_newest_first_in_pages_of_its_collections(service: FaceService) -> None:
    for collection_id in ("a", "b"):
        service.create_collection(collection_id=collection_id)
    with acting_as(RequestContext(Caller("local:x", Role.ADMIN, None), purpose="audit me", case_ref="K-1")):
        service.describe_collection(collection_id="a")
    auditor = Caller("FLAUDITORA0000000000", Role.AUDITOR, ("a",))
    with acting_as(RequestContext(auditor)):
        first = service.list_ledger_entries(max_results=1)
        assert [e["operation"] for e in first["Entries"]] == ["DescribeCollection"]
        second = service.list_ledger_entries(max_results=1, next_token=first["NextToken"])
        assert [(e["operation"], e["collection_id"]) for e in second["Entries"]] == [("CreateCollection", "a")]
        assert second["NextToken"] is None  # nothing of collection b, nor of no collection
        by_case = service.list_ledger_entries(case_ref="K-1")["Entries"]
        assert [(e["purpose"], e["case_ref"]) for e in by_case] == [("audit me", "K-1")]
        assert service.list_ledger_entries(outcome="denied")["Entries"] == []
        with pytest.raises(AccessDeniedException):
            service.list_ledger_entries(collection_id="b")
        with pytest.raises(InvalidParameterException):
            service.list_ledger_entries(outcome="maybe")
        exported: list = []
        service.export_ledger(write=exported.append)
        assert {e.collection_id for e in exported} == {"a"}
        with pytest.raises(AccessDeniedException):  # the chain is the whole ledger's: not for a scoped key
            service.verify_ledger()
    with acting_as(RequestContext(Caller("FLAUDITORALL00000000", Role.AUDITOR, None))):
        verified = service.verify_ledger()
    assert verified["Intact"] is True and verified["Problems"] == []
    assert verified["Entries"] == sum(1 for _ in service.ledger.entries()) - 1  # before its own entry
    service.ledger.sign_head()
    assert service.verify_ledger()["LastSignedHead"]["Seq"] >= verified["Entries"]
    with (
        acting_as(RequestContext(Caller("FLSEARCHER0000000000", Role.SEARCHER, None))),
        pytest.raises(AccessDeniedException),
    ):
        service.list_ledger_entries()


def test_erase_faces_by_id_or_external_image_id_whatever_user_they_belong_to(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    obama = [
        service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")["FaceRecords"][0][
            "Face"
        ]["FaceId"]
        for _ in range(2)
    ]
    biden = service.index_faces(collection_id="c", image=image_bytes(*BIDEN))["FaceRecords"][0]["Face"]["FaceId"]
    service.create_user(collection_id="c", user_id="joe")
    service.associate_faces(collection_id="c", user_id="joe", face_ids=[biden])
    missing = "00000000-0000-0000-0000-000000000000"
    receipt = service.erase_faces(collection_id="c", face_ids=[biden, missing])
    assert receipt == {"ErasedFaceIds": [biden], "NotFoundFaceIds": [missing]}
    receipt = service.erase_faces(collection_id="c", external_image_id="obama")
    assert sorted(receipt["ErasedFaceIds"]) == sorted(obama) and receipt["ExternalImageId"] == "obama"
    assert service.list_faces(collection_id="c")["Faces"] == []
    entry = list(service.ledger.entries(operation="EraseFaces"))[-1]
    assert sorted(entry.result["ErasedFaceIds"]) == sorted(obama)
    with pytest.raises(InvalidParameterException):
        service.erase_faces(collection_id="c")
    with pytest.raises(InvalidParameterException):
        service.erase_faces(collection_id="c", face_ids=[missing], external_image_id="obama")
    indexer = Caller("FLINDEXER00000000000", Role.INDEXER, None)
    with acting_as(RequestContext(indexer)):
        assert service.erase_faces(collection_id="c", face_ids=[missing])["ErasedFaceIds"] == []
    with (
        acting_as(RequestContext(Caller("FLSEARCHER0000000000", Role.SEARCHER, None))),
        pytest.raises(AccessDeniedException),
    ):
        service.erase_faces(collection_id="c", face_ids=[missing])
