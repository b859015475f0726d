"""dlib's face-embedding ResNet (128-d), under two runtimes; vision/model.py chooses between them.

:class:`OnnxResNetEmbedder`, the default, runs dlib's network converted to ONNX
(vision/resnet_onnx.py) under onnxruntime, about 25x faster on two cores.
:class:`DlibResNetEmbedder` runs dlib itself; it is the reference the conversion is tested against
(same embedding within 1e-4 on every shared face), so their templates are interchangeable.
Both embed aligned 150x150 RGB ``uint8`` chips, without any test-time augmentation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import cache
from typing import Protocol

import dlib
import numpy as np

from faceledger.config import cache_root
from faceledger.vision.resnet_onnx import CHIP_SIZE, build_onnx_model, converted_model, read_dlib_network
from faceledger.vision.weights import RESNET_EMBEDDING, weight_file

EMBEDDING_DIM = 128
# dlib's network object keeps its layer outputs in member buffers, so two threads running it at
# once would overwrite each other's activations.
_NETWORK_LOCK = threading.Lock()
# Activations of a 32-chip batch take about 25 MB; larger batches are no faster per face.
ONNX_BATCH = 32

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """A runtime of the network."""

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray: ...


def _empty() -> np.ndarray:
    return np.empty((0, EMBEDDING_DIM), dtype=np.float32)


@cache
def _resnet() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(weight_file(RESNET_EMBEDDING)))


class DlibResNetEmbedder:
    """Embeds aligned 150x150 RGB chips with dlib; the weights load on first use, once per process."""

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of ``chips`` as a float32 array of shape (len(chips), 128)."""
        if not chips:
            return _empty()
        batch = [np.ascontiguousarray(chip, dtype=np.uint8) for chip in chips]
        network = _resnet()
        with _NETWORK_LOCK:
            vectors = network.compute_face_descriptor(batch)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)


@cache
def _onnx_session(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads would otherwise spin for a while after each batch, taking the cores that
    # detection workers and request threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = weight_file(RESNET_EMBEDDING)
    try:
        model: str | bytes = str(converted_model(source, cache_root() / "models"))
    except OSError as error:
        # A read-only home (a locked-down service account) only costs a 0.3 s conversion per start.
        log.info("cannot cache the converted embedding model (%s); converting in memory", error)
        model = build_onnx_model(read_dlib_network(source.read_bytes())).SerializeToString()
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxResNetEmbedder:
    """Embeds aligned 150x150 RGB chips with dlib's weights under onnxruntime.

    ``threads``: onnxruntime's intra-op threads (0 = one per physical core); use 1 in each worker
    when several processes embed at once. One session per thread count and process; its
    ``run`` is safe to call from several threads.
    """

    def __init__(self, threads: int = 0):
        self.threads = threads

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of ``chips`` as a float32 array of shape (len(chips), 128)."""
        if not len(chips):
            return _empty()
        batch = np.ascontiguousarray(np.stack(chips), dtype=np.uint8)
        if batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be {CHIP_SIZE}x{CHIP_SIZE} RGB, got {batch.shape[1:]}")
        session = _onnx_session(self.threads)
        parts = [session.run(None, {"chips": batch[i : i + ONNX_BATCH]})[0] for i in range(0, len(batch), ONNX_BATCH)]
        return np.concatenate(parts).astype(np.float32, copy=False)
