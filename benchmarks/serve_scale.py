"""`faceledger serve` over a collection of a million faces: time to ready, memory, search latency.

    python benchmarks/serve_scale.py [--faces 1000000] [--data-dir DIR] [--searches 300]

Builds (or reuses, with --data-dir) a data directory holding one collection of N faces: the
templates of a few hundred real LFW faces, embedded here, plus synthetic templates drawn from a
Gaussian with their mean and covariance; every face is a real store row with an encrypted
template, and the HNSW index is built and saved encrypted as the service does it. To keep the
set-up short the graph is built with efConstruction 40 instead of 160: that changes recall (see
benchmarks/search_scale.py for recall at the real setting), not the index's size or load time.

Then it starts `faceledger serve` as its own process and measures, from the moment the process
is spawned: when the API answers (ListCollections) and when the first SearchFaces over the
million faces returns; then the latency of SearchFaces by FaceId through the signed HTTP API
(boto3), and the server's resident memory (VmRSS) and peak (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

import faceledger  # noqa: E402
import faceledger.index.vector_index as vector_index  # noqa: E402
from faceledger.service import find_image_files  # noqa: E402
from faceledger.store import FaceRecord, ImageRecord  # noqa: E402
from faceledger.vision import FaceAnalyzer, read_image_file  # noqa: E402

COLLECTION = "million"
CHUNK = 20_000  # faces per stored "image" (one transaction each)


def real_templates(count: int) -> np.ndarray:
    analyzer = FaceAnalyzer()
    files = find_image_files(require("lfw"))
    vectors = []
    for path in files[:: max(1, len(files) // count)][:count]:
        faces = analyzer.analyze(read_image_file(path).pixels, limit=1)
        if faces:
            vectors.append(faces[0].embedding)
    return np.array(vectors, dtype=np.float32)


def build(data_dir: Path, faces: int) -> None:
    real = real_templates(400)
    rng = np.random.default_rng(7)
    synthetic = rng.multivariate_normal(real.mean(0), np.cov(real, rowvar=False), size=faces - len(real))
    gallery = np.concatenate([real, synthetic.astype(np.float32)])
    started = time.perf_counter()
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id=COLLECTION)
        now = time.time()
        for start in range(0, faces, CHUNK):
            image_id = str(uuid.uuid4())
            block = gallery[start : start + CHUNK]
            image = ImageRecord(
                image_id=image_id,
                collection_id=COLLECTION,
                image_sha256=f"{start:064x}",
                external_image_id=None,
                width=1000,
                height=1000,
                face_count=len(block),
                indexed_at=now,
                source_path=None,
                content=None,
            )
            face_ids = [str(uuid.uuid4()) for _ in block]
            records = [
                FaceRecord(
                    face_id=face_id,
                    collection_id=COLLECTION,
                    image_id=image_id,
                    external_image_id=f"face-{start + i}",
                    image_sha256=image.image_sha256,
                    bounding_box={"Width": 0.1, "Height": 0.1, "Left": 0.4, "Top": 0.4},
                    confidence=99.0,
                    landmarks={},
                    quality={},
                    template=service.templates.seal(face_id, vector),
                    created_at=now,
                )
                for i, (face_id, vector) in enumerate(zip(face_ids, block, strict=True))
            ]
            service.store.add_image(image, records)
        stored = time.perf_counter() - started
        vector_index.HNSW_BUILD_DEPTH = 40  # see the module docstring
        started = time.perf_counter()
        service.indexes.for_search(COLLECTION)  # builds the HNSW graph and saves it, encrypted
        print(
            f"stored {faces:,} faces in {stored:.0f} s; HNSW built and saved in {time.perf_counter() - started:.0f} s"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, help="reuse (or create) this data directory")
    parser.add_argument("--searches", type=int, default=300)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="faceledger-serve-"))
    if not (data_dir / "faceledger.sqlite3").exists():
        build(data_dir, args.faces)
    with faceledger.open(data_dir) as service:
        key = service.create_access_key(role="admin")
        face_ids = [
            f["FaceId"] for f in service.list_faces(collection_id=COLLECTION, max_results=args.searches)["Faces"]
        ]
        print(
            f"{service.describe_collection(collection_id=COLLECTION)['FaceCount']:,} faces in {data_dir}; "
            f"{os.cpu_count()} CPU cores"
        )

    faceledger_command = shutil.which("faceledger") or sys.exit("the faceledger command is not installed")
    port = free_port()
    spawned = time.perf_counter()
    server = subprocess.Popen(
        [faceledger_command, "--data-dir", str(data_dir), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = boto3.client(
            "rekognition",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="eu-west-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        while True:
            try:
                client.list_collections()
                break
            except Exception:
                if server.poll() is not None or time.perf_counter() - spawned > 300:
                    raise
                time.sleep(0.05)
        answering = time.perf_counter() - spawned
        client.search_faces(CollectionId=COLLECTION, FaceId=face_ids[0], MaxFaces=10, FaceMatchThreshold=0)
        first_search = time.perf_counter() - spawned
        print(
            f"serve: API answering {answering:.2f} s after spawn; first SearchFaces over the collection "
            f"returned {first_search:.2f} s after spawn"
        )
        latencies = []
        for face_id in face_ids:
            started = time.perf_counter()
            client.search_faces(CollectionId=COLLECTION, FaceId=face_id, MaxFaces=10, FaceMatchThreshold=0)
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        memory = memory_kib(server.pid)
        print(
            f"SearchFaces through signed HTTP (boto3, {len(latencies)} calls): p50 "
            f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
        )
        print(f"server memory: RSS {memory['VmRSS'] / 2**20:.2f} GiB, peak {memory['VmHWM'] / 2**20:.2f} GiB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
