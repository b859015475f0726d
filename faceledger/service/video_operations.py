"""Stored-video face operations, as Rekognition Video offers them: StartFaceDetection /
GetFaceDetection and StartFaceSearch / GetFaceSearch.

A Start operation checks the request (the video exists in an allowed bucket and is not too large,
the collection, the threshold and the policy's purpose demand) and records a job; it answers at
once with the JobId. A worker (``faceledger serve`` runs one per node; ``faceledger video search``
runs its own job) takes the job under a lease it renews while it works; if its process dies, the
lease runs out and another worker takes the job up again from the start, at most
``MAX_ATTEMPTS`` times, then the job is FAILED with the reason. A job never disappears silently.

A job decodes the video at ``VideoLimits.sample_fps`` frames a second (vision/video.py). Face
detection reports every face of every sampled frame. Face search follows each face from frame to
frame (vision/tracking.py), so one person keeps one ``Index`` while visible, and searches the
collection with a track's face when it first appears and again every ``SEARCH_EVERY_MS`` while it
stays (not in every frame); each sampled frame reports the person with its latest matches. The
threshold is fixed when the job starts, as for one search by image; what it means for the whole
job (every search of every person) is in the job's ledger entry. In a review_required collection
each person with matches opens a review case, with a crop of that person's face.

The job's end is one ledger entry (FaceDetectionJob, FaceSearchJob) under the key, purpose and
case that started it, written in the same transaction as its results: when the job was asked for,
when it ended, how it ended, and who was matched when. Results are kept a week (as Rekognition
keeps them; purge forgets them), and a face erased since is left out of them.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceledger.config import VideoLimits
from faceledger.errors import (
    AccessDeniedException,
    ConflictException,
    FaceledgerError,
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceUnavailableException,
    ThrottlingException,
)
from faceledger.service import validation
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as, current_context
from faceledger.service.idempotency import run_once
from faceledger.service.images import MAX_FACES_PER_IMAGE, ImageReader
from faceledger.service.models import FaceModels
from faceledger.service.objects import S3Object
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.results import Reply
from faceledger.service.review_operations import ReviewOperations
from faceledger.service.search_limits import SearchLimits
from faceledger.service.search_operations import SearchOperations
from faceledger.service.shapes import face_detail, stored_face
from faceledger.store import FaceRecord, Store
from faceledger.store.records import VideoJob, VideoJobResult
from faceledger.vision.crop import face_crop
from faceledger.vision.face import Face
from faceledger.vision.pipeline import FaceAnalyzer
from faceledger.vision.tracking import FaceTracker
from faceledger.vision.video import StoredVideo, UnreadableVideo, VideoFrame

log = logging.getLogger("faceledger.video")

LEASE_SECONDS = 15.0  # a worker that stops renewing its job loses it this long after
RENEW_EVERY_SECONDS = 5.0
MAX_ATTEMPTS = 3  # a job whose worker died this many times is failed, not taken up again
SEARCH_EVERY_MS = 2000  # a tracked face is searched when it appears, then at most this often
MATCHES_PER_PERSON = 10  # FaceMatches reported for a person at a time
MAX_RESULTS = 1000  # GetFaceDetection / GetFaceSearch page, as Rekognition's
# results a job may keep (a face at a time): held in memory until the job ends, written with it
MAX_RESULTS_PER_JOB = 50_000
_JOB_TAG = re.compile(r"[a-zA-Z0-9_.\-:+=/]{1,1024}")  # Rekognition's JobTag
KINDS = {"FaceDetection": "FaceDetectionJob", "FaceSearch": "FaceSearchJob"}  # job -> its ledgered end

# A video to process: an object of the configured store (the API), or a file on this machine (the
# CLI and Python only).
VideoInput = S3Object | Path
Ledgered = Callable[..., Any]  # FaceService._run_typed: runs an effect as one ledgered operation
Progress = Callable[[int, int], None]  # (milliseconds of video done, of video in all)


class _LeaseLost(Exception):
    """Another worker took the job (this one stopped renewing in time): leave it to that one."""


@dataclass(frozen=True)
class JobEnd:
    """A job's end: what its ledger entry keeps."""

    job: VideoJob
    status: str
    summary: dict[str, Any]

    def ledger_summary(self) -> dict[str, Any]:
        return {
            "JobId": self.job.job_id,
            "JobStatus": self.status,
            "AskedAt": self.job.created_at,
            "Attempts": self.job.attempts,
            **self.summary,
        }


class VideoOperations:
    def __init__(
        self,
        store: Store,
        images: ImageReader,
        models: FaceModels,
        search: SearchOperations,
        limits: SearchLimits,
        reviews: ReviewOperations,
        video_limits: VideoLimits,
        work_dir: Path,
        ledgered: Ledgered,
    ) -> None:
        self._store = store
        self._images = images
        self._models = models
        self._search = search
        self._limits = limits
        self._reviews = reviews
        self._video_limits = video_limits
        self._work_dir = work_dir
        self._ledgered = ledgered

    # -- starting ----------------------------------------------------------------------------

    def start(
        self,
        kind: str,
        video: VideoInput,
        collection_id: str | None,
        threshold: float | None,
        token: str | None,
        notification_channel: object,
        job_tag: str | None,
        held_by: str | None = None,
    ) -> Reply:
        """Check the request and record the job (once per ClientRequestToken); ``held_by``: the
        worker that will run it at once (the CLI), which holds it from the start."""
        if notification_channel is not None:
            raise InvalidParameterException(
                "NotificationChannel is not supported: faceledger sends no Amazon SNS notifications; call "
                f"Get{kind} until JobStatus is no longer IN_PROGRESS."
            )
        if job_tag is not None and (not isinstance(job_tag, str) or not _JOB_TAG.fullmatch(job_tag)):
            raise InvalidParameterException("JobTag must be 1-1024 characters of a-z, A-Z, 0-9 and _ . - : + = /.")
        source = self._check_video(video)
        if collection_id is not None:
            self._models.for_collection(collection_id)  # exists, and its model is run here
            meaning, _ = self._limits.resolve(
                collection_id, threshold, None, "FaceMatchThreshold", self._search.gallery_size(collection_id)
            )
            threshold = meaning.threshold
        request = {"Video": source, "CollectionId": collection_id, "FaceMatchThreshold": threshold, "JobTag": job_tag}

        def create() -> dict[str, Any]:
            context = current_context()
            job = VideoJob(
                job_id=uuid.uuid4().hex,
                kind=kind,
                status="IN_PROGRESS",
                status_message=None,
                collection_id=collection_id,
                request=request,
                access_key_id=context.caller.access_key_id,
                role=context.caller.role_name,
                collections=context.caller.collections,
                purpose=context.purpose,
                case_ref=context.case_ref,
                created_at=time.time(),
                claimed_by=held_by,
                lease_expires_at=time.time() + LEASE_SECONDS if held_by is not None else None,
            )
            self._store.video_jobs.create(job)
            return {"JobId": job.job_id}

        response = run_once(self._store, f"Start{kind}", token, [request], create)
        return Reply(response, {"JobId": response["JobId"], "Video": source, "FaceMatchThreshold": threshold})

    def _check_video(self, video: VideoInput) -> dict[str, Any]:
        """The video as the job records it, once it is known to exist and not to be too large."""
        if isinstance(video, S3Object):
            self._images.objects.check(video, self._video_limits.max_bytes)
            return {"S3Object": {"Bucket": video.bucket, "Name": video.name, "Version": video.version}}
        if isinstance(video, Path):
            if not video.is_file():
                raise InvalidParameterException(f"{video} is not a video file.")
            return {"LocalFile": str(video.resolve())}
        raise InvalidParameterException("Video must name an S3Object (Bucket, Name, optional Version).")

    # -- running -----------------------------------------------------------------------------

    def run(self, worker: str, job_id: str | None = None, progress: Progress | None = None) -> bool:
        """Take one job (``job_id``, or the oldest waiting) and run it to its end; False if there
        was none to take. Jobs whose workers died ``MAX_ATTEMPTS`` times are failed first, and
        downloads that dead workers of this machine left behind are removed."""
        now = time.time()
        for job in self._store.video_jobs.abandoned(now, MAX_ATTEMPTS):
            message = f"The job was taken up {job.attempts} times and its worker stopped each time (a crash?)."
            self._end(job, None, "FAILED", message, None, [], {})
        self._sweep_downloads()
        job = self._store.video_jobs.claim(worker, now, LEASE_SECONDS, MAX_ATTEMPTS, job_id)
        if job is None:
            return False
        with acting_as(_context(job)):  # review cases and searches are the requester's, not the server's
            self._process(job, worker, progress)
        return True

    def _process(self, job: VideoJob, worker: str, progress: Progress | None) -> None:
        source = job.request["Video"]
        stored = source.get("S3Object")
        named = S3Object(stored["Bucket"], stored["Name"], stored.get("Version")) if stored else None
        metadata, results, summary = None, [], {}
        download: Path | None = None
        try:
            with _Lease(self._store, job.job_id, worker) as lease:
                if named is not None:
                    self._work_dir.mkdir(mode=0o700, exist_ok=True)
                    handle, name = tempfile.mkstemp(
                        prefix=f"{job.job_id}.{os.getpid()}.", suffix=".video", dir=self._work_dir
                    )
                    os.close(handle)
                    download = Path(name)
                    self._images.objects.download(named, download, self._video_limits.max_bytes)
                    path = download
                else:
                    path = Path(source["LocalFile"])
                    if not path.is_file():
                        raise UnreadableVideo(f"The video file {path} is not there (the job ran on another machine?).")
                with StoredVideo(path, self._video_limits) as video:
                    metadata = video.metadata.to_response()
                    if job.kind == "FaceSearch":
                        results, summary = self._search_video(job, video, lease, progress)
                    else:
                        results, summary = self._detect_in_video(video, lease, progress)
                lease.check()
            status, message = "SUCCEEDED", None
        except _LeaseLost:
            log.warning("video job %s: another worker took it", job.job_id)
            return
        except (ServiceUnavailableException, ThrottlingException) as error:
            # the store or the object store is busy or away for now: the job is taken up again once
            # its lease runs out (within MAX_ATTEMPTS), not failed for what may pass
            log.warning("video job %s given back: %s", job.job_id, error.message)
            return
        except (UnreadableVideo, FaceledgerError) as error:
            status, message = "FAILED", str(getattr(error, "message", error))
        except Exception:  # noqa: BLE001 - a job must end with a reason, whatever broke
            log.exception("video job %s failed", job.job_id)
            status, message = "FAILED", "Internal error while processing the video."
        finally:
            if download is not None:
                download.unlink(missing_ok=True)
        self._end(job, worker, status, message, metadata, results, summary, named)

    def _sweep_downloads(self) -> None:
        """Remove the downloads of workers of this machine that are gone (killed mid-job)."""
        if not self._work_dir.is_dir():
            return
        for leftover in self._work_dir.glob("*.video"):
            try:
                os.kill(int(leftover.name.split(".")[1]), 0)
            except (ValueError, IndexError, ProcessLookupError):
                leftover.unlink(missing_ok=True)
            except PermissionError:  # a live process of another account
                pass

    def _end(
        self,
        job: VideoJob,
        worker: str | None,
        status: str,
        message: str | None,
        metadata: dict[str, Any] | None,
        results: list[VideoJobResult],
        summary: dict[str, Any],
        named: S3Object | None = None,
    ) -> None:
        """Write the job's end and results with its one ledger entry, as whoever started it."""
        current = self._store.video_jobs.get(job.job_id)
        if current is None or current.status != "IN_PROGRESS" or (worker is not None and current.claimed_by != worker):
            log.warning("video job %s: ended elsewhere, or taken by another worker", job.job_id)
            return  # not this worker's to end: no second entry for it

        def finish() -> JobEnd:
            if not self._store.video_jobs.finish(job.job_id, worker, status, message, metadata, results, time.time()):
                raise ConflictException(f"Video job {job.job_id} was taken by another worker before it ended here.")
            return JobEnd(job, status, summary)

        with acting_as(_context(job)):
            try:
                self._ledgered(
                    KINDS[job.kind], finish, collection_id=job.collection_id, images=[named] if named else []
                )
            except ConflictException:
                log.warning("video job %s: another worker ended it", job.job_id)

    def _detect_in_video(
        self, video: StoredVideo, lease: _Lease, progress: Progress | None
    ) -> tuple[list[VideoJobResult], dict[str, Any]]:
        analyzer = self._images.analyzer
        results: list[VideoJobResult] = []
        for frame, faces in analysed_frames(video, analyzer, self._video_limits.sample_fps):
            lease.check()
            height, width = frame.pixels.shape[:2]  # the frame's own size, whatever the header said
            for face in faces:
                _add(
                    results,
                    VideoJobResult(
                        frame.timestamp_ms,
                        None,
                        {"Timestamp": frame.timestamp_ms, "Face": face_detail(face, width, height)},
                    ),
                )
            if progress is not None:
                progress(frame.timestamp_ms, video.metadata.duration_ms)
        return results, {"FacesCount": len(results)}

    def _search_video(
        self, job: VideoJob, video: StoredVideo, lease: _Lease, progress: Progress | None
    ) -> tuple[list[VideoJobResult], dict[str, Any]]:
        collection_id = job.collection_id
        assert collection_id is not None
        analyzer = self._models.for_collection(collection_id)
        threshold = float(job.request["FaceMatchThreshold"])
        policy = self._store.policies.policy(collection_id)
        reported = min(MATCHES_PER_PERSON, policy.max_results or MATCHES_PER_PERSON)
        tracker = FaceTracker()
        results: list[VideoJobResult] = []
        people: dict[int, _Person] = {}
        searches = 0
        for frame, faces in analysed_frames(video, analyzer, self._video_limits.sample_fps):
            lease.check()
            height, width = frame.pixels.shape[:2]
            tracked = tracker.update(frame.timestamp_ms, faces)
            due = [
                (track, face)
                for track, face in tracked
                if face.chip is not None
                and (track.searched_ms is None or frame.timestamp_ms - track.searched_ms >= SEARCH_EVERY_MS)
            ]
            analyzer.embed_faces([face for _, face in due])
            for track, face in due:
                track.matches = self._search.by_embedding(collection_id, face.embedding, threshold, reported)
                track.searched_ms = frame.timestamp_ms
                searches += 1
                person = people.setdefault(track.index, _Person(track.index, frame.timestamp_ms))
                person.found(track.matches, lambda f=face, px=frame.pixels: face_crop(px, f.box))
            for track, face in tracked:
                people.setdefault(track.index, _Person(track.index, frame.timestamp_ms)).seen(frame.timestamp_ms)
                # the face id only: what the collection holds of the face is read when the results
                # are (an erased face then leaves nothing of it here, not even its ExternalImageId)
                matches: list[dict[str, Any]] = [{"Similarity": s, "FaceId": r.face_id} for s, r in track.matches]
                if policy.review_required:  # unverified until two reviewers confirm (the case below)
                    for match in matches:
                        match["Verified"] = False
                _add(
                    results,
                    VideoJobResult(
                        frame.timestamp_ms,
                        track.index,
                        {
                            "Timestamp": frame.timestamp_ms,
                            "Person": {
                                "Index": track.index,
                                "BoundingBox": face.box.relative(width, height),
                                "Face": face_detail(face, width, height),
                            },
                            "FaceMatches": matches,
                        },
                    ),
                )
            if progress is not None:
                progress(frame.timestamp_ms, video.metadata.duration_ms)
        gallery = self._search.gallery_size(collection_id)()
        meaning = self._limits.meaning(collection_id, max(1, searches) * gallery, threshold)
        matched = []
        for person in sorted(people.values(), key=lambda p: p.index):
            if not person.best:
                continue
            matches = sorted(person.best.values(), key=lambda m: m[0], reverse=True)[:reported]
            review = self._reviews.hold(
                collection_id, "StartFaceSearch", f"{job.job_id}#{person.index}", matches, person.crop
            )
            matched.append(
                {
                    "Index": person.index,
                    "FirstSeenMillis": person.first_ms,
                    "LastSeenMillis": person.last_ms,
                    "FaceMatches": [{"FaceId": r.face_id, "Similarity": round(s, 4)} for s, r in matches],
                    **({"ReviewCaseId": review.case_id} if review is not None else {}),
                }
            )
        return results, {
            "Persons": tracker.people,
            "Searches": searches,
            "MatchedPersons": matched,
            **meaning.ledger_summary(),
        }

    # -- results -----------------------------------------------------------------------------

    def collection_of(self, job_id: object) -> str | None:
        """The collection a job searched (for access), None for a detection job or none."""
        job = self._stored_job(job_id)
        return None if job is None else job.collection_id

    def _stored_job(self, job_id: object) -> VideoJob | None:
        return self._store.video_jobs.get(job_id) if isinstance(job_id, str) else None

    def get(self, kind: str, job_id: str, max_results: int, next_token: str | None, sort_by: str) -> Reply:
        """A page of the job's results (none while it is in progress), GetFaceDetection's or
        GetFaceSearch's shape; matches of faces erased since are left out."""
        job = self._stored_job(job_id)
        if job is None or job.kind != kind:
            raise ResourceNotFoundException(f"There is no {kind} job {job_id!r}.")
        caller = current_context().caller
        if job.collection_id is None and caller.collections is not None and caller.access_key_id != job.access_key_id:
            # a detection job belongs to no collection: a key scoped to some sees its own jobs only
            raise AccessDeniedException(f"Access key {caller.access_key_id} may not read another key's video job.")
        limit = validation.integer(max_results, "MaxResults", 1, MAX_RESULTS)
        if sort_by not in ("TIMESTAMP", "INDEX"):
            raise InvalidParameterException("SortBy must be TIMESTAMP or INDEX.")
        if job.collection_id is not None:  # who was matched when: read as a search is made
            self._limits.check_purpose(job.collection_id)
        listing = f"video:{job_id}:{sort_by}"
        offset = decode_token(listing, next_token) or 0
        if not isinstance(offset, int) or not 0 <= offset <= MAX_RESULTS_PER_JOB:
            raise InvalidParameterException("NextToken is not valid for this request.")
        response: dict[str, Any] = {"JobId": job.job_id, "JobStatus": job.status}
        source = job.request["Video"]
        if "S3Object" in source:
            response["Video"] = {"S3Object": {k: v for k, v in source["S3Object"].items() if v is not None}}
        if job.request.get("JobTag"):
            response["JobTag"] = job.request["JobTag"]
        if job.status_message:
            response["StatusMessage"] = job.status_message
        if job.video_metadata:
            response["VideoMetadata"] = job.video_metadata
        rows: list[VideoJobResult] = []
        if job.status == "SUCCEEDED":
            rows = self._store.video_jobs.results(job_id, sort_by == "INDEX", offset, limit + 1)
            if len(rows) > limit:
                response["NextToken"] = encode_token(listing, offset + limit)
                rows = rows[:limit]
        items = [row.result for row in rows]
        if kind == "FaceSearch":
            self._with_faces(job, items)
            response["Persons"] = items
        else:
            response["Faces"] = items
        return Reply(response, {"JobId": job.job_id, "JobStatus": job.status, "ItemsCount": len(items)})

    def _with_faces(self, job: VideoJob, persons: list[dict[str, Any]]) -> None:
        """Each match of ``persons`` with the face as the collection holds it now (Rekognition's
        ``Face``); the matches of faces erased since the job ran are left out."""
        assert job.collection_id is not None
        named = list({m["FaceId"] for p in persons for m in p["FaceMatches"]})
        records = (
            {r.face_id: r for _, r in self._store.list_faces(job.collection_id, face_ids=named, limit=len(named))}
            if named
            else {}
        )
        version = self._store.face_model_version(job.collection_id)
        for person in persons:
            person["FaceMatches"] = [
                {
                    "Similarity": m["Similarity"],
                    "Face": stored_face(records[m["FaceId"]], version),
                    **({"Verified": m["Verified"]} if "Verified" in m else {}),
                }
                for m in person["FaceMatches"]
                if m["FaceId"] in records
            ]


class _Lease:
    """A worker's hold on its job, renewed every RENEW_EVERY_SECONDS by a thread of its own while
    the job runs (downloading, decoding, ending alike); :meth:`check` raises _LeaseLost once it
    is lost (another worker has taken the job)."""

    def __init__(self, store: Store, job_id: str, worker: str) -> None:
        self._store = store
        self._job_id = job_id
        self._worker = worker
        self._stop = threading.Event()
        self._lost = False
        self._thread = threading.Thread(target=self._renew, name=f"faceledger-lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=LEASE_SECONDS)

    def check(self) -> None:
        if self._lost:
            raise _LeaseLost

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY_SECONDS):
            try:
                if not self._store.video_jobs.renew(self._job_id, self._worker, time.time() + LEASE_SECONDS):
                    self._lost = True
                    return
            except FaceledgerError as error:  # the store away for a moment: try again at the next turn
                log.warning("video job %s: lease not renewed: %s", self._job_id, error.message)


class _Person:
    """What a face search job knows of one tracked person."""

    def __init__(self, index: int, first_ms: int) -> None:
        self.index = index
        self.first_ms = first_ms
        self.last_ms = first_ms
        self.best: dict[str, tuple[float, FaceRecord]] = {}  # face id -> best similarity seen, record
        self._crop: bytes | None = None
        self._crop_similarity = -1.0

    def seen(self, timestamp_ms: int) -> None:
        self.last_ms = timestamp_ms

    def found(self, matches: list[tuple[float, FaceRecord]], crop: Callable[[], bytes]) -> None:
        for similarity, record in matches:
            if similarity > self.best.get(record.face_id, (-1.0, record))[0]:
                self.best[record.face_id] = (similarity, record)
        if matches and matches[0][0] > self._crop_similarity:  # the frame it matched best in
            self._crop, self._crop_similarity = crop(), matches[0][0]

    def crop(self) -> bytes:
        assert self._crop is not None
        return self._crop


def analysed_frames(
    video: StoredVideo, analyzer: FaceAnalyzer, sample_fps: float | None
) -> Iterator[tuple[VideoFrame, list[Face]]]:
    """The sampled frames, in order, each with its faces (detected, landmarks, chips, quality; not
    embedded), analysed on one thread per core a few frames ahead of the one given (the models
    release the interpreter lock; the threads keep the calling thread's CPU priority)."""
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers, thread_name_prefix="faceledger-video-frame") as pool:
        pending: deque[tuple[VideoFrame, Future[list[Face]]]] = deque()
        for frame in video.frames(sample_fps):
            pending.append((frame, pool.submit(analyzer.analyze, frame.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)))
            if len(pending) > 2 * workers:
                done, faces = pending.popleft()
                yield done, faces.result()
        while pending:
            done, faces = pending.popleft()
            yield done, faces.result()


def _add(results: list[VideoJobResult], result: VideoJobResult) -> None:
    if len(results) >= MAX_RESULTS_PER_JOB:
        raise UnreadableVideo(
            f"The video shows more than {MAX_RESULTS_PER_JOB:,} faces at the sampled times: split it into shorter videos."
        )
    results.append(result)


def worker_name() -> str:
    """This process, as the worker that holds a job (the random part tells apart processes of
    two containers that share a host name and a pid)."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _context(job: VideoJob) -> RequestContext:
    """Who asked for the job, and why: the job runs, and its end is ledgered, as them."""
    role = next((r for r in Role if r.value == job.role), None)
    return RequestContext(Caller(job.access_key_id, role, job.collections), purpose=job.purpose, case_ref=job.case_ref)
