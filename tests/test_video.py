"""Stored-video face operations (StartFaceDetection / GetFaceDetection, StartFaceSearch /
GetFaceSearch) through the same door as a Rekognition user: boto3 against a real faceledger
server, videos in an S3-compatible server (moto's), and a video made from the shared photos in
which a known person appears at known times."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.config import VideoLimits
from faceledger.errors import AccessDeniedException, FaceledgerError
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as
from faceledger.service.data_directory import SQLITE_FILE

from api_server import free_loopback_port, running_server
from conftest import data_path, image_bytes
from s3_server import CREDENTIALS, s3_client, s3_server, settings_reading
from video_clips import make_clip

OBAMA = ("facerec_examples", "obama", "obama.jpg")
REAL_CLIPS = ("facerec_short_hamilton_clip.mp4", "facenetpt_video.mp4")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Path:
    """6 s at 10 fps: Biden 0-2 s, nobody 2-3 s, Obama (another photo than the indexed one) 3-5 s,
    nobody 5-6 s."""
    return make_clip(
        tmp_path_factory.mktemp("clip") / "known.mp4",
        [
            (data_path("facerec_examples", "biden", "biden2.jpg"), 2),
            (None, 1),
            (data_path("facerec_examples", "obama", "obama2.jpg"), 2),
            (None, 1),
        ],
    )


@pytest.fixture(scope="module")
def s3_endpoint(clip: Path) -> Iterator[str]:
    with s3_server() as endpoint:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="photos")
        s3.put_object(Bucket="photos", Key="known.mp4", Body=clip.read_bytes())
        s3.put_object(Bucket="photos", Key="notes.txt", Body=b"not a video")
        s3.put_object(Bucket="photos", Key="broken.mp4", Body=clip.read_bytes()[: len(clip.read_bytes()) // 3])
        headerless = make_clip(
            clip.parent / "headerless.m4v",
            [(data_path("facerec_examples", "obama", "obama2.jpg"), 6)],
            codec="mpeg4",
            container_format="m4v",
        )
        s3.put_object(Bucket="photos", Key="headerless.m4v", Body=headerless.read_bytes())
        for name in REAL_CLIPS:
            s3.put_object(Bucket="photos", Key=name, Body=data_path("detection_multi", "video", name).read_bytes())
        yield endpoint


def _video(name: str) -> dict:
    return {"S3Object": {"Bucket": "photos", "Name": name}}


def _gallery(service: FaceService) -> str:
    service.create_collection(collection_id="c")
    indexed = service.index_faces(collection_id="c", image=image_bytes(*OBAMA), external_image_id="obama")
    return indexed["FaceRecords"][0]["Face"]["FaceId"]


def _all_pages(call, **request) -> list[dict]:
    """Every page, as a paginator walks them (NextToken until there is none)."""
    pages = [call(**request)]
    while "NextToken" in pages[-1]:
        pages.append(call(**request, NextToken=pages[-1]["NextToken"]))
    return pages


def test_a_known_person_is_matched_at_the_right_times(tmp_path: Path, s3_endpoint: str) -> None:
    with FaceService(settings_reading(tmp_path / "data", s3_endpoint)) as service, running_server(service) as server:
        obama_id = _gallery(service)
        rekognition = server.client_with_role("searcher")
        started = rekognition.start_face_search(
            Video=_video("known.mp4"), CollectionId="c", JobTag="known-clip", ClientRequestToken="once"
        )
        job_id = started["JobId"]
        time.sleep(1.1)  # a retry signed anew (the same signature would be refused as a replay)
        again = rekognition.start_face_search(
            Video=_video("known.mp4"), CollectionId="c", JobTag="known-clip", ClientRequestToken="once"
        )
        assert again["JobId"] == job_id  # the same request, retried: the same job
        waiting = rekognition.get_face_search(JobId=job_id)
        assert waiting["JobStatus"] == "IN_PROGRESS" and waiting["Persons"] == []
        assert service.run_video_job() is True  # what serve's worker does

        pages = _all_pages(rekognition.get_face_search, JobId=job_id, MaxResults=7)
        assert len(pages) > 1 and all(len(page["Persons"]) <= 7 for page in pages)
        persons = [p for page in pages for p in page["Persons"]]
        whole = rekognition.get_face_search(JobId=job_id)
        assert persons == whole["Persons"] and "NextToken" not in whole
        assert whole["JobStatus"] == "SUCCEEDED" and whole["JobTag"] == "known-clip"
        assert whole["Video"] == _video("known.mp4")
        metadata = whole["VideoMetadata"]
        assert (metadata["Codec"], metadata["FrameWidth"], metadata["FrameHeight"]) == ("h264", 640, 480)
        assert metadata["DurationMillis"] == 6000 and metadata["FrameRate"] == 10

        matched = [p["Timestamp"] for p in persons if [m["Face"]["FaceId"] for m in p["FaceMatches"]] == [obama_id]]
        assert matched and 3000 <= min(matched) <= 3200 and 4800 <= max(matched) < 5000  # Obama's 2 s, sampled
        others = [p for p in persons if not p["FaceMatches"]]
        assert others and max(p["Timestamp"] for p in others) < 2000  # Biden, matched to nobody
        indexes = {p["Person"]["Index"] for p in persons}
        assert len(indexes) == 2  # one index per person while visible
        by_index = [p["Person"]["Index"] for p in rekognition.get_face_search(JobId=job_id, SortBy="INDEX")["Persons"]]
        assert by_index == sorted(by_index)
        timestamps = [p["Timestamp"] for p in persons]
        assert timestamps == sorted(timestamps)

        (end,) = list(service.ledger.entries(operation="FaceSearchJob"))
        (start,) = list(service.ledger.entries(operation="StartFaceSearch", outcome="ok"))[:1]
        assert end.access_key_id == start.access_key_id  # ledgered as whoever started the job
        assert end.outcome == "ok" and end.result["JobStatus"] == "SUCCEEDED"
        (person,) = end.result["MatchedPersons"]
        assert person["FaceMatches"][0]["FaceId"] == obama_id and person["FirstSeenMillis"] == min(matched)
        assert end.result["S3Objects"][0]["Name"] == "known.mp4" and end.input_sha256

        assert {m["Face"]["ExternalImageId"] for p in persons for m in p["FaceMatches"]} == {"obama"}
        # a face erased since is left out of the job's results, and they keep nothing of it but its id
        service.erase_faces(collection_id="c", face_ids=[obama_id])
        after = rekognition.get_face_search(JobId=job_id)
        assert all(p["FaceMatches"] == [] for p in after["Persons"])
        stored = [r.result for r in service.store.video_jobs.results(job_id, False, 0, 1000)]
        assert "obama" not in json.dumps(stored)


def test_refusals_when_a_job_is_asked_for(tmp_path: Path, s3_endpoint: str) -> None:
    limits = VideoLimits(max_bytes=len(data_path("detection_multi", "video", REAL_CLIPS[1]).read_bytes()) - 1)
    with FaceService(settings_reading(tmp_path / "data", s3_endpoint, video_limits=limits)) as service:
        _gallery(service)
        with running_server(service) as server:
            rekognition = server.client_with_role("searcher")

            def code(**request) -> str:
                with pytest.raises(ClientError) as refused:
                    rekognition.start_face_search(CollectionId="c", **request)
                return refused.value.response["Error"]["Code"]

            assert code(Video=_video("nobody.mp4")) == "InvalidS3ObjectException"
            assert code(Video={"S3Object": {"Bucket": "elsewhere", "Name": "known.mp4"}}) == "InvalidS3ObjectException"
            assert code(Video=_video(REAL_CLIPS[1])) == "VideoTooLargeException"  # refused before it is read
            channel = {"SNSTopicArn": "arn:aws:sns:us-east-1:1:t", "RoleArn": "arn:aws:iam::1:role/r"}
            assert code(Video=_video("known.mp4"), NotificationChannel=channel) == "InvalidParameterException"
            rekognition.start_face_search(Video=_video("known.mp4"), CollectionId="c", ClientRequestToken="t1")
            time.sleep(1.1)
            with pytest.raises(ClientError) as mismatch:
                rekognition.start_face_search(
                    Video=_video("known.mp4"), CollectionId="c", ClientRequestToken="t1", FaceMatchThreshold=99
                )
            assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
            # a token is its key's own: another key's same token starts a job of its own
            other = server.client_with_role("searcher")
            assert other.start_face_search(Video=_video("known.mp4"), CollectionId="c", ClientRequestToken="t1")[
                "JobId"
            ]
            with pytest.raises(ClientError) as missing:
                rekognition.get_face_search(JobId="0" * 32)
            assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_corrupt_and_non_video_objects_fail_their_job_with_a_reason(tmp_path: Path, s3_endpoint: str) -> None:
    limits = VideoLimits(max_duration_seconds=5)
    with FaceService(settings_reading(tmp_path / "data", s3_endpoint, video_limits=limits)) as service:
        with running_server(service) as server:
            rekognition = server.client_with_role("searcher")
            jobs = {
                name: rekognition.start_face_detection(Video=_video(name))["JobId"]
                for name in ("notes.txt", "broken.mp4", "known.mp4", "headerless.m4v")
            }
            while service.run_video_job():
                pass
            answers = {name: rekognition.get_face_detection(JobId=job_id) for name, job_id in jobs.items()}
    assert {name: a["JobStatus"] for name, a in answers.items()} == dict.fromkeys(jobs, "FAILED")
    assert "not a video" in answers["notes.txt"]["StatusMessage"]
    assert (
        "corrupt" in answers["broken.mp4"]["StatusMessage"] or "not a video" in answers["broken.mp4"]["StatusMessage"]
    )
    assert "the limit is 5 s" in answers["known.mp4"]["StatusMessage"]  # 6 s over a 5 s limit
    # a stream whose header says nothing of its length is stopped where it passes the limit
    assert "runs past 5 s" in answers["headerless.m4v"]["StatusMessage"]
    ends = list(service.ledger.entries(operation="FaceDetectionJob"))
    assert [e.result["JobStatus"] for e in ends] == ["FAILED"] * 4
    # a key scoped to some collections reads no other key's detection job
    with acting_as(RequestContext(Caller("FLSCOPED000000000000", Role.SEARCHER, ("c",)))):
        with pytest.raises(AccessDeniedException):
            service.get_face_detection(job_id=jobs["known.mp4"])


@pytest.mark.parametrize("name", REAL_CLIPS)
def test_faces_of_the_real_clips_are_detected(tmp_path: Path, s3_endpoint: str, name: str) -> None:
    with FaceService(settings_reading(tmp_path / "data", s3_endpoint)) as service, running_server(service) as server:
        rekognition = server.client_with_role("searcher")
        job_id = rekognition.start_face_detection(Video=_video(name))["JobId"]
        service.run_video_job()
        pages = _all_pages(rekognition.get_face_detection, JobId=job_id, MaxResults=50)
    faces = [face for page in pages for face in page["Faces"]]
    metadata = pages[0]["VideoMetadata"]
    assert pages[0]["JobStatus"] == "SUCCEEDED" and metadata["Codec"] == "h264"
    assert len(faces) >= 5 and all(0 <= f["Timestamp"] <= metadata["DurationMillis"] for f in faces)
    sampled = sorted({f["Timestamp"] for f in faces})
    assert all(later - earlier >= 150 for earlier, later in zip(sampled, sampled[1:], strict=False))  # 5 a second
    assert all(set(f["Face"]) >= {"BoundingBox", "Confidence", "Landmarks"} for f in faces)
    assert not any(key in f["Face"] for f in faces for key in ("AgeRange", "Gender", "Emotions"))


def test_a_video_match_in_a_review_required_collection_opens_a_case(tmp_path: Path, clip: Path) -> None:
    with faceledger.open(tmp_path / "data") as service:
        obama_id = _gallery(service)
        service.put_collection_policy(collection_id="c", review_required=True)
        job_id = service.start_face_search(video=clip, collection_id="c")["JobId"]
        service.run_video_job(job_id=job_id)
        (end,) = list(service.ledger.entries(operation="FaceSearchJob"))
        (person,) = end.result["MatchedPersons"]
        case = service.get_review_case(case_id=person["ReviewCaseId"], include_face_crops=True)
    assert case["Operation"] == "StartFaceSearch" and case["Candidates"][0]["FaceId"] == obama_id
    assert case["ProbeFaceCrop"] is not None  # the person's face, as it was seen in the video


def test_video_search_on_the_command_line(tmp_path: Path, clip: Path) -> None:
    with faceledger.open(tmp_path / "data") as service:
        _gallery(service)
    result = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "data"), "video", "search", str(clip), "-c", "c", "--json"]
    )
    assert result.exit_code == 0, result.output
    response = json.loads(result.output)
    assert response["JobStatus"] == "SUCCEEDED" and "NextToken" not in response
    assert any(m["Face"]["ExternalImageId"] == "obama" for p in response["Persons"] for m in p["FaceMatches"])
    shown = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "video", "search", str(clip), "-c", "c"])
    assert shown.exit_code == 0 and "obama" in shown.output and "2 person(s)" in shown.output


@pytest.mark.backends("sqlite")
def test_a_job_running_when_the_server_dies_is_taken_up_again(tmp_path: Path, s3_endpoint: str) -> None:
    """SIGKILL of the server in the middle of a job; the restarted server finishes it."""
    long_clip = make_clip(
        tmp_path / "long.mp4",
        [(data_path("facerec_examples", "obama", "obama2.jpg"), 20)],
        size=(1280, 720),
    )
    s3_client(s3_endpoint).put_object(Bucket="photos", Key="long.mp4", Body=long_clip.read_bytes())
    data_dir = tmp_path / "data"
    with faceledger.open(data_dir) as service:
        _gallery(service)
        key = service.create_access_key(role="searcher")
    environment = {
        "FACELEDGER_S3_ENDPOINT_URL": s3_endpoint,
        "FACELEDGER_S3_BUCKETS": "photos",
        "FACELEDGER_S3_REGION": "us-east-1",
        "FACELEDGER_S3_ACCESS_KEY_ID": "testing",
        "FACELEDGER_S3_SECRET_ACCESS_KEY": "testing",
    }
    port = free_loopback_port()
    rekognition = boto3.client(
        "rekognition",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name=CREDENTIALS["region_name"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )

    def serve() -> subprocess.Popen:
        import os

        command = shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")
        server = subprocess.Popen(
            [command, "--data-dir", str(data_dir), "serve", "--port", str(port)],
            env={**os.environ, **environment},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                rekognition.list_collections()
                return server
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    raise
                time.sleep(0.2)

    def holder() -> tuple[str | None, int]:
        with sqlite3.connect(data_dir / SQLITE_FILE) as db:
            return db.execute("SELECT claimed_by, attempts FROM video_jobs").fetchone()

    server = serve()
    try:
        job_id = rekognition.start_face_search(Video=_video("long.mp4"), CollectionId="c")["JobId"]
        deadline = time.monotonic() + 60
        while holder()[0] is None:  # the server's worker has taken the job
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        assert rekognition_status(rekognition, job_id, expect_failure=True) is None  # nobody answers
        server = serve()
        deadline = time.monotonic() + 120
        while (answer := rekognition.get_face_search(JobId=job_id))["JobStatus"] == "IN_PROGRESS":
            assert time.monotonic() < deadline, "the job was not taken up again"
            time.sleep(1.0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert answer["JobStatus"] == "SUCCEEDED" and answer["VideoMetadata"]["DurationMillis"] == 20000
    assert holder()[1] == 2  # taken up a second time
    with faceledger.open(data_dir) as service:
        (end,) = list(service.ledger.entries(operation="FaceSearchJob"))
    assert end.result["Attempts"] == 2 and end.result["MatchedPersons"]


def rekognition_status(rekognition, job_id: str, *, expect_failure: bool) -> str | None:
    """The job's status as the server says it, None when no server answers."""
    try:
        return rekognition.get_face_search(JobId=job_id)["JobStatus"]
    except Exception:
        if expect_failure:
            return None
        raise


def test_a_portrait_phone_video_is_searched_upright(tmp_path: Path) -> None:
    """Stored sideways with a display rotation, as phones store portrait video."""
    turned = make_clip(
        tmp_path / "portrait.mp4",
        [(data_path("facerec_examples", "obama", "obama2.jpg"), 2)],
        size=(480, 640),
        stored_turned=True,
    )
    with faceledger.open(tmp_path / "data") as service:
        obama_id = _gallery(service)
        job_id = service.start_face_search(video=turned, collection_id="c")["JobId"]
        service.run_video_job(job_id=job_id)
        persons = service.get_face_search(job_id=job_id)["Persons"]
    assert persons and all([m["Face"]["FaceId"] for m in p["FaceMatches"]] == [obama_id] for p in persons)
    box = persons[0]["Person"]["BoundingBox"]
    assert box["Height"] > 0 and box["Top"] + box["Height"] <= 1.01  # relative to the upright frame


def test_bad_video_requests_get_clear_errors(tmp_path: Path, clip: Path) -> None:
    from faceledger.errors import InvalidParameterException, InvalidS3ObjectException
    from faceledger.service.objects import S3Object

    with faceledger.open(tmp_path / "data") as service:
        _gallery(service)
        job_id = service.start_face_search(video=clip, collection_id="c")["JobId"]
        service.run_video_job(job_id=job_id)
        refused = [
            lambda: service.start_face_detection(video=clip, job_tag="not a tag!"),
            lambda: service.start_face_detection(video=clip, face_attributes="AGE"),
            lambda: service.start_face_detection(video=tmp_path / "nothing.mp4"),
            lambda: service.start_face_detection(video="s3://photos/known.mp4"),
            lambda: service.get_face_search(job_id=job_id, sort_by="NAME"),
            lambda: service.get_face_search(job_id=job_id, next_token="not a token"),
            lambda: service.get_face_search(job_id=job_id, max_results=0),
            lambda: service.get_face_search(job_id=job_id, max_results=1001),
            lambda: service.get_face_detection(job_id=job_id),  # a search job is no detection job
        ]
        codes = []
        for call in refused:
            with pytest.raises(FaceledgerError) as error:
                call()
            codes.append(error.value.code)
        assert codes == [
            *["InvalidParameterException"] * 5,
            "InvalidPaginationTokenException",
            *["InvalidParameterException"] * 2,
            "ResourceNotFoundException",
        ]
        # an S3 name that climbs out of its folder is refused before anything is asked of the store
        for name in ("people/../secrets/x.mp4", "bad\nname.mp4"):
            with pytest.raises(InvalidS3ObjectException):
                service.start_face_detection(video=S3Object("photos", name))
        with pytest.raises(InvalidParameterException):
            service.list_ledger_entries(since="yesterday")
