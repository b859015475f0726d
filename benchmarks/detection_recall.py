"""How many true faces each detection strategy finds, and at what cost.

    python benchmarks/detection_recall.py [--lfw N] [--mmod]

- Group photos (shared data detection_multi/images): faces found vs the counts its README
  gives (no ground-truth boxes exist, so a count above the truth means false or extra faces;
  the crowd photo's "30+" counts as 30; Obama-and-Biden holds 3 faces, not 2).
- LFW: share of N deep-funneled images (every k-th of the 13,233) in which a face is found
  whose box centre lies within 25 pixels of the image centre, where LFW's subject is: the
  detection rate on real, mostly frontal news photos.

Strategies: dlib HOG at native scale; HOG upsampled once (what face_recognition does); the
faceledger default (rescale so 40-pixel faces become 80, capped at 4 megapixels of work);
and, with --mmod, dlib's CNN (MMOD) detector at native scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.vision import read_image_file  # noqa: E402
from faceledger.vision.detect import HogFaceDetector  # noqa: E402
from faceledger.vision.weights import MMOD_DETECTOR, weight_file  # noqa: E402

GROUP_TRUTH = {
    "facenetpt_multiface.jpg": 6,
    "deepface_selfie-many-people.jpg": 7,
    "retinaface_wider_test.jpg": 30,
    "deepface_couple.jpg": 2,
    # the data README says 2; a third real face (a child, lower right) is in the photo
    "facerec_obama_and_biden.jpg": 3,
    "facerec_two_people.jpg": 2,
    "facerec_kit_with_rose.jpg": 2,
}

Boxes = list[tuple[float, float, float, float]]  # left, top, width, height


def hog(min_face: int, max_work_pixels: int) -> Callable[[np.ndarray], Boxes]:
    detector = HogFaceDetector(min_face_size=min_face, max_work_pixels=max_work_pixels)
    return lambda pixels: [(f.box.left, f.box.top, f.box.width, f.box.height) for f in detector.detect(pixels)]


def mmod() -> Callable[[np.ndarray], Boxes]:
    cnn = dlib.cnn_face_detection_model_v1(str(weight_file(MMOD_DETECTOR)))
    return lambda pixels: [
        (d.rect.left(), d.rect.top(), d.rect.width(), d.rect.height()) for d in cnn(pixels, 0)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=int, default=600, help="LFW images to test")
    parser.add_argument("--mmod", action="store_true", help="also run dlib's CNN detector (slow on CPU)")
    args = parser.parse_args()
    strategies: dict[str, Callable[[np.ndarray], Boxes]] = {
        "HOG native (min face 80 px)": hog(80, 10**12),
        "HOG upsample x2 (face_recognition)": hog(40, 10**12),
        "faceledger default (40 px, 4 MP cap)": hog(40, 4_000_000),
    }
    if args.mmod:
        strategies["MMOD CNN native"] = mmod()

    groups = {name: read_image_file(require("detection_multi", "images", name)).pixels for name in GROUP_TRUTH}
    lfw_files = sorted(require("lfw").glob("*/*.jpg"))
    step = max(1, len(lfw_files) // args.lfw)
    lfw = [read_image_file(path).pixels for path in lfw_files[::step][: args.lfw]]

    print(f"{'strategy':38s} {'group faces found':>18s} {'group s':>8s} {'LFW found':>10s} {'LFW ms/img':>10s}")
    for name, detect in strategies.items():
        started = time.perf_counter()
        counts = {photo: len(detect(pixels)) for photo, pixels in groups.items()}
        group_seconds = time.perf_counter() - started
        found = sum(min(counts[p], GROUP_TRUTH[p]) for p in GROUP_TRUTH)
        started = time.perf_counter()
        hits = 0
        for pixels in lfw:
            centre_y, centre_x = pixels.shape[0] / 2, pixels.shape[1] / 2
            hits += any(
                abs(left + width / 2 - centre_x) < 25 and abs(top + height / 2 - centre_y) < 25
                for left, top, width, height in detect(pixels)
            )
        lfw_ms = (time.perf_counter() - started) / len(lfw) * 1000
        print(
            f"{name:38s} {found:>9d}/{sum(GROUP_TRUTH.values())} ({found / sum(GROUP_TRUTH.values()):4.0%})"
            f" {group_seconds:8.2f} {hits / len(lfw):10.2%} {lfw_ms:10.1f}"
        )
        print("    per photo: " + ", ".join(f"{p.split('.')[0]} {counts[p]}/{GROUP_TRUTH[p]}" for p in GROUP_TRUTH))


if __name__ == "__main__":
    main()
