"""Decoding untrusted bytes: every mode becomes RGB, EXIF is honoured, bad input is refused
with a typed error before anything expensive happens."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceledger.config import ImageLimits
from faceledger.errors import ImageTooLargeException, InvalidImageFormatException
from faceledger.vision import FaceAnalyzer, decode_image

from conftest import image_bytes


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return Image.open(io.BytesIO(image_bytes("facerec_examples", "obama", "obama.jpg"))).convert("RGB")


def test_exif_orientation_is_applied_before_detection(portrait: Image.Image) -> None:
    # Store the pixels rotated and say so in EXIF (orientation 6: rotate 90 clockwise to view),
    # as a phone camera does; the decoded image must be upright again.
    stored = portrait.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(_encode(stored, "JPEG", exif=exif, quality=95))
    assert (decoded.width, decoded.height) == portrait.size
    upright = FaceAnalyzer().analyze(decoded.pixels, embed=False)
    assert len(upright) == 1
    assert abs(upright[0].quality.pose.roll) < 15


def test_grayscale_rgba_palette_and_16bit_become_rgb(portrait: Image.Image) -> None:
    small = portrait.resize((portrait.width // 2, portrait.height // 2))
    gray16 = Image.fromarray((np.asarray(small.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    rgba = small.convert("RGBA")
    rgba.putalpha(200)
    variants = {
        "L": _encode(small.convert("L"), "PNG"),
        "RGBA": _encode(rgba, "PNG"),
        "P": _encode(small.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "I;16": _encode(gray16, "PNG"),
        "CMYK": _encode(small.convert("CMYK"), "JPEG"),
    }
    analyzer = FaceAnalyzer()
    for mode, data in variants.items():
        decoded = decode_image(data)
        assert decoded.pixels.dtype == np.uint8, mode
        assert decoded.pixels.shape == (small.height, small.width, 3), mode
        assert len(analyzer.analyze(decoded.pixels, embed=False)) == 1, mode


def test_sixteen_bit_range_is_rescaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 4095, 64, dtype=np.uint16), (8, 1))  # 12 bits in 16
    decoded = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255


def test_sha256_identifies_the_bytes(portrait: Image.Image) -> None:
    data = _encode(portrait, "PNG")
    assert decode_image(data).sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
    ids=["empty", "text", "png-signature-only"],
)
def test_not_an_image_is_invalid_format(data: bytes) -> None:
    with pytest.raises(InvalidImageFormatException):
        decode_image(data)


def test_truncated_jpeg_is_invalid_format(portrait: Image.Image) -> None:
    data = _encode(portrait, "JPEG")
    with pytest.raises(InvalidImageFormatException):
        decode_image(data[: len(data) // 3])


def test_unsupported_format_is_named(portrait: Image.Image) -> None:
    with pytest.raises(InvalidImageFormatException, match="GIF"):
        decode_image(_encode(portrait, "GIF"))


def test_too_many_bytes_is_refused() -> None:
    with pytest.raises(ImageTooLargeException):
        decode_image(b"\xff" * 2048, ImageLimits(max_bytes=1024))


def test_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # 12,000 x 12,000 = 144 megapixels of one colour compresses to a few hundred KB.
    bomb = _encode(Image.new("L", (12_000, 12_000)), "PNG", optimize=True)
    assert len(bomb) < 1_000_000

    def refuse_to_decode(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", refuse_to_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)
    with pytest.raises(ImageTooLargeException, match="144,000,000 pixels"):
        decode_image(bomb)


def test_a_header_declaring_more_than_pils_own_bomb_limit_is_too_large_not_invalid() -> None:
    """A PNG declaring over ~179 MP was answered InvalidImageFormatException: the image is valid,
    and too large. A header alone (IHDR of 20,000 x 10,000) shows it without a big file."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 10_000, 8, 0, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    with pytest.raises(ImageTooLargeException, match="more than 178,956,970 pixels"):
        decode_image(png)


def test_a_grayscale_pnm_is_named_for_what_it_is(portrait: Image.Image) -> None:
    with pytest.raises(InvalidImageFormatException, match="graymap"):  # PIL calls PBM, PGM and PPM all 'PPM'
        decode_image(_encode(portrait.convert("L"), "PPM"))
