"""Models per collection: an operator registers an ONNX network of their own, makes a collection
with it beside a collection of the default model, calibrates it, indexes and searches it; a
collection is never searched with another model's templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_onnx_model import DIMENSION, conv_network
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.errors import InvalidParameterException
from faceledger.vision.calibration import ThresholdRow, ThresholdTable
from faceledger.vision.model import DlibResNetModel
from faceledger.vision.onnx_model import UncalibratedModelError

from conftest import image_bytes

runner = CliRunner()
SPEC = {"input_size": 112, "dimension": DIMENSION, "mean": [127.5] * 3, "std": [128.0] * 3}
OBAMA, OBAMA_2 = ("facerec_examples", "obama", "obama.jpg"), ("facerec_examples", "obama", "obama2.jpg")


def _calibration() -> ThresholdTable:
    """What 'faceledger calibrate' would store, made up for the tiny network."""
    rows = tuple(
        ThresholdRow(t, fmr, 0.0, fmr * 1.1 + 1e-7, 1, 0.1, 0.09, 0.11, 10)
        for t, fmr in ((50.0, 1e-2), (70.0, 1e-5), (90.0, 0.0))
    )
    return ThresholdTable("my own photos", 1_000, 10_000_000, rows)


def test_an_operator_model_indexes_and_searches_its_own_collections(tmp_path: Path) -> None:
    network = conv_network(tmp_path / "mine.onnx")
    data = tmp_path / "data"
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    registered = runner.invoke(
        app,
        [
            "--data-dir",
            str(data),
            "models",
            "register",
            "mine",
            "--onnx",
            str(network),
            "--spec",
            str(tmp_path / "spec.json"),
            "--json",
        ],
    )
    assert registered.exit_code == 0, registered.output
    version = json.loads(registered.stdout)["FaceModelVersion"]
    assert version.startswith("mine-") and (data / "models" / "mine.json").stat().st_mode & 0o077 == 0
    created = runner.invoke(app, ["--data-dir", str(data), "collection", "create", "own", "--model", "mine", "--json"])
    assert created.exit_code == 0 and json.loads(created.stdout)["FaceModelVersion"] == version

    with faceledger.open(data) as service:  # the registration outlives the process that made it
        service.create_collection(collection_id="dlib")  # the default model, side by side
        for collection in ("own", "dlib"):
            service.index_faces(collection_id=collection, image=image_bytes(*OBAMA), external_image_id="obama")
        listed = service.list_faces(collection_id="own")
        assert listed["FaceModelVersion"] == version and len(listed["Faces"]) == 1
        assert service.indexes.for_search("own")._index.d == DIMENSION
        assert service.describe_collection(collection_id="own")["FaceledgerSearchThreshold"]["Status"] == "UNCALIBRATED"
        with pytest.raises(UncalibratedModelError):  # no promise without a calibration of its own
            service.search_faces_by_image(collection_id="own", image=image_bytes(*OBAMA_2))
        service.set_threshold_table(collection_id="own", table=_calibration())
        found = service.search_faces_by_image(collection_id="own", image=image_bytes(*OBAMA))
        assert found["FaceModelVersion"] == version and found["FaceMatches"][0]["Similarity"] > 99.9
        assert found["FaceledgerThreshold"]["Calibration"] == "my own photos"
        dlib = service.search_faces_by_image(collection_id="dlib", image=image_bytes(*OBAMA_2))
        assert dlib["FaceModelVersion"] == "dlib-resnet-v1+flip" and dlib["FaceMatches"]
        versions = dict(zip(*service.list_collections().values(), strict=False))
        assert versions == {"dlib": "dlib-resnet-v1+flip", "own": version}

    network.write_bytes(network.read_bytes()[:-8] + b"changed!")  # the file is no longer that model
    with faceledger.open(data) as service:
        with pytest.raises(InvalidParameterException, match="does not run"):
            service.search_faces_by_image(collection_id="own", image=image_bytes(*OBAMA))
        assert service.describe_collection(collection_id="own")["FaceledgerSearchThreshold"]["Status"] == (
            "MODEL_NOT_AVAILABLE"
        )
        assert service.search_faces_by_image(collection_id="dlib", image=image_bytes(*OBAMA_2))["FaceMatches"]


def test_an_unknown_model_name_and_a_bad_network_are_refused(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service:
        with pytest.raises(InvalidParameterException, match="No face model 'nope'"):
            service.create_collection(collection_id="c", face_model="nope")
        (tmp_path / "broken.onnx").write_bytes(b"not a network")
        with pytest.raises(InvalidParameterException):
            service.register_face_model(name="broken", onnx_file=str(tmp_path / "broken.onnx"), spec=SPEC)
        assert [m["Name"] for m in service.models.listing()] == ["dlib-resnet-v1"]


def test_calibrate_measures_a_collection_with_its_own_model(tmp_path: Path) -> None:
    from conftest import data_path

    network = conv_network(tmp_path / "mine.onnx")
    data = ["--data-dir", str(tmp_path / "data")]
    with faceledger.open(tmp_path / "data") as service:
        service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
        service.create_collection(collection_id="own", face_model="mine")
    result = runner.invoke(
        app,
        [
            *data,
            "calibrate",
            "--dataset",
            str(data_path("lfw")),
            "--collection",
            "own",
            "--limit-identities",
            "150",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--workers",
            "2",
            "--out",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    with faceledger.open(tmp_path / "data") as service:
        table = service.threshold_table("own")
        meaning = service.describe_collection(collection_id="own")["FaceledgerSearchThreshold"]
    assert table.source.startswith("lfw:") and meaning["Status"] == "WITHIN_TARGET"
    # a random network separates nobody: its table says so, where dlib's would not
    assert table.at(80.0).fmr > DlibResNetModel().threshold_table().at(80.0).fmr * 10


def test_a_collection_moves_to_another_model_keeping_its_face_ids(tmp_path: Path) -> None:
    from faceledger.service import find_image_files, index_files

    from conftest import data_path

    network = conv_network(tmp_path / "mine.onnx")
    folder = tmp_path / "photos"
    folder.mkdir()
    for person in ("obama", "biden"):
        (folder / f"{person}.jpg").write_bytes(data_path("facerec_examples", person, f"{person}.jpg").read_bytes())
    with faceledger.open(tmp_path / "data") as service:
        service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
        service.create_collection(collection_id="c")
        list(index_files(service, "c", folder, find_image_files(folder)))  # their files stay in the folder
        kept = service.index_faces(collection_id="c", image=image_bytes(*OBAMA_2), store_image=True)
        before = {f["FaceId"]: f.get("ExternalImageId") for f in service.list_faces(collection_id="c")["Faces"]}
        service.create_user(collection_id="c", user_id="barack")
        obama_ids = [i for i, ext in before.items() if ext == "obama.jpg"]
        service.associate_faces(collection_id="c", user_id="barack", face_ids=obama_ids)

        with pytest.raises(InvalidParameterException, match="cannot be moved"):  # the folder's files: where?
            service.migrate_collection(collection_id="c", face_model="mine")
        assert service.describe_collection(collection_id="c")["FaceModelVersion"] == "dlib-resnet-v1+flip"

        moved = service.migrate_collection(collection_id="c", face_model="mine", source_root=str(folder))
        assert moved["MovedFaces"] == len(before) and moved["ErasedFaceIds"] == []
        after = service.list_faces(collection_id="c")
        assert after["FaceModelVersion"] == moved["FaceModelVersion"] != "dlib-resnet-v1+flip"
        assert {f["FaceId"]: f.get("ExternalImageId") for f in after["Faces"]} == before  # same ids, same names
        assert {f["FaceId"] for f in after["Faces"] if f.get("UserId") == "barack"} == set(obama_ids)
        assert service.indexes.for_search("c")._index.d == DIMENSION
        service.set_threshold_table(collection_id="c", table=_calibration())
        found = service.search_faces_by_image(collection_id="c", image=image_bytes(*OBAMA_2))
        assert found["FaceMatches"][0]["Face"]["FaceId"] == kept["FaceRecords"][0]["Face"]["FaceId"]

        service.register_face_model(
            name="other", onnx_file=str(conv_network(tmp_path / "o.onnx", dimension=16)), spec={**SPEC, "dimension": 16}
        )
        (folder / "biden.jpg").unlink()  # one file gone: only erasure, accepted, moves the rest
        dropped = service.migrate_collection(
            collection_id="c", face_model="other", source_root=str(folder), drop_unavailable=True
        )
        assert len(dropped["ErasedFaceIds"]) == 1 and dropped["UnavailableImages"] == ["biden.jpg"]
        assert service.describe_collection(collection_id="c")["FaceCount"] == len(before) - 1


def test_faceres_is_added_as_a_model_kept_in_the_data_directory(tmp_path: Path, monkeypatch) -> None:
    """The wiring of 'models add-faceres' (the real network is checked by benchmarks/faceres_check.py:
    tests never need npm): what it installs and converts is registered under 'faceres', a copy
    of the network is kept in the data directory, and its fusion with dlib's ResNet is registered
    as 'dlib-faceres' (without the shipped table, which belongs to the real network only)."""
    from faceledger.vision import faceres
    from faceledger.vision.onnx_spec import OnnxModelSpec

    network = conv_network(tmp_path / "converted.onnx")
    monkeypatch.setattr(faceres, "install_faceres", lambda source: tmp_path)
    monkeypatch.setattr(faceres, "faceres_onnx", lambda folder: network)
    spec = {**SPEC, "name": "faceres", "alignment": "dlib-chip", "padding": 0.4}
    monkeypatch.setattr(faceres, "FACERES_SPEC", OnnxModelSpec.from_dict(spec))
    data = tmp_path / "data"
    result = runner.invoke(app, ["--data-dir", str(data), "models", "add-faceres", "--json"])
    assert result.exit_code == 0, result.output
    added = {m["Name"]: m for m in json.loads(result.stdout)["FaceModels"]}
    assert added["dlib-faceres"]["FaceModelVersion"].startswith("fusion[dlib-resnet-v1*0.812,faceres-")
    assert added["dlib-faceres"]["ShippedCalibration"] is None
    again = runner.invoke(app, ["--data-dir", str(data), "models", "add-faceres", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["FaceModels"] == []  # a second run adds nothing
    network.unlink()  # the cache may be cleared: the model stays
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c", face_model="faceres")
        assert service.list_faces(collection_id="c")["FaceModelVersion"].startswith("faceres-")
        service.create_collection(collection_id="fused", face_model="dlib-faceres")
    assert (data / "models" / "faceres.onnx").stat().st_mode & 0o077 == 0


def test_a_server_starts_and_loads_its_other_indexes_when_a_collections_model_is_gone(tmp_path: Path) -> None:
    import time

    from faceledger.api.server import background_duties

    network = conv_network(tmp_path / "mine.onnx")
    with faceledger.open(tmp_path / "data") as service:
        service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
        service.create_collection(collection_id="a-own", face_model="mine")
        service.create_collection(collection_id="b-dlib")
        service.index_faces(collection_id="b-dlib", image=image_bytes(*OBAMA))
    network.unlink()
    with faceledger.open(tmp_path / "data") as service, background_duties(service, sign_every=3600):
        deadline = time.monotonic() + 30
        while "b-dlib" not in service.indexes._indexes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "b-dlib" in service.indexes._indexes  # loaded although "a-own" (first) could not be


def test_bad_model_registrations_and_migrations_are_refused_clearly(tmp_path: Path) -> None:
    network = conv_network(tmp_path / "mine.onnx")
    data = ["--data-dir", str(tmp_path / "data")]
    (tmp_path / "spec.json").write_text("{not json")
    bad_spec = runner.invoke(
        app, [*data, "models", "register", "mine", "--onnx", str(network), "--spec", str(tmp_path / "spec.json")]
    )
    assert bad_spec.exit_code == 2 and "is not a JSON model spec" in bad_spec.stderr
    with faceledger.open(tmp_path / "data") as service:
        with pytest.raises(InvalidParameterException, match="model name"):
            service.register_face_model(name="Bad Name!", onnx_file=str(network), spec=SPEC)
        service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
        with pytest.raises(InvalidParameterException, match="registered already"):
            service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
        service.create_collection(collection_id="c", face_model="mine")
        with pytest.raises(InvalidParameterException, match="already"):
            service.migrate_collection(collection_id="c", face_model="mine")
        with pytest.raises(InvalidParameterException, match="No face model 'nope'"):
            service.migrate_collection(collection_id="c", face_model="nope")
        entries = [e for e in service.ledger.entries() if e.operation in ("RegisterFaceModel", "MigrateCollection")]
    assert [e.outcome for e in entries] == ["error", "ok", "error", "error", "error"]


def test_eval_measures_a_named_model_even_without_a_table(tmp_path: Path) -> None:
    from conftest import data_path

    network = conv_network(tmp_path / "mine.onnx")
    data = ["--data-dir", str(tmp_path / "data")]
    with faceledger.open(tmp_path / "data") as service:
        service.register_face_model(name="mine", onnx_file=str(network), spec=SPEC)
    common = ["--dataset", str(data_path("lfw")), "--limit-identities", "40", "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(
        app, [*data, "eval", "identification", *common, "--model", "mine", "--workers", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["default_threshold"] is None and numbers["fpir_predicted_vs_observed"] == []
    assert numbers["options"].startswith("mine-") and numbers["gallery"] > 0  # the model measured is named
    unknown = runner.invoke(app, [*data, "eval", "identification", *common, "--model", "nope"])
    assert unknown.exit_code == 2 and "No face model 'nope'" in unknown.output
