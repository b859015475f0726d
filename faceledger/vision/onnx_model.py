"""A face model from an operator's own ONNX embedding network and a short description of it.

The operator supplies the ``.onnx`` file and an :class:`OnnxModelSpec` (vision/onnx_spec.py): the
chip the network takes (side, colour order, per-channel normalisation, tensor layout), how faces
are aligned onto it, and the length of its output. :class:`OnnxFaceModel` then implements
:class:`~faceledger.vision.model.FaceModel` with it:

- ``align``: a similarity transform puts dlib's five landmarks on the spec's template (by default
  ArcFace's 112x112 template, scaled to the input size; vision/alignment.py), or the chip is cut
  as ``dlib.get_face_chip`` cuts it (``alignment="dlib-chip"``, with ``padding``);
- ``embed``: the network's output, L2-normalised; with ``flip``, the normalised mean of the
  embeddings of the chip and of its mirror image;
- ``similarity``: templates are unit vectors, so their squared distance is ``2 - 2*cos``, and the
  usual :class:`~faceledger.vision.similarity.SimilarityScale` on squared distance is linear in the
  cosine (FAISS's exact L2 search stays exact). The spec names one cosine and the similarity it
  reports; the default (cosine 0.6 reports 80) is ``Similarity = 100 * (1 + cos) / 2``;
- ``version``: the spec's name, the first 16 hex digits of the file's SHA-256 and 8 of the
  spec's (whatever changes templates changes the version), ``+flip`` with flip;
- ``threshold_table``: none ships for an operator's network, so it raises
  :class:`UncalibratedModelError`; measure one with ``faceledger calibrate``.

The model is a picklable value (path, spec, the file's digest): each process opens its own
onnxruntime session on first use and checks the file still has that digest.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from faceledger.errors import InvalidParameterException
from faceledger.vision.alignment import template_chip
from faceledger.vision.calibration import ThresholdTable
from faceledger.vision.face import Face
from faceledger.vision.landmarks import align_chip
from faceledger.vision.onnx_spec import OnnxModelSpec
from faceledger.vision.similarity import SimilarityScale

# Chips per network run. Larger batches are no faster per face on CPU (faceres: the same from 4
# to 32 chips) and cost memory (faceres' activations: about 50 MB for 8 chips, 250 MB for 32).
BATCH = 8
_INPUT_TYPES = {1: "float32", 2: "uint8", 10: "float16"}  # ONNX TensorProto element types


class ModelFileError(InvalidParameterException):
    """The file is not an ONNX network that can serve as the face model its spec describes."""


class UncalibratedModelError(InvalidParameterException):
    """No threshold table ships with the model: measure one with ``faceledger calibrate``."""


@dataclass(frozen=True)
class _Ports:
    """The network's image input and embedding output, as :class:`OnnxFaceModel` uses them."""

    input: str
    input_type: str
    batch: int | None  # a batch size fixed by the network, else None
    output: str


@dataclass(frozen=True)
class OnnxFaceModel:
    """A face model on the ONNX network at ``path``, described by ``spec`` (see the module).

    Construction reads the file, checks it against the spec and records its SHA-256 (raising
    :class:`ModelFileError` when it does not fit); the network itself loads on first use, once per
    process. ``threads``: onnxruntime's intra-op threads (0 = one per physical core). ``flip``:
    test-time augmentation, the mean of the embeddings of the chip and of its mirror image, for
    twice the embedding time.
    """

    path: Path
    spec: OnnxModelSpec
    threads: int = 0
    flip: bool = True
    sha256: str = field(init=False)
    _ports: _Ports = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        data = _read(self.path)
        object.__setattr__(self, "sha256", hashlib.sha256(data).hexdigest())
        object.__setattr__(self, "_ports", _inspect(data, self.spec))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        base = f"{self.spec.name}-{self.sha256[:16]}.{self.spec.digest[:8]}"
        return base + ("+flip" if self.flip else "")

    @property
    def chip_size(self) -> int:
        return self.spec.input_size

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    @property
    def similarity(self) -> SimilarityScale:
        return self.spec.similarity

    def align(self, pixels: np.ndarray, face: Face) -> np.ndarray:
        """The chip of ``face`` (landmarks set) in an RGB ``uint8`` image: ``uint8`` of shape
        (input_size, input_size, 3), RGB whatever the network's colour order."""
        if face.landmarks is None:
            raise ValueError("align needs the face's landmarks")
        if self.spec.alignment == "dlib-chip":
            return align_chip(pixels, face, size=self.chip_size, padding=self.spec.padding)
        assert self.spec.template is not None
        return template_chip(pixels, face.landmarks.points, self.spec.template, self.chip_size)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length templates of RGB ``uint8`` chips: float32 of shape (len(chips), dimension)."""
        if not len(chips):
            return np.empty((0, self.dimension), dtype=np.float32)
        batch = np.ascontiguousarray(np.stack(chips), dtype=np.uint8)
        side = self.chip_size
        if batch.shape[1:] != (side, side, 3):
            raise ValueError(f"chips must be {side}x{side} RGB, got {batch.shape[1:]}")
        if self.flip:
            both = unit_length(self._run(np.concatenate([batch, batch[:, :, ::-1]])))
            return unit_length(both[: len(batch)] + both[len(batch) :])
        return unit_length(self._run(batch))

    def threshold_table(self) -> ThresholdTable:
        raise UncalibratedModelError(
            f"No threshold table ships with face model {self.version}: measure one with "
            "`faceledger calibrate` and store it for the collection."
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session, ports = _session(str(self.path), self.sha256, self.threads), self._ports
        tensor = self._network_input(batch, ports.input_type)
        step = ports.batch or BATCH
        parts = []
        for start in range(0, len(tensor), step):
            part = tensor[start : start + step]
            if ports.batch and len(part) < step:  # a network of fixed batch size: pad the last run
                part = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), part.dtype)])
            output = np.asarray(session.run([ports.output], {ports.input: part})[0])
            parts.append(output.reshape(len(output), -1)[: len(tensor) - start])
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        if vectors.shape[1] != self.dimension:
            raise ModelFileError(f"The network returns {vectors.shape[1]} values per face, not {self.dimension}.")
        return vectors

    def _network_input(self, batch: np.ndarray, input_type: str) -> np.ndarray:
        if self.spec.colour == "BGR":
            batch = batch[..., ::-1]
        if input_type == "uint8":
            tensor = batch
        else:
            tensor = np.subtract(batch, np.asarray(self.spec.mean, dtype=np.float32), dtype=np.float32)
            if self.spec.std != (1.0, 1.0, 1.0):
                tensor *= 1.0 / np.asarray(self.spec.std, dtype=np.float32)
            tensor = tensor.astype(input_type, copy=False)
        if self.spec.layout == "NCHW":
            tensor = tensor.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(tensor)


def unit_length(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"Cannot read the model file {path}: {error.strerror or error}.") from None


def _inspect(data: bytes, spec: OnnxModelSpec) -> _Ports:
    """The network's ports, after checking the file is a valid ONNX model that fits ``spec``."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError) as error:
        raise ModelFileError(f"Not a valid ONNX model: {str(error).splitlines()[0][:200]}") from None
    if not model.graph.node:
        raise ModelFileError("Not a valid ONNX model: the graph has no nodes.")
    initialisers = {tensor.name for tensor in model.graph.initializer}
    inputs = [
        (value.name, value.type.tensor_type.elem_type, _dims(value.type.tensor_type))
        for value in model.graph.input
        if value.name not in initialisers
    ]
    outputs = [(value.name, _dims(value.type.tensor_type)) for value in model.graph.output]
    elem_types = {name: _INPUT_TYPES.get(elem_type, str(elem_type)) for name, elem_type, _ in inputs}
    return _ports([(name, dims, elem_types[name]) for name, _, dims in inputs], outputs, spec)


def _dims(tensor_type) -> tuple[int | None, ...] | None:
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)


def _ports(
    inputs: list[tuple[str, tuple[int | None, ...] | None, str]],
    outputs: list[tuple[str, tuple[int | None, ...] | None]],
    spec: OnnxModelSpec,
) -> _Ports:
    """Checks the network's declared inputs and outputs against ``spec``; unknown sizes pass."""
    if len(inputs) != 1:
        raise ModelFileError(f"The network must take one image tensor; it takes {len(inputs)} inputs.")
    input_name, dims, input_type = inputs[0]
    if input_type not in ("float32", "float16", "uint8"):
        raise ModelFileError(f"The network's input must be float32, float16 or uint8, not type {input_type}.")
    if input_type == "uint8" and (spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0)):
        raise ModelFileError("The network takes uint8 pixels: the spec's mean and std must be 0 and 1.")
    side = spec.input_size
    want = (None, 3, side, side) if spec.layout == "NCHW" else (None, side, side, 3)
    if dims is not None:
        if len(dims) != 4:
            raise ModelFileError(f"The network's input must have 4 dimensions ({spec.layout}); it has {len(dims)}.")
        if any(have not in (None, expected) for have, expected in zip(dims[1:], want[1:], strict=True)):
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            raise ModelFileError(
                f"The network's input is [{shown}]; the spec ({spec.layout}, {side} pixels) needs "
                f"[batch, {', '.join(str(d) for d in want[1:])}]."
            )
    names = [name for name, _ in outputs]
    if spec.output is None and len(outputs) != 1:
        raise ModelFileError(f"The network has several outputs ({', '.join(names)}): name one in the spec.")
    chosen = spec.output or names[0]
    if chosen not in names:
        raise ModelFileError(f"The network has no output {chosen!r} (it has {', '.join(names)}).")
    output_dims = dict(outputs)[chosen]
    if output_dims is not None and len(output_dims) >= 2 and all(d is not None for d in output_dims[1:]):
        size = math.prod(output_dims[1:])  # type: ignore[arg-type]
        if size != spec.dimension:
            raise ModelFileError(
                f"The network's output {chosen!r} has {size} values per face; the spec says {spec.dimension}."
            )
    batch = dims[0] if dims is not None and dims[0] not in (None, 0) else None
    return _Ports(input_name, input_type, batch, chosen)


_SESSION_LOCK = threading.Lock()


def _session(path: str, sha256: str, threads: int):
    """This process's onnxruntime session on the file, which must still have digest ``sha256``."""
    with _SESSION_LOCK:  # one session per file and thread count, even when threads race to it
        return _open_session(path, sha256, threads)


@cache
def _open_session(path: str, sha256: str, threads: int):
    import onnxruntime

    data = _read(Path(path))
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelFileError(f"The model file {path} has changed since the model was set up.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads would otherwise spin after each batch, taking cores other work needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types, one per failure kind
        raise ModelFileError(f"onnxruntime cannot load {path}: {str(error).splitlines()[0][:200]}") from None
