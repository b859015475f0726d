"""TensorFlow.js graph models: ``model.json`` and its weight shards, read into numpy.

A TF.js graph model is TensorFlow's frozen graph in JSON: nodes with an op name, inputs and
attributes (protobuf's JSON form of TensorFlow's AttrValue: strings in base64, integers as
strings); every constant's values sit in the binary shards in the order the weights manifest lists
them, as float32, int32 or bool, or quantised to float16, uint8 or uint16. :class:`TfjsGraph`
decodes a constant only when asked, and :meth:`TfjsGraph.upstream` lists the nodes one output
depends on, so a converter (vision/tfjs_onnx.py) never touches the rest of the graph.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceledger.vision.onnx_model import ModelFileError


class TfjsFormatError(ModelFileError):
    """The files are not a TF.js graph model this converter can rebuild."""


_BYTES = {"float32": 4, "int32": 4, "bool": 1, "float16": 2, "uint8": 1, "uint16": 2}
_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


@dataclass(frozen=True)
class TfjsNode:
    """A graph node: ``inputs`` are data inputs (``name`` or ``name:k``), control inputs dropped."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any]


@dataclass(frozen=True)
class _WeightEntry:
    shape: tuple[int, ...]
    dtype: str
    quantization: Mapping[str, Any] | None
    group: int
    offset: int
    length: int


@dataclass
class TfjsGraph:
    """The graph's nodes by name and the manifest's weights (decoded on request)."""

    nodes: dict[str, TfjsNode]
    entries: dict[str, _WeightEntry]
    buffers: list[bytes]

    def weight(self, name: str) -> np.ndarray:
        """The values of the constant ``name``, dequantised to its declared dtype."""
        entry = self.entries.get(name)
        if entry is None:
            raise TfjsFormatError(f"The constant {name!r} has no values in the weights manifest.")
        raw = self.buffers[entry.group][entry.offset : entry.offset + entry.length]
        quantization = entry.quantization
        if quantization is None:
            values = np.frombuffer(raw, dtype=np.dtype(_DTYPES[entry.dtype]).newbyteorder("<"))
        elif quantization["dtype"] == "float16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            stored = np.frombuffer(raw, dtype="u1" if quantization["dtype"] == "uint8" else "<u2")
            values = stored * np.float32(quantization["scale"]) + np.float32(quantization["min"])
            if entry.dtype == "int32":
                values = np.round(values)
        return values.astype(_DTYPES[entry.dtype]).reshape(entry.shape)

    def upstream(self, output: str) -> list[TfjsNode]:
        """The nodes ``output`` depends on, itself included, each after its inputs."""
        if output not in self.nodes:
            raise TfjsFormatError(f"The graph has no node {output!r}.")
        order: list[TfjsNode] = []
        done: set[str] = set()
        stack: list[tuple[str, bool]] = [(output, False)]
        while stack:  # depth-first, without recursion: graphs can be thousands of nodes deep
            name, expanded = stack.pop()
            if name in done:
                continue
            node = self.nodes.get(name)
            if node is None:
                raise TfjsFormatError(f"A node takes the missing node {name!r} as input.")
            if expanded:
                done.add(name)
                order.append(node)
                continue
            stack.append((name, True))
            stack.extend((source(ref), False) for ref in reversed(node.inputs) if source(ref) not in done)
        return order


def read_graph(model_json: bytes, shards: Mapping[str, bytes]) -> TfjsGraph:
    """The graph in ``model.json``'s bytes, with ``shards`` (file name to bytes) holding the
    weights the manifest names."""
    try:
        model = json.loads(model_json)
        topology, manifest = model["modelTopology"], model["weightsManifest"]
        nodes = {
            node["name"]: TfjsNode(
                node["name"],
                node["op"],
                tuple(ref for ref in node.get("input", ()) if not ref.startswith("^")),
                node.get("attr", {}),
            )
            for node in topology["node"]
        }
    except (ValueError, KeyError, TypeError) as error:
        raise TfjsFormatError(f"Not a TF.js graph model: {type(error).__name__} {error}.") from None
    if model.get("format", "graph-model") != "graph-model":
        raise TfjsFormatError(f"Not a TF.js graph model but a {model.get('format')!r}.")
    entries: dict[str, _WeightEntry] = {}
    buffers: list[bytes] = []
    for group_index, group in enumerate(manifest):
        missing = [path for path in group["paths"] if path not in shards]
        if missing:
            raise TfjsFormatError(f"Weight file {missing[0]} is missing.")
        buffer = b"".join(shards[path] for path in group["paths"])
        offset = 0
        for weight in group["weights"]:
            entry = _entry(weight, group_index, offset)
            entries[weight["name"]] = entry
            offset += entry.length
        if offset > len(buffer):
            raise TfjsFormatError(f"The weight files hold {len(buffer)} bytes; the manifest lists {offset}.")
        buffers.append(buffer)
    return TfjsGraph(nodes, entries, buffers)


def load_graph(model_json: Path) -> TfjsGraph:
    """The graph in the file ``model_json``, its shards read from the same folder."""
    try:
        text = model_json.read_bytes()
        manifest = json.loads(text).get("weightsManifest", [])
        names = {path for group in manifest for path in group.get("paths", [])}
        shards = {name: (model_json.parent / name).read_bytes() for name in names}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise TfjsFormatError(f"Cannot read the TF.js model {model_json}: {error}.") from None
    return read_graph(text, shards)


def _entry(weight: Mapping[str, Any], group: int, offset: int) -> _WeightEntry:
    dtype = weight["dtype"]
    quantization = weight.get("quantization")
    stored = quantization["dtype"] if quantization else dtype
    if dtype not in _DTYPES or stored not in _BYTES:
        raise TfjsFormatError(f"Weight {weight['name']!r}: unsupported dtype {stored}.")
    shape = tuple(int(d) for d in weight["shape"])
    return _WeightEntry(shape, dtype, quantization, group, offset, _BYTES[stored] * int(np.prod(shape, dtype=np.int64)))


def source(ref: str) -> str:
    """The node a tensor reference (``name`` or ``name:k``) is an output of."""
    return ref.split(":")[0]


# ----------------------------------------------------------------------------------------------
# Attributes: protobuf's JSON form of TensorFlow's AttrValue (strings in base64, ints as strings).


def attribute(node: TfjsNode, key: str, kind: str, default: Any = None) -> Any:
    """Attribute ``key`` of ``node``: ``kind`` is ``s``, ``i``, ``f``, ``b``, ``ints`` or ``strings``."""
    value = node.attr.get(key)
    if value is None:
        return default
    if kind == "s":
        return base64.b64decode(value.get("s", "")).decode()
    if kind == "i":
        return int(value.get("i", 0))
    if kind == "f":
        return float(value.get("f", 0.0))
    if kind == "b":
        return bool(value.get("b", False))
    items = value.get("list", {})
    if kind == "ints":
        return [int(i) for i in items.get("i", [])]
    if kind == "strings":
        return [base64.b64decode(s).decode() for s in items.get("s", [])]
    raise ValueError(kind)
