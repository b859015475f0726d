"""Stored video: its metadata, and its frames at a sampling rate, decoded with PyAV (the ``av``
wheel carries its own FFmpeg).

Every frame must be decoded (a compressed frame depends on those before it), but only about
``sample_fps`` frames a second are converted to pixels and analysed: a frame is taken when its
timestamp reaches the next sampling instant, so the rate holds whatever the video's own frame
rate, variable rates included.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from faceledger.config import VideoLimits


class UnreadableVideo(ValueError):
    """The file is not a video faceledger can decode, or is over a limit it only shows when opened
    (duration, frame size); the message says which, for a job's StatusMessage."""


@dataclass(frozen=True)
class VideoMetadata:
    codec: str
    duration_ms: int
    format: str
    frame_rate: float
    width: int
    height: int
    color_range: str  # FULL or LIMITED, as Rekognition says it

    def to_response(self) -> dict[str, object]:
        return {
            "Codec": self.codec,
            "DurationMillis": self.duration_ms,
            "Format": self.format,
            "FrameRate": self.frame_rate,
            "FrameHeight": self.height,
            "FrameWidth": self.width,
            "ColorRange": self.color_range,
        }


@dataclass(frozen=True)
class VideoFrame:
    timestamp_ms: int
    pixels: np.ndarray  # RGB uint8, (height, width, 3), turned upright as the video says to show it


class StoredVideo:
    """A video file opened for reading within ``limits``; use as a context manager."""

    def __init__(self, path: Path, limits: VideoLimits) -> None:
        import av  # only where videos are read

        self._limits = limits
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise UnreadableVideo(f"The object is not a video faceledger can decode ({_reason(error)}).") from None
        if not self._container.streams.video:
            self._container.close()
            raise UnreadableVideo("The object holds no video stream.")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # decode on every core
        self.metadata = self._metadata()
        if self.metadata.duration_ms > limits.max_duration_seconds * 1000:
            self.close()
            raise UnreadableVideo(
                f"The video lasts {self.metadata.duration_ms / 1000:,.0f} s; the limit is "
                f"{limits.max_duration_seconds:,.0f} s."
            )
        if self.metadata.width * self.metadata.height > limits.max_frame_pixels:
            self.close()
            raise UnreadableVideo(
                f"The video's frames are {self.metadata.width}x{self.metadata.height}; the limit is "
                f"{limits.max_frame_pixels:,} pixels a frame."
            )

    def __enter__(self) -> StoredVideo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def frames(self, sample_fps: float | None) -> Iterator[VideoFrame]:
        """The frames at ``sample_fps`` (None: every frame), in order, as RGB pixels. The limits
        hold for what is decoded, not only for what the header says: a frame larger than the limit,
        or one past the longest duration, ends the video with UnreadableVideo (a header may say
        nothing of its length, or state a small frame size that the stream then changes)."""
        import av

        step_ms = 1000.0 / sample_fps if sample_fps else 0.0
        next_ms = 0.0
        longest_ms = self._limits.max_duration_seconds * 1000
        try:
            for frame in self._container.decode(self._stream):
                if frame.time is None:
                    continue
                timestamp_ms = frame.time * 1000.0
                if timestamp_ms > longest_ms:
                    raise UnreadableVideo(
                        f"The video runs past {self._limits.max_duration_seconds:,.0f} s, the limit (its header "
                        "did not say so)."
                    )
                if frame.width * frame.height > self._limits.max_frame_pixels:
                    raise UnreadableVideo(
                        f"A frame of the video is {frame.width}x{frame.height}; the limit is "
                        f"{self._limits.max_frame_pixels:,} pixels a frame."
                    )
                if timestamp_ms + 1e-6 < next_ms:
                    continue
                next_ms = max(next_ms, timestamp_ms) + step_ms
                pixels = frame.to_ndarray(format="rgb24")
                # a phone stores a portrait video sideways and says how to turn it (display matrix,
                # counter-clockwise degrees): faces are only found upright
                turns = round((frame.rotation or 0) / 90) % 4
                if turns:
                    pixels = np.ascontiguousarray(np.rot90(pixels, turns))
                yield VideoFrame(int(round(timestamp_ms)), pixels)
        except av.error.FFmpegError as error:
            raise UnreadableVideo(f"The video is corrupt ({_reason(error)}).") from None

    def _metadata(self) -> VideoMetadata:
        stream, container = self._stream, self._container
        # the container's duration runs from the video's start, as frame timestamps do (a stream may
        # start late: its own duration then ends before its last frame)
        if container.duration is not None:
            duration = container.duration / 1_000_000
        elif stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = 0.0
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        color = stream.codec_context.color_range
        return VideoMetadata(
            codec=stream.codec_context.name,
            duration_ms=int(round(duration * 1000)),
            format=container.format.name,
            frame_rate=float(rate),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            color_range="FULL" if color == 2 else "LIMITED",
        )


def _reason(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or error).strip() or type(error).__name__
