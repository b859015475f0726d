"""ArcFace's 112x112 alignment template, restated for dlib's five landmarks.

    python benchmarks/arcface_template.py [--images N]

ArcFace's template (vision/alignment.py ``ARCFACE_112_REFERENCE``) places the eye centres, the
nose tip and the mouth corners; dlib's 5-point model finds eye corners and the base of the nose.
BlazeFace's keypoints include the eye centres, the nose tip and the mouth centre, so for each of N
LFW images (every k-th of the sorted list) this script fits the similarity that carries
BlazeFace's four points onto ArcFace's (the mouth centre onto the midpoint of its mouth corners),
applies it to dlib's five landmarks of the same face, and prints where those land: their median
over the faces (the template to use, ``ARCFACE_112`` in vision/alignment.py), the spread, and, for
chips cut by the restated template, how far each face's own ArcFace points land from ArcFace's
template (mean and 90th percentile, in pixels of the 112-pixel chip).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.vision import FaceAnalyzer, read_image_file  # noqa: E402
from faceledger.vision.alignment import ARCFACE_112_REFERENCE, fit_similarity  # noqa: E402
from faceledger.vision.blazeface import _ANCHOR_X, _ANCHOR_Y, INPUT, _interpreter  # noqa: E402

# Indices of BlazeFace's keypoints used: the eye on the viewer's left, the other eye, nose tip,
# mouth centre.
KEYPOINTS = (0, 1, 2, 3)


def arcface_four_points() -> np.ndarray:
    eye_left, eye_right, nose, mouth_left, mouth_right = (np.array(p) for p in ARCFACE_112_REFERENCE)
    return np.array([eye_left, eye_right, nose, (mouth_left + mouth_right) / 2])


def blazeface_keypoints(pixels: np.ndarray) -> np.ndarray | None:
    """The six keypoints of the best-scoring face, in image pixels (one whole-image pass)."""
    interpreter, inputs, regressors, classifiers = _interpreter()
    height, width = pixels.shape[:2]
    side = INPUT
    tile = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR))
    interpreter.set_tensor(inputs, (tile.astype(np.float32) / 127.5 - 1.0)[None])
    interpreter.invoke()
    raw = interpreter.get_tensor(regressors)[0]
    logits = interpreter.get_tensor(classifiers)[0, :, 0]
    best = int(np.argmax(logits))
    if logits[best] < 0.6:  # below a 0.65 face score
        return None
    points = raw[best, 4:16].reshape(6, 2) + [_ANCHOR_X[best], _ANCHOR_Y[best]]
    return points * [width / side, height / side]


def centre_offset(box, shape: tuple[int, ...]) -> float:
    return float(np.hypot(box.left + box.width / 2 - shape[1] / 2, box.top + box.height / 2 - shape[0] / 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    paths = sorted(require("lfw").glob("*/*.jpg"))
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    analyzer = FaceAnalyzer()
    target = arcface_four_points()
    placed, pairs = [], []
    for path in paths:
        pixels = read_image_file(path).pixels
        keypoints = blazeface_keypoints(pixels)
        faces = analyzer.analyze(pixels, embed=False)
        if keypoints is None or not faces:
            continue
        face = min(faces, key=lambda f: centre_offset(f.box, pixels.shape))
        dlib_points = np.array(face.landmarks.points)
        # The same face: BlazeFace's nose tip lies between dlib's eyes and below them.
        if np.abs(keypoints[2] - dlib_points[4]).max() > 0.25 * np.ptp(dlib_points[:, 0]):
            continue
        matrix = fit_similarity(keypoints[list(KEYPOINTS)], target)
        placed.append(dlib_points @ matrix[:, :2].T + matrix[:, 2])
        pairs.append((dlib_points, keypoints[list(KEYPOINTS)]))
    placed = np.array(placed)
    median = np.median(placed, axis=0)
    # Cut by the restated template, where do the faces' own ArcFace points land?
    misses = []
    for dlib_points, four in pairs:
        matrix = fit_similarity(dlib_points, median)
        misses.append(np.hypot(*(four @ matrix[:, :2].T + matrix[:, 2] - target).T))
    misses = np.array(misses)
    print(f"faces: {len(placed)} of {len(paths)} images")
    print("dlib point      median (x, y)      spread (std x, y)")
    for n, (point, spread) in enumerate(zip(median, placed.std(axis=0), strict=True)):
        print(f"  {n}           ({point[0]:6.1f}, {point[1]:6.1f})     ({spread[0]:4.1f}, {spread[1]:4.1f})")
    names = ("eye left", "eye right", "nose tip", "mouth centre")
    for name, miss in zip(names, misses.T, strict=True):
        print(f"  {name}: {np.mean(miss):.1f} px mean, {np.percentile(miss, 90):.1f} px at the 90th percentile")
    print("ARCFACE_112 = (" + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in median) + ")")


if __name__ == "__main__":
    main()
