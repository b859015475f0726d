"""The operations end to end on real photos: index, search, delete, users, restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import faceledger
from faceledger.errors import (
    ConflictException,
    InvalidImageFormatException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from faceledger.service import FaceService
from faceledger.store.sql.store import SQLStore
from faceledger.vision import decode_image

from conftest import FACEREC_PEOPLE, data_path, image_bytes

UNLABELED = {
    "alex_lacamoire1.jpg": "alex_lacamoire",
    "johnsnow_test1.jpg": "kit_harington",
    "obama1.jpg": "obama",
}


@pytest.mark.parametrize("probe,person", sorted(UNLABELED.items()))
def test_search_by_image_finds_the_right_person(family: FaceService, probe: str, person: str) -> None:
    result = family.search_faces_by_image(
        collection_id="family", image=image_bytes("facerec_examples", "_test_unlabeled", probe)
    )
    assert result["FaceMatches"], "no match at the default threshold"
    assert {m["Face"]["ExternalImageId"] for m in result["FaceMatches"]} == {person}
    similarities = [m["Similarity"] for m in result["FaceMatches"]]
    assert similarities == sorted(similarities, reverse=True)
    assert all(80.0 <= s <= 100.0 for s in similarities)
    box = result["SearchedFaceBoundingBox"]
    assert 0 < box["Width"] < 1 and 0 < box["Height"] < 1


def test_search_by_image_searches_the_largest_face(family: FaceService) -> None:
    photo = image_bytes("facerec_examples", "_test_unlabeled", "obama_and_biden.jpg")
    result = family.search_faces_by_image(collection_id="family", image=photo)
    box = result["SearchedFaceBoundingBox"]
    largest = max(
        family.detect_faces(image=photo)["FaceDetails"],
        key=lambda d: d["BoundingBox"]["Width"] * d["BoundingBox"]["Height"],
    )
    assert box == largest["BoundingBox"]
    # Biden stands on the left, Obama on the right; their faces differ in size by under 10%, so
    # which is "largest" depends on the detector's boxes, and the match must follow it.
    person = "biden" if box["Left"] + box["Width"] / 2 < 0.5 else "obama"
    assert {m["Face"]["ExternalImageId"] for m in result["FaceMatches"]} == {person}


def test_biden_is_found_by_face_id_and_not_confused(family: FaceService) -> None:
    faces = family.list_faces(collection_id="family")["Faces"]
    biden = [f for f in faces if f["ExternalImageId"] == "biden"]
    assert len(biden) == 2
    result = family.search_faces(collection_id="family", face_id=biden[0]["FaceId"])
    assert result["SearchedFaceId"] == biden[0]["FaceId"]
    assert [m["Face"]["FaceId"] for m in result["FaceMatches"]] == [biden[1]["FaceId"]]


def test_thresholds_and_max_faces_are_honoured(family: FaceService) -> None:
    probe = image_bytes("facerec_examples", "_test_unlabeled", "obama1.jpg")
    everyone = family.search_faces_by_image(collection_id="family", image=probe, face_match_threshold=0, max_faces=100)
    assert len(everyone["FaceMatches"]) == 9  # every indexed face, strangers at low similarity
    assert everyone["FaceMatches"][-1]["Similarity"] < 80
    top = family.search_faces_by_image(collection_id="family", image=probe, face_match_threshold=0, max_faces=3)
    assert top["FaceMatches"] == everyone["FaceMatches"][:3]
    strict = family.search_faces_by_image(collection_id="family", image=probe, face_match_threshold=99.9)
    assert strict["FaceMatches"] == []


def test_compare_faces_matches_obama_not_biden(service: FaceService) -> None:
    result = service.compare_faces(
        source_image=image_bytes("facerec_examples", "obama", "obama.jpg"),
        target_image=image_bytes("detection_multi", "images", "facerec_obama_and_biden.jpg"),
    )
    assert len(result["FaceMatches"]) == 1
    assert result["FaceMatches"][0]["Similarity"] >= 80
    assert len(result["UnmatchedFaces"]) >= 1
    assert result["SourceImageFace"]["Confidence"] > 90


def test_detect_faces_reports_no_demographics(service: FaceService) -> None:
    result = service.detect_faces(
        image=image_bytes("detection_multi", "images", "facenetpt_multiface.jpg"), attributes=["ALL"]
    )
    assert len(result["FaceDetails"]) == 6
    for detail in result["FaceDetails"]:
        assert set(detail) == {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"}
        assert {lm["Type"] for lm in detail["Landmarks"]} == {"eyeLeft", "eyeRight", "nose"}
        left = next(lm for lm in detail["Landmarks"] if lm["Type"] == "eyeLeft")
        right = next(lm for lm in detail["Landmarks"] if lm["Type"] == "eyeRight")
        assert left["X"] < right["X"]


def test_collections_lifecycle_and_pagination(service: FaceService) -> None:
    for name in ("a", "b", "c"):
        created = service.create_collection(collection_id=name)
        assert created["StatusCode"] == 200
        assert created["CollectionArn"].endswith(f":collection/{name}")
    first = service.list_collections(max_results=2)
    assert first["CollectionIds"] == ["a", "b"] and "NextToken" in first
    second = service.list_collections(max_results=2, next_token=first["NextToken"])
    assert second["CollectionIds"] == ["c"] and "NextToken" not in second
    described = service.describe_collection(collection_id="b")
    assert described["FaceCount"] == 0 and described["UserCount"] == 0
    assert service.delete_collection(collection_id="b") == {"StatusCode": 200}
    assert service.list_collections()["CollectionIds"] == ["a", "c"]
    with pytest.raises(ResourceNotFoundException):
        service.describe_collection(collection_id="b")
    with pytest.raises(ResourceAlreadyExistsException):
        service.create_collection(collection_id="a")
    with pytest.raises(InvalidPaginationTokenException):
        service.list_collections(next_token="bm90IGEgdG9rZW4")


def test_index_reports_quality_failures_and_max_faces(service: FaceService) -> None:
    service.create_collection(collection_id="group")
    result = service.index_faces(
        collection_id="group",
        image=image_bytes("detection_multi", "images", "facenetpt_multiface.jpg"),
        external_image_id="team-photo",
        max_faces=2,
        quality_filter="NONE",
    )
    assert len(result["FaceRecords"]) == 2
    assert [u["Reasons"] for u in result["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]] * 4
    face = result["FaceRecords"][0]["Face"]
    assert face["ExternalImageId"] == "team-photo"
    assert face["IndexFacesModelVersion"] == result["FaceModelVersion"]
    # the crowd's small faces fail the HIGH bar with a stated reason
    crowd = service.index_faces(
        collection_id="group",
        image=image_bytes("detection_multi", "images", "retinaface_wider_test.jpg"),
        quality_filter="HIGH",
    )
    reasons = {r for u in crowd["UnindexedFaces"] for r in u["Reasons"]}
    assert "SMALL_BOUNDING_BOX" in reasons


def test_image_without_faces_indexes_nothing(service: FaceService) -> None:
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 160, 200)).save(blank, format="PNG")
    service.create_collection(collection_id="c")
    result = service.index_faces(collection_id="c", image=blank.getvalue())
    assert result["FaceRecords"] == [] and result["UnindexedFaces"] == []
    with pytest.raises(InvalidParameterException, match="no faces"):
        service.search_faces_by_image(collection_id="c", image=blank.getvalue())
    with pytest.raises(InvalidParameterException, match="no faces"):
        service.compare_faces(source_image=blank.getvalue(), target_image=blank.getvalue())


def _indexed(service: FaceService, *people: str) -> dict[str, str]:
    """Index the first image of each person; returns {person: face_id}."""
    service.create_collection(collection_id="c")
    ids = {}
    for person in people:
        path = sorted(data_path("facerec_examples", person).iterdir())[0]
        result = service.index_faces(collection_id="c", image=path.read_bytes(), external_image_id=person)
        ids[person] = result["FaceRecords"][0]["Face"]["FaceId"]
    return ids


def test_delete_really_removes(service: FaceService) -> None:
    ids = _indexed(service, "obama", "biden")
    obama_probe = image_bytes("facerec_examples", "obama", "obama2.jpg")
    assert service.search_faces_by_image(collection_id="c", image=obama_probe)["FaceMatches"]
    result = service.delete_faces(collection_id="c", face_ids=[ids["obama"], "00000000-0000-0000-0000-000000000000"])
    assert result["DeletedFaces"] == [ids["obama"]]
    assert result["UnsuccessfulFaceDeletions"] == [
        {"FaceId": "00000000-0000-0000-0000-000000000000", "Reasons": ["FACE_NOT_FOUND"]}
    ]
    assert (
        service.search_faces_by_image(collection_id="c", image=obama_probe, face_match_threshold=0)["FaceMatches"][0][
            "Face"
        ]["FaceId"]
        == ids["biden"]
    )
    assert [f["FaceId"] for f in service.list_faces(collection_id="c")["Faces"]] == [ids["biden"]]
    assert service.describe_collection(collection_id="c")["FaceCount"] == 1
    with pytest.raises(ResourceNotFoundException):
        service.search_faces(collection_id="c", face_id=ids["obama"])
    # and nothing of it is left in the database file, image record included
    db = service.store.database.connection()
    assert db.execute("SELECT COUNT(*) FROM faces WHERE face_id = ?", (ids["obama"],)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


def test_restart_keeps_everything(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as first:
        ids = _indexed(first, "obama", "biden", "rose_leslie")
        first.create_user(collection_id="c", user_id="barack")
        first.associate_faces(collection_id="c", user_id="barack", face_ids=[ids["obama"]])
        before = first.list_faces(collection_id="c")
    with faceledger.open(tmp_path) as second:
        assert second.list_faces(collection_id="c") == before
        assert second.describe_collection(collection_id="c")["UserCount"] == 1
        matches = second.search_faces_by_image(
            collection_id="c", image=image_bytes("facerec_examples", "obama", "obama2.jpg")
        )["FaceMatches"]
        assert [m["Face"]["FaceId"] for m in matches] == [ids["obama"]]
        assert matches[0]["Face"]["UserId"] == "barack"


def test_list_faces_pages_through_everything(family: FaceService) -> None:
    seen, token = [], None
    while True:
        page = family.list_faces(collection_id="family", max_results=4, next_token=token)
        assert len(page["Faces"]) <= 4
        seen += [f["FaceId"] for f in page["Faces"]]
        token = page.get("NextToken")
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 9
    with pytest.raises(InvalidPaginationTokenException):
        family.list_faces(collection_id="other", next_token=token or _any_token(family))


def _any_token(service: FaceService) -> str:
    return service.list_faces(collection_id="family", max_results=1)["NextToken"]


def test_users_associate_search_and_disassociate(service: FaceService) -> None:
    ids = _indexed(service, "obama", "biden")
    second_obama = service.index_faces(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama2.jpg"))[
        "FaceRecords"
    ][0]["Face"]["FaceId"]
    service.create_user(collection_id="c", user_id="barack")
    service.create_user(collection_id="c", user_id="joe")
    assert service.list_users(collection_id="c")["Users"] == [
        {"UserId": "barack", "UserStatus": "CREATED"},
        {"UserId": "joe", "UserStatus": "CREATED"},
    ]
    done = service.associate_faces(collection_id="c", user_id="barack", face_ids=[ids["obama"]])
    assert done["AssociatedFaces"] == [{"FaceId": ids["obama"]}] and done["UserStatus"] == "ACTIVE"
    # Biden's face does not match Barack's: refused with the similarity it reached
    refused = service.associate_faces(collection_id="c", user_id="barack", face_ids=[ids["biden"], second_obama])
    assert refused["AssociatedFaces"] == [{"FaceId": second_obama}]
    [failure] = refused["UnsuccessfulFaceAssociations"]
    assert failure["FaceId"] == ids["biden"] and failure["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    assert failure["Confidence"] < 75
    service.associate_faces(collection_id="c", user_id="joe", face_ids=[ids["biden"]])
    taken = service.associate_faces(collection_id="c", user_id="joe", face_ids=[ids["obama"]])
    assert taken["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]

    by_image = service.search_users_by_image(
        collection_id="c", image=image_bytes("facerec_examples", "_test_unlabeled", "obama1.jpg")
    )
    assert [m["User"]["UserId"] for m in by_image["UserMatches"]] == ["barack"]
    by_face = service.search_users(collection_id="c", face_id=ids["biden"])
    assert [m["User"]["UserId"] for m in by_face["UserMatches"]] == ["joe"]
    assert service.search_users(collection_id="c", user_id="barack")["UserMatches"] == []

    # a face owned by a user is not deleted until it is disassociated
    blocked = service.delete_faces(collection_id="c", face_ids=[ids["obama"]])
    assert blocked["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    undone = service.disassociate_faces(collection_id="c", user_id="barack", face_ids=[ids["obama"], ids["biden"]])
    assert undone["DisassociatedFaces"] == [{"FaceId": ids["obama"]}]
    assert undone["UnsuccessfulFaceDisassociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    assert service.list_faces(collection_id="c", user_id="barack")["Faces"][0]["FaceId"] == second_obama
    service.delete_user(collection_id="c", user_id="barack")
    assert service.list_faces(collection_id="c", face_ids=[second_obama])["Faces"][0].get("UserId") is None
    with pytest.raises(ResourceNotFoundException):
        service.delete_user(collection_id="c", user_id="barack")
    with pytest.raises(ConflictException):  # Rekognition's error for an existing user
        service.create_user(collection_id="c", user_id="joe")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create_collection(collection_id="bad/name"),
        lambda s: s.create_collection(collection_id=""),
        lambda s: s.create_collection(collection_id="x" * 256),
        lambda s: s.search_faces(collection_id="c", face_id="not-a-uuid"),
        lambda s: s.search_faces(
            collection_id="c", face_id="00000000-0000-0000-0000-000000000000", face_match_threshold=101
        ),
        lambda s: s.search_faces(collection_id="c", face_id="00000000-0000-0000-0000-000000000000", max_faces=0),
        lambda s: s.search_faces(collection_id="c", face_id="00000000-0000-0000-0000-000000000000", max_faces=True),
        lambda s: s.index_faces(collection_id="c", image=b"x", max_faces=0),
        lambda s: s.index_faces(collection_id="c", image=b"x", quality_filter="SUPER"),
        lambda s: s.index_faces(collection_id="c", image=b"x", external_image_id="has space"),
        lambda s: s.index_faces(collection_id="c", image="not bytes"),
        lambda s: s.list_faces(collection_id="c", max_results=5000),
        lambda s: s.delete_faces(collection_id="c", face_ids=[]),
        lambda s: s.create_user(collection_id="c", user_id="a b"),
        lambda s: s.associate_faces(
            collection_id="c", user_id="u", face_ids=["00000000-0000-0000-0000-000000000000"] * 101
        ),
        lambda s: s.search_users(collection_id="c"),
        lambda s: s.list_users(collection_id="c", max_results=501),
    ],
)
def test_invalid_parameters_are_refused(service: FaceService, call) -> None:
    service.create_collection(collection_id="c")
    with pytest.raises(InvalidParameterException):
        call(service)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.describe_collection(collection_id="missing"),
        lambda s: s.delete_collection(collection_id="missing"),
        lambda s: s.index_faces(collection_id="missing", image=b"x"),
        lambda s: s.list_faces(collection_id="missing"),
        lambda s: s.search_faces(collection_id="c", face_id="00000000-0000-0000-0000-000000000000"),
        lambda s: s.create_user(collection_id="missing", user_id="u"),
        lambda s: s.associate_faces(
            collection_id="c", user_id="nobody", face_ids=["00000000-0000-0000-0000-000000000000"]
        ),
        lambda s: s.list_users(collection_id="missing"),
    ],
)
def test_unknown_resources_are_not_found(service: FaceService, call) -> None:
    service.create_collection(collection_id="c")
    with pytest.raises(ResourceNotFoundException):
        call(service)


def test_bad_image_bytes_are_refused_without_writing(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    with pytest.raises(InvalidImageFormatException):
        service.index_faces(collection_id="c", image=b"GIF89a not really")
    db = service.store.database.connection()
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_failure_mid_index_leaves_nothing_half_written(service: FaceService, monkeypatch: pytest.MonkeyPatch) -> None:
    service.create_collection(collection_id="c")
    group = image_bytes("detection_multi", "images", "facenetpt_multiface.jpg")
    real_face_row = SQLStore._face_row
    calls = {"n": 0}

    def crash_on_fourth_face(face):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk died")
        return real_face_row(face)

    monkeypatch.setattr(SQLStore, "_face_row", staticmethod(crash_on_fourth_face))
    with pytest.raises(OSError):
        service.index_faces(collection_id="c", image=group, quality_filter="NONE")
    monkeypatch.setattr(SQLStore, "_face_row", staticmethod(real_face_row))
    assert service.describe_collection(collection_id="c")["FaceCount"] == 0
    assert service.list_faces(collection_id="c")["Faces"] == []
    db = service.store.database.connection()
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    # the same image indexes fully afterwards, and search sees exactly the stored faces
    result = service.index_faces(collection_id="c", image=group, quality_filter="NONE")
    assert len(result["FaceRecords"]) == 6
    assert len(service.indexes.for_search("c")) == 6


def test_index_stays_in_step_with_another_writer(tmp_path: Path) -> None:
    """Two services on one data directory stand for two processes (CLI indexing while the
    server searches): each sees the other's adds and deletes at its next search."""
    probe = image_bytes("facerec_examples", "obama", "obama2.jpg")
    with faceledger.open(tmp_path) as writer, faceledger.open(tmp_path) as reader:
        ids = _indexed(writer, "biden")
        assert reader.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"] == []
        added = writer.index_faces(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama.jpg"))
        obama = added["FaceRecords"][0]["Face"]["FaceId"]
        assert [
            m["Face"]["FaceId"] for m in reader.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"]
        ] == [obama]
        writer.delete_faces(collection_id="c", face_ids=[obama])
        assert reader.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"] == []
        # the reader's own change is applied in step, without a rebuild
        reader.index_faces(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama.jpg"))
        index = reader.indexes.for_search("c")
        assert len(index) == 2 and index is reader.indexes.for_search("c")
        assert [
            m["Face"]["FaceId"]
            for m in reader.search_faces(collection_id="c", face_id=ids["biden"], face_match_threshold=0)["FaceMatches"]
        ] != []


def test_embeddings_round_trip_through_the_store(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    data = image_bytes("facerec_examples", "rose_leslie", "img1.jpg")
    service.index_faces(collection_id="c", image=data)
    decoded = decode_image(data)
    expected = service.analyzer.analyze(decoded.pixels, limit=1)[0].embedding
    [(_, record)] = service.store.list_faces("c")
    np.testing.assert_array_equal(service.templates.embedding(record), expected)
    assert record.image_sha256 == decoded.sha256


def test_people_fixture_covers_the_gallery(family: FaceService) -> None:
    external_ids = {f["ExternalImageId"] for f in family.list_faces(collection_id="family")["Faces"]}
    assert external_ids == set(FACEREC_PEOPLE)


def test_image_bytes_are_kept_only_when_asked(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    plain = image_bytes("facerec_examples", "biden", "biden.jpg")
    kept = image_bytes("facerec_examples", "biden", "biden2.jpg")
    service.index_faces(collection_id="c", image=plain)
    service.index_faces(collection_id="c", image=kept, store_image=True)
    db = service.store.database.connection()
    stored = dict(db.execute("SELECT image_sha256, content FROM images").fetchall())
    assert stored[hashlib.sha256(plain).hexdigest()] is None
    assert stored[hashlib.sha256(kept).hexdigest()] == kept


def test_limits_apply_to_every_operation(tmp_path: Path) -> None:
    from faceledger.config import ImageLimits
    from faceledger.errors import ImageTooLargeException

    photo = image_bytes("facerec_examples", "obama", "obama.jpg")
    with faceledger.open(tmp_path, image_limits=ImageLimits(max_pixels=500_000)) as small:
        small.create_collection(collection_id="c")
        with pytest.raises(ImageTooLargeException):
            small.index_faces(collection_id="c", image=photo)
        with pytest.raises(ImageTooLargeException):
            small.search_faces_by_image(collection_id="c", image=photo)
        with pytest.raises(ImageTooLargeException):
            small.detect_faces(image=photo)
        assert small.describe_collection(collection_id="c")["FaceCount"] == 0


def test_the_service_runs_on_the_face_model_it_is_given_and_keeps_collections_to_theirs(tmp_path: Path) -> None:
    """Index dimension, similarity scale, default threshold and FaceModelVersion all come from the
    model; a collection made with one model is not filled or searched with another."""
    from test_vision import BoxHistogramModel

    from faceledger.config import Settings
    from faceledger.vision import FaceAnalyzer

    group = image_bytes("detection_multi", "images", "facenetpt_multiface.jpg")
    settings = Settings(data_dir=tmp_path)
    with FaceService(settings, analyzer=FaceAnalyzer(model=BoxHistogramModel())) as other:
        assert other.create_collection(collection_id="c")["FaceModelVersion"] == "box-histogram-v0"
        indexed = other.index_faces(collection_id="c", image=group, quality_filter="NONE")
        assert len(indexed["FaceRecords"]) == 6 and indexed["FaceModelVersion"] == "box-histogram-v0"
        assert other.default_search_threshold("c") == 70.0
        found = other.search_faces_by_image(collection_id="c", image=group)
        assert found["FaceMatches"][0]["Similarity"] == pytest.approx(100.0, abs=1e-3)
        assert other.indexes.for_search("c")._index.d == 48
    with faceledger.open(tmp_path) as dlib_service:
        for call in (
            lambda: dlib_service.index_faces(collection_id="c", image=group),
            lambda: dlib_service.search_faces_by_image(collection_id="c", image=group),
        ):
            with pytest.raises(InvalidParameterException, match="box-histogram-v0"):
                call()
        assert dlib_service.describe_collection(collection_id="c")["FaceCount"] == 6
