"""Indexing a folder tree of photos: one image at a time, each in its own transaction.

Every image that was indexed (with or without faces) is recorded by SHA-256, so an interrupted
run resumes where it stopped and a re-run skips what is already there, whatever the file names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from faceledger.errors import AccessDeniedException, ImageTooLargeException, InvalidImageFormatException
from faceledger.service.face_service import FaceService

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


def find_image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (or ``root`` itself), by suffix, in a stable sorted order."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def external_image_id_for(path: Path, root: Path) -> str:
    """The file's path below ``root`` as an ExternalImageId: ``/`` becomes ``:`` and any other
    character Rekognition does not allow becomes ``_``; long paths keep their last 255 chars."""
    relative = path.relative_to(root) if path != root else Path(path.name)
    text = _NOT_ALLOWED_IN_ID.sub("_", ":".join(relative.parts))
    return text[-255:]


def index_files(
    service: FaceService,
    collection_id: str,
    root: Path,
    files: list[Path],
    *,
    quality_filter: str = "AUTO",
    max_faces: int | None = None,
    store_images: bool = False,
) -> Iterator[FileResult]:
    """Index ``files`` (found under ``root``) one by one, yielding the outcome of each."""
    service.store.require_collection(collection_id)
    limits = service.settings.image_limits
    for path in files:
        try:
            if path.stat().st_size > limits.max_bytes:
                raise ImageTooLargeException(
                    f"{path.stat().st_size:,} bytes is over the limit of {limits.max_bytes:,}"
                )
            data = path.read_bytes()
        except OSError as exc:
            yield FileResult(path, Outcome.UNREADABLE, error=exc.strerror or str(exc))
            continue
        except ImageTooLargeException as exc:
            yield FileResult(path, Outcome.UNREADABLE, error=exc.message)
            continue
        if service.find_indexed_image(collection_id=collection_id, image_sha256=hashlib.sha256(data).hexdigest()):
            yield FileResult(path, Outcome.SKIPPED)
            continue
        try:
            response = service.index_faces(
                collection_id=collection_id,
                image=data,
                external_image_id=external_image_id_for(path, root),
                max_faces=max_faces,
                quality_filter=quality_filter,
                store_image=store_images,
                source_path=str(path.relative_to(root) if path != root else path.name),
            )
        except (InvalidImageFormatException, ImageTooLargeException) as exc:
            yield FileResult(path, Outcome.UNREADABLE, error=exc.message)
            continue
        except AccessDeniedException as exc:
            yield FileResult(path, Outcome.REFUSED, error=exc.message)
            continue
        indexed = len(response["FaceRecords"])
        yield FileResult(
            path,
            Outcome.INDEXED if indexed else Outcome.NO_FACE,
            faces_indexed=indexed,
            faces_unindexed=len(response["UnindexedFaces"]),
        )


__all__ = ["FileResult", "Outcome", "external_image_id_for", "find_image_files", "index_files"]
