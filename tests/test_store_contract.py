"""The store contract (store/interface.py): what every backend must do, tested on each.

A new backend is added to BACKENDS and must pass every test here unchanged. Each is given the
test's temporary folder and the session's PostgreSQL server (tests/postgres.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faceledger.errors import (
    ConflictException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from faceledger.ledger.chain import entry_hash
from faceledger.store import (
    AccessKey,
    Candidate,
    CollectionPolicy,
    ConsentRecord,
    FaceRecord,
    ImageRecord,
    LedgerEntry,
    ReviewCase,
    Store,
    open_store,
)

from postgres import PostgreSQLServer

# this module chooses its backends itself, below
pytestmark = pytest.mark.backends("sqlite")

BACKENDS: dict[str, Callable[[Path, PostgreSQLServer], Store]] = {
    "sqlite": lambda tmp, _server: open_store(tmp / "store.sqlite3"),
    "postgresql": lambda _tmp, server: open_store(server.new_database()),
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    server = request.getfixturevalue("postgresql_server") if request.param == "postgresql" else None
    opened = BACKENDS[request.param](tmp_path, server)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def reopen(store: Store) -> Callable[[], Store]:
    """Open the same store again, as another process would."""
    database = store.database  # type: ignore[attr-defined]
    return lambda: open_store(getattr(database, "url", None) or database.path)


def _image(collection_id: str, faces: int, sha: str | None = None) -> tuple[ImageRecord, list[FaceRecord]]:
    image_id = str(uuid.uuid4())
    image = ImageRecord(image_id, collection_id, sha or uuid.uuid4().hex, "ext", 640, 480, faces, time.time())
    records = [
        FaceRecord(
            face_id=str(uuid.uuid4()),
            collection_id=collection_id,
            image_id=image_id,
            external_image_id="ext",
            image_sha256=image.image_sha256,
            bounding_box={"Left": 0.1, "Top": 0.2, "Width": 0.3, "Height": 0.4},
            confidence=99.5,
            landmarks={"nose": (0.5, 0.5)},
            quality={"Sharpness": 50.0},
            template=bytes([n]) * 40,
            created_at=time.time(),
        )
        for n in range(faces)
    ]
    return image, records


def test_a_unit_of_work_commits_all_or_nothing(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    committed: list[str] = []
    with pytest.raises(RuntimeError):
        with store.unit_of_work():
            store.add_image(*_image("c", 2))
            store.create_user("c", "u", time.time())
            store.after_commit(lambda: committed.append("rolled back"))
            raise RuntimeError("crash after the writes")
    assert store.get_collection("c").face_count == 0 and store.list_users("c", None, 10) == []
    assert committed == []
    with store.unit_of_work():
        with store.unit_of_work():  # a nested unit joins the outer one
            store.add_image(*_image("c", 2))
            store.after_commit(lambda: committed.append("inner"))
        assert committed == []  # nothing runs before the outermost unit commits
        store.create_user("c", "u", time.time())
    assert committed == ["inner"]
    assert store.get_collection("c").face_count == 2 and store.get_user("c", "u").user_id == "u"


def test_after_commit_outside_a_unit_runs_at_once(store: Store) -> None:
    ran: list[int] = []
    store.after_commit(lambda: ran.append(1))
    assert ran == [1]


def test_generations_move_with_every_face_change_and_are_never_reused(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    created = store.generation("c")
    assert created is not None and store.generation("missing") is None
    added = store.add_image(*_image("c", 3))
    assert (added.before, added.added) == (created, True) and added.after > created
    assert len(set(added.seqs.values())) == 3
    seqs = list(added.seqs.values())
    assert seqs == sorted(seqs) and list(added.seqs) == [record.face_id for _, record in store.list_faces("c")]
    store.create_user("c", "u", time.time())
    assert store.generation("c") == added.after  # users do not change what the index holds
    face_ids = [record.face_id for _, record in store.list_faces("c")]
    removed = store.delete_faces("c", face_ids[:1] + ["00000000-0000-0000-0000-000000000000"])
    assert (removed.before, removed.added) == (added.after, False) and removed.after > added.after
    assert removed.seqs == {face_ids[0]: seqs[0]}
    ids, templates, generation = store.load_templates("c")
    assert ids == seqs[1:] and generation == removed.after and [face_id for face_id, _ in templates] == face_ids[1:]
    # a collection deleted and created again never shows a generation its old self had
    seen = {created, added.after, removed.after}
    store.delete_collection("c")
    store.create_collection("c", "model-v1", time.time())
    again = store.add_image(*_image("c", 1))
    assert not {again.before, again.after} & seen


def test_the_change_log_says_what_changed_since_a_generation(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    start = store.generation("c")
    first = store.add_image(*_image("c", 2))
    second = store.add_image(*_image("c", 2))
    # one face of each image goes: the first's was there at ``first.after``, the second's was not
    gone = [next(iter(first.seqs)), next(iter(second.seqs))]
    removed = store.delete_faces("c", gone)
    since_first = store.face_changes_since("c", first.after)
    assert since_first is not None and since_first.generation == removed.after
    assert since_first.added_seqs == [list(second.seqs.values())[1]]
    assert [face_id for face_id, _ in since_first.added_templates] == [list(second.seqs)[1]]
    assert since_first.removed_seqs == [first.seqs[gone[0]]]
    since_start = store.face_changes_since("c", start)
    assert since_start is not None and since_start.removed_seqs == []
    assert since_start.added_seqs == [seq for seq, _ in store.list_faces("c")]
    nothing = store.face_changes_since("c", removed.after)
    assert nothing is not None and nothing.added_seqs == nothing.removed_seqs == []
    # a generation the log does not know, a move to another model, a collection gone: read it all
    assert store.face_changes_since("c", start - 1) is None
    store.move_to_model("c", "model-v2", {})
    assert store.face_changes_since("c", removed.after) is None
    store.delete_collection("c")
    assert store.face_changes_since("c", start) is None


def test_a_background_duty_is_held_by_one_process_at_a_time(store: Store, reopen) -> None:
    other = reopen()
    try:
        with store.duty("purge") as mine:
            with other.duty("purge") as theirs, other.duty("sign") as signing:
                assert mine and not theirs and signing
        with other.duty("purge") as theirs:
            assert theirs
    finally:
        other.close()


def test_templates_are_opaque_bytes_kept_as_given(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    image, records = _image("c", 2)
    store.add_image(image, records)
    [(seq, first), (_, second)] = store.list_faces("c")
    assert first == records[0] and second == records[1]
    assert store.faces_by_seq("c", [seq]) == {seq: records[0]}
    assert store.get_face("c", records[1].face_id)[1] == records[1]
    assert store.template_key() is None
    assert store.reseal_templates(lambda face_id, sealed: sealed[::-1], "key-2") == 2
    assert store.template_key() == "key-2"
    assert store.get_face("c", records[0].face_id)[1].template == records[0].template[::-1]


def test_missing_and_duplicate_things_raise_rekognition_errors(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time(), {"team": "a"})
    with pytest.raises(ResourceAlreadyExistsException):
        store.create_collection("c", "model-v1", time.time())
    for call in (
        lambda: store.get_collection("x"),
        lambda: store.require_collection("x"),
        lambda: store.delete_collection("x"),
        lambda: store.get_face("c", str(uuid.uuid4())),
        lambda: store.get_user("c", "nobody"),
        lambda: store.delete_user("c", "nobody"),
        lambda: store.add_image(*_image("x", 1)),
        lambda: store.create_user("x", "u", 0.0),
        lambda: store.access_keys.delete("FLNONE"),
        lambda: store.access_keys.set_enabled("FLNONE", True),
    ):
        with pytest.raises(ResourceNotFoundException):
            call()
    store.create_user("c", "u", time.time())
    with pytest.raises(ConflictException):
        store.create_user("c", "u", time.time())
    with pytest.raises(ServiceQuotaExceededException):
        store.tag_collection("c", {"b": "1", "c": "2"}, max_tags=2)
    assert store.collection_tags("c") == {"team": "a"}  # the refused change left nothing


def test_collections_users_and_faces_list_in_order(store: Store) -> None:
    for name in ("b", "a", "c"):
        store.create_collection(name, "model-v1", time.time())
    assert store.list_collection_ids(None, 10) == ["a", "b", "c"] and store.face_model_version("a") == "model-v1"
    assert store.list_collection_ids("a", 1) == ["b"] and store.list_collection_ids(None, 10, only=["c"]) == ["c"]
    store.add_image(*_image("a", 3))
    faces = [record.face_id for _, record in store.list_faces("a")]
    store.create_user("a", "u", time.time())
    store.set_face_users("a", faces[:2], "u")
    assert store.get_user("a", "u").face_count == 2
    assert [r.face_id for _, r in store.list_faces("a", user_id="u")] == faces[:2]
    store.delete_user("a", "u")
    assert all(r.user_id is None for _, r in store.list_faces("a"))
    assert sorted(store.face_ids_where("a", external_image_id="ext")) == sorted(faces)
    assert store.face_ids_where("a", created_before=0.0) == []
    store.delete_collection("a")
    assert store.list_collection_ids(None, 10) == ["b", "c"]


def test_a_collection_moves_to_another_model_in_one_step(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    image, records = _image("c", 3)
    added = store.add_image(image, records)
    assert [i.image_id for i in store.list_images("c")] == [image.image_id]
    moved = {r.face_id: b"new" + r.template for r in records}
    store.move_to_model("c", "model-v2", moved)
    assert store.face_model_version("c") == "model-v2" and store.generation("c") > added.after
    assert {r.face_id: r.template for _, r in store.list_faces("c")} == moved


def test_an_image_can_be_stored_only_if_new(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    first = store.add_image(*_image("c", 1, sha="ef" * 32), unique=True)
    assert first is not None
    assert store.add_image(*_image("c", 2, sha="ef" * 32), unique=True) is None  # nothing written
    assert store.get_collection("c").face_count == 1 and store.generation("c") == first.after
    assert store.add_image(*_image("c", 1, sha="ef" * 32)) is not None  # asked for: duplicates allowed


def test_a_collection_keeps_its_threshold_table_and_image_hashes(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    assert store.threshold_table("c") is None
    store.set_threshold_table("c", '{"rows": []}', time.time())
    assert store.threshold_table("c") == '{"rows": []}'
    image, records = _image("c", 1, sha="ab" * 32)
    store.add_image(image, records)
    assert store.find_image("c", "ab" * 32).image_id == image.image_id and store.find_image("c", "cd" * 32) is None


def test_policies_and_consents(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    assert store.policies.policy("c") == CollectionPolicy()
    policy = CollectionPolicy(purpose_required=True, min_threshold=90.0, retention_days=30, review_required=True)
    assert store.policies.update_policy("c", lambda _: policy, time.time()) == (CollectionPolicy(), policy)
    assert store.policies.policy("c") == policy and store.policies.retained_collections() == [("c", 30)]
    consent = ConsentRecord("k1", "c", "ext", "basis", "ref", 10.0, 20.0, None, 10.0)
    store.policies.add_consent(consent)
    assert store.policies.consents("c", "ext") == [consent] and store.policies.consents("c", "other") == []
    assert store.policies.expired_consents(15.0) == [] and store.policies.expired_consents(20.0) == [consent]
    assert store.policies.withdraw("k1", 30.0).withdrawn_at == 30.0
    assert store.policies.withdraw("k1", 40.0).withdrawn_at == 30.0  # withdrawn once
    assert store.policies.withdraw("unknown", 30.0) is None


def test_review_cases_keep_every_decision(store: Store) -> None:
    store.create_collection("c", "model-v1", time.time())
    case = ReviewCase(
        "case-1",
        "c",
        "SearchFacesByImage",
        "FLSEARCHER",
        1.0,
        "purpose",
        "ref",
        "sha",
        [Candidate("f1", 91.0), Candidate("f2", 95.0)],
    )
    store.reviews.open_case(case)
    store.reviews.decide("case-1", "f1", "FLREVIEWER1", "confirm", "same scar", 2.0)
    store.reviews.decide("case-1", "f1", "FLREVIEWER1", "reject", "changed my mind", 3.0)  # replaces
    store.reviews.decide("case-1", "f1", "FLREVIEWER2", "confirm", "same", 4.0)
    found = store.reviews.case("case-1")
    assert [c.face_id for c in found.candidates] == ["f2", "f1"]  # most similar first
    assert [(d["reviewer"], d["decision"]) for d in found.candidates[1].decisions] == [
        ("FLREVIEWER1", "reject"),
        ("FLREVIEWER2", "confirm"),
    ]
    assert store.reviews.case_positions("c") == [(1.0, "case-1")] and store.reviews.case_positions("other") == []
    assert store.reviews.case("nope") is None


def test_review_case_listing_filters_as_each_case_reads(store: Store) -> None:
    """The listing decides OPEN and CLOSED in SQL; it must agree with Candidate.status, case by
    case, over random decisions (REJECT by anyone, two confirmations, a changed mind)."""
    import random

    chance = random.Random(7)
    reviewers = ("R1", "R2", "R3")
    for collection in ("c", "d"):
        store.create_collection(collection, "model-v1", time.time())
    for n in range(40):
        opener = chance.choice(("S1", "R1"))
        case = ReviewCase(
            f"case-{n:02}", chance.choice("cd"), "SearchFacesByImage", opener, float(n // 2), None, None, "sha",
            [Candidate(f"f{k}", 90.0 + k) for k in range(chance.randint(1, 3))],
        )  # fmt: skip
        store.reviews.open_case(case)
        for candidate in case.candidates:
            for reviewer in chance.sample(reviewers, chance.randint(0, 3)):
                decision = chance.choice(("confirm", "confirm", "reject"))
                store.reviews.decide(case.case_id, candidate.face_id, reviewer, decision, "", float(n))
    cases = [
        store.reviews.case(case_id)
        for case_id in _case_ids(
            store,
        )
    ]
    assert [c.case_id for c in cases] == [f"case-{n:02}" for n in range(40)]  # oldest first, then by id
    is_open = {c.case_id: any(k.status == "UNVERIFIED" for k in c.candidates) for c in cases}
    assert 5 < sum(is_open.values()) < 35  # both kinds are met
    assert _case_ids(store, status="OPEN") == [i for i, o in is_open.items() if o]
    assert _case_ids(store, status="CLOSED") == [i for i, o in is_open.items() if not o]
    for reviewer in reviewers:
        awaiting = [
            c.case_id
            for c in cases
            if c.opened_by != reviewer
            and any(
                k.status == "UNVERIFIED" and all(d["reviewer"] != reviewer for d in k.decisions) for k in c.candidates
            )
        ]
        assert _case_ids(store, awaiting=reviewer) == awaiting
    assert _case_ids(store, "d", opened_by="S1") == [
        c.case_id for c in cases if c.collection_id == "d" and c.opened_by == "S1"
    ]
    assert _case_ids(store, visible=["d"]) == _case_ids(store, "d")
    assert _case_ids(store, visible=[]) == []
    # pages of 7 from the last (opened_at, case_id) seen, equal cases at one time included
    walked, after = [], None
    while page := store.reviews.case_positions(after=after, limit=7):
        walked += page
        after = page[-1]
    assert walked == [(c.opened_at, c.case_id) for c in cases]


def _case_ids(store: Store, collection_id: str | None = None, **filters) -> list[str]:
    return [case_id for _, case_id in store.reviews.case_positions(collection_id, **filters)]


def test_access_keys_keep_only_sealed_secrets(store: Store) -> None:
    key = AccessKey("FLKEY", "searcher", ("c",), True, 1.0, "for tests")
    store.access_keys.add(key, b"n" * 12 + b"sealed secret")
    assert store.access_keys.get("FLKEY") == key and store.access_keys.list() == [key]
    assert store.access_keys.sealed_secret("FLKEY") == b"n" * 12 + b"sealed secret"
    store.access_keys.set_enabled("FLKEY", False)
    assert not store.access_keys.get("FLKEY").enabled
    store.access_keys.delete("FLKEY")
    assert store.access_keys.get("FLKEY") is None and store.access_keys.sealed_secret("FLKEY") is None


def test_request_tokens_expire(store: Store) -> None:
    store.request_tokens.record("CreateUser", "t", "digest", {"a": 1}, now=100.0, expire_before=0.0)
    assert store.request_tokens.find("CreateUser", "t", newer_than=50.0) == ("digest", {"a": 1})
    assert store.request_tokens.find("CreateUser", "t", newer_than=100.0) is None
    store.request_tokens.record("CreateUser", "t", "other", {"b": 2}, now=101.0, expire_before=0.0)
    assert store.request_tokens.find("CreateUser", "t", newer_than=50.0) == ("digest", {"a": 1})  # first stands


def test_ledger_appends_are_serialised_and_chained(store: Store) -> None:
    def append(n: int) -> None:
        for _ in range(n):
            store.ledger.append(LedgerEntry("ListCollections", time.time(), "FLKEY", "admin"), entry_hash)

    threads = [threading.Thread(target=append, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    chained = list(store.ledger.chained())
    assert [entry.seq for entry, _, _ in chained] == list(range(1, 101))
    for (entry, prev, digest), (_, _, before) in zip(chained[1:], chained, strict=False):
        assert prev == before and digest == entry_hash(prev, entry)
    assert store.ledger.head() == (100, chained[-1][2])
    store.ledger.put_signature(100, chained[-1][2], b"signature", time.time())
    assert list(store.ledger.signatures()) == [(100, chained[-1][2], b"signature")]
    assert [e.seq for e in store.ledger.entries(limit=3)] == [1, 2, 3]
    assert list(store.ledger.entries(collection_id="c")) == []
