"""Embedding speed: dlib's ResNet under onnxruntime (faceledger's default) against dlib-bin itself.

    python benchmarks/embed.py [--chips N] [--seconds S] [--verify-all]

Both runtimes of the face model (DlibResNetModel, without its flip augmentation, so one network
pass per chip) embed the same aligned chips of real faces (every face found in the shared photo
sets, then LFW images until N chips), in the same process. Printed per batch size: ms per
face, faces per second, and the speed-up over dlib-bin at batch 32 (the peer, which is what the
face_recognition package runs). Also printed: the largest absolute difference between the two
runtimes' embeddings on those chips.

Then concurrent callers, as a server's requests are: 2, 4 and 16 threads, each embedding one face
and its mirror per call, each call its own onnxruntime run. Printed: ms per chip, to compare with
one caller's batches of 32 (the question: would merging concurrent requests' chips into batches
pay?).

--verify-all runs the equivalence check over every face that faceledger's detector finds in the
whole shared data set (all 13,233 LFW images included) and their mirrored chips, in two processes;
expect about 15-20 minutes on two cores, almost all of it dlib.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.vision import DlibResNetModel, FaceAnalyzer, read_image_file  # noqa: E402


def onnx_runtime(threads: int = 0) -> DlibResNetModel:
    return DlibResNetModel(runtime="onnx", threads=threads, flip=False)


def dlib_runtime() -> DlibResNetModel:
    return DlibResNetModel(runtime="dlib", flip=False)


def image_paths() -> list[Path]:
    return [
        *sorted(require("deepface_unit").rglob("*.jpg")),
        *sorted(require("facerec_examples").rglob("*.jp*g")),
        *sorted(require("detection_multi", "images").glob("*.jpg")),
        *sorted(require("lfw").glob("*/*.jpg")),
    ]


def chips_of(path: Path, analyzer: FaceAnalyzer) -> list[np.ndarray]:
    return [face.chip for face in analyzer.analyze(read_image_file(path).pixels, embed=False)]


def collect_chips(count: int) -> list[np.ndarray]:
    analyzer = FaceAnalyzer()
    chips: list[np.ndarray] = []
    for path in image_paths():
        chips.extend(chips_of(path, analyzer))
        if len(chips) >= count:
            break
    return chips[:count]


def ms_per_face(embed, chips: list[np.ndarray], batch: int, seconds: float) -> float:
    embed(chips[:batch])  # warm-up: weights, thread pools, first-run allocations
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(chips) - batch + 1, batch):
            embed(chips[i : i + batch])
            done += batch
            if time.perf_counter() - start >= seconds:
                break
    return (time.perf_counter() - start) / done * 1000


def concurrent_ms_per_chip(embed, chips: list[np.ndarray], threads: int, seconds: float) -> float:
    """ms per chip while ``threads`` threads each embed a chip and its mirror per call."""
    import threading

    embed(chips[:2])
    done, lock, start = [0], threading.Lock(), time.perf_counter()

    def caller(n: int) -> None:
        i = n
        while time.perf_counter() - start < seconds:
            chip = chips[i % len(chips)]
            embed([chip, np.ascontiguousarray(chip[:, ::-1])])
            with lock:
                done[0] += 1
            i += threads

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - start) / (2 * done[0]) * 1000


def verify_images(paths: list[Path]) -> tuple[int, float]:
    """(chips compared, largest absolute difference) for the faces in ``paths``, plus mirrors."""
    analyzer = FaceAnalyzer()
    onnx, reference = onnx_runtime(threads=1), dlib_runtime()
    chips = [chip for path in paths for chip in chips_of(path, analyzer)]
    chips += [chip[:, ::-1] for chip in chips]
    if not chips:
        return 0, 0.0
    return len(chips), float(np.abs(onnx.embed(chips) - reference.embed(chips)).max())


def verify_all() -> None:
    paths = image_paths()
    chunks = [paths[i : i + 50] for i in range(0, len(paths), 50)]
    compared, worst, start = 0, 0.0, time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        for done, (count, difference) in enumerate(pool.imap_unordered(verify_images, chunks), 1):
            compared, worst = compared + count, max(worst, difference)
            if done % 20 == 0 or done == len(chunks):
                print(f"  {done}/{len(chunks)} chunks, {compared} chips, max |diff| {worst:.2e}", flush=True)
    print(
        f"verified {compared} chips from {len(paths)} images in {time.perf_counter() - start:.0f} s: "
        f"max |onnxruntime - dlib| = {worst:.3e} ({'within' if worst <= 1e-4 else 'OVER'} 1e-4)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=256, help="real face chips to embed")
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent per measurement")
    parser.add_argument("--verify-all", action="store_true", help="equivalence on every shared face")
    args = parser.parse_args()
    if args.verify_all:
        verify_all()
        return

    chips = collect_chips(args.chips)
    onnx, reference = onnx_runtime(), dlib_runtime()
    print(f"{len(chips)} real face chips, {os.cpu_count()} CPU cores")
    difference = np.abs(onnx.embed(chips) - reference.embed(chips)).max()
    print(f"max |onnxruntime - dlib| over these chips: {difference:.2e}")

    dlib_ms = ms_per_face(reference.embed, chips, 32, args.seconds)
    print(f"{'runtime':28s} {'batch':>5s} {'ms/face':>8s} {'faces/s':>8s} {'vs dlib-bin':>11s}")
    print(f"{'dlib-bin (peer)':28s} {32:5d} {dlib_ms:8.2f} {1000 / dlib_ms:8.1f} {1.0:10.1f}x")
    for threads, label in ((0, "onnxruntime, all cores"), (1, "onnxruntime, 1 thread")):
        embedder = onnx_runtime(threads=threads)
        for batch in (1, 8, 32):
            ms = ms_per_face(embedder.embed, chips, batch, args.seconds)
            print(f"{label:28s} {batch:5d} {ms:8.2f} {1000 / ms:8.1f} {dlib_ms / ms:10.1f}x")
    embedder = onnx_runtime()
    for threads in (2, 4, 16):
        ms = concurrent_ms_per_chip(embedder.embed, chips, threads, args.seconds)
        print(f"{threads:2d} concurrent callers, a face and its mirror per call: {ms:.2f} ms per chip")


if __name__ == "__main__":
    main()
