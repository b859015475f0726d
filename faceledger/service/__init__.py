"""The operations, protocol-free: what the CLI and the HTTP API both call."""

from faceledger.service.face_service import FaceService
from faceledger.service.folder_index import (
    FileResult,
    Outcome,
    find_image_files,
    index_files,
)

__all__ = ["FaceService", "FileResult", "Outcome", "find_image_files", "index_files"]
