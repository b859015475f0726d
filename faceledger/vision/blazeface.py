"""Face detection with MediaPipe's BlazeFace (full-range model) over a pyramid of tiles.

Why: on two cores, dlib's HOG detector upsampled once (what face_recognition does to find faces
down to about 40 pixels) costs 0.15-1.5 s per photo. BlazeFace is a small single-shot network
(4-5 ms for its 192x192 input); run over the whole image and then over tiles at twice, four
times... the scale, it reaches faces as small as ``min_face_size`` pixels while staying several
times cheaper, and finds more of the turned and partly hidden faces HOG misses
(benchmarks/detect.py has the figures).

The boxes are mapped onto dlib HOG's box convention (fitted on LFW, see ``_TO_HOG_BOX``) because
the 5-point landmark model that aligns a face for the embedding was trained from such boxes.

The weights ship in the ``mediapipe`` 0.10.14 wheel (installed without its dependencies: only the
file is used) and run under ai-edge-litert, the TensorFlow Lite runtime; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from faceledger.errors import InternalServerError
from faceledger.vision.face import BoundingBox, Face

INPUT = 192  # the full-range model's input side
# HOG box from a BlazeFace box: centre shift (x, y) and side, as fractions of the BlazeFace box
# side; least-squares fit over LFW faces both detectors found (benchmarks/detect.py --fit).
_TO_HOG_BOX = (-0.022, -0.009, 0.949)
_ONE_PASS_BELOW = 1.5  # no finer level when the whole-image pass is this close to the finest scale


def blazeface_confidence(score: float) -> float:
    """Map the model's face score to 0-100, linear in log-odds.

    Anchored so that the detection threshold 0.65 maps to 73 (as HOG's decision boundary does,
    see detect.py) and the median score of LFW's faces, 0.82, to 95; the fallback pass's 0.3 maps
    to 11, which every QualityFilter rejects. Monotone; a convenience scale, **not** the
    probability that the box is a face.
    """
    score = min(max(score, 1e-6), 1 - 1e-6)
    return 100.0 / (1.0 + math.exp(-2.125 * (math.log(score / (1 - score)) - 0.151)))


MODEL = "face_detection_full_range_sparse.tflite"  # faces up to about 5 m from the camera
# SSD anchors: one per 4x4 cell of the input, centres in input pixels. All are of unit size, so
# box sizes come straight from the regressors.
_CENTRES = (np.arange(INPUT // 4, dtype=np.float32) + 0.5) * 4
_ANCHOR_X, _ANCHOR_Y = (grid.ravel() for grid in np.meshgrid(_CENTRES, _CENTRES))


@cache
def model_file(name: str) -> Path:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise InternalServerError(
            "BlazeFace weights missing: install them with `pip install --no-deps mediapipe==0.10.14`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "modules" / "face_detection" / name
    if not path.is_file():
        raise InternalServerError(f"{path} is missing; reinstall mediapipe==0.10.14.")
    return path


_per_thread = threading.local()


_STDERR_LOCK = threading.Lock()


def _quietly_open(path: Path):
    """A TFLite interpreter for ``path``. The runtime announces its XNNPACK delegate on the
    process's stderr (file descriptor 2, below Python's logging), once per interpreter; that line
    is kept out of the CLI's and the server's output."""
    from ai_edge_litert.interpreter import Interpreter

    with _STDERR_LOCK:
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
                interpreter = Interpreter(model_path=str(path), num_threads=1)
                interpreter.allocate_tensors()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return interpreter


def _interpreter():
    """This thread's interpreter and its input, regressor and classifier tensor indices (a TFLite
    interpreter holds its tensors, about 1 MB; threads cannot share one)."""
    if not hasattr(_per_thread, "blazeface"):
        interpreter = _quietly_open(model_file(MODEL))
        outputs = {tuple(d["shape"])[-1]: d["index"] for d in interpreter.get_output_details()}
        _per_thread.blazeface = (interpreter, interpreter.get_input_details()[0]["index"], outputs[16], outputs[1])
    return _per_thread.blazeface


@dataclass(frozen=True)
class Detection:
    """A box in image pixels (left, top, right, bottom) and the model's face score (0-1)."""

    box: np.ndarray
    score: float


def _run(tile: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2 in pixels of the INPUT-sized ``tile``) and scores above ``threshold``."""
    interpreter, inputs, regressors, classifiers = _interpreter()
    interpreter.set_tensor(inputs, (tile.astype(np.float32) / 127.5 - 1.0)[None])
    interpreter.invoke()
    raw = interpreter.get_tensor(regressors)[0]
    logits = interpreter.get_tensor(classifiers)[0, :, 0]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
    keep = np.flatnonzero(scores >= threshold)
    centre_x = raw[keep, 0] + _ANCHOR_X[keep]
    centre_y = raw[keep, 1] + _ANCHOR_Y[keep]
    half_w, half_h = raw[keep, 2] / 2, raw[keep, 3] / 2
    boxes = np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=1)
    return boxes.reshape(-1, 4), scores[keep]


def _whole(image: Image.Image, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The model on the whole image, letterboxed into its input; boxes in image pixels."""
    scale = INPUT / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    tile = np.zeros((INPUT, INPUT, 3), np.uint8)
    tile[: size[1], : size[0]] = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    boxes, scores = _run(tile, threshold)
    scale_x, scale_y = size[0] / image.width, size[1] / image.height
    return boxes / [scale_x, scale_y, scale_x, scale_y], scores


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersections(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Area that ``box`` shares with each of ``boxes`` (all as x1, y1, x2, y2)."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    return width * height


def _blend(boxes: np.ndarray, scores: np.ndarray, iou: float, contained: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: the best box absorbs every box overlapping
    it (IoU over ``iou``, or mostly inside the smaller one: a face cut by a tile edge), and
    becomes their score-weighted mean. Best score first."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    areas = _areas(boxes)
    remaining = np.ones(len(boxes), dtype=bool)
    merged_boxes, merged_scores = [], []
    for best in range(len(boxes)):
        if not remaining[best]:
            continue
        overlap = _intersections(boxes[best], boxes)
        same = remaining & (
            (overlap / (areas[best] + areas - overlap) > iou) | (overlap / np.minimum(areas[best], areas) > contained)
        )
        same[best] = True
        weights = scores[same]
        merged_boxes.append((boxes[same] * weights[:, None]).sum(axis=0) / weights.sum())
        merged_scores.append(scores[best])
        remaining &= ~same
    return np.array(merged_boxes).reshape(-1, 4), np.array(merged_scores)


@dataclass(frozen=True)
class BlazeFaceDetector:
    """Finds faces down to ``min_face_size`` pixels (default 40).

    ``score_threshold``: the model's face score (0-1) below which a box is dropped (MediaPipe's
    default is 0.6; at 0.65 the shared group photos show no false boxes and LFW loses 1 face in
    300). ``fallback_threshold``: when nothing passes, the best box above this lower score.
    ``confident_score``: a face scoring below it, next to a much larger face, is kept only if a
    second, centred look confirms it (one more model run).
    ``smallest_in_tile``: the side, in model pixels, a ``min_face_size`` face is scaled to in the
    finest tiles. ``max_tiles``: budget of model runs per image; past it the finer levels are
    dropped, so a huge photo costs a bounded time and only its smallest faces are missed
    (``smallest_findable_face`` says which).

    ``confidence``: see :func:`blazeface_confidence` (a convenience scale, not a probability).
    """

    @property
    def name(self) -> str:
        """Identifies the settings (part of the evaluation cache key)."""
        return (
            f"blazeface-full-from-half-tile-small-{_ONE_PASS_BELOW}-{self.min_face_size}px-{self.score_threshold}-tile{self.smallest_in_tile}"
            f"-max{self.max_tiles}-fallback-{self.fallback_threshold}-confirm-{self.confident_score}"
            f"-box{_TO_HOG_BOX}"
        )

    min_face_size: int = 40
    score_threshold: float = 0.65
    smallest_in_tile: float = 22.0
    max_tiles: int = 64
    overlap: float = 0.25
    fallback_threshold: float | None = 0.3
    confident_score: float = 0.8

    def scales(self, width: int, height: int) -> list[float]:
        """Image-to-model scales, coarsest first: the whole image in half a tile (the model
        scores a face best at 30-60 of its 192 pixels, and misses some larger ones), then twice
        that, and so on down to the scale at which a ``min_face_size`` face is
        ``smallest_in_tile`` pixels."""
        scale = INPUT / 2 / max(width, height)
        finest = self.smallest_in_tile / self.min_face_size
        scales = [scale]
        while scale < finest:
            if len(scales) == 1 and finest / scale < _ONE_PASS_BELOW:
                # A small image (up to about 260 pixels: thumbnails, LFW's 250x250 crops) gets
                # one model run, not two; its smallest findable face is up to 1.5 x
                # min_face_size. On LFW this is also what aligns best (docs/accuracy.md).
                break
            scale = min(scale * 2, finest)
            if self._tiles(width, height, scale) + sum(self._tiles(width, height, s) for s in scales) > self.max_tiles:
                break
            scales.append(scale)
        return scales

    def smallest_findable_face(self, width: int, height: int) -> float:
        return self.smallest_in_tile / self.scales(width, height)[-1]

    def _starts(self, length: int) -> list[int]:
        if length <= INPUT:
            return [0]
        step = int(INPUT * (1 - self.overlap))
        starts = list(range(0, length - INPUT, step))
        return [*starts, length - INPUT]

    def _tiles(self, width: int, height: int, scale: float) -> int:
        return len(self._starts(round(width * scale))) * len(self._starts(round(height * scale)))

    def detections(self, pixels: np.ndarray) -> list[Detection]:
        """Every face found, best score first, with boxes in BlazeFace's own convention."""
        height, width = pixels.shape[:2]
        image = Image.fromarray(pixels)
        found = []
        for level, scale in enumerate(self.scales(width, height)):
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
            scale_x, scale_y = size[0] / width, size[1] / height
            for top in self._starts(size[1]):
                for left in self._starts(size[0]):
                    tile = np.zeros((INPUT, INPUT, 3), np.uint8)
                    part = work[top : top + INPUT, left : left + INPUT]
                    tile[: part.shape[0], : part.shape[1]] = part
                    boxes, scores = _run(tile, self.score_threshold)
                    if level > 0:
                        # Faces over half a tile were seen, smaller, at the coarser level.
                        small = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) <= INPUT / 2
                        boxes, scores = boxes[small], scores[small]
                    found.append(((boxes + [left, top, left, top]) / [scale_x, scale_y, scale_x, scale_y], scores))
        boxes, scores = np.concatenate([b for b, _ in found]), np.concatenate([s for _, s in found])
        if not len(boxes) and self.fallback_threshold is not None:
            # As with HOG: when nothing passes, the best box above a lower bar (with its lower
            # score, which QualityFilter AUTO and up reject).
            boxes, scores = _blend(*_whole(image, self.fallback_threshold), iou=0.3, contained=0.6)
            return [Detection(box, float(score)) for box, score in zip(boxes[:1], scores[:1], strict=True)]
        boxes, scores = _blend(boxes, scores, iou=0.3, contained=0.6)
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        kept = []
        for box, score, side, centre in zip(boxes, scores, sides, centres, strict=True):
            # A tile edge that cuts a face makes false boxes beside it: a doubtful face next to a
            # face over twice its size gets a second look.
            beside_larger = np.any((sides >= 2 * side) & (np.abs(centres - centre).max(axis=1) < sides))
            if score >= self.confident_score or not beside_larger or self._confirmed(image, box):
                kept.append(Detection(box, float(score)))
        return kept

    def _confirmed(self, image: Image.Image, box: np.ndarray) -> bool:
        """A second look at a doubtful face, centred and at the scale the model likes best (a
        quarter of its input), where the face that a tile edge cut is seen whole."""
        side = 4 * max(box[2] - box[0], box[3] - box[1])
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        region = (
            round(centre_x - side / 2),
            round(centre_y - side / 2),
            round(centre_x + side / 2),
            round(centre_y + side / 2),
        )
        # PIL fills what lies outside the image with black, as the tiles are padded.
        crop = np.asarray(image.crop(region).resize((INPUT, INPUT), Image.Resampling.BILINEAR))
        boxes, _ = _run(crop, self.score_threshold)
        expected = np.array([3 / 8, 3 / 8, 5 / 8, 5 / 8]) * INPUT
        overlap = _intersections(expected, boxes)
        return bool(np.any(overlap / (_areas(boxes) + _areas(expected) - overlap) > 0.3))

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """Faces in an RGB ``uint8`` image, largest first, boxes in input-image pixels."""
        height, width = pixels.shape[:2]
        shift_x, shift_y, side = _TO_HOG_BOX
        faces = []
        for detection in self.detections(pixels):
            x1, y1, x2, y2 = detection.box
            size = max(x2 - x1, y2 - y1)
            centre_x, centre_y = (x1 + x2) / 2 + shift_x * size, (y1 + y2) / 2 + shift_y * size
            hog_side = side * size
            faces.append(
                Face(
                    box=BoundingBox(
                        left=float(centre_x - hog_side / 2),
                        top=float(centre_y - hog_side / 2),
                        width=float(hog_side),
                        height=float(hog_side),
                    ),
                    detector_score=detection.score,
                    confidence=blazeface_confidence(detection.score),
                )
            )
        faces.sort(key=lambda face: face.box.area, reverse=True)
        return faces
