"""Human review: matches stay unverified until two different reviewers confirm them."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image

import faceledger
from faceledger.errors import (
    AccessDeniedException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as
from faceledger.service.pagination import encode_token

from api_server import call_extension, running_server
from conftest import data_path, image_bytes

OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_2 = ("facerec_examples", "obama", "obama2.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")
SEARCHER = Caller("FLSEARCHER0000000000", Role.SEARCHER, None)
ALICE = Caller("FLREVIEWERALICE00000", Role.REVIEWER, None)
BOB = Caller("FLREVIEWERBOB0000000", Role.REVIEWER, None)


def _decide(service: FaceService, who: Caller, case_id: str, face_id: str, decision: str) -> dict:
    with acting_as(RequestContext(who)):
        return service.decide_review(
            case_id=case_id, face_id=face_id, decision=decision, note=f"{who.access_key_id} looked"
        )


def test_two_different_reviewers_verify_a_match(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True)
    face_ids = [
        service.index_faces(collection_id="c", image=image_bytes(*p))["FaceRecords"][0]["Face"]["FaceId"]
        for p in (OBAMA, ("facerec_examples", "obama", "obama2.jpg"))
    ]
    with acting_as(RequestContext(SEARCHER, purpose="reunification", case_ref="R-1")):
        result = service.search_faces_by_image(
            collection_id="c", image=image_bytes("facerec_examples", "_test_unlabeled", "obama1.jpg")
        )
    assert {m["Face"]["FaceId"] for m in result["FaceMatches"]} == set(face_ids)
    assert all(m["Verified"] is False for m in result["FaceMatches"])
    case_id = result["FaceledgerReview"]["CaseId"]
    first, second = face_ids

    with pytest.raises(AccessDeniedException):  # a searcher may not review
        _decide(service, SEARCHER, case_id, first, "confirm")
    assert _decide(service, ALICE, case_id, first, "confirm")["Candidates"][0]["Status"] == "UNVERIFIED"
    statuses = {c["FaceId"]: c["Status"] for c in _decide(service, ALICE, case_id, first, "confirm")["Candidates"]}
    assert statuses[first] == "UNVERIFIED"  # the same reviewer twice is still one person
    statuses = {c["FaceId"]: c["Status"] for c in _decide(service, BOB, case_id, first, "confirm")["Candidates"]}
    assert statuses[first] == "VERIFIED"
    _decide(service, ALICE, case_id, second, "confirm")
    case = _decide(service, BOB, case_id, second, "reject")
    assert {c["FaceId"]: c["Status"] for c in case["Candidates"]}[second] == "REJECTED"
    assert case["Status"] == "CLOSED" and (case["Purpose"], case["CaseReference"]) == ("reunification", "R-1")
    decisions = [e for e in service.ledger.entries() if e.operation == "DecideReview"]
    assert [(e.access_key_id, e.outcome) for e in decisions] == [
        (SEARCHER.access_key_id, "denied"),
        (ALICE.access_key_id, "ok"),
        (ALICE.access_key_id, "ok"),
        (BOB.access_key_id, "ok"),
        (ALICE.access_key_id, "ok"),
        (BOB.access_key_id, "ok"),
    ]
    search_entry = [e for e in service.ledger.entries() if e.operation == "SearchFacesByImage"][0]
    assert search_entry.result["ReviewCaseId"] == case_id


def test_the_searcher_cannot_review_their_own_search(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True)
    face_id = service.index_faces(collection_id="c", image=image_bytes(*OBAMA))["FaceRecords"][0]["Face"]["FaceId"]
    result = service.search_faces_by_image(collection_id="c", image=image_bytes(*OBAMA_2))  # as the local admin
    with pytest.raises(AccessDeniedException, match="own search"):
        service.decide_review(
            case_id=result["FaceledgerReview"]["CaseId"], face_id=face_id, decision="confirm", note="looks like him"
        )


def test_review_over_http(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service, running_server(service) as server:
        admin = server.client_with_role("admin")
        admin.create_collection(CollectionId="c")
        face_id = admin.index_faces(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA)})["FaceRecords"][0]["Face"][
            "FaceId"
        ]
        policy = call_extension(
            server,
            service.create_access_key(role="admin"),
            "PutCollectionPolicy",
            {"CollectionId": "c", "ReviewRequired": True},
        )
        assert policy == (200, {**policy[1], "ReviewRequired": True})  # the same members as the request
        searcher = server.client_with_role("searcher")
        reply = searcher.search_faces_by_image(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA_2)})
        case_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-faceledger-review-case"]
        statuses = []
        for _ in range(2):
            status, case = call_extension(
                server,
                service.create_access_key(role="reviewer"),
                "DecideReview",
                {"CaseId": case_id, "FaceId": face_id, "Decision": "confirm", "Note": "same man"},
            )
            assert status == 200
            statuses.append(case["Candidates"][0]["Status"])
        assert statuses == ["UNVERIFIED", "VERIFIED"]
        status, error = call_extension(
            server,
            service.create_access_key(role="searcher"),
            "DecideReview",
            {"CaseId": case_id, "FaceId": face_id, "Decision": "confirm", "Note": "x"},
        )
        assert (status, error["__type"]) == (400, "AccessDeniedException")
        status, listing = call_extension(
            server,
            service.create_access_key(role="reviewer"),
            "ListReviewCases",
            {"Status": "CLOSED", "AwaitingMyDecision": False, "MaxResults": 1},
        )
        assert status == 200 and [c["CaseId"] for c in listing["Cases"]] == [case_id] and "NextToken" not in listing


def test_a_reviewer_scoped_to_one_collection_sees_and_decides_only_its_cases(service: FaceService) -> None:
    cases = {}
    for collection in ("c1", "c2"):
        service.create_collection(collection_id=collection)
        service.put_collection_policy(collection_id=collection, review_required=True)
        service.index_faces(collection_id=collection, image=image_bytes(*OBAMA))
        with acting_as(RequestContext(SEARCHER)):
            found = service.search_faces_by_image(collection_id=collection, image=image_bytes(*OBAMA_2))
        cases[collection] = (found["FaceledgerReview"]["CaseId"], found["FaceMatches"][0]["Face"]["FaceId"])
    scoped = Caller("FLREVIEWERSCOPED0000", Role.REVIEWER, ("c1",))
    with acting_as(RequestContext(scoped)):
        assert [c["CollectionId"] for c in service.list_review_cases()["Cases"]] == ["c1"]
        with pytest.raises(AccessDeniedException):
            service.list_review_cases(collection_id="c2")
        with pytest.raises(AccessDeniedException):
            service.get_review_case(case_id=cases["c2"][0])
    with pytest.raises(AccessDeniedException):
        _decide(service, scoped, cases["c2"][0], cases["c2"][1], "confirm")
    assert _decide(service, scoped, cases["c1"][0], cases["c1"][1], "confirm")["CollectionId"] == "c1"
    assert all(
        d["Reviewer"] != scoped.access_key_id
        for c in service.get_review_case(case_id=cases["c2"][0])["Candidates"]
        for d in c["Decisions"]
    )  # its confirmation never counted
    entries = [e for e in service.ledger.entries() if e.access_key_id == scoped.access_key_id]
    assert [(e.operation, e.collection_id, e.outcome) for e in entries] == [
        ("ListReviewCases", None, "ok"),
        ("ListReviewCases", "c2", "denied"),
        ("GetReviewCase", "c2", "denied"),
        ("DecideReview", "c2", "denied"),
        ("DecideReview", "c1", "ok"),
    ]


def test_the_cli_reviewer_is_the_os_account_or_a_reviewer_key_never_user(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from faceledger.cli.main import app

    runner, data = CliRunner(), ["--data-dir", str(tmp_path)]
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        service.put_collection_policy(collection_id="c", review_required=True)
        face_id = service.index_faces(collection_id="c", image=image_bytes(*OBAMA))["FaceRecords"][0]["Face"]["FaceId"]
        alice, bob = (service.create_access_key(role="reviewer") for _ in range(2))
    searched = runner.invoke(app, [*data, "search", "-c", "c", str(data_path(*OBAMA_2)), "--json"])
    assert searched.exit_code == 0, searched.output
    case_id = json.loads(runner.invoke(app, [*data, "review", "list", "--json"]).stdout)["Cases"][0]["CaseId"]

    def decide(*extra: str, env: dict[str, str]):
        return runner.invoke(
            app, [*data, "review", "confirm", case_id, face_id, "--note", "same", *extra, "--json"], env=env
        )

    # the search ran as this OS account: another $USER is still that account, the searcher
    for user in ("alice", "bob"):
        refused = decide(env={"USER": user, "LOGNAME": user})
        assert refused.exit_code == 7 and "cannot review their own search" in refused.output
    key = ["--access-key-id", alice["AccessKeyId"]]
    wrong = decide(*key, env={"FACELEDGER_SECRET_ACCESS_KEY": "not it"})
    assert wrong.exit_code == 7 and "do not sign in" in wrong.output
    with faceledger.open(tmp_path) as service:
        refused = [e for e in service.ledger.entries() if e.operation == "DecideReview" and e.outcome == "denied"]
    assert refused and refused[-1].error == "AccessDeniedException"
    for _ in range(2):  # one reviewer twice is still one reviewer
        once = decide(*key, env={"FACELEDGER_SECRET_ACCESS_KEY": alice["SecretAccessKey"]})
        assert once.exit_code == 0, once.output
        assert json.loads(once.stdout)["Candidates"][0]["Status"] != "VERIFIED"
    twice = decide("--access-key-id", bob["AccessKeyId"], env={"FACELEDGER_SECRET_ACCESS_KEY": bob["SecretAccessKey"]})
    assert json.loads(twice.stdout)["Candidates"][0]["Status"] == "VERIFIED"
    reviewers = {d["Reviewer"] for d in json.loads(twice.stdout)["Candidates"][0]["Decisions"]}
    assert reviewers == {alice["AccessKeyId"], bob["AccessKeyId"]}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def test_review_required_collections_keep_sealed_face_crops_that_go_with_the_face(service: FaceService) -> None:
    """A reviewer must see the faces to decide: a review-required collection keeps a small crop of
    each indexed face and of each probe, sealed like the templates, erased with the face."""
    service.create_collection(collection_id="plain")
    plain_face = service.index_faces(collection_id="plain", image=image_bytes(*OBAMA))["FaceRecords"][0]
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True)
    indexed = service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    with acting_as(RequestContext(SEARCHER)):
        result = service.search_faces_by_image(collection_id="c", image=image_bytes(*OBAMA_2))
    case_id = result["FaceledgerReview"]["CaseId"]

    assert service.store.face_crops("plain", [plain_face["Face"]["FaceId"]]) == {}  # kept only where needed
    sealed = service.store.face_crops("c", [face_id])[face_id]
    with acting_as(RequestContext(ALICE)):
        plain = service.get_review_case(case_id=case_id)
        case = service.get_review_case(case_id=case_id, include_face_crops=True)
    assert "ProbeFaceCrop" not in plain and "FaceCrop" not in plain["Candidates"][0]
    crop = case["Candidates"][0]["FaceCrop"]
    assert crop not in sealed and crop[:2] == b"\xff\xd8"  # a JPEG, and not what the store holds
    assert max(_jpeg_size(crop)) <= 160 and max(_jpeg_size(case["ProbeFaceCrop"])) <= 160
    assert case["ProbeFaceCrop"] != crop  # the probe is the other photo's face
    candidate = case["Candidates"][0]
    assert candidate["FalseMatchRate"] is not None and candidate["FalseMatchRateUpper95"] >= candidate["FalseMatchRate"]
    shown = [e for e in service.ledger.entries(operation="GetReviewCase")]
    assert [e.result.get("FaceCropsShown") for e in shown] == [None, 2]

    # no file of the data directory (the SQLite store among them) holds the crop in the clear
    assert not [p for p in service.settings.data_dir.rglob("*") if p.is_file() and crop in p.read_bytes()]

    # a probe that matched nobody is not kept
    with acting_as(RequestContext(SEARCHER)):
        missed = service.search_faces_by_image(collection_id="c", image=image_bytes(*BIDEN))
    assert (
        missed["FaceMatches"] == [] and service.store.reviews.probe_crop(missed["FaceledgerReview"]["CaseId"]) is None
    )
    # a search by face id: its probe is the face's own crop, counted once
    service.index_faces(collection_id="c", image=image_bytes(*OBAMA_2), external_image_id="obama")
    with acting_as(RequestContext(SEARCHER)):
        by_id = service.search_faces(collection_id="c", face_id=face_id)
    with acting_as(RequestContext(ALICE)):
        shown = service.get_review_case(case_id=by_id["FaceledgerReview"]["CaseId"], include_face_crops=True)
    assert shown["ProbeFaceCrop"] == crop and shown["Candidates"][0]["FaceCrop"] is not None
    assert list(service.ledger.entries(operation="GetReviewCase"))[-1].result["FaceCropsShown"] == 2

    # erased with the face
    service.erase_faces(collection_id="c", face_ids=[face_id])
    assert service.store.face_crops("c", [face_id]) == {}
    with acting_as(RequestContext(ALICE)):
        after = service.get_review_case(case_id=case_id, include_face_crops=True)
    assert after["Candidates"][0]["FaceCrop"] is None and after["Candidates"][0]["Erased"] is True
    # and kept by no collection that stops requiring review
    service.update_collection_policy(collection_id="c", review_required=False)
    assert service.store.reviews.probe_crop(case_id) is None
    remaining = [f["FaceId"] for f in service.list_faces(collection_id="c")["Faces"]]
    assert remaining and service.store.face_crops("c", remaining) == {}


def test_a_rotated_template_key_reseals_the_crops(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True)
    face_id = service.index_faces(collection_id="c", image=image_bytes(*OBAMA))["FaceRecords"][0]["Face"]["FaceId"]
    result = service.search_faces_by_image(collection_id="c", image=image_bytes(*OBAMA_2))
    case_id = result["FaceledgerReview"]["CaseId"]
    with acting_as(RequestContext(ALICE)):
        before = service.get_review_case(case_id=case_id, include_face_crops=True)
    sealed = service.store.face_crops("c", [face_id])[face_id]
    service.rotate_template_key()
    assert service.store.face_crops("c", [face_id])[face_id] != sealed
    with acting_as(RequestContext(ALICE)):
        after = service.get_review_case(case_id=case_id, include_face_crops=True)
    assert after["ProbeFaceCrop"] == before["ProbeFaceCrop"]
    assert after["Candidates"][0]["FaceCrop"] == before["Candidates"][0]["FaceCrop"]


def test_probe_crops_are_kept_no_longer_than_the_collections_retention(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True, retention_days=30)
    service.index_faces(collection_id="c", image=image_bytes(*OBAMA))
    case_id = service.search_faces_by_image(collection_id="c", image=image_bytes(*OBAMA_2))["FaceledgerReview"][
        "CaseId"
    ]
    service.purge()
    assert service.store.reviews.probe_crop(case_id) is not None
    service.purge(now=time.time() + 31 * 86_400)
    assert service.store.reviews.probe_crop(case_id) is None


def test_crops_the_ledger_and_erasure_over_http(tmp_path: Path) -> None:
    """The console's operations are the API's too: GetReviewCase with IncludeFaceCrops,
    ListLedgerEntries and VerifyLedger for an auditor, EraseFaces for an indexer."""
    with faceledger.open(tmp_path) as service, running_server(service) as server:
        service.create_collection(collection_id="c")
        service.put_collection_policy(collection_id="c", review_required=True)
        service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
        reply = server.client_with_role("searcher").search_faces_by_image(
            CollectionId="c", Image={"Bytes": image_bytes(*OBAMA_2)}
        )
        case_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-faceledger-review-case"]
        reviewer = service.create_access_key(role="reviewer")
        status, case = call_extension(server, reviewer, "GetReviewCase", {"CaseId": case_id, "IncludeFaceCrops": True})
        assert status == 200
        assert base64.b64decode(case["Candidates"][0]["FaceCrop"])[:2] == b"\xff\xd8"
        assert base64.b64decode(case["ProbeFaceCrop"])[:2] == b"\xff\xd8"
        assert case["Candidates"][0]["FalseMatchRate"] is not None

        auditor = service.create_access_key(role="auditor")
        status, page = call_extension(
            server, auditor, "ListLedgerEntries", {"Operation": "GetReviewCase", "MaxResults": 5}
        )
        assert status == 200 and [e["operation"] for e in page["Entries"]] == ["GetReviewCase"]
        assert page["Entries"][0]["result"]["FaceCropsShown"] == 2
        status, verified = call_extension(server, auditor, "VerifyLedger", {})
        assert status == 200 and verified["Intact"] is True
        assert call_extension(server, reviewer, "VerifyLedger", {})[0] == 400  # AccessDeniedException

        indexer = service.create_access_key(role="indexer")
        status, receipt = call_extension(
            server, indexer, "EraseFaces", {"CollectionId": "c", "ExternalImageId": "obama"}
        )
        assert status == 200 and len(receipt["ErasedFaceIds"]) == 1
        assert service.list_faces(collection_id="c")["Faces"] == []


def test_a_reviewers_queue_lists_only_what_awaits_their_decision_a_page_at_a_time(
    service: FaceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListReviewCases pages (MaxResults, NextToken) and filters: a reviewer's queue holds the
    open cases of others' searches with a candidate they have not decided yet, so a case they
    confirmed leaves it while it waits for a second reviewer."""
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", review_required=True)
    obama, _ = (
        service.index_faces(collection_id="c", image=image_bytes(*p))["FaceRecords"][0]["Face"]["FaceId"]
        for p in (OBAMA, OBAMA_2)
    )
    carol = Caller("FLADMINCAROL00000000", Role.ADMIN, None)  # searches, and may review others' searches
    cases = []
    for who in (SEARCHER, SEARCHER, carol, SEARCHER):
        with acting_as(RequestContext(who)):
            found = service.search_faces(collection_id="c", face_id=obama)
        cases.append((found["FaceledgerReview"]["CaseId"], found["FaceMatches"][0]["Face"]["FaceId"]))

    def listed(who: Caller, **filters) -> list[str]:
        with acting_as(RequestContext(who)):
            return [c["CaseId"] for c in service.list_review_cases(**filters)["Cases"]]

    ids = [case_id for case_id, _ in cases]
    assert listed(ALICE) == ids  # oldest first
    assert listed(carol, awaiting_my_decision=True) == [ids[0], ids[1], ids[3]]  # not her own search
    _decide(service, ALICE, *cases[0], "confirm")
    assert listed(ALICE, awaiting_my_decision=True) == ids[1:]  # decided by her: out of her queue
    assert listed(BOB, awaiting_my_decision=True) == ids  # still open: waiting for a second reviewer
    _decide(service, BOB, *cases[0], "confirm")
    _decide(service, BOB, *cases[1], "reject")
    assert listed(ALICE, status="CLOSED") == ids[:2] and listed(ALICE, status="OPEN") == ids[2:]
    assert listed(ALICE, opened_by=SEARCHER.access_key_id, status="OPEN") == [ids[3]]

    pages, token = [], None
    with acting_as(RequestContext(BOB)):
        while True:
            page = service.list_review_cases(max_results=3, next_token=token)
            pages.append([c["CaseId"] for c in page["Cases"]])
            if not (token := page.get("NextToken")):
                break
        assert pages == [ids[:3], ids[3:]]
        pages_token = service.list_review_cases(max_results=3)["NextToken"]
        first = service.list_review_cases(status="OPEN", max_results=1)
        with pytest.raises(InvalidPaginationTokenException):  # a token of another listing
            service.list_review_cases(status="CLOSED", next_token=first["NextToken"])
        bad_values = [
            {"status": "PENDING"},
            {"max_results": 0},
            {"max_results": 1001},
            {"awaiting_my_decision": "yes"},
            {"opened_by": "FL\x00"},  # PostgreSQL's text takes no NUL: was a 500
            {"opened_by": "FL\ud800"},  # a lone surrogate, which JSON can carry: was a 500 on both stores
        ]
        for bad in bad_values:
            with pytest.raises(InvalidParameterException):
                service.list_review_cases(**bad)
        for forged in ("0 \x00", "0 \ud800", "0 ../x", "nan", "0"):
            with pytest.raises(InvalidPaginationTokenException):
                service.list_review_cases(next_token=encode_token("reviews::::0", forged))
        # cases erased between the listing's two reads (their collection deleted) leave the page short, not the end
        monkeypatch.setattr(service.store.reviews, "case", lambda case_id: None)
        page = service.list_review_cases(max_results=3)
        assert page["Cases"] == [] and page["NextToken"] == pages_token


@pytest.mark.parametrize("text", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_case_id_or_ledger_filter_no_text_store_keeps_is_refused_by_name(service: FaceService, text: str) -> None:
    """The web console's addresses and forms reach the service without the API's JSON check: a
    NUL or a lone surrogate there reached the database (a 500 on PostgreSQL, or on both)."""
    with pytest.raises(ResourceNotFoundException):
        service.get_review_case(case_id=f"case{text}")
    with pytest.raises(InvalidParameterException):
        service.list_ledger_entries(operation=f"SearchFaces{text}")
