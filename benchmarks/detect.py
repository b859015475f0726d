"""How many true faces each detection strategy finds, and at what cost.

    python benchmarks/detect.py [--lfw N] [--mmod] [--fit]

- Group photos (shared data detection_multi/images): faces found vs the counts its README
  gives (no ground-truth boxes exist, so a count above the truth means false or extra faces;
  the crowd photo's "30+" counts as 30; Obama-and-Biden holds 3 faces, not 2).
- LFW: share of N deep-funneled images (every k-th of the 13,233) in which a face is found
  whose box centre lies within 25 pixels of the image centre, where LFW's subject is: the
  detection rate on real, mostly frontal news photos.

Strategies: dlib HOG upsampled once (the peer: what face_recognition does, faces down to about
40 pixels); HOG at native scale; faceledger's HOG strategy (rescale so 40-pixel faces become 80,
capped at 4 megapixels of work); BlazeFace full-range over a tile pyramid (faceledger's default,
faces down to 40 pixels) at two score thresholds; and, with --mmod, dlib's CNN (MMOD) detector
at native scale. Time ratios are against the peer, in this process, on the same images.

Counting true faces: the group photos have counts but no boxes, so a photo contributes at most
its true count (extra boxes are false or duplicate detections and are reported separately); the
boxes of the crowd photo were checked by eye. On LFW a hit is a face centred on the image centre.

--fit prints the mean offset and scale from BlazeFace boxes to HOG boxes over LFW faces both
find: the mapping faceledger applies so that dlib's landmark model gets boxes like those it was
trained on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.vision import read_image_file  # noqa: E402
from faceledger.vision.blazeface import BlazeFaceDetector  # noqa: E402
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


def hog_upsampled(times: int) -> Callable[[np.ndarray], Boxes]:
    detector = dlib.get_frontal_face_detector()
    return lambda pixels: [(r.left(), r.top(), r.width(), r.height()) for r in detector(pixels, times)]


def blazeface(**settings: float) -> Callable[[np.ndarray], Boxes]:
    detector = BlazeFaceDetector(**settings)
    return lambda pixels: [(f.box.left, f.box.top, f.box.width, f.box.height) for f in detector.detect(pixels)]


def fit_box_mapping(lfw: list[np.ndarray]) -> None:
    blaze, hog = BlazeFaceDetector(), dlib.get_frontal_face_detector()
    rows = []
    for pixels in lfw:
        centre = pixels.shape[1] / 2, pixels.shape[0] / 2
        ours = [
            d.box
            for d in blaze.detections(pixels)
            if abs((d.box[0] + d.box[2]) / 2 - centre[0]) < 25 and abs((d.box[1] + d.box[3]) / 2 - centre[1]) < 25
        ]
        theirs = [
            r for r in hog(pixels, 1) if abs(r.center().x - centre[0]) < 25 and abs(r.center().y - centre[1]) < 25
        ]
        if ours and theirs:
            (x1, y1, x2, y2), r = ours[0], theirs[0]
            side = max(x2 - x1, y2 - y1)
            rows.append(
                (
                    ((r.left() + r.right() + 1) / 2 - (x1 + x2) / 2) / side,
                    ((r.top() + r.bottom() + 1) / 2 - (y1 + y2) / 2) / side,
                    r.width() / side,
                )
            )
    mean, spread = np.mean(rows, axis=0), np.std(rows, axis=0)
    print(
        f"BlazeFace -> HOG box over {len(rows)} LFW faces: centre shift x {mean[0]:+.4f} y {mean[1]:+.4f}, "
        f"side x{mean[2]:.4f} (std {spread[0]:.3f}, {spread[1]:.3f}, {spread[2]:.3f})"
    )


def mmod() -> Callable[[np.ndarray], Boxes]:
    cnn = dlib.cnn_face_detection_model_v1(str(weight_file(MMOD_DETECTOR)))
    return lambda pixels: [(d.rect.left(), d.rect.top(), d.rect.width(), d.rect.height()) for d in cnn(pixels, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=int, default=600, help="LFW images to test")
    parser.add_argument("--mmod", action="store_true", help="also run dlib's CNN detector (slow on CPU)")
    parser.add_argument("--fit", action="store_true", help="fit the BlazeFace-to-HOG box mapping")
    args = parser.parse_args()
    strategies: dict[str, Callable[[np.ndarray], Boxes]] = {
        "dlib HOG upsampled once (peer)": hog_upsampled(1),
        "dlib HOG native": hog_upsampled(0),
        "faceledger HOG (40 px, 4 MP cap)": hog(40, 4_000_000),
        "BlazeFace tiles, score 0.6": blazeface(score_threshold=0.6),
        "BlazeFace tiles, score 0.65 (default)": blazeface(),
    }
    if args.mmod:
        strategies["MMOD CNN native"] = mmod()

    groups = {name: read_image_file(require("detection_multi", "images", name)).pixels for name in GROUP_TRUTH}
    lfw_files = sorted(require("lfw").glob("*/*.jpg"))
    step = max(1, len(lfw_files) // args.lfw)
    lfw = [read_image_file(path).pixels for path in lfw_files[::step][: args.lfw]]

    if args.fit:
        fit_box_mapping(lfw)
        return

    for detect in strategies.values():  # warm-up: models load once
        detect(groups["facerec_kit_with_rose.jpg"])
    print(f"{len(lfw)} LFW images, {len(groups)} group photos, {os.cpu_count()} CPU cores")
    print(
        f"{'strategy':38s} {'group faces found':>18s} {'extra':>5s} {'group s':>8s} {'x peer':>6s}"
        f" {'LFW found':>10s} {'LFW ms/img':>10s} {'x peer':>6s}"
    )
    peer: tuple[float, float] | None = None
    for name, detect in strategies.items():
        started = time.perf_counter()
        counts = {photo: len(detect(pixels)) for photo, pixels in groups.items()}
        group_seconds = time.perf_counter() - started
        found = sum(min(counts[p], GROUP_TRUTH[p]) for p in GROUP_TRUTH)
        extra = sum(max(0, counts[p] - GROUP_TRUTH[p]) for p in GROUP_TRUTH)
        started = time.perf_counter()
        hits = 0
        for pixels in lfw:
            centre_y, centre_x = pixels.shape[0] / 2, pixels.shape[1] / 2
            hits += any(
                abs(left + width / 2 - centre_x) < 25 and abs(top + height / 2 - centre_y) < 25
                for left, top, width, height in detect(pixels)
            )
        lfw_ms = (time.perf_counter() - started) / len(lfw) * 1000
        peer = peer or (group_seconds, lfw_ms)
        print(
            f"{name:38s} {found:>9d}/{sum(GROUP_TRUTH.values())} ({found / sum(GROUP_TRUTH.values()):4.0%})"
            f" {extra:5d} {group_seconds:8.2f} {group_seconds / peer[0]:6.2f}"
            f" {hits / len(lfw):10.2%} {lfw_ms:10.1f} {lfw_ms / peer[1]:6.2f}"
        )
        print("    per photo: " + ", ".join(f"{p.split('.')[0]} {counts[p]}/{GROUP_TRUTH[p]}" for p in GROUP_TRUTH))


if __name__ == "__main__":
    main()
