"""faceres on LFW's View 2 protocol, for a choice of crop and preprocessing.

    python benchmarks/faceres_lfw.py [--padding P] [--human] [--folds K]

Embeds the images of the first K folds of ``lfw_meta/pairs.txt`` with faceres (the face nearest
the image centre, dlib chip at 224 pixels with ``--padding``; ``--human`` feeds RGB 0-255 as the
Human library does instead of HSE's BGR less the channel means), two worker processes, embeddings
cached under /tmp. Prints, with flip augmentation off and on, the 10-fold (K-fold) verification
accuracy and the accuracy-maximising cosine threshold chosen on the other folds, and the median
cosine of mated and non-mated pairs. vision/faceres.py quotes its figures (about 4-5 minutes for
all 10 folds on two cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.eval import metrics  # noqa: E402
from faceledger.eval.datasets import read_lfw_pairs  # noqa: E402
from faceledger.eval.embeddings import EmbeddingConfig, embed_images  # noqa: E402
from faceledger.vision.faceres import FACERES_SPEC, faceres_onnx  # noqa: E402
from faceledger.vision.onnx_model import OnnxFaceModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--padding", type=float, default=FACERES_SPEC.padding)
    parser.add_argument("--human", action="store_true")
    parser.add_argument("--folds", type=int, default=10)
    args = parser.parse_args()
    spec = dataclasses.replace(FACERES_SPEC, padding=args.padding)
    if args.human:
        spec = dataclasses.replace(spec, colour="RGB", mean=(0.0, 0.0, 0.0))
    # One thread per worker; the evaluation mirrors each chip itself.
    model = OnnxFaceModel(faceres_onnx(), spec, threads=1, flip=False)
    pairs = read_lfw_pairs(require("lfw_meta", "pairs.txt"), folds=args.folds)
    paths = sorted({p.first for p in pairs} | {p.second for p in pairs})
    started = time.perf_counter()
    embedded = embed_images(
        require("lfw"),
        paths,
        config=EmbeddingConfig(face_choice="centre", model=model),
        cache_dir=Path(tempfile.gettempdir()) / "faceledger-faceres-lfw",
        workers=2,
    )
    print(
        f"{spec.colour} less {spec.mean}, padding {spec.padding}: {len(paths)} images in {time.perf_counter() - started:.0f} s"
    )
    print(f"  failures to acquire: {len(embedded.failures_to_acquire)}")
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    first, second = embedded.rows([p.first for p in pairs]), embedded.rows([p.second for p in pairs])
    for flip in (False, True):
        vectors = embedded.vectors + (embedded.flipped if flip else 0.0)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines = np.nan_to_num(np.sum(vectors[first] * vectors[second], axis=1), nan=-1.0)
        results = metrics.k_fold_accuracy(cosines, same, folds)
        accuracy = np.array([r.accuracy for r in results]) * 100
        thresholds = np.array([r.threshold for r in results])
        print(
            f"  flip {'on ' if flip else 'off'}: accuracy {accuracy.mean():.2f} +- {accuracy.std():.2f}%, "
            f"threshold cosine {thresholds.mean():.3f}; median cosine mated {np.median(cosines[same]):.3f}, "
            f"non-mated {np.median(cosines[~same]):.3f}"
        )


if __name__ == "__main__":
    main()
