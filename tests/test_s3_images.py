"""Images named by ``S3Object``, read from an S3-compatible server (moto's, on a loopback port),
through the same door as a Rekognition user: boto3 against a real faceledger server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from faceledger.config import ImageLimits, ObjectStorage, Settings
from faceledger.service import FaceService

from api_server import running_server
from conftest import image_bytes
from s3_server import s3_client, s3_server, settings_reading

OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_PROBE = ("facerec_examples", "_test_unlabeled", "obama1.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server with bucket 'photos' (versioned, allowed) and 'private' (not allowed)."""
    with s3_server() as endpoint:
        s3 = s3_client(endpoint)
        for bucket in ("photos", "private"):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket="photos", Key="people/obama.jpg", Body=image_bytes(*OBAMA))
        s3.put_object(Bucket="photos", Key="probe.jpg", Body=image_bytes(*OBAMA_PROBE))
        s3.put_object(Bucket="photos", Key="notes.txt", Body=b"not an image")
        s3.put_object(Bucket="private", Key="obama.jpg", Body=image_bytes(*OBAMA))
        yield endpoint


def _service(tmp_path: Path, endpoint: str, **limits: int) -> FaceService:
    return FaceService(settings_reading(tmp_path / "data", endpoint, image_limits=ImageLimits(**limits)))


def _photo(key: str, version: str | None = None) -> dict:
    named = {"Bucket": "photos", "Name": key}
    if version is not None:
        named["Version"] = version
    return {"S3Object": named}


def _error(call) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"]


def test_every_image_operation_reads_s3_objects(tmp_path: Path, s3_endpoint: str) -> None:
    with _service(tmp_path, s3_endpoint) as service, running_server(service) as server:
        rekognition = server.client_with_role("admin")
        rekognition.create_collection(CollectionId="c")
        indexed = rekognition.index_faces(CollectionId="c", Image=_photo("people/obama.jpg"), ExternalImageId="obama")
        face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
        found = rekognition.search_faces_by_image(CollectionId="c", Image=_photo("probe.jpg"))
        assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
        assert len(rekognition.detect_faces(Image=_photo("probe.jpg"))["FaceDetails"]) == 1
        compared = rekognition.compare_faces(
            SourceImage=_photo("probe.jpg"), TargetImage={"Bytes": image_bytes(*OBAMA)}
        )
        assert len(compared["FaceMatches"]) == 1
        rekognition.create_user(CollectionId="c", UserId="barack")
        rekognition.associate_faces(CollectionId="c", UserId="barack", FaceIds=[face_id])
        users = rekognition.search_users_by_image(CollectionId="c", Image=_photo("probe.jpg"))
        assert [u["User"]["UserId"] for u in users["UserMatches"]] == ["barack"]

        # the ledger says which object, which version, which bytes
        entry = list(service.ledger.entries(operation="IndexFaces"))[-1]
        (read,) = entry.result["S3Objects"]
        assert (read["Bucket"], read["Name"]) == ("photos", "people/obama.jpg") and read["Version"]
        assert entry.input_sha256 == [read["Sha256"]]
        import hashlib

        assert read["Sha256"] == hashlib.sha256(image_bytes(*OBAMA)).hexdigest()


def test_versions_missing_objects_and_buckets_not_allowed(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = s3_client(s3_endpoint)
    first = s3.put_object(Bucket="photos", Key="changing.jpg", Body=image_bytes(*OBAMA))["VersionId"]
    s3.put_object(Bucket="photos", Key="changing.jpg", Body=image_bytes(*BIDEN))
    with _service(tmp_path, s3_endpoint) as service, running_server(service) as server:
        rekognition = server.client_with_role("admin")
        rekognition.create_collection(CollectionId="c")
        obama = rekognition.index_faces(CollectionId="c", Image={"Bytes": image_bytes(*OBAMA)})
        obama_id = obama["FaceRecords"][0]["Face"]["FaceId"]
        # the version asked for, not the latest
        old = rekognition.search_faces_by_image(CollectionId="c", Image=_photo("changing.jpg", first))
        assert [m["Face"]["FaceId"] for m in old["FaceMatches"]] == [obama_id]
        latest = rekognition.search_faces_by_image(CollectionId="c", Image=_photo("changing.jpg"))
        assert latest["FaceMatches"] == []
        entry = list(service.ledger.entries(operation="SearchFacesByImage"))[-2]
        assert entry.result["S3Objects"][0]["Version"] == first

        assert _error(lambda: rekognition.detect_faces(Image=_photo("nobody.jpg"))) == "InvalidS3ObjectException"
        assert _error(lambda: rekognition.detect_faces(Image=_photo("probe.jpg", "3HL4kqtJvjVBH40Nrjfkd"))) == (
            "InvalidS3ObjectException"
        )
        private = {"S3Object": {"Bucket": "private", "Name": "obama.jpg"}}
        assert _error(lambda: rekognition.detect_faces(Image=private)) == "InvalidS3ObjectException"
        assert _error(lambda: rekognition.detect_faces(Image=_photo("notes.txt"))) == "InvalidImageFormatException"
        both = {"Bytes": image_bytes(*OBAMA), "S3Object": {"Bucket": "photos", "Name": "probe.jpg"}}
        assert _error(lambda: rekognition.detect_faces(Image=both)) == "InvalidParameterException"
        nameless = {"S3Object": {"Bucket": "photos"}}
        assert _error(lambda: rekognition.detect_faces(Image=nameless)) == "InvalidParameterException"
        for video in (nameless, {}):  # a stored video is always an S3 object, named in full
            assert _error(lambda v=video: rekognition.start_face_detection(Video=v)) == "InvalidParameterException"
        refused = service.ledger.entries(operation="DetectFaces", outcome="error")
        named = [e.result["S3Objects"][0] for e in refused if "S3Objects" in e.result]
        assert {"Bucket": "private", "Name": "obama.jpg", "Version": None, "Sha256": None} in named  # nothing read


def test_an_object_over_the_limit_is_refused_before_it_is_read(tmp_path: Path, s3_endpoint: str) -> None:
    size = len(image_bytes(*OBAMA))
    with _service(tmp_path, s3_endpoint, max_bytes=size - 1) as service, running_server(service) as server:
        rekognition = server.client_with_role("admin")
        assert _error(lambda: rekognition.detect_faces(Image=_photo("people/obama.jpg"))) == "ImageTooLargeException"
        entry = list(service.ledger.entries(operation="DetectFaces"))[-1]
        assert entry.error == "ImageTooLargeException" and entry.result["S3Objects"][0]["Sha256"] is None


def test_without_allowed_buckets_no_object_is_read(tmp_path: Path, s3_endpoint: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", object_storage=ObjectStorage(endpoint_url=s3_endpoint))
    with FaceService(settings) as service, running_server(service) as server:
        rekognition = server.client_with_role("admin")
        assert _error(lambda: rekognition.detect_faces(Image=_photo("probe.jpg"))) == "InvalidS3ObjectException"
