"""Search at scale: HNSW on 8-bit codes with exact re-ranking (the index faceledger uses above
50,000 faces) against exact search.

    python benchmarks/search_scale.py [--faces 1000000] [--probes 1000] [--fused]

Gallery: the 13,233 real LFW templates (from the evaluation cache: run
``faceledger eval identification --dataset lfw`` once) plus synthetic vectors drawn from a
Gaussian with the real templates' mean and full covariance, so that the geometry looks like faces'
(uniform noise would make HNSW look far worse than on faces). Probes: real LFW images' plain
(unflipped) embeddings, so each probe's true neighbour is its own flip-averaged template or
another photo of the same person.

With ``--fused``: the templates of the shipped fusion of dlib's ResNet and faceres
(vision/fusion.py; 1,152 floats, from ``benchmarks/fusion_table.py``'s cache), synthetic ones made
unit length like them, searched as the service searches such a collection: the graph walks the
128 principal components of the templates and ``PROJECTED_RERANK_FACTOR`` times the requested
faces are re-ranked on the full templates; exact search is FAISS's brute force over the full templates.

Prints build time, recall@10 and top-1 agreement against exact FAISS flat search on the same
vectors, single-query p50/p99 latency for both, the index's memory, and save/load times of the
encrypted saved index.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

import faceledger.index.vector_index as vector_index  # noqa: E402
from faceledger.eval.embeddings import EVAL_MODEL, EmbeddingConfig, embed_images  # noqa: E402
from faceledger.index.vector_index import (  # noqa: E402
    HNSW_SEARCH_DEPTH,
    PROJECTED_RERANK_FACTOR,
    CollectionIndex,
)
from faceledger.keys.templates import TemplateCipher  # noqa: E402
from faceledger.vision import DlibResNetModel  # noqa: E402
from faceledger.vision.faceres import faceres_model  # noqa: E402
from faceledger.vision.fusion import DLIB_FACERES, DLIB_FACERES_COSINE, DLIB_FACERES_WEIGHTS, fused_model  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def fused():
    """The shipped fusion as the evaluations embed with it (its cache is fusion_table.py's)."""
    parts = (DlibResNetModel(threads=1, flip=False), faceres_model(threads=1, flip=False))
    return fused_model(DLIB_FACERES, parts, DLIB_FACERES_WEIGHTS, DLIB_FACERES_COSINE, threads=1, flip=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--fused", action="store_true", help="the dlib-faceres fusion's templates (1,152 floats)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(os.cpu_count() or 1)

    root = require("lfw")
    paths = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    model = fused() if args.fused else EVAL_MODEL
    embedded = embed_images(root, paths, config=EmbeddingConfig(face_choice="centre", model=model))
    found = embedded.found
    real = embedded.templates(flip=True)[found].astype(np.float32)
    probes_all = embedded.vectors[found].astype(np.float32)
    rng = np.random.default_rng(1)
    gallery = np.empty((args.faces, real.shape[1]), dtype=np.float32)
    gallery[: len(real)] = real
    mean, covariance = real.mean(0), np.cov(real, rowvar=False)
    for start in range(len(real), args.faces, 100_000):  # in pieces: 1,152 float64s a face is 9 GB a million
        stop = min(args.faces, start + 100_000)
        gallery[start:stop] = rng.multivariate_normal(mean, covariance, size=stop - start, method="cholesky")
    if args.fused:  # the model's templates are unit vectors
        gallery[len(real) :] /= np.linalg.norm(gallery[len(real) :], axis=1, keepdims=True)
    seqs = np.arange(len(gallery), dtype=np.int64)
    probes = probes_all[rng.choice(len(probes_all), size=args.probes, replace=False)]
    print(
        f"gallery {len(gallery):,} ({len(real):,} real LFW templates), {args.probes} real probes, "
        f"{os.cpu_count()} cores; RSS {rss_mb():.0f} MB before indexes"
    )

    started = time.perf_counter()
    approximate = CollectionIndex(model.dimension, seqs, gallery, 1, approximate=True)
    walked = min(model.dimension, vector_index.GRAPH_DIMENSION)
    walked = f"{walked} principal components" if walked < model.dimension else f"all {walked} floats"
    print(
        f"HNSW (M={vector_index.HNSW_NEIGHBOURS}, efConstruction={vector_index.HNSW_BUILD_DEPTH}) on {walked}: "
        f"built in {time.perf_counter() - started:.1f} s; RSS {rss_mb():.0f} MB"
    )

    faiss.omp_set_num_threads(1)  # single-query latency: one query per core, as a server runs them
    truth, exact_times = [], []
    for probe in probes:  # brute force over the same array (a flat index would copy the gallery)
        t = time.perf_counter()
        truth.append(list(faiss.knn(probe[None, :], gallery, 10)[1][0]))
        exact_times.append(time.perf_counter() - t)
    projected = model.dimension > vector_index.GRAPH_DIMENSION
    factor = PROJECTED_RERANK_FACTOR if projected else vector_index.RERANK_FACTOR
    depths = (192, 256, vector_index.PROJECTED_SEARCH_DEPTH, 384) if projected else (96, 128, HNSW_SEARCH_DEPTH, 256)
    settings = [(depth, factor) for depth in sorted(set(depths))]
    settings += [(vector_index.PROJECTED_SEARCH_DEPTH, f) for f in (2, 10) if projected]
    for depth, factor in settings:
        vector_index.HNSW_SEARCH_DEPTH = vector_index.PROJECTED_SEARCH_DEPTH = depth  # read by every search
        vector_index.PROJECTED_RERANK_FACTOR = factor
        recalls, top1, times = [], 0, []
        for probe, expected in zip(probes, truth, strict=True):
            t = time.perf_counter()
            got = [n.seq for n in approximate.search(probe[None, :], 10)[0]]
            times.append(time.perf_counter() - t)
            recalls.append(len(set(got) & set(expected)) / 10)
            top1 += got[0] == expected[0]
        print(
            f"HNSW efSearch {depth:3d}"
            + (f", re-rank x{factor}" if projected else "")
            + f": recall@10 {np.mean(recalls):.4f}, top-1 equal {top1 / len(probes):.4f}, "
            f"p50 {percentile(times, 0.5) * 1000:.3f} ms, p99 {percentile(times, 0.99) * 1000:.3f} ms"
        )
    print(
        f"exact search:      p50 {percentile(exact_times, 0.5) * 1000:.3f} ms, p99 {percentile(exact_times, 0.99) * 1000:.3f} ms"
    )

    del gallery  # before a second copy of the index is loaded
    cipher = TemplateCipher(os.urandom(32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.faiss"
        started = time.perf_counter()
        approximate.save(path, cipher)
        saved = time.perf_counter() - started
        started = time.perf_counter()
        loaded = CollectionIndex.load(path, 1, cipher)
        print(
            f"encrypted save {saved:.1f} s ({path.stat().st_size / 2**20:.0f} MiB), load {time.perf_counter() - started:.1f} s; "
            f"loaded index answers the same: {[n.seq for n in loaded.search(probes[:1], 10)[0]] == [n.seq for n in approximate.search(probes[:1], 10)[0]]}"
        )
    print(f"peak RSS of this process (both indexes and the raw vectors): {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
