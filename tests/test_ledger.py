"""The audit ledger: one entry per operation (denied and failed too), written with the action,
hash-chained and signed, and any edit, deletion or reordering found by ``audit verify``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.ledger.chain import SIGN_EVERY, Ledger, entry_hash
from faceledger.service import FaceService

from api_server import running_server
from conftest import data_path, database_beneath, image_bytes, stored_bytes

runner = CliRunner()
OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_2 = ("facerec_examples", "obama", "obama2.jpg")


def _count(service: FaceService) -> int:
    return sum(1 for _ in service.ledger.entries())


def _last(service: FaceService):
    return list(service.ledger.entries())[-1]


def test_every_api_call_leaves_exactly_one_entry(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service, running_server(service) as server:
        admin = server.client_with_role("admin")
        searcher = server.client_with_role("searcher")

        def purpose_headers(request, **kwargs):
            request.headers["X-Faceledger-Purpose"] = "missing-person search"
            request.headers["X-Faceledger-Case"] = "CASE-42"

        # added before signing, so the headers are covered by the signature
        searcher.meta.events.register("before-sign.rekognition.*", purpose_headers)
        calls = [
            ("CreateCollection", "ok", lambda: admin.create_collection(CollectionId="c")),
            ("IndexFaces", "ok", lambda: admin.index_faces(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA)})),
            (
                "SearchFacesByImage",
                "ok",
                lambda: searcher.search_faces_by_image(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA_2)}),
            ),
            (
                "IndexFaces",
                "denied",
                lambda: searcher.index_faces(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA)}),
            ),
            ("DescribeCollection", "error", lambda: admin.describe_collection(CollectionId="missing")),
            ("DetectFaces", "error", lambda: admin.detect_faces(Image={"Bytes": b"not an image"})),
            ("ListFaces", "error", lambda: admin.list_faces(CollectionId="c", NextToken="forged")),
            (
                "CompareFaces",
                "ok",
                lambda: admin.compare_faces(
                    SourceImage={"Bytes": image_bytes(*OBAMA)}, TargetImage={"Bytes": image_bytes(*OBAMA_2)}
                ),
            ),
        ]
        for operation, outcome, call in calls:
            before = _count(service)
            try:
                call()
            except Exception:  # noqa: BLE001 - denied and failed calls are part of the test
                pass
            assert _count(service) == before + 1, operation
            entry = _last(service)
            assert (entry.operation, entry.outcome) == (operation, outcome)
        search = [e for e in service.ledger.entries() if e.operation == "SearchFacesByImage"][0]
        assert (search.purpose, search.case_ref) == ("missing-person search", "CASE-42")
        assert search.input_sha256 and len(search.input_sha256[0]) == 64
        assert search.result["FaceMatches"][0]["Similarity"] > 88
        indexed = [e for e in service.ledger.entries() if e.operation == "IndexFaces" and e.outcome == "ok"][0]
        assert search.result["FaceMatches"][0]["FaceId"] == indexed.result["IndexedFaceIds"][0]
        denied = [e for e in service.ledger.entries() if e.outcome == "denied"][0]
        assert denied.role == "searcher" and denied.error == "AccessDeniedException"
        assert service.ledger.verify() == []


def test_no_action_without_its_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        real_append = Ledger.append
        calls = {"n": 0}

        def ledger_fails_once(ledger, entry):
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("disk I/O error")
            return real_append(ledger, entry)

        monkeypatch.setattr(Ledger, "append", ledger_fails_once)
        with pytest.raises(OSError):
            service.index_faces(collection_id="c", image=image_bytes(*OBAMA))
        monkeypatch.setattr(Ledger, "append", real_append)
        assert service.describe_collection(collection_id="c")["FaceCount"] == 0  # rolled back with it
        assert len(service.indexes.for_search("c")) == 0
        failed = [e for e in service.ledger.entries() if e.operation == "IndexFaces"]
        assert [(e.outcome, e.error) for e in failed] == [("error", "InternalServerError")]


def _ledger_with_entries(tmp_path: Path) -> Path:
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        for _ in range(4):
            service.list_faces(collection_id="c")
        service.ledger.sign_head()
    return tmp_path


def _verify(tmp_path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "audit", "verify"])
    return result.exit_code, result.stderr + result.stdout


def test_audit_verify_passes_an_intact_ledger(tmp_path: Path) -> None:
    _ledger_with_entries(tmp_path)
    code, output = _verify(tmp_path)
    assert code == 0 and "Ledger intact: 5 entries" in output


def test_audit_verify_finds_an_edited_entry(tmp_path: Path) -> None:
    with database_beneath(_ledger_with_entries(tmp_path)) as db:
        db.execute("UPDATE ledger SET access_key_id = 'someone-else' WHERE seq = 3")
    code, output = _verify(tmp_path)
    assert code == 8 and "entry 3 (ListFaces) was edited" in output


def test_audit_verify_finds_a_deleted_entry(tmp_path: Path) -> None:
    with database_beneath(_ledger_with_entries(tmp_path)) as db:
        db.execute("DELETE FROM ledger WHERE seq = 2")
    code, output = _verify(tmp_path)
    assert code == 8 and "entry 2 is missing: deleted from the middle" in output
    assert "does not follow entry" not in output  # no second problem naming an entry that is gone


def test_audit_verify_finds_reordered_entries(tmp_path: Path) -> None:
    with database_beneath(_ledger_with_entries(tmp_path)) as db:
        columns = "operation, started_at, ended_at, result, prev_hash, entry_hash"
        two = db.execute(f"SELECT {columns} FROM ledger WHERE seq = 2").fetchone()
        one = db.execute(f"SELECT {columns} FROM ledger WHERE seq = 1").fetchone()
        for seq, row in ((1, two), (2, one)):
            db.execute(
                "UPDATE ledger SET operation=?, started_at=?, ended_at=?, result=?, prev_hash=?, entry_hash=? WHERE seq=?",
                (*row, seq),
            )
    code, output = _verify(tmp_path)
    assert code == 8 and "entry 1 does not follow" in output


def test_audit_verify_finds_a_rewritten_chain_and_a_cut_tail(tmp_path: Path, new_store) -> None:
    path = _ledger_with_entries(tmp_path)
    # the forger edits entry 2 and recomputes every hash after it: the chain is consistent again,
    # but the signed head no longer matches
    with faceledger.open(tmp_path) as service:
        entries = list(service.ledger.entries())
    with database_beneath(path) as db:
        previous = db.execute("SELECT entry_hash FROM ledger WHERE seq = 1").fetchone()[0]
        for entry in entries[1:]:
            if entry.seq == 2:
                entry.access_key_id = "forged"
            digest = entry_hash(previous, entry)
            db.execute(
                "UPDATE ledger SET access_key_id = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (entry.access_key_id, previous, digest, entry.seq),
            )
            previous = digest
    code, output = _verify(tmp_path)
    assert code == 8 and "entries up to 5 were rewritten after the head was signed" in output

    other = tmp_path / "cut"
    new_store()
    with database_beneath(_ledger_with_entries(other)) as cut_db:
        cut_db.execute("DELETE FROM ledger WHERE seq = 5")
    code, output = _verify(other)
    assert code == 8 and "entry 5 was signed but is gone" in output


def test_export_show_and_cli_purpose(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    runner.invoke(app, [*data, "collection", "create", "c"])
    runner.invoke(
        app,
        [
            *data,
            "--purpose",
            "archive tagging",
            "--case",
            "A-1",
            "index",
            str(data_path("facerec_examples", "obama")),
            "-c",
            "c",
        ],
    )
    runner.invoke(app, [*data, "--purpose", "reunion", "--case", "R-7", "faces", "list", "-c", "c"])
    out = tmp_path / "ledger.jsonl"
    result = runner.invoke(app, [*data, "audit", "export", "--out", str(out)])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    listed = [line for line in lines if line["operation"] == "ListFaces"][0]
    assert (listed["purpose"], listed["case_ref"]) == ("reunion", "R-7")
    assert listed["access_key_id"].startswith("local:")
    shown = json.loads(runner.invoke(app, [*data, "audit", "show", "--case", "R-7", "--json"]).stdout)
    assert [e["operation"] for e in shown] == ["ListFaces"]
    with faceledger.open(tmp_path) as service:
        assert _last(service).operation == "ExportLedger" and _last(service).result == {"ExportedCount": len(lines)}


def test_key_changes_are_ledgered_without_their_secret(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service:
        created = service.create_access_key(role="searcher")
        service.set_access_key_enabled(access_key_id=created["AccessKeyId"], enabled=False)
        service.delete_access_key(access_key_id=created["AccessKeyId"])
        operations = [e.operation for e in service.ledger.entries()]
        assert operations == ["CreateAccessKey", "SetAccessKeyEnabled", "DeleteAccessKey"]
        exported = json.dumps([e.result for e in service.ledger.entries()])
    assert created["SecretAccessKey"] not in exported
    assert created["SecretAccessKey"].encode() not in stored_bytes(tmp_path)


def _rewrite(tmp_path: Path, seq: int, who: str) -> None:
    """The forger's rewrite: edit entry ``seq`` and recompute every hash after it."""
    with faceledger.open(tmp_path) as service:
        entries = list(service.ledger.entries())
    with database_beneath(tmp_path) as db:
        previous = db.execute("SELECT entry_hash FROM ledger WHERE seq = ?", (seq - 1,)).fetchone()[0]
        for entry in entries[seq - 1 :]:
            if entry.seq == seq:
                entry.access_key_id = who
            digest = entry_hash(previous, entry)
            db.execute(
                "UPDATE ledger SET access_key_id = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (entry.access_key_id, previous, digest, entry.seq),
            )
            previous = digest
        db.execute("DELETE FROM ledger_signatures")


def test_deleting_the_signatures_after_a_rewrite_does_not_pass_verify(tmp_path: Path) -> None:
    """It did: edit a row, recompute the chain, DELETE FROM ledger_signatures, 'intact'. Every
    hundredth entry is signed as it is appended, so its signature must be there."""
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        for _ in range(SIGN_EVERY + 5):
            service.list_faces(collection_id="c")
    _rewrite(tmp_path, 50, "forged")
    code, output = _verify(tmp_path)
    assert code == 8 and f"the signature of entry {SIGN_EVERY} is missing" in output


def test_an_anchor_outside_the_data_directory_catches_a_forger_who_has_it_all(tmp_path: Path) -> None:
    """With the database and the ledger key, a forger can rewrite and re-sign everything; heads
    anchored elsewhere still tell."""
    data, anchor = tmp_path / "data", tmp_path / "elsewhere" / "anchors.jsonl"
    _ledger_with_entries(data)
    result = runner.invoke(app, ["--data-dir", str(data), "audit", "anchor", "--out", str(anchor)])
    assert result.exit_code == 0, result.output
    assert json.loads(anchor.read_text().splitlines()[-1])["seq"] == 5  # the head, signed now
    assert _verify_with(data, anchor) == (0, "intact")
    _rewrite(data, 3, "forged")
    with faceledger.open(data) as service:
        service.ledger.sign_head()  # re-signed with the key the forger also has
    assert _verify(data)[0] == 0  # alone, the data directory cannot tell
    code, output = _verify_with(data, anchor)
    assert code == 8 and "anchored head 5" in output


def _verify_with(data: Path, anchor: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["--data-dir", str(data), "audit", "verify", "--anchor", str(anchor)])
    return result.exit_code, "intact" if result.exit_code == 0 else result.stderr + result.stdout


def test_the_ledger_key_can_live_outside_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "vault" / "ledger.key"
    monkeypatch.setenv("FACELEDGER_LEDGER_KEY_FILE", str(key))
    _ledger_with_entries(tmp_path / "data")
    assert key.exists() and not (tmp_path / "data" / "ledger.key").exists()
    assert _verify(tmp_path / "data")[0] == 0


def test_anchoring_an_empty_ledger_and_a_bad_anchor_file_are_clear_errors(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    empty = runner.invoke(app, [*data, "audit", "anchor", "--out", str(tmp_path / "anchors.jsonl")])
    assert empty.exit_code == 2 and "The ledger is empty" in empty.stderr
    (tmp_path / "bad.jsonl").write_text("not an anchor\n")
    bad = runner.invoke(app, [*data, "audit", "verify", "--anchor", str(tmp_path / "bad.jsonl")])
    assert bad.exit_code == 2 and "is not an anchor file" in bad.stderr
    missing = runner.invoke(app, [*data, "audit", "verify", "--anchor", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "is not an anchor file" in missing.stderr


def test_audit_verify_says_a_signed_entry_was_deleted_from_the_middle(tmp_path: Path) -> None:
    path = _ledger_with_entries(tmp_path)  # entry 5 is a signed head
    with faceledger.open(tmp_path) as service:
        service.list_faces(collection_id="c")
    with database_beneath(path) as db:
        db.execute("DELETE FROM ledger WHERE seq = 5")
    code, output = _verify(tmp_path)
    assert code == 8 and "entry 5 was signed but is gone: entries were deleted from the middle" in output
    assert "from the end" not in output and "entry 5 is missing: deleted from the middle" in output
