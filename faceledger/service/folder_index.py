"""Indexing a folder tree of photos: analysed in parallel, each image in its own transaction.

Every image that was indexed (with or without faces) is recorded by SHA-256, so an interrupted
run resumes where it stopped and a re-run skips what is already there, whatever the file names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from faceledger.config import ImageLimits
from faceledger.errors import (
    AccessDeniedException,
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
)
from faceledger.service import validation
from faceledger.service.face_service import FaceService
from faceledger.vision import AnalyzedImage, FaceAnalyzer, decode_image
from faceledger.vision.detect import FaceDetector
from faceledger.vision.model import FaceModel
from faceledger.vision.quality import QualityFilter, select_for_indexing

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
_NOT_ALLOWED_IN_ID = re.compile(r"[^a-zA-Z0-9_.\-:]")


class Outcome(str, Enum):
    INDEXED = "indexed"  # at least one face indexed
    NO_FACE = "no_face"  # readable, but no face was indexed
    SKIPPED = "skipped"  # the same bytes were indexed into this collection before
    UNREADABLE = "unreadable"  # not an image, corrupt, too large, or not readable
    REFUSED = "refused"  # the collection's policy refused it (e.g. no consent record)


@dataclass(frozen=True)
class FileResult:
    path: Path
    outcome: Outcome
    faces_indexed: int = 0
    faces_unindexed: int = 0
    error: str | None = None


def find_image_files(root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Image files under ``root`` (or ``root`` itself), by suffix, in a stable sorted order;
    none whose path below ``root`` matches a glob of ``exclude`` (``_test/*``, ``*.png``)."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), pattern) for pattern in exclude)
    )


def external_image_id_for(path: Path, root: Path) -> str:
    """The file's path below ``root`` as an ExternalImageId: ``/`` becomes ``:`` and any other
    character Rekognition does not allow becomes ``_``; long paths keep their last 255 chars."""
    relative = path.relative_to(root) if path != root else Path(path.name)
    text = _NOT_ALLOWED_IN_ID.sub("_", ":".join(relative.parts))
    return text[-255:]


@dataclass
class _Pending:
    """A file read and hashed, on its way through analysis to the store."""

    path: Path
    data: bytes
    analysis: Future | AnalyzedImage | None = None
    error: str | None = None

    def settle(self, outcome: AnalyzedImage | str) -> None:
        """Record what analysis gave: the analysed image, or why the file could not be read."""
        if isinstance(outcome, str):
            self.analysis, self.error = None, outcome
        else:
            self.analysis = outcome


_worker_analyzer: FaceAnalyzer | None = None
_worker_limits: ImageLimits | None = None


def _start_worker(parent: int, limits: ImageLimits, detector: FaceDetector, model: FaceModel) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what happens to the work (the
    # worker has ignored SIGINT since it started: see _start_pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    global _worker_analyzer, _worker_limits
    _worker_analyzer, _worker_limits = FaceAnalyzer(detector=detector, model=model), limits


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed, even by SIGKILL, it cannot say so): an
    orphaned worker would otherwise hold its memory forever."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_SECONDS)
    os._exit(0)


def _start_pool(run: _FolderRun, workers: int) -> ProcessPoolExecutor:
    """A pool whose workers all start now, ignoring SIGINT from their first instruction: a
    Ctrl-C while they start (before their initializer runs) would otherwise print a traceback from
    each. An ignored signal stays ignored across exec, and Python then installs no handler for it;
    a blocked one does not survive the spawn. A Ctrl-C within the few milliseconds the workers take
    to be forked is lost (press it again)."""
    analyzer = run.analyzer
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a process holding threads and DB handles
        initializer=_start_worker,
        initargs=(os.getpid(), run.service.settings.image_limits, analyzer.detector, analyzer.model),
    )
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        for _ in range(workers):  # a worker starts per task submitted while none is idle
            pool.submit(int)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    return pool


class _AnalyzerActor:
    """A Ray actor that analyses images: its models load once, when it starts."""

    def __init__(self, limits: ImageLimits, detector: FaceDetector, model: FaceModel) -> None:
        self._analyzer = FaceAnalyzer(detector=detector, model=model)
        self._limits = limits

    def analyze(self, data: bytes) -> AnalyzedImage | str:
        return _analyze(self._analyzer, data, self._limits)


class _RayPool:
    """Decoding and detection on Ray actors, one analyser each, spread over a local Ray
    (``address`` None: ``ray.init()`` starts one for this run) or an existing cluster (its
    address, or ``auto``); the same submit/shutdown as a process pool, so the run around it (file
    order, batched embedding, one transaction per image, resumption) is the same."""

    def __init__(self, run: _FolderRun, address: str | None, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise InvalidParameterException(
                "--ray needs Ray: python3 -m pip install 'faceledger[ray]' (or: pip install ray)."
            ) from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._actors: list = []
        self._turn = 0
        try:
            count = workers if workers > 0 else max(1, int(ray.cluster_resources().get("CPU", 1)))
            actor = ray.remote(num_cpus=1)(_AnalyzerActor)
            analyzer = run.analyzer
            limits = run.service.settings.image_limits
            self._actors = [actor.remote(limits, analyzer.detector, analyzer.model) for _ in range(count)]
        except BaseException:  # a Ray started here is not left running (Ctrl-C while the actors start)
            self.shutdown()
            raise

    @property
    def workers(self) -> int:
        return len(self._actors)

    def submit(self, data: bytes) -> Future:
        actor = self._actors[self._turn % len(self._actors)]
        self._turn += 1
        return actor.analyze.remote(data).future()

    def shutdown(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()


def _analyze(analyzer: FaceAnalyzer, data: bytes, limits: ImageLimits) -> AnalyzedImage | str:
    """Decode and analyse one image; a decoding error comes back as its message (it must cross
    a process boundary)."""
    try:
        return analyzer.analyze_image(decode_image(data, limits))
    except (InvalidImageFormatException, ImageTooLargeException) as exc:
        return exc.message


def _analyze_in_worker(data: bytes) -> AnalyzedImage | str:
    assert _worker_analyzer is not None and _worker_limits is not None
    return _analyze(_worker_analyzer, data, _worker_limits)


def index_files(
    service: FaceService,
    collection_id: str,
    root: Path,
    files: list[Path],
    *,
    quality_filter: str = "AUTO",
    max_faces: int | None = None,
    store_images: bool = False,
    workers: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
) -> Iterator[FileResult]:
    """Index ``files`` (found under ``root``), yielding the outcome of each in file order.

    With ``workers`` > 1, that many processes decode and detect while this process embeds the
    accepted faces of several images in one batch and writes each image in its own transaction.
    At most a few images per worker are in flight, so memory stays bounded whatever the number
    of files; the store only ever holds whole images, so an interrupted run loses nothing that
    was acknowledged and resumes by SHA-256. With ``ray`` (or a ``ray_address``), Ray actors
    decode and detect instead of processes (``workers`` of them; 0: one per CPU Ray offers).
    """
    service.store.require_collection(collection_id)
    # images are analysed (in workers too) with the face model the collection records
    analyzer = service.models.for_collection(collection_id)
    run = _FolderRun(
        service, analyzer, collection_id, root, validation.quality_filter(quality_filter), max_faces, store_images
    )
    if ray or ray_address is not None:
        pool = _RayPool(run, ray_address, workers)
        yield from _index_in_workers(run, files, pool.submit, pool.workers, pool.shutdown)
    elif workers <= 1:
        for path in files:
            item = run.read(path)
            if isinstance(item, _Pending):
                item.settle(_analyze(run.analyzer, item.data, service.settings.image_limits))
                yield from run.store([item])
            else:
                yield item
    else:
        pool = _start_pool(run, workers)
        yield from _index_in_workers(
            run,
            files,
            lambda data: pool.submit(_analyze_in_worker, data),
            workers,
            # interrupted or finished: drop what is queued, let running analyses end
            lambda: pool.shutdown(wait=True, cancel_futures=True),
        )


def _index_in_workers(
    run: _FolderRun,
    files: list[Path],
    submit: Callable[[bytes], Future],
    workers: int,
    shutdown: Callable[[], None],
) -> Iterator[FileResult]:
    """Analyse ``files`` through ``submit`` (a pool of ``workers``), store them in file order,
    and ``shutdown`` the pool however the run ends; nothing half-done is kept."""
    try:
        window: deque[_Pending | FileResult] = deque()
        paths = iter(files)
        exhausted = False
        while window or not exhausted:
            while not exhausted and len(window) < _IN_FLIGHT_PER_WORKER * workers:
                path = next(paths, None)
                if path is None:
                    exhausted = True
                    break
                item = run.read(path)
                if isinstance(item, _Pending):
                    item.analysis = submit(item.data)
                window.append(item)
            yield from _take_ready(run, window)
    finally:
        shutdown()


def _take_ready(run: _FolderRun, window: deque[_Pending | FileResult]) -> Iterator[FileResult]:
    """Take every finished image from the front of ``window`` (file order), embedding their faces
    together, in batches of about ``_EMBED_BATCH`` faces."""
    ready: list[_Pending] = []
    while window and (isinstance(window[0], FileResult) or not ready or window[0].analysis.done()):
        head = window.popleft()
        if isinstance(head, FileResult):
            if ready:
                yield from run.store(ready)
                ready = []
            yield head
            continue
        head.settle(head.analysis.result())
        ready.append(head)
        if sum(len(r.analysis.faces) for r in ready if r.analysis) >= _EMBED_BATCH:
            break
    yield from run.store(ready)


# How often a worker looks whether its parent is still there.
_PARENT_CHECK_SECONDS = 1.0
# Images queued per worker: enough to keep every worker busy while this process embeds and writes.
_IN_FLIGHT_PER_WORKER = 4
# Faces embedded in one batch (two chips each with flip augmentation).
_EMBED_BATCH = 16


@dataclass(frozen=True)
class _FolderRun:
    """One folder index: where the files go and how they are indexed."""

    service: FaceService
    analyzer: FaceAnalyzer
    collection_id: str
    root: Path
    level: QualityFilter
    max_faces: int | None
    store_images: bool

    def read(self, path: Path) -> _Pending | FileResult:
        limits = self.service.settings.image_limits
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                return FileResult(
                    path, Outcome.UNREADABLE, error=f"{size:,} bytes is over the limit of {limits.max_bytes:,}"
                )
            data = path.read_bytes()
        except OSError as exc:
            return FileResult(path, Outcome.UNREADABLE, error=exc.strerror or str(exc))
        sha256 = hashlib.sha256(data).hexdigest()
        if self.service.find_indexed_image(collection_id=self.collection_id, image_sha256=sha256):
            return FileResult(path, Outcome.SKIPPED)
        return _Pending(path, data)

    def store(self, items: list[_Pending]) -> Iterator[FileResult]:
        """Embed the faces each image will keep, in one batch, then index the images one by one."""
        analysed = [item.analysis for item in items if isinstance(item.analysis, AnalyzedImage)]
        self.analyzer.embed_faces(
            [face for image in analysed for face in select_for_indexing(image.faces, self.level, self.max_faces)[0]]
        )
        for item in items:
            if item.error is not None or item.analysis is None:
                yield FileResult(item.path, Outcome.UNREADABLE, error=item.error)
            else:
                yield self._index(item)

    def _index(self, item: _Pending) -> FileResult:
        assert isinstance(item.analysis, AnalyzedImage)
        if self.store_images:
            item.analysis.encoded = item.data
        try:
            result = self.service.index_image(
                collection_id=self.collection_id,
                image=item.analysis,
                external_image_id=external_image_id_for(item.path, self.root),
                max_faces=self.max_faces,
                quality_filter=self.level.value,
                store_image=self.store_images,
                source_path=str(item.path.relative_to(self.root) if item.path != self.root else item.path.name),
                only_new=True,
            )
        except AccessDeniedException as exc:
            return FileResult(item.path, Outcome.REFUSED, error=exc.message)
        if result.already_indexed:  # the same bytes, under another name or by a concurrent run
            return FileResult(item.path, Outcome.SKIPPED)
        return FileResult(
            item.path,
            Outcome.INDEXED if result.indexed else Outcome.NO_FACE,
            faces_indexed=len(result.indexed),
            faces_unindexed=len(result.unindexed),
        )


__all__ = ["FileResult", "Outcome", "external_image_id_for", "find_image_files", "index_files"]
