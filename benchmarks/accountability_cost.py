"""What the audit ledger and template encryption cost, against both switched off, in one run.

    python benchmarks/accountability_cost.py [--faces 10000] [--searches 500]

Four configurations (ledger on/off x encryption on/off), each on a fresh data directory:

- index: IndexFaces of the same real photos (facerec_examples + deepface_unit, 34 photos);
- search: SearchFaces by face id (MaxFaces 10, threshold 0, so every search returns 10 matches
  whose templates are decrypted) in a collection of ``--faces`` faces written straight to the
  store (300 real LFW embeddings + Gaussian samples with their mean and covariance);
- index build: reading and decrypting every template of that collection into the vector index,
  what a restart costs (decrypted vectors live only in memory).

Prints throughputs and each configuration's ratio to "both off".
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402
from api_load import fill_collection, real_embeddings  # noqa: E402

from faceledger.config import Settings  # noqa: E402
from faceledger.service import FaceService, find_image_files  # noqa: E402

CONFIGS = {
    "both off": (False, False),
    "ledger only": (True, False),
    "encryption only": (False, True),
    "both on (default)": (True, True),
}


def measure(ledger: bool, encrypt: bool, photos: list[bytes], real, faces: int, searches: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), audit_ledger=ledger, encrypt_templates=encrypt)
        with FaceService(settings) as service:
            service.create_collection(collection_id="photos")
            started = time.perf_counter()
            for photo in photos:
                service.index_faces(collection_id="photos", image=photo, quality_filter="NONE")
            index_rate = len(photos) / (time.perf_counter() - started)

            service.create_collection(collection_id="big")
            face_ids = fill_collection(service, "big", faces, real)
            started = time.perf_counter()
            service.indexes.drop("big")
            service.indexes.for_search("big")
            build = time.perf_counter() - started
            rng = random.Random(3)
            started = time.perf_counter()
            for _ in range(searches):
                service.search_faces(
                    collection_id="big", face_id=rng.choice(face_ids), max_faces=10, face_match_threshold=0
                )
            search_rate = searches / (time.perf_counter() - started)
    return {"index images/s": index_rate, "searches/s": search_rate, "index build s": build}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=500)
    args = parser.parse_args()
    photos = [
        p.read_bytes()
        for folder in ("facerec_examples", "deepface_unit")
        for p in find_image_files(require(folder))
        if "_test" not in str(p)
    ]
    with tempfile.TemporaryDirectory() as scratch, FaceService(Settings(data_dir=Path(scratch))) as service:
        real = real_embeddings(300, service)
    results = {
        name: measure(ledger, encrypt, photos, real, args.faces, args.searches)
        for name, (ledger, encrypt) in CONFIGS.items()
    }
    base = results["both off"]
    print(f"{len(photos)} photos indexed; {args.searches} searches over {args.faces} faces; 2 cores")
    print(
        f"{'configuration':20s} {'index img/s':>12s} {'ratio':>6s} {'searches/s':>11s} {'ratio':>6s} {'index build':>12s} {'ratio':>6s}"
    )
    for name, figures in results.items():
        print(
            f"{name:20s} {figures['index images/s']:12.2f} {figures['index images/s'] / base['index images/s']:6.2f}"
            f" {figures['searches/s']:11.1f} {figures['searches/s'] / base['searches/s']:6.2f}"
            f" {figures['index build s']:11.3f}s {figures['index build s'] / base['index build s']:6.2f}"
        )


if __name__ == "__main__":
    main()
