"""CLI option parsing: ISO 8601 times, defaults left to the service, help texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faceledger.cli.main import app
from faceledger.service.access import Role

from conftest import data_path

runner = CliRunner()


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["consent", "record", "x", "-c", "c", "--basis", "b", "--reference", "r", "--expires-at", "notatime"],
        ["consent", "record", "x", "-c", "c", "--basis", "b", "--reference", "r", "--obtained-at", "2026-13-01"],
        ["audit", "show", "--since", "yesterday"],
        ["audit", "export", "--out", "{out}", "--until", "soon"],
    ],
)
def test_a_time_that_is_not_iso_8601_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    data = tmp_path / "data"
    assert run(data, "collection", "create", "c")[0] == 0
    args = [a.replace("{out}", str(tmp_path / "out.jsonl")) for a in args]
    code, out, err = run(data, *args)
    assert code == 2
    assert err.startswith("error: InvalidParameterException: ") and "is not an ISO 8601 time" in err
    assert err.count("\n") == 1  # one line, however long
    assert "Traceback" not in out + err
    assert not (tmp_path / "out.jsonl").exists()


def test_consent_times_are_read_as_utc_unless_an_offset_is_given(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "collection", "create", "c")
    code, _, _ = run(
        data,
        "consent",
        "record",
        "x",
        "-c",
        "c",
        "--basis",
        "b",
        "--reference",
        "r",
        "--obtained-at",
        "2026-01-01T10:00",
        "--expires-at",
        "2099-01-01T00:00+02:00",
    )
    assert code == 0


def test_search_without_max_faces_takes_the_collection_policys_cap(tmp_path: Path) -> None:
    """The service's default (the policy's cap, at most 100) applies; the CLI asks for no count
    of its own, so a cap below it is no error."""
    data = tmp_path / "data"
    run(data, "collection", "create", "c")
    assert run(data, "collection", "policy", "c", "--max-results", "1")[0] == 0
    assert run(data, "index", str(data_path("facerec_examples", "obama")), "-c", "c", "--json")[0] == 0
    probe = str(data_path("facerec_examples", "_test_unlabeled", "obama1.jpg"))
    code, out, err = run(data, "search", probe, "-c", "c", "--json")
    assert code == 0, err
    assert len(json.loads(out)["FaceMatches"]) == 1
    code, _, err = run(data, "search", probe, "-c", "c", "--max-faces", "2")
    assert code == 2 and "at most 1 results" in err


@pytest.mark.parametrize(
    "command,option,default",
    [
        (["compare"], "--threshold", "default: 80"),
        (["users", "associate"], "--threshold", "default: 75"),
        (["index"], "--quality-filter", "default: AUTO"),
        (["search"], "--max-faces", "default: 100"),
    ],
)
def test_help_states_the_services_default(command: list[str], option: str, default: str) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    described = text[text.index(option) + len(option) :].split(" --")[0]  # up to the next option
    assert default in described


def test_keys_create_help_names_every_role() -> None:
    result = runner.invoke(app, ["keys", "create", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    described = text[text.index("--role") :].split(" --", 1)[0]
    assert all(role.value in described for role in Role), described
