"""Decoding untrusted image bytes into an RGB pixel array, safely.

Limits are checked on the encoded size and on the pixel count declared in the header *before*
any pixel is decoded, so a decompression bomb (a small file declaring a huge canvas) is refused
without expanding it. EXIF orientation is applied, and every mode a camera, scanner or editor
writes (grayscale, 16-bit, RGBA, palette, CMYK) becomes 8-bit RGB.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceledger.config import ImageLimits
from faceledger.errors import ImageTooLargeException, InvalidImageFormatException

# Rekognition accepts JPEG and PNG; the embedded engine also reads the other common lossless and
# camera formats so that a photo archive can be indexed as it is.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF"})


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the face pipeline.

    ``pixels``: ``uint8`` array of shape (height, width, 3), RGB, EXIF orientation applied.
    ``sha256``: hex digest of the encoded bytes as received (identifies the input in the store
    and, later, the audit ledger). ``format``: the container format PIL detected.
    """

    pixels: np.ndarray
    sha256: str
    format: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def decode_image(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode encoded image bytes into an 8-bit RGB array.

    Raises :class:`ImageTooLargeException` when the bytes or the declared pixel count exceed
    ``limits``, and :class:`InvalidImageFormatException` when the bytes are empty, not an image,
    in an unsupported format, or corrupt.
    """
    limits = limits or ImageLimits()
    if not data:
        raise InvalidImageFormatException("The image is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeException(f"The image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes.")
    try:
        # PIL's own bomb check would only warn below 2x its limit; ours is stricter and explicit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # a valid header declaring more than PIL opens at all
        raise ImageTooLargeException(
            f"The image declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit is {limits.max_pixels:,}."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidImageFormatException("The bytes are not a readable image.") from exc
    with image:
        if image.format not in SUPPORTED_FORMATS:
            # PIL names several formats after their family (a PGM is 'PPM'); the MIME type says which
            kind = f" ({image.get_format_mimetype()})" if image.get_format_mimetype() else ""
            raise InvalidImageFormatException(
                f"Unsupported image format {image.format!r}{kind}; supported: "
                + ", ".join(sorted(SUPPORTED_FORMATS))
                + "."
            )
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageTooLargeException(
                f"The image declares {width}x{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,}."
            )
        if width < 1 or height < 1:
            raise InvalidImageFormatException("The image has no pixels.")
        try:
            pixels = _to_rgb8(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidImageFormatException("The image is corrupt or truncated.") from exc
        detected_format = str(image.format)
    return DecodedImage(pixels=pixels, sha256=hashlib.sha256(data).hexdigest(), format=detected_format)


def read_image_file(path: str | Path, limits: ImageLimits | None = None) -> DecodedImage:
    """Read and decode an image file; the size limit is checked before the file is read."""
    limits = limits or ImageLimits()
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLargeException(f"{path.name} is {size:,} bytes; the limit is {limits.max_bytes:,} bytes.")
        data = path.read_bytes()
    except (IsADirectoryError, PermissionError, FileNotFoundError) as exc:
        raise InvalidImageFormatException(f"Cannot read {path}: {exc.strerror}.") from exc
    return decode_image(data, limits)


def _to_rgb8(image: Image.Image) -> np.ndarray:
    image.load()
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale their actual range to 0-255 rather than clip,
        # since scanners often store 12 bits of data in a 16-bit container.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((values - low) * scale).round().astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become white: a black fill would turn a cut-out into a silhouette.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
