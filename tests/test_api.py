"""The HTTP API driven by the real boto3 client against a real server on loopback."""

from __future__ import annotations

import functools
import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image

import faceledger
from faceledger.api.app import ApiSettings

from api_server import RunningServer, running_server, send_raw
from conftest import image_bytes

OBAMA = ("facerec_examples", "obama", "obama.jpg")
OBAMA_2 = ("facerec_examples", "obama", "obama2.jpg")
BIDEN = ("facerec_examples", "biden", "biden.jpg")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> RunningServer:
    service = faceledger.open(tmp_path_factory.mktemp("api"))
    with running_server(service) as running:
        yield running
    service.close()


@pytest.fixture(scope="module")
def admin(server: RunningServer):
    return server.client_with_role("admin")


def _blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(out, format="PNG")
    return out.getvalue()


def test_every_face_operation_through_boto3(server: RunningServer, admin) -> None:
    created = admin.create_collection(CollectionId="everything", Tags={"team": "archive"})
    assert created["StatusCode"] == 200 and created["CollectionArn"].endswith("collection/everything")
    arn = created["CollectionArn"]
    described = admin.describe_collection(CollectionId="everything")
    assert described["FaceCount"] == 0 and described["CollectionARN"] == arn
    assert isinstance(described["CreationTimestamp"], datetime)
    assert "everything" in admin.list_collections()["CollectionIds"]

    detected = admin.detect_faces(Image={"Bytes": image_bytes("detection_multi", "images", "facenetpt_multiface.jpg")})
    assert len(detected["FaceDetails"]) == 6
    compared = admin.compare_faces(
        SourceImage={"Bytes": image_bytes(*OBAMA)}, TargetImage={"Bytes": image_bytes(*OBAMA_2)}
    )
    assert compared["FaceMatches"][0]["Similarity"] > 80

    obama = admin.index_faces(CollectionId="everything", Image={"Bytes": image_bytes(*OBAMA)}, ExternalImageId="obama")
    obama_id = obama["FaceRecords"][0]["Face"]["FaceId"]
    biden = admin.index_faces(
        CollectionId="everything",
        Image={"Bytes": image_bytes(*BIDEN)},
        ExternalImageId="biden",
        MaxFaces=1,
        QualityFilter="AUTO",
        DetectionAttributes=["DEFAULT"],
    )
    biden_id = biden["FaceRecords"][0]["Face"]["FaceId"]
    assert {f["FaceId"] for f in admin.list_faces(CollectionId="everything")["Faces"]} == {obama_id, biden_id}

    by_image = admin.search_faces_by_image(CollectionId="everything", Image={"Bytes": image_bytes(*OBAMA_2)})
    assert [m["Face"]["FaceId"] for m in by_image["FaceMatches"]] == [obama_id]
    assert by_image["SearchedFaceConfidence"] > 90
    headers = by_image["ResponseMetadata"]["HTTPHeaders"]  # what the threshold means, for SDKs that drop members
    assert headers["x-faceledger-threshold"] == "88.5" and headers["x-faceledger-threshold-status"] == "WITHIN_TARGET"
    assert float(headers["x-faceledger-expected-false-candidates"]) < 0.01
    by_id = admin.search_faces(CollectionId="everything", FaceId=obama_id, FaceMatchThreshold=0, MaxFaces=5)
    assert [m["Face"]["FaceId"] for m in by_id["FaceMatches"]] == [biden_id]

    admin.create_user(CollectionId="everything", UserId="barack")
    assert admin.list_users(CollectionId="everything")["Users"] == [{"UserId": "barack", "UserStatus": "CREATED"}]
    associated = admin.associate_faces(CollectionId="everything", UserId="barack", FaceIds=[obama_id])
    assert associated["AssociatedFaces"] == [{"FaceId": obama_id}] and associated["UserStatus"] == "ACTIVE"
    users = admin.search_users_by_image(CollectionId="everything", Image={"Bytes": image_bytes(*OBAMA_2)})
    assert [m["User"]["UserId"] for m in users["UserMatches"]] == ["barack"]
    assert (
        admin.search_users(CollectionId="everything", FaceId=obama_id)["UserMatches"][0]["User"]["UserId"] == "barack"
    )
    disassociated = admin.disassociate_faces(CollectionId="everything", UserId="barack", FaceIds=[obama_id])
    assert disassociated["DisassociatedFaces"] == [{"FaceId": obama_id}]
    admin.delete_user(CollectionId="everything", UserId="barack")

    admin.tag_resource(ResourceArn=arn, Tags={"purpose": "test"})
    assert admin.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "archive", "purpose": "test"}
    admin.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert admin.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"purpose": "test"}

    deleted = admin.delete_faces(CollectionId="everything", FaceIds=[obama_id])
    assert deleted["DeletedFaces"] == [obama_id]
    assert (
        admin.search_faces_by_image(CollectionId="everything", Image={"Bytes": image_bytes(*OBAMA_2)})["FaceMatches"]
        == []
    )
    assert admin.delete_collection(CollectionId="everything")["StatusCode"] == 200


def test_paginators_walk_every_page(server: RunningServer, admin) -> None:
    for n in range(5):
        admin.create_collection(CollectionId=f"page-{n}")
    pages = list(admin.get_paginator("list_collections").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 3
    listed = [c for page in pages for c in page["CollectionIds"]]
    assert [c for c in listed if c.startswith("page-")] == [f"page-{n}" for n in range(5)]

    collection = "page-0"
    for person in (OBAMA, OBAMA_2, BIDEN):
        admin.index_faces(CollectionId=collection, Image={"Bytes": image_bytes(*person)})
    face_pages = list(
        admin.get_paginator("list_faces").paginate(CollectionId=collection, PaginationConfig={"PageSize": 1})
    )
    assert len([f for page in face_pages for f in page["Faces"]]) == 3
    for n in range(3):
        admin.create_user(CollectionId=collection, UserId=f"user-{n}")
    user_pages = list(
        admin.get_paginator("list_users").paginate(CollectionId=collection, PaginationConfig={"PageSize": 2})
    )
    assert [u["UserId"] for page in user_pages for u in page["Users"]] == ["user-0", "user-1", "user-2"]
    assert len(user_pages) == 2


def test_errors_are_the_sdks_own_exception_classes(server: RunningServer) -> None:
    # Some cases repeat a call exactly (create twice, a token's retry); within one second that is
    # the same signed request, refused as a replay (503) and run on the SDK's retry, which is
    # signed anew, so this client retries, as boto3's default configuration does.
    admin = server.client_with_role("admin", retries=6)
    admin.create_collection(CollectionId="errors")
    face_id = admin.index_faces(CollectionId="errors", Image={"Bytes": image_bytes(*OBAMA)})["FaceRecords"][0]["Face"][
        "FaceId"
    ]
    cases = [
        (admin.exceptions.ResourceNotFoundException, lambda: admin.describe_collection(CollectionId="missing")),
        (admin.exceptions.ResourceAlreadyExistsException, lambda: admin.create_collection(CollectionId="errors")),
        (admin.exceptions.InvalidParameterException, lambda: admin.create_collection(CollectionId="bad name")),
        (
            admin.exceptions.InvalidParameterException,
            lambda: admin.search_faces_by_image(CollectionId="errors", Image={"Bytes": _blank_png()}),
        ),
        (  # no bucket is allowed unless the operator names it
            admin.exceptions.InvalidS3ObjectException,
            lambda: admin.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "n.jpg"}}),
        ),
        (admin.exceptions.InvalidImageFormatException, lambda: admin.detect_faces(Image={"Bytes": b"not an image"})),
        (admin.exceptions.ImageTooLargeException, lambda: _too_many_pixels(admin)),
        (
            admin.exceptions.InvalidPaginationTokenException,
            lambda: admin.list_faces(CollectionId="errors", NextToken="forged"),
        ),
        (admin.exceptions.ConflictException, lambda: _create_user_twice(admin)),
        (admin.exceptions.IdempotentParameterMismatchException, lambda: _reuse_token(admin, face_id)),
        (admin.exceptions.ServiceQuotaExceededException, lambda: _over_200_tags(admin)),
    ]
    for exception, call in cases:
        with pytest.raises(exception):
            call()


def _arn(client, collection: str) -> str:
    return client.describe_collection(CollectionId=collection)["CollectionARN"]


def _too_many_pixels(client) -> None:
    # 10,000 x 5,000 = 50 megapixels in a few KB: refused from the header, never decoded.
    out = io.BytesIO()
    Image.new("L", (10_000, 5_000)).save(out, format="PNG", optimize=True)
    client.detect_faces(Image={"Bytes": out.getvalue()})


def _over_200_tags(client) -> None:
    arn = _arn(client, "errors")
    client.tag_resource(ResourceArn=arn, Tags={f"k{n}": "v" for n in range(150)})
    client.tag_resource(ResourceArn=arn, Tags={f"j{n}": "v" for n in range(60)})


def _create_user_twice(client) -> None:
    client.create_user(CollectionId="errors", UserId="twice")
    client.create_user(CollectionId="errors", UserId="twice")


def _reuse_token(client, face_id: str) -> None:
    client.create_user(CollectionId="errors", UserId="tokened", ClientRequestToken="token-1")
    client.create_user(CollectionId="errors", UserId="tokened", ClientRequestToken="token-1")  # retry: same answer
    client.create_user(CollectionId="errors", UserId="someone-else", ClientRequestToken="token-1")


def test_internal_failure_is_an_internal_server_error(server: RunningServer, admin, monkeypatch) -> None:
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(server.service, "list_collections", broken)
    with pytest.raises(admin.exceptions.InternalServerError):
        admin.list_collections()


def test_throttling_when_too_many_requests_wait(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service:
        with running_server(service, ApiSettings(worker_threads=1, max_waiting=0)) as busy:
            clients = [busy.client_with_role("searcher") for _ in range(4)]
            photo = image_bytes("detection_multi", "images", "deepface_couple.jpg")
            outcomes: list[str] = []

            def detect(client) -> None:
                try:
                    client.detect_faces(Image={"Bytes": photo})
                    outcomes.append("ok")
                except client.exceptions.ThrottlingException:
                    outcomes.append("throttled")

            threads = [threading.Thread(target=detect, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert "ok" in outcomes and "throttled" in outcomes


def test_cheap_calls_do_not_wait_behind_image_analysis(tmp_path: Path, monkeypatch) -> None:
    """Every image worker busy and none waiting allowed: a search by face id, a listing, still run."""
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        face_id = service.index_faces(collection_id="c", image=image_bytes(*OBAMA))["FaceRecords"][0]["Face"]["FaceId"]
        analysing, release = threading.Event(), threading.Event()
        real_detect = service.detect_faces

        @functools.wraps(real_detect)  # the same parameters, for the wire's validation
        def slow_detect(**kwargs):
            analysing.set()
            release.wait(30)
            return real_detect(**kwargs)

        monkeypatch.setattr(service, "detect_faces", slow_detect)
        with running_server(service, ApiSettings(worker_threads=1, max_waiting=0)) as busy:
            client = busy.client_with_role("admin")
            photo = image_bytes("detection_multi", "images", "deepface_couple.jpg")
            detected: list[int] = []
            detecting = threading.Thread(
                target=lambda: detected.append(len(client.detect_faces(Image={"Bytes": photo})["FaceDetails"]))
            )
            detecting.start()
            try:
                assert analysing.wait(30)
                with pytest.raises(client.exceptions.ThrottlingException):  # the image path is full
                    client.detect_faces(Image={"Bytes": photo})
                assert client.list_collections()["CollectionIds"] == ["c"]
                assert client.search_faces(CollectionId="c", FaceId=face_id)["SearchedFaceId"] == face_id
                assert detected == []  # all of it while the image analysis was still running
            finally:
                release.set()
                detecting.join(60)
            assert detected == [2]


def test_roles_and_collection_scopes_are_enforced(server: RunningServer, admin) -> None:
    admin.create_collection(CollectionId="scoped-a")
    admin.create_collection(CollectionId="scoped-b")
    photo = {"Bytes": image_bytes(*OBAMA)}
    face_id = admin.index_faces(CollectionId="scoped-a", Image=photo)["FaceRecords"][0]["Face"]["FaceId"]

    searcher = server.client_with_role("searcher")
    with pytest.raises(searcher.exceptions.AccessDeniedException):
        searcher.index_faces(CollectionId="scoped-a", Image=photo)
    with pytest.raises(searcher.exceptions.AccessDeniedException):
        searcher.delete_faces(CollectionId="scoped-a", FaceIds=[face_id])
    with pytest.raises(searcher.exceptions.AccessDeniedException):
        searcher.create_collection(CollectionId="not-allowed")
    assert searcher.search_faces(CollectionId="scoped-a", FaceId=face_id)["SearchedFaceId"] == face_id

    indexer = server.client_with_role("indexer")
    with pytest.raises(indexer.exceptions.AccessDeniedException):
        indexer.search_faces_by_image(CollectionId="scoped-a", Image=photo)

    auditor = server.client_with_role("auditor")
    assert auditor.list_faces(CollectionId="scoped-a")["Faces"][0]["FaceId"] == face_id
    with pytest.raises(auditor.exceptions.AccessDeniedException):
        auditor.compare_faces(SourceImage=photo, TargetImage=photo)

    only_b = server.client_with_role("admin", collections=["scoped-b"])
    with pytest.raises(only_b.exceptions.AccessDeniedException):
        only_b.list_faces(CollectionId="scoped-a")
    with pytest.raises(only_b.exceptions.AccessDeniedException):
        only_b.list_tags_for_resource(ResourceArn=_arn(admin, "scoped-a"))
    assert only_b.list_collections()["CollectionIds"] == ["scoped-b"]
    assert server.service.describe_collection(collection_id="scoped-a")["FaceCount"] == 1


def _signed(
    server: RunningServer,
    key_id: str,
    secret: str,
    body: bytes,
    *,
    when: datetime | None = None,
    target: str = "RekognitionService.ListCollections",
) -> AWSRequest:
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": target,
        },
    )
    signer = SigV4Auth(Credentials(key_id, secret), "rekognition", "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:
        from unittest import mock

        # botocore stamps "now"; sign as if at `when`
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            signer.add_auth(request)
    return request


def test_wrong_secret_tampered_body_stale_and_unsigned_requests_are_refused(server: RunningServer) -> None:
    key, secret = server.service.access.create_key("admin")
    body = b'{"MaxResults": 10}'
    assert send_raw(_signed(server, key.access_key_id, secret, body))[0] == 200

    status, error = send_raw(_signed(server, key.access_key_id, secret + "x", body))
    assert (status, error["__type"]) == (400, "InvalidSignatureException")
    status, error = send_raw(_signed(server, key.access_key_id, secret, body), body=b'{"MaxResults": 11}')
    assert error["__type"] == "InvalidSignatureException"
    stale = datetime.now(UTC) - timedelta(minutes=20)
    status, error = send_raw(_signed(server, key.access_key_id, secret, body, when=stale))
    assert error["__type"] == "InvalidSignatureException" and "expired" in error["message"]
    status, error = send_raw(_signed(server, "FLNOSUCHKEY000000000", secret, body))
    assert error["__type"] == "UnrecognizedClientException"
    unsigned = AWSRequest(
        method="POST", url=server.url + "/", data=body, headers={"X-Amz-Target": "RekognitionService.ListCollections"}
    )
    status, error = send_raw(unsigned)
    assert (status, error["__type"]) == (403, "MissingAuthenticationTokenException")

    server.service.access.keys.set_enabled(key.access_key_id, False)
    status, error = send_raw(_signed(server, key.access_key_id, secret, body))
    assert error["__type"] == "UnrecognizedClientException"
    server.service.access.keys.set_enabled(key.access_key_id, True)


def test_presigned_query_string_is_accepted_and_expires(server: RunningServer) -> None:
    key, secret = server.service.access.create_key("admin")
    body = b"{}"
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "RekognitionService.ListCollections",
        },
    )
    SigV4QueryAuth(Credentials(key.access_key_id, secret), "rekognition", "us-east-1", expires=60).add_auth(request)
    assert "X-Amz-Signature=" in request.url
    status, reply = send_raw(request)
    assert status == 200 and "CollectionIds" in reply
    tampered = AWSRequest(
        method="POST",
        url=request.url.replace("X-Amz-Expires=60", "X-Amz-Expires=600"),
        data=body,
        headers=dict(request.headers.items()),
    )
    assert send_raw(tampered)[1]["__type"] == "InvalidSignatureException"


def test_unsupported_operation_and_insecure_mode(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service:
        with running_server(service, ApiSettings(auth=False)) as open_server:
            anonymous = AWSRequest(
                method="POST",
                url=open_server.url + "/",
                data=b"{}",
                headers={"X-Amz-Target": "RekognitionService.ListCollections"},
            )
            assert send_raw(anonymous) == (200, {"CollectionIds": [], "FaceModelVersions": []})
            labels = AWSRequest(
                method="POST",
                url=open_server.url + "/",
                data=b"{}",
                headers={"X-Amz-Target": "RekognitionService.DetectLabels"},
            )
            status, error = send_raw(labels)
            assert error["__type"] == "UnknownOperationException" and "face API" in error["message"]


def test_concurrent_indexing_and_searching_keep_the_store_consistent(server: RunningServer, admin) -> None:
    admin.create_collection(CollectionId="concurrent")
    photos = [image_bytes(*p) for p in (OBAMA, OBAMA_2, BIDEN, ("facerec_examples", "biden", "biden2.jpg"))]
    errors: list[BaseException] = []

    def index(photo: bytes) -> None:
        try:
            admin.index_faces(CollectionId="concurrent", Image={"Bytes": photo})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    def search() -> None:
        try:
            for _ in range(5):
                admin.list_faces(CollectionId="concurrent")
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=index, args=(p,)) for p in photos] + [threading.Thread(target=search)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    faces = admin.list_faces(CollectionId="concurrent")["Faces"]
    assert len(faces) == 4
    assert admin.describe_collection(CollectionId="concurrent")["FaceCount"] == 4
    assert len(server.service.indexes.for_search("concurrent")) == 4
