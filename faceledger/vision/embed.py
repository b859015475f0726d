"""The 128-d face embedding: dlib's ResNet (99.38% on LFW as published by dlib)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

import dlib
import numpy as np

from faceledger.vision.weights import RESNET_EMBEDDING, weight_file

EMBEDDING_DIM = 128
FACE_MODEL_VERSION = "dlib-resnet-v1"
# dlib's network object keeps its layer outputs in member buffers, so two threads running it at
# once would overwrite each other's activations.
_NETWORK_LOCK = threading.Lock()


@cache
def _resnet() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(weight_file(RESNET_EMBEDDING)))


class DlibResNetEmbedder:
    """Embeds aligned 150x150 RGB chips; the weights load on first use, once per process."""

    dimension = EMBEDDING_DIM
    model_version = FACE_MODEL_VERSION

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of ``chips`` as a float32 array of shape (len(chips), 128)."""
        if not chips:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        batch = [np.ascontiguousarray(chip, dtype=np.uint8) for chip in chips]
        network = _resnet()
        with _NETWORK_LOCK:
            vectors = network.compute_face_descriptor(batch)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)
