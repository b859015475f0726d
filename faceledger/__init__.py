"""faceledger: self-hosted face detection, comparison and search, with accountability built in.

The public surface::

    import faceledger
    with faceledger.open() as faces:                      # embedded store in the data dir
        faces.create_collection(collection_id="family")
        faces.index_faces(collection_id="family", image=open("a.jpg", "rb").read())
        faces.search_faces_by_image(collection_id="family", image=open("selfie.jpg", "rb").read())

Every operation is a method of :class:`FaceService`. The face operations are named after Amazon
Rekognition's face API and return the same dicts boto3 returns; faceledger's own (collection
policies, consent, review, purge, access keys) follow the same style. Errors are
:class:`FaceledgerError` subclasses named after Rekognition's errors.
"""

from __future__ import annotations

from pathlib import Path

from faceledger.config import ImageLimits, Settings, default_data_dir
from faceledger.errors import (
    AccessDeniedException,
    ConflictException,
    FaceledgerError,
    IdempotentParameterMismatchException,
    ImageTooLargeException,
    InternalServerError,
    InvalidImageFormatException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ThrottlingException,
)
from faceledger.service import FaceService

__version__ = "0.2.0"


def open(  # noqa: A001
    data_dir: str | Path | None = None, *, image_limits: ImageLimits | None = None, database_url: str | None = None
) -> FaceService:
    """Open the face service on a data directory (default: see :func:`config.default_data_dir`);
    ``database_url``: the PostgreSQL database its store is in (see Settings.database_url)."""
    settings = Settings(
        data_dir=default_data_dir() if data_dir is None else Path(data_dir),
        image_limits=image_limits or ImageLimits(),
        database_url=database_url,
    )
    return FaceService(settings)


__all__ = [
    "AccessDeniedException",
    "ConflictException",
    "FaceService",
    "FaceledgerError",
    "IdempotentParameterMismatchException",
    "ImageLimits",
    "ImageTooLargeException",
    "InternalServerError",
    "InvalidImageFormatException",
    "InvalidPaginationTokenException",
    "InvalidParameterException",
    "ResourceAlreadyExistsException",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "Settings",
    "ThrottlingException",
    "open",
]
