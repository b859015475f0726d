"""Cheap and expensive calls at once on the HTTP API: SearchFaces by face id while image searches run.

    python benchmarks/mixed_load.py [--faces 10000] [--image-clients 16] [--id-clients 16] [--seconds 30]

The collection is filled as benchmarks/api_load.py fills it (real LFW embeddings plus Gaussian
samples with their statistics, written straight to the store). A real server (uvicorn, SigV4 on)
runs in this process with ``--worker-threads`` image workers; every client runs in a process of
its own with its own access key, for ``--seconds``: ``--image-clients`` call SearchFacesByImage
with LFW photos (detection, alignment and embedding on the server) one after the other, as fast as
they are answered; ``--id-clients`` call SearchFaces with random face ids (an index lookup), each
``--id-rate`` times a second on a fixed schedule (0: as fast as answered; on two cores closed-loop
clients measure mostly their own CPU queue). Printed: calls, calls/s, p50/p99/max latency and
errors per kind, as each client saw them (signing and the network included), and p50/p99 of the
time the server itself took (its access log: from the request's arrival to its answer).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402
from api_load import fill_collection, percentile, real_embeddings, rekognition_client  # noqa: E402

import faceledger  # noqa: E402
from faceledger.api.app import ApiSettings  # noqa: E402
from faceledger.api.server import serve_in_thread  # noqa: E402


def client(job: tuple) -> tuple[str, list[float], int]:
    """One client's (kind, latencies in seconds, errors) until its deadline."""
    kind, url, access_key_id, secret, probes, start_at, seconds, rate, seed = job
    rekognition = rekognition_client(url, access_key_id, secret)
    rekognition.list_collections()  # connected and signed once before the clock starts
    rng = random.Random(seed)
    while time.time() < start_at:
        time.sleep(0.005)
    latencies, errors = [], 0
    next_call = start_at + rng.random() / rate if rate else start_at
    while time.time() < start_at + seconds:
        if rate:  # on schedule, whatever the last call took
            time.sleep(max(0.0, next_call - time.time()))
            next_call += 1 / rate
        probe = rng.choice(probes)
        started = time.perf_counter()
        try:
            if kind == "image":
                rekognition.search_faces_by_image(CollectionId="load", Image={"Bytes": probe}, MaxFaces=10)
            else:
                rekognition.search_faces(CollectionId="load", FaceId=probe, MaxFaces=10)
            latencies.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - counted: the figure must show it
            errors += 1
    return kind, latencies, errors


class ServerTimes(logging.Handler):
    """The server's own time per request, by operation, from its access log."""

    def __init__(self) -> None:
        super().__init__()
        self.ms: dict[str, list[float]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        entry = json.loads(record.getMessage())
        self.ms.setdefault(entry.get("operation", "?"), []).append(entry["ms"] / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--real", type=int, default=300)
    parser.add_argument("--image-clients", type=int, default=16)
    parser.add_argument("--id-clients", type=int, default=16)
    parser.add_argument("--id-rate", type=float, default=2.0, help="SearchFaces per second per client (0: closed loop)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--worker-threads", type=int, default=ApiSettings().worker_threads)
    args = parser.parse_args()
    photos = [next(folder.glob("*.jpg")).read_bytes() for folder in sorted(require("lfw").iterdir())[:50]]

    with tempfile.TemporaryDirectory() as data_dir, faceledger.open(data_dir) as service:
        service.create_collection(collection_id="load")
        face_ids = fill_collection(service, "load", args.faces, real_embeddings(args.real, service))
        service.search_faces(collection_id="load", face_id=face_ids[0], max_faces=10)  # builds the index
        clients = args.image_clients + args.id_clients
        keys = [service.access.create_key("searcher") for _ in range(clients)]
        settings = ApiSettings(worker_threads=args.worker_threads, max_waiting=2 * clients)
        server_times = ServerTimes()
        access_log = logging.getLogger("faceledger.access")
        access_log.addHandler(server_times)
        access_log.setLevel(logging.INFO)
        with serve_in_thread(service, settings) as url:
            start_at = time.time() + 15 + clients * 0.5  # every client process started and connected
            jobs = [
                (
                    "image" if n < args.image_clients else "id",
                    url,
                    key.access_key_id,
                    secret,
                    photos if n < args.image_clients else face_ids,
                    start_at,
                    args.seconds,
                    0.0 if n < args.image_clients else args.id_rate,
                    n,
                )
                for n, (key, secret) in enumerate(keys)
            ]
            with multiprocessing.get_context("spawn").Pool(clients) as pool:
                results = pool.map(client, jobs)

    print(
        f"{args.image_clients} SearchFacesByImage clients (closed loop) + {args.id_clients} SearchFaces clients "
        f"({args.id_rate:g}/s each{', closed loop' if not args.id_rate else ''}) for {args.seconds:g} s, "
        f"{args.faces} faces, {args.worker_threads} image worker threads"
    )
    for kind, name in (("image", "SearchFacesByImage"), ("id", "SearchFaces")):
        latencies = [latency for k, mine, _ in results if k == kind for latency in mine]
        errors = sum(failed for k, _, failed in results if k == kind)
        if not latencies:
            print(f"{name:<19} no call completed, {errors} errors")
            continue
        served = server_times.ms.get(name, [0.0])
        print(
            f"{name:<19} {len(latencies):6d} calls {len(latencies) / args.seconds:7.1f}/s   "
            f"p50 {percentile(latencies, 0.50) * 1000:7.1f} ms   p99 {percentile(latencies, 0.99) * 1000:7.1f} ms   "
            f"max {max(latencies) * 1000:7.1f} ms   errors {errors}   "
            f"(server p50 {percentile(served, 0.5) * 1000:.1f} ms, p99 {percentile(served, 0.99) * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
