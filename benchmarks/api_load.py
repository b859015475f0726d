"""Load on the HTTP API: concurrent boto3 clients calling SearchFaces by face id.

    python benchmarks/api_load.py [--faces 10000] [--clients 8] [--requests 200] [--real 300]

The collection holds ``--faces`` faces: ``--real`` of them are real embeddings of LFW faces
(first image of the first identities in name order, full faceledger pipeline), the rest are
drawn from a Gaussian with the mean and covariance of those real embeddings, so distances look
like faces' rather than uniform noise. They are written straight to the store (indexing 10,000
photos would take an hour here and measures something else: benchmarks/index_throughput.py).

Then a real server (uvicorn, SigV4 on) runs in this process; ``--clients`` client processes, each
with its own access key, each make ``--requests`` SearchFaces calls with random face ids (MaxFaces
10, default threshold). Printed:
requests/s, p50/p99 latency, error count, and the ratio of the API's p50 to the same searches
called in-process on the service.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
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
from faceledger.api.app import ApiSettings  # noqa: E402
from faceledger.api.server import serve_in_thread  # noqa: E402
from faceledger.service import FaceService  # noqa: E402
from faceledger.store import FaceRecord, ImageRecord  # noqa: E402
from faceledger.vision import read_image_file  # noqa: E402


def real_embeddings(count: int, service: FaceService) -> np.ndarray:
    vectors = []
    for folder in sorted(require("lfw").iterdir()):
        if len(vectors) == count:
            break
        faces = service.analyzer.analyze(read_image_file(next(folder.glob("*.jpg"))).pixels, limit=1)
        if faces:
            vectors.append(faces[0].embedding)
    return np.stack(vectors)


def fill_collection(service: FaceService, collection: str, total: int, real: np.ndarray) -> list[str]:
    rng = np.random.default_rng(7)
    synthetic = rng.multivariate_normal(real.mean(axis=0), np.cov(real, rowvar=False), size=total - len(real))
    vectors = np.concatenate([real, synthetic.astype(np.float32)])
    face_ids = []
    now = time.time()
    for vector in vectors:
        image_id, face_id = str(uuid.uuid4()), str(uuid.uuid4())
        face_ids.append(face_id)
        service.store.add_image(
            ImageRecord(image_id, collection, uuid.uuid4().hex, None, 250, 250, 1, now),
            [
                FaceRecord(
                    face_id,
                    collection,
                    image_id,
                    None,
                    "0" * 64,
                    {"Width": 0.4, "Height": 0.4, "Left": 0.3, "Top": 0.3},
                    99.0,
                    {},
                    {},
                    service.templates.seal(face_id, vector.astype(np.float32)),
                    now,
                )
            ],
        )
    return face_ids


def rekognition_client(url: str, access_key_id: str, secret: str):
    return boto3.client(
        "rekognition",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def client_warmup(job: tuple[str, str, str]) -> None:
    rekognition_client(*job).list_collections()


def client_loop(job: tuple[str, str, str, list[str], int, int]) -> tuple[list[float], int]:
    """One client's latencies (seconds) and error count."""
    url, access_key_id, secret, face_ids, requests, seed = job
    client = rekognition_client(url, access_key_id, secret)
    rng = random.Random(seed)
    latencies, failed = [], 0
    for _ in range(requests):
        face_id = rng.choice(face_ids)
        started = time.perf_counter()
        try:
            client.search_faces(CollectionId="load", FaceId=face_id, MaxFaces=10)
            latencies.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - counted: the figure must show it
            failed += 1
    return latencies, failed


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--real", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--worker-threads", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir, faceledger.open(data_dir) as service:
        service.create_collection(collection_id="load")
        started = time.perf_counter()
        real = real_embeddings(args.real, service)
        face_ids = fill_collection(service, "load", args.faces, real)
        print(
            f"collection: {len(face_ids)} faces ({len(real)} real LFW embeddings) in {time.perf_counter() - started:.1f} s"
        )

        rng = random.Random(11)
        probes = [rng.choice(face_ids) for _ in range(400)]
        service.search_faces(collection_id="load", face_id=probes[0], max_faces=10)  # builds the index
        in_process = []
        for face_id in probes:
            t = time.perf_counter()
            service.search_faces(collection_id="load", face_id=face_id, max_faces=10)
            in_process.append(time.perf_counter() - t)

        # a key per client, as separate clients have: each key has its own request rate (ApiSettings)
        keys = [service.access.create_key("searcher") for _ in range(args.clients)]
        settings = ApiSettings(worker_threads=args.worker_threads, max_waiting=args.clients * 2)
        with serve_in_thread(service, settings) as url:
            # clients run in their own processes, so their signing and parsing does not
            # compete with the server for this process's GIL
            jobs = [
                (url, key.access_key_id, secret, face_ids, args.requests, n) for n, (key, secret) in enumerate(keys)
            ]
            with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
                pool.map(client_warmup, [(url, key.access_key_id, secret) for key, secret in keys])
                wall = time.perf_counter()
                results = pool.map(client_loop, jobs)
                wall = time.perf_counter() - wall
            latencies = [latency for mine, _ in results for latency in mine]
            errors = sum(failed for _, failed in results)

    total = args.clients * args.requests
    api_p50 = percentile(latencies, 0.50)
    local_p50 = statistics.median(in_process)
    print(
        f"{args.clients} clients x {args.requests} SearchFaces over {args.faces} faces, {args.worker_threads} worker threads"
    )
    print(f"requests/s {total / wall:8.1f}")
    print(f"latency    p50 {api_p50 * 1000:7.2f} ms   p99 {percentile(latencies, 0.99) * 1000:7.2f} ms")
    print(f"errors     {errors}")
    print(f"in-process p50 {local_p50 * 1000:7.2f} ms   p99 {percentile(in_process, 0.99) * 1000:7.2f} ms")
    print(f"ratio API p50 / in-process p50: x{api_p50 / local_p50:.1f}")


if __name__ == "__main__":
    main()
