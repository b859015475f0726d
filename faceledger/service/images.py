"""Images in, faces out: decoding under the configured limits, and the probe face of a search."""

from __future__ import annotations

from faceledger.config import ImageLimits
from faceledger.errors import InvalidParameterException, NoUsableFaceException
from faceledger.service.objects import ObjectReader, S3Object
from faceledger.vision import AnalyzedImage, DecodedImage, Face, FaceAnalyzer, decode_image
from faceledger.vision.quality import QualityFilter, quality_failures

# Encoded bytes from a request, an object of the configured store to read them from, an image
# decoded already, or (IndexFaces only) one analysed already.
ImageInput = bytes | S3Object | DecodedImage | AnalyzedImage
MAX_FACES_PER_IMAGE = 100  # DetectFaces and CompareFaces report at most the 100 largest faces
NO_FACE = "There are no faces in the image. Should be at least 1."


class ImageReader:
    """Decodes request images and finds their faces with the service's analyzer."""

    def __init__(self, analyzer: FaceAnalyzer, limits: ImageLimits, objects: ObjectReader) -> None:
        self.analyzer = analyzer
        self.limits = limits
        self.objects = objects

    def decode(self, image: ImageInput) -> DecodedImage:
        """Decode request bytes, or an S3 object's, under the configured limits (already-decoded
        input passes)."""
        if isinstance(image, DecodedImage):
            return image
        if isinstance(image, S3Object):
            image.content = self.objects.read(image, self.limits.max_bytes)
            return decode_image(image.content, self.limits)
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise InvalidParameterException("Image must be the encoded bytes of a JPEG or PNG image.")
        return decode_image(bytes(image), self.limits)

    def faces(self, decoded: DecodedImage, *, embed: bool = False) -> list[Face]:
        """Every face of the image (at most 100, largest first)."""
        return self.analyzer.analyze(decoded.pixels, embed=embed, limit=MAX_FACES_PER_IMAGE)

    def largest_face(
        self,
        decoded: DecodedImage,
        level: QualityFilter,
        *,
        with_others: bool = False,
        analyzer: FaceAnalyzer | None = None,
    ) -> tuple[Face, list[Face]]:
        """The embedded largest face (which must pass ``level``) and, with ``with_others``, the
        other faces, unembedded (otherwise only the largest is analysed). ``analyzer``: the
        collection's model (default: the service's)."""
        analyzer = analyzer or self.analyzer
        faces = analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE if with_others else 1)
        if not faces:
            raise NoUsableFaceException(NO_FACE)
        reasons = quality_failures(faces[0], level)
        if reasons:
            raise NoUsableFaceException(
                f"The largest face in the image does not pass QualityFilter {level.value}: {', '.join(reasons)}."
            )
        analyzer.embed_faces(faces[:1])
        return faces[0], faces[1:]
