"""SearchAllFacesByImage (faceledger's extension): every face of a photo searched in one call, each
with its box and its matches, under the same threshold, policy, review and ledger rules as
SearchFacesByImage."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.errors import AccessDeniedException
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as

from api_server import call_extension, running_server
from conftest import data_path, image_bytes

OBAMA = ("facerec_examples", "obama", "obama.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")
BOTH = ("detection_multi", "images", "facerec_obama_and_biden.jpg")
SEARCHER = Caller("FLSEARCHER0000000000", Role.SEARCHER, None)


@pytest.fixture
def gallery(service: FaceService) -> FaceService:
    service.create_collection(collection_id="c")
    for photo in (OBAMA, BIDEN):
        service.index_faces(collection_id="c", image=image_bytes(*photo), external_image_id=photo[1])
    return service


def _by_left(response: dict) -> list[dict]:
    return sorted(response["SearchedFaces"], key=lambda f: f["FaceDetail"]["BoundingBox"]["Left"])


def test_every_face_is_searched_with_its_own_box_and_matches(gallery: FaceService) -> None:
    single = gallery.search_faces_by_image(collection_id="c", image=image_bytes(*BOTH))
    response = gallery.search_all_faces_by_image(collection_id="c", image=image_bytes(*BOTH))
    faces = response["SearchedFaces"]
    assert len(faces) == 3 and response["UnsearchedFaces"] == []  # the two men, and someone behind them
    found = [tuple(m["Face"]["ExternalImageId"] for m in face["FaceMatches"]) for face in _by_left(response)]
    assert found == [("biden",), ("obama",), ()]  # each face its own person, nobody else
    boxes = [face["FaceDetail"]["BoundingBox"] for face in _by_left(response)]
    assert boxes[0]["Left"] + boxes[0]["Width"] <= boxes[1]["Left"]  # side by side
    # the largest face is the one SearchFacesByImage searches, with the same similarity
    largest = max(faces, key=lambda f: f["FaceDetail"]["BoundingBox"]["Width"])
    assert largest["FaceMatches"][0]["Similarity"] == pytest.approx(single["FaceMatches"][0]["Similarity"])
    # three probes: three times the comparisons, and a default threshold for them
    assert (
        response["FaceledgerThreshold"]["TemplatesCompared"] == 3 * single["FaceledgerThreshold"]["TemplatesCompared"]
    )
    entry = list(gallery.ledger.entries(operation="SearchAllFacesByImage"))[-1]
    assert sorted(len(f["FaceMatches"]) for f in entry.result["SearchedFaces"]) == [0, 1, 1]
    assert entry.input_sha256 and entry.result["UnsearchedFacesCount"] == 0


def test_faces_below_the_quality_filter_are_listed_unsearched(gallery: FaceService) -> None:
    crowd = image_bytes("detection_multi", "images", "deepface_selfie-many-people.jpg")
    everyone = gallery.search_all_faces_by_image(collection_id="c", image=crowd)
    strict = gallery.search_all_faces_by_image(collection_id="c", image=crowd, quality_filter="HIGH")
    assert len(everyone["SearchedFaces"]) > len(strict["SearchedFaces"])
    assert len(strict["SearchedFaces"]) + len(strict["UnsearchedFaces"]) == len(everyone["SearchedFaces"])
    assert all(face["Reasons"] for face in strict["UnsearchedFaces"])


def test_policy_and_review_apply_to_each_face(gallery: FaceService) -> None:
    gallery.put_collection_policy(collection_id="c", review_required=True, purpose_required=True)
    with acting_as(RequestContext(SEARCHER)), pytest.raises(AccessDeniedException):
        gallery.search_all_faces_by_image(collection_id="c", image=image_bytes(*BOTH))
    assert list(gallery.ledger.entries(operation="SearchAllFacesByImage"))[-1].outcome == "denied"
    with acting_as(RequestContext(SEARCHER, purpose="reunification", case_ref="R-7")):
        response = gallery.search_all_faces_by_image(collection_id="c", image=image_bytes(*BOTH))
    cases = [face["FaceledgerReview"]["CaseId"] for face in response["SearchedFaces"] if face["FaceMatches"]]
    assert len(set(cases)) == 2  # one case per face, each with its own probe crop
    assert all(m["Verified"] is False for face in response["SearchedFaces"] for m in face["FaceMatches"])
    crops = {gallery.store.reviews.probe_crop(case_id) for case_id in cases}
    assert len(crops) == 2 and None not in crops


def test_over_http_and_on_the_command_line(tmp_path: Path) -> None:
    with faceledger.open(tmp_path / "data") as service:
        service.create_collection(collection_id="c")
        for photo in (OBAMA, BIDEN):
            service.index_faces(collection_id="c", image=image_bytes(*photo), external_image_id=photo[1])
        key = service.create_access_key(role="searcher")
        with running_server(service) as server:
            image = {"Bytes": base64.b64encode(image_bytes(*BOTH)).decode()}
            status, response = call_extension(
                server, key, "SearchAllFacesByImage", {"CollectionId": "c", "Image": image}
            )
    assert status == 200 and len(response["SearchedFaces"]) == 3
    result = CliRunner().invoke(
        app,
        ["--data-dir", str(tmp_path / "data"), "search", str(data_path(*BOTH)), "-c", "c", "--all-faces", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["SearchedFaces"]) == 3
    shown = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "data"), "search", str(data_path(*BOTH)), "-c", "c", "--all-faces"]
    )
    assert shown.exit_code == 0 and "obama" in shown.output and "biden" in shown.output
