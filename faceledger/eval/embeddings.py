"""Embedding a labelled image set once, in parallel, and caching the result.

An evaluation embeds thousands of images (all of LFW is 13,233); that is the slow part, so every
image's embedding is cached on disk, keyed by the image set, the face model's version, the
detector's settings and the face choice. Re-running an evaluation with another threshold, protocol
or grouping costs no embedding at all.

For each image the cache keeps the embedding of the chosen face, the embedding of its mirrored
chip (for flip test-time augmentation, which the evaluation applies itself so as to measure it on
and off from one cache), and whether a face was found at all: an image with no face is a *failure
to acquire* (FTA), kept as such and never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceledger.config import cache_root
from faceledger.vision import DlibResNetModel, FaceAnalyzer, FaceModel, read_image_file
from faceledger.vision.blazeface import BlazeFaceDetector
from faceledger.vision.detect import FaceDetector
from faceledger.vision.similarity import SimilarityScale

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    return cache_root() / "eval"


@dataclass
class EmbeddedSet:
    """Embeddings of a list of images (paths relative to the data set's root), row-aligned.

    ``found[i]`` is False for a failure to acquire; its rows hold NaN. ``flipped`` holds the
    embeddings of the horizontally mirrored chips. ``similarity``: the scale of the model that
    embedded them.
    """

    paths: list[str]
    vectors: np.ndarray
    flipped: np.ndarray
    found: np.ndarray
    similarity: SimilarityScale

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        index = {path: n for n, path in enumerate(self.paths)}
        return np.array([index[path] for path in paths], dtype=np.int64)

    def templates(self, flip: bool) -> np.ndarray:
        """The vectors compared, as the service stores them: plain, or the mean of plain and
        mirrored (flip TTA), made unit length again where the model's templates are unit vectors
        (operator ONNX models, faceres), as such a model does."""
        if not flip:
            return self.vectors
        mean = (self.vectors + self.flipped) / 2.0
        norms = np.linalg.norm(self.vectors[self.found], axis=1)
        if len(norms) and np.allclose(norms, 1.0, atol=1e-3):
            mean = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        return mean

    @property
    def failures_to_acquire(self) -> list[str]:
        return [path for path, found in zip(self.paths, self.found, strict=True) if not found]


# Without flip augmentation, since the evaluation mirrors each chip itself; one embedding thread
# per worker process, since the workers already use every core.
EVAL_MODEL = DlibResNetModel(threads=1, flip=False)


@dataclass(frozen=True)
class EmbeddingConfig:
    """What decides an embedding, hence the cache key (the model by its version, the detector by
    its name). ``face_choice``: ``largest`` face, or the face nearest the image ``centre`` (LFW's
    subject is centred; another face may be larger).

    ``model`` should not average with the mirror image itself (``flip`` measures that), and each
    worker process embeds with it as it is. Model and detector are sent to the worker processes.
    """

    face_choice: str = "largest"
    model: FaceModel = EVAL_MODEL
    detector: FaceDetector = field(default_factory=BlazeFaceDetector)

    def key(self, root: Path) -> str:
        text = json.dumps([CACHE_FORMAT, str(root.resolve()), self.face_choice, self.model.version, self.detector.name])
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def embed_images(
    root: Path,
    paths: Sequence[str],
    *,
    config: EmbeddingConfig = EmbeddingConfig(),
    cache_dir: Path | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbeddedSet:
    """Embeddings of ``paths`` (relative to ``root``), from the cache where present.

    ``workers`` processes (default: one per CPU core) embed the missing images; ``on_progress``
    is called with (done, total) as they finish. New results are saved every 500 images, so an
    interrupted run keeps most of its work.
    """
    cache_file = (cache_dir or default_cache_dir()) / f"{config.key(root)}.npz"
    known = _load(cache_file)
    missing = [p for p in dict.fromkeys(paths) if p not in known]
    total, done = len(missing), 0
    if missing:
        workers = workers or os.cpu_count() or 1
        jobs = [str(root / p) for p in missing]
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_start_worker, initargs=(config,)) as pool:
            for path, result in zip(missing, pool.imap(_embed_one, jobs, chunksize=4), strict=True):
                known[path] = result
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                if done % 500 == 0:
                    _save(cache_file, known)
        _save(cache_file, known)
    unique = list(dict.fromkeys(paths))
    dimension = config.model.dimension
    vectors = np.stack([known[p][0] for p in unique]) if unique else np.empty((0, dimension))
    flipped = np.stack([known[p][1] for p in unique]) if unique else np.empty((0, dimension))
    found = ~np.isnan(vectors[:, 0]) if unique else np.zeros(0, bool)
    return EmbeddedSet(unique, vectors, flipped, found, config.model.similarity)


_analyzer: FaceAnalyzer | None = None
_face_choice = "largest"


def _start_worker(config: EmbeddingConfig) -> None:
    global _analyzer, _face_choice
    _analyzer, _face_choice = FaceAnalyzer(detector=config.detector, model=config.model), config.face_choice


def _embed_one(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, mirrored-chip embedding) of the chosen face; NaN rows when none is found."""
    assert _analyzer is not None
    nothing = np.full(_analyzer.model.dimension, np.nan, dtype=np.float32)
    try:
        pixels = read_image_file(path).pixels
    except Exception:  # noqa: BLE001 - an unreadable image is a failure to acquire, like no face
        return nothing, nothing
    faces = _analyzer.analyze(pixels, embed=False)
    if not faces:
        return nothing, nothing
    if _face_choice == "centre":
        height, width = pixels.shape[:2]
        face = min(
            faces,
            key=lambda f: (
                (f.box.left + f.box.width / 2 - width / 2) ** 2 + (f.box.top + f.box.height / 2 - height / 2) ** 2
            ),
        )
    else:
        face = faces[0]
    assert face.chip is not None
    plain, mirrored = _analyzer.model.embed([face.chip, np.ascontiguousarray(face.chip[:, ::-1])])
    return plain, mirrored


def _load(cache_file: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not cache_file.exists():
        return {}
    with np.load(cache_file, allow_pickle=False) as data:
        return {str(p): (v, f) for p, v, f in zip(data["paths"], data["vectors"], data["flipped"], strict=True)}


def _save(cache_file: Path, known: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    paths = list(known)
    partial = cache_file.with_suffix(".partial.npz")
    np.savez(
        partial,
        paths=np.array(paths),
        vectors=np.stack([known[p][0] for p in paths]),
        flipped=np.stack([known[p][1] for p in paths]),
    )
    partial.replace(cache_file)  # atomic: a crash leaves the previous cache intact
