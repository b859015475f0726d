"""Cohort score normalisation (AS-norm): a collection searched against another collection's faces
is scored and priced as vision/cohort.py says, and refuses what its table does not cover."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.errors import AccessDeniedException, InvalidParameterException, ResourceNotFoundException
from faceledger.eval import runs
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as
from faceledger.vision.calibration import RAW_SCORING, ThresholdRow, ThresholdTable
from faceledger.vision.cohort import (
    SCORING,
    SHIPPED_COHORT_TABLES,
    CohortNorm,
    clamped_similarity,
    normalised,
    shipped_cohort_table,
)
from faceledger.vision.model import DlibResNetModel
from faceledger.vision.onnx_model import UncalibratedModelError, unit_length

from conftest import FACEREC_PEOPLE, data_path, image_bytes

COHORT_FACES = 60  # LFW people, one image each, none of them in the gallery
MIN_FACES = 55  # stands in for MIN_COHORT_FACES (800), which a test cannot afford to index
PROBE = ("facerec_examples", "obama", "obama2.jpg")
runner = CliRunner()


def _cohort_table(cohort_faces: int | None = COHORT_FACES) -> ThresholdTable:
    """What 'faceledger calibrate' stores when the collection has a cohort, made up."""
    rows = tuple(
        ThresholdRow(t, fmr, 0.0, fmr * 1.1 + 1e-9, 1, 0.1, 0.09, 0.11, 10)
        for t, fmr in ((50.0, 1e-2), (70.0, 1e-6), (90.0, 0.0))
    )
    return ThresholdTable("my photos, with my cohort", 1_000, 10_000_000, rows, 1.0, SCORING, cohort_faces)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Path:
    """Collection 'g' (facerec_examples, one face per file) and 'k', the cohort (LFW strangers)."""
    data_dir = tmp_path_factory.mktemp("cohort")
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id="g")
        for person in FACEREC_PEOPLE:
            for path in sorted(data_path("facerec_examples", person).iterdir()):
                service.index_faces(collection_id="g", image=path.read_bytes(), external_image_id=person, max_faces=1)
        service.create_collection(collection_id="k")
        for person in sorted(p for p in data_path("lfw").iterdir() if p.is_dir()):
            if service.describe_collection(collection_id="k")["FaceCount"] >= COHORT_FACES:
                break
            image = sorted(person.iterdir())[0]
            service.index_faces(collection_id="k", image=image.read_bytes(), max_faces=1)
    return data_dir


@pytest.fixture
def cohort_copy(cohort_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_data_directory) -> Path:
    """A fresh copy of the cohort data directory (tests change it)."""
    monkeypatch.setattr("faceledger.service.cohorts.MIN_COHORT_FACES", MIN_FACES)
    return copy_data_directory(cohort_dir, tmp_path / "data")


@pytest.fixture
def cohorts(cohort_copy: Path) -> FaceService:
    with faceledger.open(cohort_copy) as service:
        yield service


def _expected_similarities(service: FaceService, probe: np.ndarray) -> dict[str, float]:
    """AS-norm Similarity of the probe with every face of 'g', computed here from the templates."""
    _, cohort, _ = service.templates.load("k")
    norm = CohortNorm(cohort)
    faces = [r for _, r in service.store.list_faces("g", limit=1000)]
    gallery = np.stack([service.templates.embedding(r) for r in faces])
    z = normalised(unit_length(probe[None]) @ unit_length(gallery).T, norm.stats(probe[None]), norm.stats(gallery))[0]
    return {r.face_id: clamped_similarity(float(v)) for r, v in zip(faces, z, strict=True)}


def test_a_collection_with_a_cohort_is_scored_by_asnorm_and_priced_by_a_cohort_table(cohorts: FaceService) -> None:
    raw = cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))
    assert raw["FaceledgerThreshold"]["Scoring"] == RAW_SCORING

    put = cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="k")
    assert put["Changes"] == {"Before": None, "After": "k"}
    assert cohorts.describe_collection(collection_id="g")["FaceledgerCohortCollectionId"] == "k"
    assert cohorts.get_collection_cohort(collection_id="g")["CohortCollectionId"] == "k"
    # dlib ships no table measured with a cohort, and a raw table does not price AS-norm scores
    cohorts.set_threshold_table(collection_id="g", table=DlibResNetModel().threshold_table())
    with pytest.raises(UncalibratedModelError, match="faceledger calibrate"):
        cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))
    assert cohorts.describe_collection(collection_id="g")["FaceledgerSearchThreshold"]["Status"] == "UNCALIBRATED"

    cohorts.set_threshold_table(collection_id="g", table=_cohort_table())
    found = cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE), face_match_threshold=0.0)
    meaning = found["FaceledgerThreshold"]
    assert meaning["Scoring"] == SCORING and meaning["Calibration"] == "my photos, with my cohort"
    matches = found["FaceMatches"]
    assert matches[0]["Face"]["ExternalImageId"] == "obama"
    similarities = [m["Similarity"] for m in matches]
    assert similarities == sorted(similarities, reverse=True)
    probe = cohorts.templates.embedding(
        cohorts.store.get_face("g", matches[0]["Face"]["FaceId"])[1]
    )  # SearchFaces by that face: its own template is the probe
    by_id = cohorts.search_faces(collection_id="g", face_id=matches[0]["Face"]["FaceId"], face_match_threshold=0.0)
    expected = _expected_similarities(cohorts, probe)
    assert by_id["FaceMatches"] and all(
        m["Similarity"] == pytest.approx(expected[m["Face"]["FaceId"]], abs=1e-3) for m in by_id["FaceMatches"]
    )
    assert matches[0]["Face"]["FaceId"] not in {m["Face"]["FaceId"] for m in by_id["FaceMatches"]}
    # users are scored the same way
    cohorts.create_user(collection_id="g", user_id="obama")
    obama = [f["FaceId"] for f in cohorts.list_faces(collection_id="g")["Faces"] if f["ExternalImageId"] == "obama"]
    cohorts.associate_faces(collection_id="g", user_id="obama", face_ids=obama)
    users = cohorts.search_users_by_image(collection_id="g", image=image_bytes(*PROBE), user_match_threshold=0.0)
    assert users["UserMatches"][0]["User"]["UserId"] == "obama"
    assert users["UserMatches"][0]["Similarity"] == pytest.approx(matches[0]["Similarity"], abs=1e-3)

    ended = cohorts.put_collection_cohort(collection_id="g")
    assert ended["Changes"] == {"Before": "k", "After": None}
    again = cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))
    assert again["FaceledgerThreshold"]["Scoring"] == RAW_SCORING  # the model's: the stored one is a cohort table
    entries = [e for e in cohorts.ledger.entries() if e.operation == "PutCollectionCohort"]
    assert [e.outcome for e in entries] == ["ok", "ok"]
    searches = [e.result.get("Scoring") for e in cohorts.ledger.entries() if e.operation == "SearchFacesByImage"]
    assert searches[-1] == RAW_SCORING and SCORING in searches  # the ledger says how each search was scored


def test_cohorts_that_cannot_price_a_search_are_refused(cohorts: FaceService) -> None:
    with pytest.raises(InvalidParameterException, match="own cohort"):
        cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="g")
    with pytest.raises(ResourceNotFoundException):
        cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="nowhere")
    with pytest.raises(InvalidParameterException):
        cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="not a collection id!")
    with pytest.raises(ResourceNotFoundException):
        cohorts.put_collection_cohort(collection_id="nowhere", cohort_collection_id="k")
    with pytest.raises(InvalidParameterException, match=f"at least {MIN_FACES}"):
        cohorts.put_collection_cohort(collection_id="k", cohort_collection_id="g")  # 'g' is too small
    scoped = Caller("FLADMINSCOPED0000000", Role.ADMIN, ("g",))
    with acting_as(RequestContext(scoped)), pytest.raises(AccessDeniedException, match="'k'"):
        cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="k")
    assert cohorts.get_collection_cohort(collection_id="g")["CohortCollectionId"] is None

    cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="k")
    cohorts.set_threshold_table(collection_id="g", table=_cohort_table(cohort_faces=COHORT_FACES + 1))
    with pytest.raises(InvalidParameterException, match="holds only for cohorts of 61"):
        cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))
    cohorts.set_threshold_table(collection_id="g", table=_cohort_table(cohort_faces=None))
    assert cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))["FaceMatches"]

    # erasing cohort faces is seen by the next search: below the minimum, searches are refused
    erased = cohorts.list_faces(collection_id="k", max_results=COHORT_FACES - MIN_FACES + 1)["Faces"]
    cohorts.delete_faces(collection_id="k", face_ids=[f["FaceId"] for f in erased])
    with pytest.raises(InvalidParameterException, match="--none"):
        cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))
    cohorts.delete_collection(collection_id="k")  # deleting the cohort ends the normalisation
    assert cohorts.get_collection_cohort(collection_id="g")["CohortCollectionId"] is None
    assert cohorts.search_faces_by_image(collection_id="g", image=image_bytes(*PROBE))["FaceMatches"]


def test_the_cli_sets_shows_and_ends_a_cohort(cohort_copy: Path) -> None:
    data = str(cohort_copy)

    def run(*args: str) -> dict:
        done = runner.invoke(app, ["--data-dir", data, "collection", "cohort", "g", *args, "--json"])
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    assert run()["CohortCollectionId"] is None
    assert run("--cohort", "k")["Changes"] == {"Before": None, "After": "k"}
    shown = runner.invoke(app, ["--data-dir", data, "collection", "describe", "g"])
    assert shown.exit_code == 0 and "Cohort" in shown.stdout and " k " in shown.stdout
    with faceledger.open(cohort_copy) as service:
        service.set_threshold_table(collection_id="g", table=_cohort_table())
    shown = runner.invoke(app, ["--data-dir", data, "thresholds", "--collection", "g"])
    assert shown.exit_code == 0 and f"Scores are {SCORING}" in shown.stdout and "cohorts of 60" in shown.stdout
    assert run("--none")["Changes"] == {"Before": "k", "After": None}
    both = runner.invoke(app, ["--data-dir", data, "collection", "cohort", "g", "--cohort", "k", "--none"])
    assert both.exit_code == 2 and "not both" in both.output


def test_calibrate_measures_with_the_cohort_and_says_so(cohorts: FaceService) -> None:
    _, vectors, _ = cohorts.templates.load("k")
    options = runs.EvalOptions(face="largest", workers=1, cohort=CohortNorm(vectors))
    table, report = runs.calibrate(data_path("deepface_unit"), options)
    assert table.scoring == SCORING and table.cohort_faces == COHORT_FACES
    assert "against a cohort of 60 faces" in table.source
    plain, _ = runs.calibrate(data_path("deepface_unit"), dataclasses.replace(options, cohort=None))
    assert plain.scoring == RAW_SCORING and plain.cohort_faces is None
    assert ThresholdTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_the_shipped_cohort_table_names_its_scoring_and_cohort_size() -> None:
    for version in SHIPPED_COHORT_TABLES:
        table = shipped_cohort_table(version)
        assert table is not None and table.scoring == SCORING
        assert table.cohort_faces == 3200 and table.transfer_margin == 2.5
        assert table.nonmated > 40_000_000  # all pairs within two halves of LFW
        assert table.threshold_for_fmr(1e-4) < 100.0


def test_over_http_a_key_scoped_to_one_collection_cannot_name_another_as_its_cohort(cohorts: FaceService) -> None:
    from api_server import call_extension, running_server

    with running_server(cohorts) as server:
        scoped = cohorts.create_access_key(role="admin", collections=["g"])
        admin = cohorts.create_access_key(role="admin")
        asked = {"CollectionId": "g", "CohortCollectionId": "k"}
        status, error = call_extension(server, scoped, "PutCollectionCohort", asked)
        assert (status, error["__type"]) == (400, "AccessDeniedException")
        status, error = call_extension(server, admin, "PutCollectionCohort", {**asked, "CohortCollectionId": 5})
        assert (status, error["__type"]) == (400, "InvalidParameterException")
        status, reply = call_extension(server, admin, "PutCollectionCohort", asked)
        assert status == 200 and reply["Changes"] == {"Before": None, "After": "k"}
        searcher = cohorts.create_access_key(role="searcher", collections=["g"])
        status, reply = call_extension(server, searcher, "GetCollectionCohort", {"CollectionId": "g"})
        assert (status, reply["CohortCollectionId"]) == (200, "k")
        status, error = call_extension(server, searcher, "PutCollectionCohort", {"CollectionId": "g"})
        assert (status, error["__type"]) == (400, "AccessDeniedException")
    refused = [e for e in cohorts.ledger.entries() if e.operation == "PutCollectionCohort" and e.outcome != "ok"]
    assert len(refused) == 3


def test_a_cohort_of_another_face_model_is_refused(cohorts: FaceService, tmp_path: Path) -> None:
    from test_onnx_model import DIMENSION, conv_network

    network = conv_network(tmp_path / "mine.onnx")
    spec = {"input_size": 112, "dimension": DIMENSION, "mean": [127.5] * 3, "std": [128.0] * 3}
    cohorts.register_face_model(name="mine", onnx_file=str(network), spec=spec)
    cohorts.create_collection(collection_id="other", face_model="mine")
    with pytest.raises(InvalidParameterException, match="not of face model"):
        cohorts.put_collection_cohort(collection_id="g", cohort_collection_id="other")
    assert cohorts.get_collection_cohort(collection_id="g")["CohortCollectionId"] is None
