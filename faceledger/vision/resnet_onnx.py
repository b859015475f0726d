"""dlib's face-embedding ResNet, read from its own ``.dat`` file and rebuilt as an ONNX graph.

dlib-bin's prebuilt network runs without BLAS (about 75-130 ms per face on two cores); the same
weights under onnxruntime's vectorised kernels are several times faster. Nothing here downloads
anything: the weights are read from the ``face-recognition-models`` package, converted once, and
the converted graph is cached on disk keyed by the SHA-256 of the source file.

dlib stores a network as nested layers (outermost first). Every layer is serialised as a version,
its sub-network, then its own parameters; so reading the stream front to back meets the layers
from the input outwards. Tags and skips (dlib's way of writing residual connections) carry no
payload and no identifier, so the wiring comes from the network's published definition
(``dnn_face_recognition_ex.cpp``, reproduced in :data:`ARCHITECTURE`), and the reader checks that
every layer in the file is the kind and shape that definition says it is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceledger.errors import InternalServerError

CHIP_SIZE = 150  # pixels: the side of the square RGB chips the network takes


class DlibFormatError(InternalServerError):
    """The weight file is not the network this converter knows."""


# ----------------------------------------------------------------------------------------------
# The network's definition, input first. "tag1"/"tag2" remember the current tensor, "skip1" makes
# the remembered tensor current again, "add1"/"add2" add a remembered tensor to the current one.


def _block(filters: int, stride: int) -> list[tuple]:
    return [("con", filters, stride), ("affine",), ("relu",), ("con", filters, 1), ("affine",)]


def _residual(filters: int) -> list[tuple]:
    return [("tag1",), *_block(filters, 1), ("add1",), ("relu",)]


def _residual_down(filters: int) -> list[tuple]:
    return [("tag1",), *_block(filters, 2), ("tag2",), ("skip1",), ("avg_pool", 2, 2), ("add2",), ("relu",)]


ARCHITECTURE: list[tuple] = [
    ("input",),
    ("con", 32, 2),
    ("affine",),
    ("relu",),
    ("max_pool", 3, 2),
    *[op for _ in range(3) for op in _residual(32)],
    *_residual_down(64),
    *[op for _ in range(3) for op in _residual(64)],
    *_residual_down(128),
    *[op for _ in range(2) for op in _residual(128)],
    *_residual_down(256),
    *[op for _ in range(2) for op in _residual(256)],
    *_residual_down(256),
    ("avg_pool_everything",),
    ("fc", 128),
    ("loss_metric",),
]


# ----------------------------------------------------------------------------------------------
# Reading dlib's serialisation format (dlib/serialize.h, dlib/cuda/tensor.h).


class _Stream:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise DlibFormatError("The dlib network file ends early.")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def int(self) -> int:
        """dlib's integer: a control byte (low nibble: length, 0x80: negative), then LE bytes."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"Bad integer control byte {control:#x} at offset {self.pos - 1}.")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def peek_int(self) -> int:
        saved = self.pos
        try:
            return self.int()
        finally:
            self.pos = saved

    def float(self) -> float:
        """dlib's portable float: an integer mantissa and a base-2 exponent."""
        if self.data[self.pos] & 0x70:
            raise DlibFormatError("ASCII-format floats (dlib before 2013) are not supported.")
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"Bad boolean at offset {self.pos - 1}.")
        return char == b"1"

    def string(self) -> str:
        try:
            return self._take(self.int()).decode("ascii")
        except UnicodeDecodeError as error:
            raise DlibFormatError(f"Bad layer name at offset {self.pos}.") from error

    def tensor(self) -> np.ndarray:
        """A tensor: version 2, four dimensions, then raw little-endian float32 values."""
        if self.int() != 2:
            raise DlibFormatError("Unexpected dlib tensor version.")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError("Negative dlib tensor dimension.")
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise DlibFormatError("Unexpected dlib alias_tensor version.")
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    """One layer's parameters as read from the file."""

    kind: str
    params: dict = field(default_factory=dict)


def _read_details(stream: _Stream) -> Layer:
    version = stream.string()
    if version.startswith("con_"):
        if version not in ("con_4", "con_5", "con_6"):
            raise DlibFormatError(f"Unsupported convolution version {version!r}.")
        params = stream.tensor()
        filters, rows, cols = stream.int(), stream.int(), stream.int()
        stride_y, stride_x, pad_y, pad_x = (stream.int() for _ in range(4))
        weight_shape, bias_shape = stream.alias_tensor(), stream.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            stream.float()
        use_bias = stream.bool() if version in ("con_5", "con_6") else True
        if version == "con_6" and stream.bool():
            raise DlibFormatError("Convolutions with a fused ReLU are not supported.")
        flat = params.ravel()
        weight_size = int(np.prod(weight_shape))
        weights = flat[:weight_size].reshape(weight_shape)
        bias = (
            flat[weight_size : weight_size + filters]
            if use_bias and np.prod(bias_shape)
            else np.zeros(filters, np.float32)
        )
        if weights.shape[0] != filters or weights.shape[2:] != (rows, cols):
            raise DlibFormatError("Convolution filter shape does not match its header.")
        return Layer(
            "con", {"weights": weights, "bias": bias, "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)}
        )
    if version in ("affine_", "affine_2"):
        params = stream.tensor().ravel()
        gamma_shape, _beta_shape = stream.alias_tensor(), stream.alias_tensor()
        mode = stream.int()
        disabled = stream.bool() if version == "affine_2" else False
        size = int(np.prod(gamma_shape))
        if mode != 0 and not disabled:  # 0 = CONV_MODE: one scale and shift per channel
            raise DlibFormatError("Only per-channel (CONV_MODE) affine layers are supported.")
        return Layer("affine", {"gamma": params[:size], "beta": params[size : 2 * size], "disabled": disabled})
    if version in ("relu_", "relu_2"):
        disabled = stream.bool() if version == "relu_2" else False
        return Layer("relu", {"disabled": disabled})
    if version in ("max_pool_2", "avg_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.int() for _ in range(6))
        return Layer(
            version[:-2],
            {"window": (rows, cols), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)},
        )
    if version == "add_prev_":
        return Layer("add_prev")
    if version in ("fc_2", "fc_3"):
        outputs, inputs = stream.int(), stream.int()
        params = stream.tensor().ravel()
        weight_shape, _bias_shape = stream.alias_tensor(), stream.alias_tensor()
        bias_mode = stream.int()
        for _ in range(4):
            stream.float()
        if version == "fc_3":
            stream.bool()
        if bias_mode != 1:  # 1 = FC_NO_BIAS, which is what this network uses
            raise DlibFormatError("Only fully connected layers without bias are supported.")
        weights = params[: inputs * outputs].reshape(weight_shape[0], weight_shape[1])
        return Layer("fc", {"weights": weights})
    raise DlibFormatError(f"Unsupported dlib layer {version!r}.")


def _read_input_layer(stream: _Stream) -> Layer:
    version = stream.string()
    if version not in ("input_rgb_image", "input_rgb_image_sized"):
        raise DlibFormatError(f"Unsupported input layer {version!r}.")
    means = (stream.float(), stream.float(), stream.float())
    if version == "input_rgb_image_sized":
        stream.int(), stream.int()
    return Layer("input", {"means": means})


def _skip_layer_state(stream: _Stream, version: int, *, input_layer: bool) -> None:
    """What add_layer writes after a layer's parameters: training flags and gradient buffers."""
    for _ in range(3):
        stream.bool()
    stream.tensor()  # x_grad
    stream.tensor()  # cached_output
    stream.tensor()  # params_grad (grad_final for the input layer)
    if input_layer and version >= 3:
        stream.int()  # sample expansion factor


def read_dlib_network(data: bytes) -> list[Layer]:
    """The layers of a serialised dlib ``loss_metric`` network, input first.

    Wrapper nodes (tags and skips) come back as ``Layer("wrap")`` in their place. Anything else
    than such a network raises :class:`DlibFormatError`.
    """
    try:
        return _read_network(_Stream(data))
    except (ValueError, IndexError) as error:  # shapes that do not fit the data they describe
        raise DlibFormatError(f"Malformed dlib network: {error}") from error


def _read_network(stream: _Stream) -> list[Layer]:
    if stream.int() != 1:
        raise DlibFormatError("Not a dlib add_loss_layer.")
    loss = stream.string()
    if loss == "loss_metric_2":
        stream.float(), stream.float()
    elif loss != "loss_metric_":
        raise DlibFormatError(f"Expected a metric-learning network, found {loss!r}.")

    # Walk inwards, remembering each node's version, until the input layer.
    versions: list[int] = []
    while True:
        version = stream.int()
        versions.append(version)
        if version == 1:  # add_tag_layer / add_skip_layer: only a sub-network follows
            continue
        if version not in (2, 3):
            raise DlibFormatError(f"Unexpected layer version {version}.")
        if stream.peek_int() in (1, 2, 3):  # the sub-network is another layer
            continue
        break

    # Now the stream holds, innermost first, each add_layer's parameters and state.
    layers = [_read_input_layer(stream)]
    for depth, version in enumerate(reversed(versions)):
        if version == 1:
            layers.append(Layer("wrap"))
            continue
        layers.append(_read_details(stream))
        _skip_layer_state(stream, version, input_layer=depth == 0)
    layers.append(Layer("loss_metric"))
    if stream.pos != len(stream.data):
        raise DlibFormatError(f"{len(stream.data) - stream.pos} unread bytes after the network.")
    return layers


# ----------------------------------------------------------------------------------------------
# Building the ONNX graph.

_FILE_KIND = {
    "tag1": "wrap",
    "tag2": "wrap",
    "skip1": "wrap",
    "add1": "add_prev",
    "add2": "add_prev",
    "avg_pool_everything": "avg_pool",
}


def _check_against_architecture(layers: list[Layer]) -> None:
    expected = [_FILE_KIND.get(op[0], op[0]) for op in ARCHITECTURE]
    found = [layer.kind for layer in layers]
    if found != expected:
        raise DlibFormatError("The network in the file is not dlib's face recognition ResNet v1.")
    for op, layer in zip(ARCHITECTURE, layers, strict=True):
        if op[0] == "con" and (layer.params["weights"].shape[0], layer.params["stride"]) != (op[1], (op[2], op[2])):
            raise DlibFormatError("A convolution in the file differs from the ResNet v1 definition.")
        if op[0] == "avg_pool_everything" and layer.params["window"] != (0, 0):
            raise DlibFormatError("Expected a global average pool before the embedding layer.")


def build_onnx_model(layers: list[Layer]):
    """An ONNX model: uint8 chips (N, 150, 150, 3) RGB in, float32 embeddings (N, 128) out.

    Each affine layer (dlib's frozen batch normalisation) is folded into the convolution before
    it, which changes the arithmetic by float32 rounding only.
    """
    _check_against_architecture(layers)
    graph = _GraphBuilder()
    graph.normalise_input(layers[0].params["means"])
    for op, layer in zip(ARCHITECTURE[1:], layers[1:], strict=True):
        graph.add_layer(op[0], layer.params)
    return graph.to_model()


class _GraphBuilder:
    """The graph's nodes and initialisers as layers are added input first, with the current
    tensor and its (channels, rows, columns) shape."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self.current = "chips"
        self.shape = (3, CHIP_SIZE, CHIP_SIZE)
        self.remembered: dict[str, tuple[str, tuple[int, int, int]]] = {}
        # A convolution is emitted only when the next layer is not an affine to fold into it.
        self.pending_conv: dict | None = None

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        output = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output

    def normalise_input(self, means: tuple[float, float, float]) -> None:
        """uint8 (N, rows, columns, RGB) to what dlib's input layer feeds the network: float,
        less the channel means, divided by 256, channels first."""
        from onnx import TensorProto

        channel_means = np.array(means, dtype=np.float32).reshape(1, 1, 1, 3)
        current = self.node("Cast", [self.current], to=TensorProto.FLOAT)
        current = self.node("Sub", [current, self.constant("channel_means", channel_means)])
        current = self.node("Mul", [current, self.constant("input_scale", np.array(1 / 256, dtype=np.float32))])
        self.current = self.node("Transpose", [current], perm=[0, 3, 1, 2])

    def add_layer(self, name: str, params: dict) -> None:
        """One layer of :data:`ARCHITECTURE` (its op name) with the parameters read from the file."""
        if name == "con":
            self._flush_conv()
            self.pending_conv = {**params, "weights": params["weights"].copy(), "bias": params["bias"].copy()}
            return
        if name == "affine" and not params["disabled"]:
            self._fold_affine(params)
            return
        self._flush_conv()
        if name == "relu" and not params["disabled"]:
            self.current = self.node("Relu", [self.current])
        elif name in ("tag1", "tag2"):
            self.remembered[name[-1]] = (self.current, self.shape)
        elif name == "skip1":
            self.current, self.shape = self.remembered["1"]
        elif name in ("add1", "add2"):
            self._add_remembered(name[-1])
        elif name in ("max_pool", "avg_pool"):
            op_name = "MaxPool" if name == "max_pool" else "AveragePool"
            window, stride, padding = params["window"], params["stride"], params["padding"]
            self._windowed(op_name, [self.current], window, stride, padding, self.shape[0])
        elif name == "avg_pool_everything":
            self.current = self.node("GlobalAveragePool", [self.current])
            self.shape = (self.shape[0], 1, 1)
        elif name == "fc":
            flat = self.node("Flatten", [self.current])
            self.current = self.node("MatMul", [flat, self.constant("embedding_weights", params["weights"])])

    def to_model(self):
        """The finished, checked model; the last node's output is named ``embeddings``."""
        import onnx
        from onnx import TensorProto, helper

        self.nodes[-1].output[0] = "embeddings"
        graph = helper.make_graph(
            self.nodes,
            "dlib_face_recognition_resnet_model_v1",
            [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["batch", CHIP_SIZE, CHIP_SIZE, 3])],
            [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", 128])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="faceledger")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def _fold_affine(self, params: dict) -> None:
        if self.pending_conv is None:
            raise DlibFormatError("An affine layer that does not follow a convolution.")
        gamma, beta = params["gamma"], params["beta"]
        self.pending_conv["weights"] *= gamma.reshape(-1, 1, 1, 1)
        self.pending_conv["bias"] = self.pending_conv["bias"] * gamma + beta

    def _flush_conv(self) -> None:
        conv = self.pending_conv
        if conv is None:
            return
        index = len(self.initializers)
        weights = conv["weights"]
        inputs = [self.current, self.constant(f"w{index}", weights), self.constant(f"b{index}", conv["bias"])]
        self._windowed("Conv", inputs, weights.shape[2:], conv["stride"], conv["padding"], weights.shape[0])
        self.pending_conv = None

    def _windowed(self, op: str, inputs: list[str], window, stride, padding, channels: int) -> None:
        (pad_y, pad_x), (rows, cols) = padding, window
        pads = [pad_y, pad_x, pad_y, pad_x]
        self.current = self.node(op, inputs, kernel_shape=[rows, cols], strides=list(stride), pads=pads)
        self.shape = (
            channels,
            (self.shape[1] + 2 * pad_y - rows) // stride[0] + 1,
            (self.shape[2] + 2 * pad_x - cols) // stride[1] + 1,
        )

    def _add_remembered(self, tag: str) -> None:
        # dlib adds tensors of different sizes over the larger size, the missing part as zeros
        # (the strided block and the pooled shortcut differ by a row and column at 8x8).
        other, other_shape = self.remembered[tag]
        want = tuple(max(a, b) for a, b in zip(self.shape, other_shape, strict=True))
        mine = self._padded_to(self.current, self.shape, want)
        self.current = self.node("Add", [mine, self._padded_to(other, other_shape, want)])
        self.shape = want

    def _padded_to(self, tensor: str, have: tuple[int, int, int], want: tuple[int, int, int]) -> str:
        if have == want:
            return tensor
        # Zeros after the existing channels, rows and columns, as dlib's add does.
        pads = np.array([0, 0, 0, 0, 0, *(w - h for w, h in zip(want, have, strict=True))], dtype=np.int64)
        return self.node("Pad", [tensor, self.constant(f"pad{len(self.nodes)}", pads)])


def converted_model(source: Path, cache_dir: Path) -> Path:
    """The ONNX conversion of ``source``, built on first use and cached under ``cache_dir``."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:24]
    target = cache_dir / f"{source.stem}-{digest}.onnx"
    if target.is_file():
        return target
    model = build_onnx_model(read_dlib_network(data))
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent or interrupted conversion never leaves half a model.
    fd, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(model.SerializeToString())
    os.replace(temporary, target)
    return target
