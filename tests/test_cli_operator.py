"""The CLI as an operator meets it: safeguards that cannot be lost by accident, consent records,
options where a user looks for them, exit codes and messages that tell the truth, and output a
person can use (one test per point of the operator-experience issue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faceledger.cli.main import app

from conftest import data_path

runner = CliRunner()
OBAMA = str(data_path("facerec_examples", "obama", "obama.jpg"))
OBAMA_2 = str(data_path("facerec_examples", "obama", "obama2.jpg"))


def run(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_policy_options_change_only_themselves(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "acct")
    assert run(tmp_path, "collection", "policy", "acct", "--purpose-required", "--review-required")[0] == 0
    code, out, _ = run(tmp_path, "collection", "policy", "acct", "--min-threshold", "90")
    assert code == 0 and "MinThreshold: None -> 90.0" in out
    policy = json.loads(run(tmp_path, "collection", "policy", "acct", "--json")[1])  # no option: shown
    assert policy["PurposeRequired"] and policy["ReviewRequired"] and policy["MinThreshold"] == 90.0
    code, out, _ = run(tmp_path, "collection", "policy", "acct", "--no-review-required", "--no-min-threshold")
    assert code == 0 and "ReviewRequired: True -> False" in out and "MinThreshold: 90.0 -> None" in out
    assert json.loads(run(tmp_path, "collection", "policy", "acct", "--json")[1])["PurposeRequired"] is True
    code, _, err = run(tmp_path, "collection", "policy", "acct", "--max-results", "5", "--no-max-results")
    assert code == 2 and "not both" in err


def test_the_quick_start_indexes_labelled_folders_and_finds_a_real_match(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "family")
    code, out, _ = run(
        tmp_path,
        "index",
        str(data_path("facerec_examples")),
        "-c",
        "family",
        "--exclude",
        "_test_unlabeled/*",
        "--json",
    )
    assert code == 0 and json.loads(out)["Images"] == 9  # the unlabeled query photos are not indexed
    probe = str(data_path("facerec_examples", "_test_unlabeled", "obama1.jpg"))
    matches = json.loads(run(tmp_path, "search", probe, "-c", "family", "--json")[1])["FaceMatches"]
    assert matches and {m["Face"]["ExternalImageId"] for m in matches} <= {"obama:obama.jpg", "obama:obama2.jpg"}
    assert all(m["Similarity"] < 99.9 for m in matches)  # another photo of him, not the query itself


def test_consent_cannot_start_expired_and_refusals_say_what_to_run(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    record = ("consent", "record", "obama", "-c", "c", "--basis", "explicit consent", "--reference", "form 17")
    code, _, err = run(tmp_path, *record, "--expires-at", "2020-01-01")
    assert code == 2 and "in the past" in err
    run(tmp_path, "collection", "policy", "c", "--consent-required")
    folder = tmp_path / "photos" / "obama"
    folder.mkdir(parents=True)
    (folder / "obama.jpg").write_bytes(Path(OBAMA).read_bytes())
    code, out, err = run(tmp_path, "index", str(tmp_path / "photos"), "-c", "c")
    assert code != 0 and "faceledger consent record" in one_line(out + err)
    assert run(tmp_path, *record, "--expires-at", "2099-01-01")[0] == 0
    listed = json.loads(run(tmp_path, "consent", "list", "-c", "c", "--json")[1])["Consents"]
    assert [(c["ExternalImageId"], c["Status"], c["Basis"]) for c in listed] == [
        ("obama", "ACTIVE", "explicit consent")
    ]
    code, out, _ = run(tmp_path, "consent", "list", "-c", "c")
    assert code == 0 and "ACTIVE" in out and "2099-01-01T00:00:00+00:00" in out


def test_purpose_and_case_work_before_or_after_the_command_and_the_refusal_shows_how(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    run(tmp_path, "collection", "policy", "c", "--purpose-required")
    code, _, err = run(tmp_path, "search", OBAMA, "-c", "c")
    assert code == 7 and "faceledger search photo.jpg -c COLLECTION --purpose" in one_line(err)
    after = run(tmp_path, "search", OBAMA, "-c", "c", "--purpose", "find a missing person", "--case", "MP-1")
    before = run(tmp_path, "--purpose", "audit test", "--case", "AT-2", "search", OBAMA, "-c", "c")
    assert after[0] == 0 and before[0] == 0
    shown = json.loads(run(tmp_path, "audit", "show", "--operation", "SearchFacesByImage", "--json")[1])
    declared = [(e["purpose"], e["case_ref"], e["outcome"]) for e in shown]
    assert ("find a missing person", "MP-1", "ok") in declared and ("audit test", "AT-2", "ok") in declared


def test_version_roles_and_flags_in_help(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, "--version")
    assert code == 0 and out.startswith("faceledger 0.")
    assert "reviewer" in one_line(run(tmp_path, "keys", "create", "--help")[1])
    policy_help = one_line(run(tmp_path, "collection", "policy", "--help")[1])
    assert "--review-required / --no-review-required" in policy_help and "<bool>" not in policy_help


def test_audit_show_is_newest_first_and_takes_spans_of_time(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    for _ in range(3):
        run(tmp_path, "faces", "list", "-c", "c")
    run(tmp_path, "collection", "describe", "nope")  # a failed call is ledgered too
    newest = json.loads(run(tmp_path, "audit", "show", "--limit", "2", "--json")[1])
    everything = json.loads(run(tmp_path, "audit", "show", "--oldest-first", "--json")[1])
    assert [e["seq"] for e in newest] == [everything[-1]["seq"], everything[-2]["seq"]]
    assert [e["operation"] for e in everything][:1] == ["CreateCollection"]
    assert len(json.loads(run(tmp_path, "audit", "show", "--since", "1h", "--json")[1])) == len(everything)
    assert json.loads(run(tmp_path, "audit", "show", "--until", "2h", "--json")[1]) == []
    assert len(json.loads(run(tmp_path, "audit", "show", "--since", "2026-01-01", "--json")[1])) == len(everything)
    failed = json.loads(run(tmp_path, "audit", "show", "--outcome", "error", "--json")[1])
    listed = json.loads(run(tmp_path, "audit", "show", "--operation", "ListFaces", "--json")[1])
    assert [e["operation"] for e in failed] == ["DescribeCollection"] and len(listed) == 3
    code, _, err = run(tmp_path, "audit", "show", "--since", "yesterday")
    assert code == 2 and "30m, 1h, 7d" in err


def _blank(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(path)
    return path


def test_an_empty_comparison_and_nothing_associated_exit_non_zero(tmp_path: Path) -> None:
    blank = _blank(tmp_path)
    code, _, err = run(tmp_path, "compare", OBAMA, str(blank))
    assert code == 2 and f"no face found in {blank}" in err
    code, out, _ = run(tmp_path, "compare", OBAMA, OBAMA_2, "--json")
    assert code == 0 and json.loads(out)["FaceMatches"]
    run(tmp_path, "collection", "create", "c")
    run(tmp_path, "users", "create", "u", "-c", "c")
    missing = "00000000-0000-4000-8000-000000000000"
    code, _, err = run(tmp_path, "users", "associate", "u", missing, "-c", "c")
    assert code == 4 and "FACE_NOT_FOUND" in err and "no such face" in err
    code, _, err = run(tmp_path, "faces", "delete", missing, "-c", "c")
    assert code == 4 and "no such face" in err


def test_image_errors_name_the_file(tmp_path: Path) -> None:
    blank, text = _blank(tmp_path), tmp_path / "notes.jpg"
    text.write_text("not an image")
    code, _, err = run(tmp_path, "detect", str(tmp_path / "nope.jpg"))
    assert code == 2 and f"{tmp_path / 'nope.jpg'} does not exist" in err
    code, _, err = run(tmp_path, "compare", OBAMA, str(text))
    assert code == 3 and f"{text}: " in err and "not a readable image" in err
    code, _, err = run(tmp_path, "compare", str(blank), OBAMA)
    assert code == 2 and f"{blank}: There are no faces" in err
    run(tmp_path, "collection", "create", "c")
    code, _, err = run(tmp_path, "search", str(blank), "-c", "c")
    assert code == 2 and f"{blank}: There are no faces" in err
    code, _, err = run(tmp_path, "search", str(blank), "-c", "nope")
    assert code == 4 and str(blank) not in err  # an error about the collection names the collection only


def test_an_unusable_data_directory_is_one_line_with_its_own_exit_code(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    database_is_a_folder = tmp_path / "data"
    (database_is_a_folder / "faceledger.sqlite3").mkdir(parents=True)
    for data_dir, said in (
        (a_file, "is a file, not a directory"),
        (a_file / "below", "cannot be used (Not a directory)"),
        (database_is_a_folder, "cannot be opened for writing"),
    ):
        code, out, err = run(data_dir, "collection", "list")
        assert code == 78, (data_dir, out, err)
        assert err.startswith("error: DataDirectoryError: ") and said in err and str(data_dir) in err
        assert err.count("\n") == 1 and "Traceback" not in out + err


def test_ids_are_printed_whole_and_a_unique_prefix_is_taken(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    folder = data_path("facerec_examples")
    run(tmp_path, "index", str(folder), "-c", "c", "--exclude", "_test_unlabeled/*")
    faces = json.loads(run(tmp_path, "faces", "list", "-c", "c", "--json")[1])["Faces"]
    code, out, _ = run(tmp_path, "faces", "list", "-c", "c", env={"COLUMNS": "80"})
    assert code == 0 and all(face["FaceId"] in out for face in faces)  # at 80 columns, every id whole
    assert max(len(line) for line in out.splitlines()) <= 80
    obama = next(f["FaceId"] for f in faces if f["ExternalImageId"] == "obama:obama.jpg")
    run(tmp_path, "users", "create", "barack", "-c", "c")
    code, out, err = run(tmp_path, "users", "associate", "barack", obama[:8], "-c", "c", "--json")
    assert code == 0, err
    assert json.loads(out)["AssociatedFaces"] == [{"FaceId": obama}]
    absent = next(p for p in ("00000000", "11111111", "22222222") if not any(f["FaceId"].startswith(p) for f in faces))
    code, _, err = run(tmp_path, "users", "associate", "barack", absent, "-c", "c")
    assert code == 4 and "matches no face" in err
    code, _, err = run(tmp_path, "users", "associate", "barack", obama[:8], "-c", "nope")
    assert code == 4 and "ResourceNotFoundException" in err and "nope" in err
    code, _, err = run(tmp_path, "search", "--face-id", obama[:6], "-c", "c", "--json")
    assert code == 0, err


def test_a_prefix_of_several_faces_is_refused(tmp_path: Path) -> None:
    import time
    import uuid

    import numpy as np

    import faceledger
    from faceledger.errors import InvalidParameterException
    from faceledger.store import FaceRecord, ImageRecord

    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        image_id, now = str(uuid.uuid4()), time.time()
        ids = ["abcd0000-0000-4000-8000-000000000000", "abcd1111-0000-4000-8000-000000000000"]
        box = {"Width": 0.1, "Height": 0.1, "Left": 0.1, "Top": 0.1}
        vector = np.ones(128, np.float32)
        records = [
            FaceRecord(i, "c", image_id, None, "0" * 64, box, 99.0, {}, {}, service.templates.seal(i, vector), now)
            for i in ids
        ]
        service.store.add_image(ImageRecord(image_id, "c", uuid.uuid4().hex, None, 100, 100, 2, now), records)
        assert service.resolve_face_ids(collection_id="c", face_ids=["abcd1", ids[0]]) == [ids[1], ids[0]]
        with pytest.raises(InvalidParameterException, match="matches several faces"):
            service.resolve_face_ids(collection_id="c", face_ids=["abcd"])


def test_every_json_output_is_the_apis_response(tmp_path: Path) -> None:
    import faceledger
    from faceledger.cli import render

    run(tmp_path, "collection", "create", "c")
    run(tmp_path, "index", str(data_path("facerec_examples", "obama")), "-c", "c")
    run(tmp_path, "users", "create", "u", "-c", "c")
    run(tmp_path, "consent", "record", "obama", "-c", "c", "--basis", "b", "--reference", "r")
    with faceledger.open(tmp_path) as service:
        face_id = service.list_faces(collection_id="c")["Faces"][0]["FaceId"]
        expected = {
            ("collection", "describe", "c"): service.describe_collection(collection_id="c"),
            ("collection", "list"): service.list_collections(),
            ("faces", "list", "-c", "c"): service.list_faces(collection_id="c"),
            ("users", "list", "-c", "c"): service.list_users(collection_id="c"),
            ("consent", "list", "-c", "c"): service.list_consents(collection_id="c"),
            ("collection", "policy", "c"): service.get_collection_policy(collection_id="c"),
            ("review", "list"): service.list_review_cases(),
            ("search", "--face-id", face_id, "-c", "c"): service.search_faces(collection_id="c", face_id=face_id),
            ("detect", OBAMA): service.detect_faces(image=Path(OBAMA).read_bytes()),
        }
    assert "FaceModelVersion" in expected[("faces", "list", "-c", "c")]
    for command, response in expected.items():
        code, out, err = run(tmp_path, *command, "--json")
        assert code == 0, (command, err)
        assert json.loads(out) == json.loads(render.to_json(response)), command


def test_review_show_gives_a_reviewer_what_they_need_to_decide(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    run(tmp_path, "collection", "policy", "c", "--review-required")
    run(tmp_path, "index", str(data_path("facerec_examples", "obama")), "-c", "c")
    run(tmp_path, "search", OBAMA_2, "-c", "c", "--purpose", "family reunification", "--case", "RFL-7")
    case_id = json.loads(run(tmp_path, "review", "list", "--json")[1])["Cases"][0]["CaseId"]
    code, out, _ = run(tmp_path, "review", "show", case_id, env={"COLUMNS": "200"})
    text = one_line(out)
    assert code == 0 and "purpose: family reunification; case: RFL-7" in text and "SearchFacesByImage by local:" in text
    assert "obama.jpg" in text and "obama2.jpg" in text  # each candidate's source image
    shown = json.loads(run(tmp_path, "review", "show", case_id, "--json")[1])
    assert {c["ExternalImageId"] for c in shown["Candidates"]} == {"obama.jpg", "obama2.jpg"}
    assert all(len(c["ImageSha256"]) == 64 for c in shown["Candidates"])


def test_index_exits_non_zero_and_says_why_when_nothing_was_indexed(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(tmp_path, "index", str(empty), "-c", "c")
    assert code == 9 and "nothing was indexed: no image files" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not an image")
    _blank(bad)
    code, out, err = run(tmp_path, "index", str(bad), "-c", "c", "--json")
    summary = json.loads(out)
    assert code == 9 and "1 unreadable, 1 without a face" in err
    assert (summary["Images"], summary["ImagesIndexed"], summary["ImagesWithoutFaces"]) == (2, 0, 1)
    assert [Path(f["path"]).name for f in summary["UnreadableFiles"]] == ["notes.jpg"]
    (bad / "obama.jpg").write_bytes(Path(OBAMA).read_bytes())
    assert run(tmp_path, "index", str(bad), "-c", "c")[0] == 0  # something indexed: success


def test_the_readme_documents_every_exit_code_the_cli_uses() -> None:
    import inspect
    import re

    import faceledger.errors as errors
    from faceledger.cli.index_command import NOTHING_INDEXED

    used = {cls.exit_code for _, cls in inspect.getmembers(errors, inspect.isclass) if hasattr(cls, "exit_code")}
    used |= {0, 8, NOTHING_INDEXED, 130}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", readme, re.MULTILINE)}
    assert used <= documented, sorted(used - documented)


@pytest.mark.backends("sqlite")  # how SQLite falls back on a file it may not write
def test_a_read_only_database_is_refused_when_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the owner cannot be denied (tests run as root), the database is opened read-only the
    way SQLite itself falls back when it may not write: the store must refuse at once, not at the
    first ledger write with a traceback."""
    import sqlite3

    import faceledger.store.sqlite.connection as connection

    run(tmp_path, "collection", "create", "c")
    connect = sqlite3.connect
    monkeypatch.setattr(
        connection.sqlite3, "connect", lambda path, **options: connect(f"file:{path}?mode=ro", uri=True, **options)
    )
    code, out, err = run(tmp_path, "collection", "list")
    assert code == 78 and "cannot be opened for writing" in err and "Traceback" not in out + err


def test_paths_this_account_may_not_enter_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.exists raises PermissionError below a folder the account may not search (tests run
    as root, who may search anything, so it is raised here for paths under 'locked')."""
    run(tmp_path / "data", "collection", "create", "c")
    exists = Path.exists

    def guarded(path: Path) -> bool:
        if "locked" in path.parts:
            raise PermissionError(13, "Permission denied")
        return exists(path)

    monkeypatch.setattr(Path, "exists", guarded)
    locked = tmp_path / "locked"
    for args, code in (
        (("detect", str(locked / "x.jpg")), 3),
        (("index", str(locked), "-c", "c"), 2),
    ):
        status, out, err = run(tmp_path / "data", *args)
        assert status == code and "Permission denied" in err and "Traceback" not in out + err, (args, err)
    status, _, err = run(locked / "data", "collection", "list")
    assert status == 78 and "Permission denied" in err


def test_tables_print_text_as_written_not_as_markup(tmp_path: Path) -> None:
    run(tmp_path, "collection", "create", "c")
    basis = "[bold]explicit consent[/bold], GDPR Art. 9(2)(a)"
    run(tmp_path, "consent", "record", "x", "-c", "c", "--basis", basis, "--reference", "[form]")
    code, out, _ = run(tmp_path, "consent", "list", "-c", "c", env={"COLUMNS": "300"})
    assert code == 0 and basis in out and "[form]" in out
