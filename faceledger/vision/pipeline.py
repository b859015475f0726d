"""decode -> detect -> landmarks -> align -> quality -> embed, as one object.

Each stage is a small component with a stated input and output (see the sibling modules); the
analyzer only sequences them, so replacing the detector or the embedder touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceledger.vision.detect import HogFaceDetector
from faceledger.vision.embed import DlibResNetEmbedder
from faceledger.vision.face import Face
from faceledger.vision.landmarks import align_chip, locate_landmarks
from faceledger.vision.quality import assess_quality


@dataclass
class FaceAnalyzer:
    """Finds every face in an image and describes it; models load lazily on first use."""

    detector: HogFaceDetector = field(default_factory=HogFaceDetector)
    embedder: DlibResNetEmbedder = field(default_factory=DlibResNetEmbedder)

    @property
    def model_version(self) -> str:
        return self.embedder.model_version

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
            face.chip = align_chip(pixels, face)
            face.quality = assess_quality(face, face.chip)
        if embed:
            self.embed_faces(faces)
        return faces

    def embed_faces(self, faces: list[Face]) -> None:
        """Fill in the embedding of each face that has a chip, in one batch."""
        pending = [face for face in faces if face.embedding is None and face.chip is not None]
        vectors = self.embedder.embed([face.chip for face in pending])
        for face, vector in zip(pending, vectors):
            face.embedding = vector
