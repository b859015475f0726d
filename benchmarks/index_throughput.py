"""Bulk indexing throughput: faceledger against the face_recognition package, same images.

    python benchmarks/index_throughput.py [FOLDER ...] [--lfw N] [--workers N] [--repeat N]

Default files: the shared data's facerec_examples, deepface_unit and detection_multi/images
(46 real photos from 374x630 to 2500x1728 pixels, 1 to 30+ faces each) plus N LFW images
(250x250, every k-th; default 300). All pipelines run in this process on the same files, in the
same order:

- face_recognition (the peer, ``pip install --no-deps face_recognition``): ``load_image_file``,
  ``face_locations(upsample=1, model="hog")``, ``face_encodings(model="small")``; embeddings
  kept in a Python list (no store).
- faceledger: ``index_files`` (what ``faceledger index`` runs) with QualityFilter NONE into a
  fresh SQLite store: decode with limits, detect, 5-point landmarks, align, quality, embed (flip
  augmentation: two chips per face), one transaction per image, index update. Once in one
  process, once with worker processes decoding and detecting (default: one per core).

Prints images/s and faces/s for each, the ratio against face_recognition, and peak resident
memory of this process and of the largest worker.

``--postgresql``: also the worker-process run into a PostgreSQL store (PostgreSQL 16 from the
``pgserver`` package, started here on a Unix socket), with its ratio to the same run into SQLite.
``--ray``: also the run on a local Ray (``faceledger index --ray``: as many actors as workers),
timed twice: whole (Ray's start included) and after Ray has started, with its ratio to the
worker-process run.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

import faceledger  # noqa: E402
from faceledger.service import find_image_files, index_files  # noqa: E402


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


def run_faceledger(
    files: list[Path], workers: int = 1, database_url: str | None = None, ray: bool = False
) -> tuple[float, int]:
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    with tempfile.TemporaryDirectory() as data_dir, faceledger.open(data_dir, database_url=database_url) as service:
        service.create_collection(collection_id="bench")
        started = time.perf_counter()
        faces = sum(
            result.faces_indexed
            for result in index_files(service, "bench", root, files, quality_filter="NONE", workers=workers, ray=ray)
        )
        return time.perf_counter() - started, faces


def run_on_started_ray(files: list[Path], workers: int) -> tuple[float, int]:
    """Indexing on a local Ray started beforehand (what a cluster gives), Ray's start untimed."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        root = Path(os.path.commonpath([str(f.parent) for f in files]))
        with tempfile.TemporaryDirectory() as data_dir, faceledger.open(data_dir) as service:
            service.create_collection(collection_id="bench")
            started = time.perf_counter()
            results = index_files(
                service, "bench", root, files, quality_filter="NONE", workers=workers, ray_address="auto"
            )
            faces = sum(result.faces_indexed for result in results)
            return time.perf_counter() - started, faces
    finally:
        ray.shutdown()


def postgresql_databases(folder: Path):
    """A function giving the URL of a new database on a PostgreSQL started in ``folder``."""
    import itertools

    import pgserver
    import psycopg

    server = pgserver.get_server(folder, cleanup_mode="stop")
    admin = psycopg.connect(server.get_uri(), autocommit=True)
    names = (f"bench{n}" for n in itertools.count())

    def new_database() -> str:
        name = next(names)
        admin.execute(f"CREATE DATABASE {name}")
        return server.get_uri(name)

    return new_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--lfw", type=int, default=300, help="LFW images added to the default folders")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="faceledger worker processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each pipeline (best is kept)")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition (memory runs on big folders)")
    parser.add_argument("--postgresql", action="store_true", help="also index into PostgreSQL (pgserver)")
    parser.add_argument("--ray", action="store_true", help="also index on a local Ray")
    args = parser.parse_args()
    folders = args.folders or [
        require("facerec_examples"),
        require("deepface_unit"),
        require("detection_multi", "images"),
    ]
    files = [f for folder in folders for f in find_image_files(folder)]
    if not args.folders and args.lfw:
        lfw = find_image_files(require("lfw"))
        files += lfw[:: max(1, len(lfw) // args.lfw)][: args.lfw]
    # warm up: model loading is a one-off cost, not throughput
    run_faceledger(files[:1])
    if not args.no_peer:
        run_peer(files[:1])
    print(f"{len(files)} images, {os.cpu_count()} CPU cores")
    runs = {
        "face_recognition (peer)": run_peer,
        "faceledger, 1 process": run_faceledger,
        f"faceledger, {args.workers} workers": lambda fs: run_faceledger(fs, args.workers),
    }
    if args.no_peer:
        runs = {name: run for name, run in runs.items() if name.startswith(f"faceledger, {args.workers}")}
    postgresql = tempfile.TemporaryDirectory() if args.postgresql else None
    if postgresql is not None:
        new_database = postgresql_databases(Path(postgresql.name))
        runs[f"faceledger, {args.workers} workers, PostgreSQL"] = lambda fs: run_faceledger(
            fs, args.workers, new_database()
        )
    if args.ray:
        runs[f"faceledger, {args.workers} Ray actors"] = lambda fs: run_faceledger(fs, args.workers, ray=True)
        runs[f"faceledger, {args.workers} Ray actors, started"] = lambda fs: run_on_started_ray(fs, args.workers)
    peer_rate = sqlite_rate = None
    for name, runner in runs.items():
        seconds, faces = min(runner(files) for _ in range(args.repeat))
        if name.startswith("face_recognition"):
            peer_rate = len(files) / seconds
        ratio = f", x{len(files) / seconds / peer_rate:.2f} the peer's images/s" if peer_rate else ""
        if name == f"faceledger, {args.workers} workers":
            sqlite_rate = len(files) / seconds
        if (name.endswith("PostgreSQL") or "Ray" in name) and sqlite_rate:
            ratio += f", x{len(files) / seconds / sqlite_rate:.2f} the worker processes'"
        print(
            f"{name:26s} {faces:5d} faces in {seconds:6.1f} s: {len(files) / seconds:6.2f} images/s, "
            f"{faces / seconds:6.2f} faces/s{ratio}"
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (peer, store writer and embedder): {own:.0f} MiB")


if __name__ == "__main__":
    main()
