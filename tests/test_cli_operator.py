"""The CLI as an operator meets it: safeguards that cannot be lost by accident, consent records,
options where a user looks for them, exit codes and messages that tell the truth, and output a
person can use (one test per point of the operator-experience issue)."""

from __future__ import annotations

import json
from pathlib import Path

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
