"""Stored-video speed: seconds of 720p video processed per second of wall time.

    python benchmarks/video.py [--fps 5]

The two real clips of the shared data (detection_multi/video: 640x360 and 1920x1080) are first
re-encoded to 1280x720 H.264 with PyAV, in a temporary folder. Then, in this one process, on the
same clips with the same detector and face analysis (BlazeFace, 5-point landmarks, quality):

- a whole StartFaceSearch job through the service (decode, sample, analyse, track, search every
  tracked face on appearing and every 2 s, write the results and the ledger entry) at the
  default sampling rate (VideoLimits.sample_fps);
- face detection at the default sampling rate (what a StartFaceDetection job computes);
- face detection on every frame (the peer: no sampling).

Frames are analysed as jobs analyse them: in order, on one thread per core.

Printed: video seconds, wall seconds, video seconds per wall second, and the speed-up of the
default rate over every frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

import faceledger  # noqa: E402
from faceledger.config import Settings, VideoLimits  # noqa: E402
from faceledger.service import FaceService  # noqa: E402
from faceledger.service.video_operations import analysed_frames  # noqa: E402
from faceledger.vision import FaceAnalyzer  # noqa: E402
from faceledger.vision.video import StoredVideo  # noqa: E402

CLIPS = ("facerec_short_hamilton_clip.mp4", "facenetpt_video.mp4")


def to_720p(source: Path, target: Path) -> Path:
    """``source`` re-encoded at 1280x720 (its frame rate kept)."""
    with av.open(str(source)) as reading, av.open(str(target), "w") as writing:
        stream_in = reading.streams.video[0]
        stream_out = writing.add_stream("libx264", rate=stream_in.average_rate)
        stream_out.width, stream_out.height, stream_out.pix_fmt = 1280, 720, "yuv420p"
        for number, frame in enumerate(reading.decode(stream_in)):
            scaled = av.VideoFrame.from_ndarray(
                frame.to_ndarray(width=1280, height=720, format="rgb24"), format="rgb24"
            )
            scaled.pts, scaled.time_base = number, 1 / Fraction(stream_in.average_rate)
            for packet in stream_out.encode(scaled):
                writing.mux(packet)
        for packet in stream_out.encode():
            writing.mux(packet)
    return target


def detect(path: Path, fps: float | None, analyzer: FaceAnalyzer) -> tuple[float, int]:
    """(wall seconds, faces found) of face detection and analysis at ``fps`` (None: every frame),
    as a job analyses frames (one thread per core, in order)."""
    started = time.perf_counter()
    faces = 0
    with StoredVideo(path, VideoLimits()) as video:
        for _, found in analysed_frames(video, analyzer, fps):
            faces += len(found)
    return time.perf_counter() - started, faces


def search_job(paths: list[Path], folder: Path, fps: float) -> float:
    """Wall seconds of StartFaceSearch jobs over ``paths``, run to their end through the service."""
    settings = Settings(data_dir=folder / "data", video_limits=VideoLimits(sample_fps=fps))
    with FaceService(settings) as service:
        service.create_collection(collection_id="people")
        for person in ("obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"):
            for photo in sorted(require("facerec_examples", person).iterdir()):
                service.index_faces(collection_id="people", image=photo.read_bytes(), external_image_id=person)
        started = time.perf_counter()
        for path in paths:
            job_id = service.start_face_search(video=path, collection_id="people")["JobId"]
            service.run_video_job(job_id=job_id)
            assert service.get_face_search(job_id=job_id, max_results=1)["JobStatus"] == "SUCCEEDED"
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, default=VideoLimits().sample_fps, help="sampling rate to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        paths = [
            to_720p(require("detection_multi", "video", name), folder / f"{Path(name).stem}-720p.mp4") for name in CLIPS
        ]
        seconds = 0.0
        for path in paths:
            with StoredVideo(path, VideoLimits()) as video:
                seconds += video.metadata.duration_ms / 1000
        analyzer = FaceAnalyzer()
        detect(paths[0], args.fps, analyzer)  # models loaded, caches warm
        rows = [("face search job (service)", search_job(paths, folder, args.fps), None)]
        for label, fps in ((f"detection at {args.fps:g} frames/s", args.fps), ("detection, every frame", None)):
            wall, faces = 0.0, 0
            for path in paths:
                spent, found = detect(path, fps, analyzer)
                wall, faces = wall + spent, faces + found
            rows.append((label, wall, faces))
    print(f"{len(paths)} clips re-encoded at 1280x720, {seconds:.1f} s of video in all ({faceledger.__version__})")
    print(f"{'':32} {'wall s':>8} {'video s/wall s':>15} {'faces':>7}")
    for label, wall, faces in rows:
        print(f"{label:32} {wall:8.2f} {seconds / wall:15.2f} {'' if faces is None else faces:>7}")
    print(f"default sampling against every frame: {rows[2][1] / rows[1][1]:.2f}x faster (same detector)")


if __name__ == "__main__":
    main()
