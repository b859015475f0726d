"""A TF.js graph model (vision/tfjs_graph.py) rebuilt as an ONNX graph, cut at one output.

Only the nodes the chosen output depends on are converted, so the other heads of a multi-output
network (an age or gender classifier beside a face descriptor) are never converted, and their
weights never decoded. Each ONNX node and weight is named after the TF node it comes from.

TensorFlow's images are NHWC; the ONNX graph computes in NCHW (onnxruntime's native layout) and
transposes where a tensor enters or leaves the image part of the graph; constants that an image
tensor is combined with are laid out to match. TF's ``clip_by_value`` after a ReLU (ReLU6 as Keras
writes it: Relu, Minimum, Maximum) becomes one Clip, which onnxruntime fuses into the convolution
before it (twice as fast on MobileNet); the scale and shift of a frozen batch normalisation are
left as Mul and Add, which onnxruntime folds into that convolution when it loads the graph.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceledger.vision.tfjs_graph import TfjsFormatError, TfjsGraph, TfjsNode, attribute, source

# NHWC axis -> NCHW axis, and the permutations between the two layouts.
_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
_TO_NCHW, _TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
_UNARY = {"Relu": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Elu": "Elu", "Neg": "Neg", "Sqrt": "Sqrt"}
_BINARY = {
    "Add": "Add",
    "AddV2": "Add",
    "BiasAdd": "Add",
    "Sub": "Sub",
    "Mul": "Mul",
    "RealDiv": "Div",
    "Maximum": "Max",
    "Minimum": "Min",
}
_NUMPY_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Max": np.maximum,
    "Min": np.minimum,
}
_REDUCE = {"Mean": "ReduceMean", "Max": "ReduceMax", "Min": "ReduceMin", "Sum": "ReduceSum"}
_CONVOLUTIONS = ("Conv2D", "_FusedConv2D", "FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")


@dataclass(frozen=True)
class _Value:
    """An ONNX tensor standing for a TF tensor: its name, its layout if it is an image tensor
    computed in NCHW (``nchw``) or as TF has it (``tf``), and its rank where known."""

    name: str
    layout: str
    rank: int | None


def to_onnx(graph: TfjsGraph, output: str, *, name: str = "tfjs"):
    """An ONNX model of the part of ``graph`` that computes the node ``output`` (its first
    tensor), from the graph's one placeholder on that path, named as in TF, to a float32 output
    named ``output``. Only nodes that ``output`` depends on are converted."""
    import onnx
    from onnx import TensorProto, helper

    nodes = graph.upstream(output)
    consumers = Counter(source(ref) for node in nodes for ref in node.inputs)
    consumers[output] += 1
    builder = _Builder(graph, consumers)
    builder.names.add(output)  # the graph's output: the tensor computed under this name is renamed
    for node in nodes:
        builder.convert(node)
    result = builder.as_tf(output)
    builder.finish()
    if len(builder.inputs) != 1:
        raise TfjsFormatError(f"The output {output!r} must depend on one placeholder, not {len(builder.inputs)}.")
    builder.nodes.append(helper.make_node("Identity", [result.name], [output], name=f"{output}/output"))
    graph_proto = helper.make_graph(
        builder.nodes,
        name,
        builder.inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        builder.initializers,
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)], producer_name="faceledger")
    model.ir_version = 8
    inferred = {value.name: value for value in onnx.shape_inference.infer_shapes(model).graph.value_info}
    if result.name not in inferred:
        raise TfjsFormatError(f"The shape of {output!r} cannot be inferred.")
    model.graph.output[0].type.CopyFrom(inferred[result.name].type)
    onnx.checker.check_model(model)
    return model


class _Builder:
    def __init__(self, graph: TfjsGraph, consumers: Counter[str]) -> None:
        self.graph = graph
        self.consumers = consumers
        # ReLUs whose bounds may still tighten: output name -> [node index, low, high].
        self.clips: dict[str, list] = {}
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.constants: dict[str, np.ndarray] = {}
        self.values: dict[str, _Value] = {}
        self.names: set[str] = set()
        self.layouts: dict[tuple[str, str], _Value] = {}

    # -- names, constants and layouts ----------------------------------------------------------

    def unique(self, name: str) -> str:
        candidate, count = name, 0
        while candidate in self.names:
            count += 1
            candidate = f"{name}_{count}"
        self.names.add(candidate)
        return candidate

    def initializer(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        unique = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), unique))
        return unique

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        output = self.unique(name)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def constant(self, ref: str) -> np.ndarray | None:
        if ":" in ref and not ref.endswith(":0"):
            return None
        return self.constants.get(source(ref))

    def required_constant(self, node: TfjsNode, index: int) -> np.ndarray:
        value = self.constant(node.inputs[index])
        if value is None:
            raise TfjsFormatError(f"{node.op} {node.name!r}: input {index} must be a constant.")
        return value

    def value(self, ref: str) -> _Value:
        if ":" in ref and not ref.endswith(":0"):
            raise TfjsFormatError(f"Only the first output of a node can be used ({ref!r}).")
        name = source(ref)
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            array = self.constants[name]
            value = _Value(self.initializer(name, array.astype(np.float32)), "tf", array.ndim)
            self.values[name] = value
            return value
        raise TfjsFormatError(f"The node {name!r} was not converted.")

    def as_nchw(self, ref: str) -> _Value:
        value = self.value(ref)
        if value.layout == "nchw":
            return value
        if value.rank != 4:
            raise TfjsFormatError(f"{ref!r} must be an image tensor of rank 4.")
        return self._relayout(value, "nchw", _TO_NCHW)

    def as_tf(self, ref: str) -> _Value:
        value = self.value(ref)
        return value if value.layout == "tf" else self._relayout(value, "tf", _TO_NHWC)

    def _relayout(self, value: _Value, layout: str, perm: list[int]) -> _Value:
        key = (value.name, layout)
        if key not in self.layouts:
            name = self.node("Transpose", [value.name], f"{value.name}/{layout}", perm=perm)
            self.layouts[key] = _Value(name, layout, 4)
        return self.layouts[key]

    def set(self, node: TfjsNode, name: str, layout: str, rank: int | None) -> None:
        self.values[node.name] = _Value(name, layout, rank)

    # -- ops -----------------------------------------------------------------------------------

    def convert(self, node: TfjsNode) -> None:
        op = node.op
        if op == "Const":
            self.constants[node.name] = self.graph.weight(node.name)
        elif op == "Placeholder":
            self.placeholder(node)
        elif op in ("Identity", "StopGradient", "Snapshot"):
            if self.constant(node.inputs[0]) is not None:
                self.constants[node.name] = self.constant(node.inputs[0])
            else:
                self.values[node.name] = self.value(node.inputs[0])
        elif op in _CONVOLUTIONS:
            self.convolution(node)
        elif op in _BINARY:
            self.binary(node, _BINARY[op])
        elif op in _UNARY or op in ("Relu6", "LeakyRelu"):
            data = self.value(node.inputs[0])
            self.set(node, self.activation(op, data.name, node.name, node), data.layout, data.rank)
        elif op in _REDUCE:
            self.reduce(node)
        elif op in ("Pad", "PadV2", "MirrorPad"):
            self.pad(node)
        elif op in ("MaxPool", "AvgPool"):
            self.pool(node)
        elif op in ("MatMul", "_FusedMatMul"):
            self.matmul(node)
        elif op == "Reshape":
            shape = self.required_constant(node, 1).astype(np.int64)
            shape_name = self.initializer(f"{node.name}/shape", shape)
            name = self.node("Reshape", [self.as_tf(node.inputs[0]).name, shape_name], node.name)
            self.set(node, name, "tf", len(shape))
        elif op == "Squeeze":
            data = self.as_tf(node.inputs[0])
            axes = attribute(node, "squeeze_dims", "ints") or attribute(node, "axis", "ints") or []
            if not axes or data.rank is None:
                raise TfjsFormatError(f"Squeeze {node.name!r}: the axes must be given.")
            axes_name = self.initializer(f"{node.name}/axes", np.array(axes, dtype=np.int64))
            self.set(node, self.node("Squeeze", [data.name, axes_name], node.name), "tf", data.rank - len(axes))
        else:
            raise TfjsFormatError(f"Unsupported TF op {op} (node {node.name!r}).")

    def placeholder(self, node: TfjsNode) -> None:
        from onnx import TensorProto, helper

        if node.attr.get("dtype", {}).get("type", "DT_FLOAT") != "DT_FLOAT":
            raise TfjsFormatError(f"The placeholder {node.name!r} must be float32.")
        dims = node.attr.get("shape", {}).get("shape", {}).get("dim")
        if dims is None:
            raise TfjsFormatError(f"The placeholder {node.name!r} has no shape.")
        shape = [int(d.get("size", -1)) for d in dims]
        onnx_shape = ["batch" if n == 0 and size < 0 else (size if size >= 0 else None) for n, size in enumerate(shape)]
        self.inputs.append(helper.make_tensor_value_info(node.name, TensorProto.FLOAT, onnx_shape))
        self.names.add(node.name)
        self.set(node, node.name, "tf", len(shape))

    def binary(self, node: TfjsNode, op: str) -> None:
        left_const, right_const = self.constant(node.inputs[0]), self.constant(node.inputs[1])
        if left_const is not None and right_const is not None:
            self.constants[node.name] = _NUMPY_BINARY[op](left_const, right_const)
            return
        if op in ("Min", "Max") and (left_const is None) != (right_const is None):
            bound = left_const if left_const is not None else right_const
            tensor_ref = node.inputs[1] if left_const is not None else node.inputs[0]
            if bound.size == 1 and self.tighten_clip(node, tensor_ref, float(bound.item()), upper=op == "Min"):
                return
        if left_const is not None or right_const is not None:
            tensor_ref = node.inputs[1] if left_const is not None else node.inputs[0]
            const = left_const if left_const is not None else right_const
            tensor = self.value(tensor_ref)
            if tensor.layout == "nchw":
                # Broadcast as TF would against NHWC, then move the channel axis.
                const = const.reshape((1,) * (4 - const.ndim) + const.shape).transpose(_TO_NCHW)
            const_name = self.initializer(
                source(node.inputs[1 if right_const is not None else 0]), const.astype(np.float32)
            )
            inputs = [tensor.name, const_name] if right_const is not None else [const_name, tensor.name]
            rank = max(tensor.rank or 0, const.ndim) if tensor.rank is not None else None
            self.set(node, self.node(op, inputs, node.name), tensor.layout, rank)
            return
        left, right = self.value(node.inputs[0]), self.value(node.inputs[1])
        if left.layout != right.layout:  # both must be in the same layout: TF's
            left, right = self.as_tf(node.inputs[0]), self.as_tf(node.inputs[1])
        rank = max(left.rank, right.rank) if left.rank is not None and right.rank is not None else None
        self.set(node, self.node(op, [left.name, right.name], node.name), left.layout, rank)

    def activation(self, op: str, data: str, name: str, node: TfjsNode, prelu: np.ndarray | None = None) -> str:
        if op in ("Relu", "Relu6"):
            output = self.node("Relu", [data], name)
            self.clips[output] = [len(self.nodes) - 1, 0.0, 6.0 if op == "Relu6" else math.inf]
            return output
        if op in _UNARY:
            return self.node(_UNARY[op], [data], name)
        if op == "LeakyRelu":
            alpha = attribute(node, "leakyrelu_alpha", "f", None)
            return self.node(
                "LeakyRelu", [data], name, alpha=attribute(node, "alpha", "f", 0.2) if alpha is None else alpha
            )
        if op == "Prelu" and prelu is not None:
            slope = self.initializer(f"{name}/slope", prelu.reshape(-1, 1, 1).astype(np.float32))
            return self.node("PRelu", [data, slope], name)
        raise TfjsFormatError(f"Unsupported fused activation {op} (node {node.name!r}).")

    def convolution(self, node: TfjsNode) -> None:
        if attribute(node, "data_format", "s", "NHWC") != "NHWC":
            raise TfjsFormatError(f"{node.op} {node.name!r}: only NHWC convolutions are supported.")
        data = self.as_nchw(node.inputs[0])
        kernel = self.required_constant(node, 1).astype(np.float32)
        depthwise = "Depthwise" in node.op
        if depthwise:  # [rows, columns, channels, multiplier] -> [channels * multiplier, 1, rows, columns]
            rows, columns, channels, multiplier = kernel.shape
            weights = kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, rows, columns)
        else:  # [rows, columns, in, out] -> [out, in, rows, columns]
            weights, channels = kernel.transpose(3, 2, 0, 1), 1
        fused = attribute(node, "fused_ops", "strings", [])
        args = [self.required_constant(node, 2 + n) for n in range(len(node.inputs) - 2)]
        bias = np.zeros(weights.shape[0], np.float32)
        if fused[:1] == ["BiasAdd"]:
            bias, fused, args = args[0].astype(np.float32), fused[1:], args[1:]
        elif fused[:1] in (["FusedBatchNorm"], ["FusedBatchNormV3"]):
            scale, offset, mean, variance = args[:4]
            factor = scale / np.sqrt(variance + attribute(node, "epsilon", "f", 0.0))
            weights = weights * factor.reshape(-1, 1, 1, 1)
            bias, fused, args = (offset - mean * factor).astype(np.float32), fused[1:], args[4:]
        if len(fused) > 1:
            raise TfjsFormatError(f"{node.op} {node.name!r}: unsupported fused ops {fused}.")
        attrs = _window(node, "strides")
        dilations = attribute(node, "dilations", "ints", [1, 1, 1, 1])
        attrs["dilations"] = dilations[1:3]
        inputs = [
            data.name,
            self.initializer(source(node.inputs[1]), weights.astype(np.float32)),
            self.initializer(f"{node.name}/bias", bias),
        ]
        if depthwise:
            attrs["group"] = channels
        name = self.node("Conv", inputs, node.name if not fused else f"{node.name}/conv", **attrs)
        if fused:
            name = self.activation(fused[0], name, node.name, node, args[0] if args else None)
        self.set(node, name, "nchw", 4)

    def tighten_clip(self, node: TfjsNode, tensor_ref: str, bound: float, *, upper: bool) -> bool:
        """Minimum or Maximum with a number, applied to a ReLU's output that nothing else reads:
        a tighter bound of that ReLU, which becomes a Clip."""
        tensor = self.value(tensor_ref)
        clip = self.clips.get(tensor.name)
        if clip is None or self.consumers[source(tensor_ref)] != 1:
            return False
        if upper:
            clip[2] = min(clip[2], bound)
        else:
            clip[1] = max(clip[1], bound)
        self.values[node.name] = tensor
        return True

    def finish(self) -> None:
        """Each ReLU with bounds other than [0, inf) becomes a Clip."""
        from onnx import helper

        for output, (index, low, high) in self.clips.items():
            if (low, high) == (0.0, math.inf):
                continue
            bounds = [
                self.initializer(f"{output}/{end}", np.array(value, np.float32))
                for end, value in (("min", low), ("max", high))
            ]
            relu = self.nodes[index]
            self.nodes[index] = helper.make_node("Clip", [relu.input[0], *bounds], [output], name=relu.name)

    def reduce(self, node: TfjsNode) -> None:
        axes = [int(a) % 4 if a < 0 else int(a) for a in np.atleast_1d(self.required_constant(node, 1))]
        keep = attribute(node, "keep_dims", "b", False)
        data = self.value(node.inputs[0])
        remaining = [a for a in range(4) if a not in axes]
        # Dropping axes from NCHW keeps TF's order of the rest unless channels and rows or columns remain.
        in_nchw = data.layout == "nchw" and (keep or not (3 in remaining and {1, 2} & set(remaining)))
        if in_nchw:
            axes = [_TO_NCHW_AXIS[a] for a in axes]
        else:
            data = self.as_tf(node.inputs[0])
            if data.rank is not None:
                axes = [a % data.rank for a in axes]
        rank = None if data.rank is None else (data.rank if keep else data.rank - len(set(axes)))
        op = _REDUCE[node.op]
        if op == "ReduceSum":
            axes_name = self.initializer(f"{node.name}/axes", np.array(sorted(axes), np.int64))
            name = self.node(op, [data.name, axes_name], node.name, keepdims=int(keep))
        else:
            name = self.node(op, [data.name], node.name, axes=sorted(axes), keepdims=int(keep))
        self.set(node, name, "nchw" if in_nchw and keep else "tf", rank)

    def pad(self, node: TfjsNode) -> None:
        paddings = self.required_constant(node, 1).astype(np.int64)
        mode = "constant"
        if node.op == "MirrorPad":
            if attribute(node, "mode", "s", "REFLECT") != "REFLECT":
                raise TfjsFormatError(f"MirrorPad {node.name!r}: only REFLECT padding is supported.")
            mode = "reflect"
        data = self.value(node.inputs[0])
        if data.layout == "nchw":
            paddings = paddings[_TO_NCHW]
        inputs = [data.name, self.initializer(f"{node.name}/pads", np.concatenate([paddings[:, 0], paddings[:, 1]]))]
        if node.op == "PadV2":
            inputs.append(
                self.initializer(f"{node.name}/value", self.required_constant(node, 2).astype(np.float32).reshape(()))
            )
        self.set(node, self.node("Pad", inputs, node.name, mode=mode), data.layout, data.rank)

    def pool(self, node: TfjsNode) -> None:
        data = self.as_nchw(node.inputs[0])
        attrs = _window(node, "strides")
        attrs["kernel_shape"] = attribute(node, "ksize", "ints")[1:3]
        if node.op == "AvgPool":  # TF's average ignores the padding
            name = self.node("AveragePool", [data.name], node.name, count_include_pad=0, **attrs)
        else:
            name = self.node("MaxPool", [data.name], node.name, **attrs)
        self.set(node, name, "nchw", 4)

    def matmul(self, node: TfjsNode) -> None:
        left = self.as_tf(node.inputs[0])
        if attribute(node, "transpose_a", "b", False) or left.rank != 2:
            raise TfjsFormatError(f"{node.op} {node.name!r}: only (batch, features) x matrix is supported.")
        matrix = self.required_constant(node, 1).astype(np.float32)
        if attribute(node, "transpose_b", "b", False):
            matrix = matrix.T
        name = self.node("MatMul", [left.name, self.initializer(source(node.inputs[1]), matrix)], f"{node.name}/matmul")
        fused = attribute(node, "fused_ops", "strings", [])
        if fused[:1] == ["BiasAdd"]:
            bias = self.initializer(source(node.inputs[2]), self.required_constant(node, 2).astype(np.float32))
            name, fused = self.node("Add", [name, bias], f"{node.name}/bias"), fused[1:]
        if len(fused) > 1:
            raise TfjsFormatError(f"{node.op} {node.name!r}: unsupported fused ops {fused}.")
        if fused:
            name = self.activation(fused[0], name, node.name, node)
        self.set(node, name, "tf", 2)


def _window(node: TfjsNode, key: str) -> dict[str, Any]:
    """ONNX's strides and padding attributes from TF's (NHWC lists, SAME/VALID/EXPLICIT)."""
    strides = attribute(node, key, "ints", [1, 1, 1, 1])
    padding = attribute(node, "padding", "s", "VALID")
    attrs: dict[str, Any] = {"strides": strides[1:3]}
    if padding == "SAME":
        attrs["auto_pad"] = "SAME_UPPER"  # TF puts the odd pixel of padding after, as SAME_UPPER does
    elif padding == "EXPLICIT":
        explicit = attribute(node, "explicit_paddings", "ints")
        attrs["pads"] = [explicit[2], explicit[4], explicit[3], explicit[5]]
    elif padding != "VALID":
        raise TfjsFormatError(f"{node.op} {node.name!r}: unknown padding {padding!r}.")
    return attrs
