"""decode -> detect -> landmarks -> align -> quality -> embed, as one object.

Each stage is a small component with a stated input and output (see the sibling modules); the
analyzer only sequences them. Two are replaceable: the detector (vision/detect.py), and the face
model (vision/model.py), which owns alignment, embedding and what its templates' similarities
mean; quality is measured on whatever chip the model cuts. Replacing either touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceledger.vision.blazeface import BlazeFaceDetector
from faceledger.vision.crop import face_crop
from faceledger.vision.detect import FaceDetector
from faceledger.vision.face import Face
from faceledger.vision.image import DecodedImage
from faceledger.vision.landmarks import align_chip, locate_landmarks
from faceledger.vision.model import DlibResNetModel, FaceModel
from faceledger.vision.quality import QUALITY_CHIP_PADDING, QUALITY_CHIP_SIZE, assess_quality


@dataclass
class AnalyzedImage:
    """An image decoded and analysed ahead of the operation that uses it (by a worker process
    during bulk indexing): what indexing needs from it, without the pixels."""

    sha256: str
    width: int
    height: int
    faces: list[Face]
    # The encoded file, only where the caller wants it kept (IndexFaces with store_image).
    encoded: bytes | None = field(default=None, repr=False)


@dataclass
class FaceAnalyzer:
    """Finds every face in an image and describes it; models load lazily on first use."""

    detector: FaceDetector = field(default_factory=BlazeFaceDetector)
    model: FaceModel = field(default_factory=DlibResNetModel)

    @property
    def model_version(self) -> str:
        """The face model's version (FaceModelVersion)."""
        return self.model.version

    def analyze(self, pixels: np.ndarray, *, embed: bool = True, limit: int | None = None) -> list[Face]:
        """Faces in an RGB ``uint8`` image, largest first.

        ``embed=False`` skips the embedding (detection, landmarks and quality only).
        ``limit`` keeps only the largest ``limit`` faces before embedding.
        """
        faces = self.detector.detect(pixels)
        if limit is not None:
            faces = faces[:limit]
        for face in faces:
            face.landmarks = locate_landmarks(pixels, face)
            face.chip = self.model.align(pixels, face)
            # quality is measured on one reference chip whatever the model (QualityFilter's bars
            # were set on it); dlib's model cuts exactly that chip
            reference = (
                face.chip
                if isinstance(self.model, DlibResNetModel)
                else align_chip(pixels, face, size=QUALITY_CHIP_SIZE, padding=QUALITY_CHIP_PADDING)
            )
            face.quality = assess_quality(face, reference)
        if embed:
            self.embed_faces(faces)
        return faces

    def analyze_image(self, image: DecodedImage) -> AnalyzedImage:
        """Detection, landmarks, chips, quality and a small crop (vision/crop.py: a millisecond
        a face, kept only by review-required collections) of every face in ``image``; no
        embeddings."""
        faces = self.analyze(image.pixels, embed=False)
        for face in faces:
            face.crop = face_crop(image.pixels, face.box)
        return AnalyzedImage(image.sha256, image.width, image.height, faces)

    def embed_faces(self, faces: list[Face]) -> None:
        """Fill in the embedding of each face that has a chip, in one batch."""
        pending = [face for face in faces if face.embedding is None and face.chip is not None]
        if not pending:
            return
        vectors = self.model.embed([face.chip for face in pending])
        for face, vector in zip(pending, vectors, strict=True):
            face.embedding = vector.astype(np.float32)
