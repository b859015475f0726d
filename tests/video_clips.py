"""Videos the tests make from the shared photos, with PyAV: who appears when is known exactly."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def make_clip(
    path: Path,
    scenes: list[tuple[Path | None, float]],
    *,
    fps: int = 10,
    size: tuple[int, int] = (640, 480),
    codec: str = "libx264",
    container_format: str | None = None,
    stored_turned: bool = False,
) -> Path:
    """An H.264 MP4 at ``path`` (or ``codec`` in ``container_format``: a raw MPEG-4 stream,
    ``mpeg4`` in ``m4v``, says nothing of its length): each scene shows its photo (scaled to fit,
    on grey; None: grey only) for its seconds, in order. ``stored_turned``: frames stored a quarter
    turn clockwise with a display rotation to show them upright, as phones store portrait video."""
    width, height = size
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stored = (height, width) if stored_turned else (width, height)
        stream.width, stream.height, stream.pix_fmt = *stored, "yuv420p"
        if stored_turned:  # as a phone stores portrait video: turned a quarter clockwise, marked to turn back
            stream.set_display_rotation(90)
        for photo, seconds in scenes:
            canvas = Image.new("RGB", size, (128, 128, 128))
            if photo is not None:
                with Image.open(photo) as image:
                    shown = image.convert("RGB")
                    shown.thumbnail(size)
                    canvas.paste(shown, ((width - shown.width) // 2, (height - shown.height) // 2))
            pixels = np.asarray(canvas)
            if stored_turned:
                pixels = np.ascontiguousarray(np.rot90(pixels, -1))
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
