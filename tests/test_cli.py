"""The faceledger command: tables, --json, resumable folder indexing, errors without tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faceledger.cli.main import app

from conftest import data_path, interrupt_index_faces_on_call

runner = CliRunner()


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A small photo folder: two people in nested folders, a non-image and a corrupt JPEG."""
    root = tmp_path / "photos"
    for person in ("obama", "biden"):
        shutil.copytree(data_path("facerec_examples", person), root / "people" / person)
    (root / "notes.txt").write_text("not a photo")
    (root / "broken.jpg").write_bytes(data_path("facerec_examples", "obama", "obama.jpg").read_bytes()[:500])
    (root / "sky.png").write_bytes(_blank_png())
    return root


def _blank_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (200, 150), (90, 140, 220)).save(out, format="PNG")
    return out.getvalue()


def test_index_search_compare_detect(tmp_path: Path, photos: Path) -> None:
    data = tmp_path / "data"
    assert run(data, "collection", "create", "family")[0] == 0
    code, out, _ = run(data, "index", str(photos), "--collection", "family", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["Images"] == 6  # notes.txt is not an image file
    assert summary["ImagesIndexed"] == 4 and summary["FacesIndexed"] == 4
    assert summary["ImagesWithoutFaces"] == 1
    assert [Path(u["path"]).name for u in summary["UnreadableFiles"]] == ["broken.jpg"]

    code, out, _ = run(data, "faces", "list", "--collection", "family", "--json")
    faces = json.loads(out)["Faces"]
    assert sorted(f["ExternalImageId"] for f in faces) == [
        "people:biden:biden.jpg",
        "people:biden:biden2.jpg",
        "people:obama:obama.jpg",
        "people:obama:obama2.jpg",
    ]

    probe = data_path("facerec_examples", "_test_unlabeled", "obama1.jpg")
    code, out, _ = run(data, "search", str(probe), "--collection", "family", "--json")
    assert code == 0
    matched = {m["Face"]["ExternalImageId"] for m in json.loads(out)["FaceMatches"]}
    assert matched == {"people:obama:obama.jpg", "people:obama:obama2.jpg"}
    code, out, _ = run(data, "search", str(probe), "--collection", "family")
    assert code == 0 and "Similarity" in out and "probability of identity" in out
    obama = next(f["FaceId"] for f in faces if f["ExternalImageId"] == "people:obama:obama.jpg")
    code, out, _ = run(data, "search", "--face-id", obama, "--collection", "family", "--json")
    assert [m["Face"]["ExternalImageId"] for m in json.loads(out)["FaceMatches"]] == ["people:obama:obama2.jpg"]

    group = data_path("detection_multi", "images", "facenetpt_multiface.jpg")
    code, out, _ = run(data, "detect", str(group), "--json")
    assert code == 0 and len(json.loads(out)["FaceDetails"]) == 6
    code, out, _ = run(data, "compare", str(data_path("facerec_examples", "obama", "obama.jpg")), str(probe), "--json")
    assert code == 0 and json.loads(out)["FaceMatches"][0]["Similarity"] >= 80


def test_index_resumes_after_interrupt_and_skips_known_files(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    run(data, "collection", "create", "family")
    interrupt_index_faces_on_call(monkeypatch, 3)
    code, out, err = run(data, "index", str(photos), "--collection", "family")
    assert code == 130
    assert "run the same command to resume" in err
    monkeypatch.undo()

    code, out, _ = run(data, "index", str(photos), "--collection", "family", "--json")
    summary = json.loads(out)
    assert code == 0 and not summary["Interrupted"]
    # broken.jpg fails to decode (never recorded, no IndexFaces call); biden.jpg and biden2.jpg
    # were indexed before Ctrl-C
    assert summary["ImagesSkipped"] == 2
    code, out, _ = run(data, "collection", "describe", "family", "--json")
    assert json.loads(out)["FaceCount"] == 4  # every face exactly once

    code, out, _ = run(data, "index", str(photos), "--collection", "family", "--json")
    assert json.loads(out)["ImagesSkipped"] == 5


def test_users_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "collection", "create", "c")
    code, out, _ = run(data, "index", str(data_path("facerec_examples", "obama")), "-c", "c", "--json")
    faces = json.loads(run(data, "faces", "list", "-c", "c", "--json")[1])["Faces"]
    assert run(data, "users", "create", "barack", "-c", "c")[0] == 0
    code, out, _ = run(data, "users", "associate", "barack", *[f["FaceId"] for f in faces], "-c", "c", "--json")
    assert code == 0 and len(json.loads(out)["AssociatedFaces"]) == 2
    code, out, _ = run(
        data,
        "users",
        "search",
        "-c",
        "c",
        "--image",
        str(data_path("facerec_examples", "_test_unlabeled", "obama1.jpg")),
        "--json",
    )
    assert [m["User"]["UserId"] for m in json.loads(out)["UserMatches"]] == ["barack"]
    assert json.loads(run(data, "users", "list", "-c", "c", "--json")[1])["Users"] == [
        {"UserId": "barack", "UserStatus": "ACTIVE"}
    ]
    code, out, _ = run(data, "users", "disassociate", "barack", faces[0]["FaceId"], "-c", "c", "--json")
    assert json.loads(out)["DisassociatedFaces"] == [{"FaceId": faces[0]["FaceId"]}]
    assert run(data, "faces", "delete", faces[0]["FaceId"], "-c", "c")[0] == 0
    assert run(data, "users", "delete", "barack", "-c", "c")[0] == 0
    assert run(data, "collection", "delete", "c", "--yes")[0] == 0
    assert json.loads(run(data, "collection", "list", "--json")[1])["CollectionIds"] == []


@pytest.mark.parametrize(
    "args,code,error",
    [
        (["collection", "describe", "missing"], 4, "ResourceNotFoundException"),
        (["collection", "create", "has space"], 2, "InvalidParameterException"),
        (["search", "README.md", "-c", "c"], 3, "InvalidImageFormatException"),
        (["search", "no-such-file.jpg", "-c", "c"], 2, "InvalidParameterException"),
        (["search", "--face-id", "00000000-0000-0000-0000-000000000000", "-c", "c"], 4, "ResourceNotFoundException"),
        (["search", "--face-id", "not-a-face-id", "-c", "c"], 2, "InvalidParameterException"),
        (["search", "-c", "c"], 2, "InvalidParameterException"),
        (["index", "no-such-folder", "-c", "c"], 2, "InvalidParameterException"),
        (["search", "{sky}", "-c", "c"], 2, "InvalidParameterException"),
        (["compare", "{sky}", "{sky}", "--threshold", "120"], 2, "InvalidParameterException"),
    ],
)
def test_errors_are_one_line_with_exit_code(tmp_path: Path, args: list[str], code: int, error: str) -> None:
    data = tmp_path / "data"
    run(data, "collection", "create", "c")
    sky = tmp_path / "sky.png"
    sky.write_bytes(_blank_png())
    args = [a.replace("{sky}", str(sky)) for a in args]
    exit_code, out, err = run(data, *args)
    assert exit_code == code
    assert err.startswith(f"error: {error}: ")
    assert "Traceback" not in out + err


def test_console_script_is_installed(tmp_path: Path) -> None:
    faceledger = shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")
    done = subprocess.run(
        [faceledger, "--data-dir", str(tmp_path), "collection", "describe", "nothing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4
    assert done.stderr.strip() == "error: ResourceNotFoundException: Collection 'nothing' does not exist."
