"""The parts of tests/graphgen.py's random graphs that do not depend on the graph's plan:
a tensor under construction, the builder of nodes, weights and exporter-style names, and
the output sizes of conv and pool windows (also used by the op fuzzers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class Value:
    """A tensor of the graph under construction; dim 0 is the batch (int, graphgen.BATCH or None)."""

    name: str
    shape: list


class Builder:
    """Nodes, initializers and fresh names, in the naming style of one exporter."""

    def __init__(self, rng: np.random.Generator, opset: int):
        self.rng = rng
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        # PyTorch >= 2 ("/layer/Conv_output_0"), old PyTorch ("12"), or plain.
        self.style = rng.choice(["scoped", "numeric", "plain"])
        self.node_names = rng.choice(["unique", "none", "mixed"])
        self.constant_nodes = rng.random() < 0.3  # Paddle2ONNX keeps weights in Constant nodes

    def fresh(self, hint: str) -> str:
        self.count += 1
        if self.style == "numeric":
            return str(self.count)
        if self.style == "scoped":
            return f"/{hint}_{self.count}/{hint}_output_0"
        return f"{hint}{self.count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if self.constant_nodes:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor, name=self._node_name("Constant")))
        else:
            self.inits.append(tensor)
        return name

    def _node_name(self, op: str) -> str:
        # onnxruntime refuses duplicated node names, so names are unique or absent.
        if self.node_names == "none" or (self.node_names == "mixed" and self.rng.random() < 0.5):
            return ""
        return f"/{op.lower()}_{self.count}/{op}"

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self._node_name(op), **attrs))
        return out

    def weight(self, shape, fan_in: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)

    def vector(self, size: int, scale: float = 0.3) -> np.ndarray:
        return (scale * self.rng.standard_normal(size)).astype(np.float32)

    # ------------------------------------------------------------ activations

    def activation(self, x: str, kind: str) -> str:
        """``kind``: relu, relu6, clip (0, c), clip_min (0, none), hardtanh (-1, 1), clip_shifted (0.5, 6),
        clip_zero (0, 0), sigmoid, tanh, leaky, none."""
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "sigmoid":
            return self.node("Sigmoid", [x])
        if kind == "tanh":
            return self.node("Tanh", [x])
        if kind == "leaky":
            return self.node("LeakyRelu", [x], alpha=float(self.rng.uniform(0.01, 0.3)))
        if kind == "none":
            return x
        low, high = {"relu6": (0.0, 6.0), "clip": (0.0, float(self.rng.uniform(0.2, 2.0))),
                     "clip_min": (0.0, None), "hardtanh": (-1.0, 1.0), "clip_shifted": (0.5, 6.0),
                     "clip_zero": (0.0, 0.0)}[kind]
        if self.opset < 11:
            attrs = {"min": low} if high is None else {"min": low, "max": high}
            return self.node("Clip", [x], **attrs)
        inputs = [x, self.const("clip_min", np.array(low, np.float32))]
        if high is not None:
            inputs.append(self.const("clip_max", np.array(high, np.float32)))
        return self.node("Clip", inputs)

    def random_activation(self, supported: float = 0.75) -> str:
        if self.rng.random() < supported:
            return str(self.rng.choice(["relu", "relu", "relu6", "clip", "clip_min"]))
        return str(self.rng.choice(["sigmoid", "tanh", "leaky", "hardtanh", "clip_shifted", "clip_zero", "none"]))

    def batchnorm(self, x: str, channels: int) -> str:
        scale = self.rng.uniform(0.5, 1.5, channels).astype(np.float32)
        var = self.rng.uniform(0.5, 2.0, channels).astype(np.float32)
        names = [self.const("bn_" + what, v) for what, v in
                 (("scale", scale), ("bias", self.vector(channels)), ("mean", self.vector(channels)), ("var", var))]
        return self.node("BatchNormalization", [x, *names], epsilon=float(self.rng.choice([1e-5, 1e-3])))

    def residual_add(self, y: str, other: str) -> str:
        """y + other as exporters write it: Add either way round, or Caffe2's Sum."""
        pick = self.rng.integers(3)
        if pick == 2:
            return self.node("Sum", [y, other])
        return self.node("Add", [y, other] if pick == 0 else [other, y])


# ---------------------------------------------------------------- conv geometry


def _conv_out(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> int:
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def conv_geometry(rng, sizes: list[int], preserve: bool = False):
    """Attributes and output sizes of a random Conv over ``sizes`` (output >= 1 everywhere).

    ``preserve`` keeps the spatial sizes (stride 1, 'same' padding), for residual joins.
    """
    r = len(sizes)
    if preserve:
        kernel = int(rng.choice([1, 3]))
        if rng.random() < 0.3:
            return {"kernel_shape": [kernel] * r, "auto_pad": "SAME_UPPER"}, list(sizes)
        return {"kernel_shape": [kernel] * r, "pads": [kernel // 2] * (2 * r)}, list(sizes)
    kernels, strides, dilations, begins, ends, outs = [], [], [], [], [], []
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    for size in sizes:
        k = int(rng.choice([1, 2, 3, 3, 5]))
        # onnxruntime has no SAME padding with dilation.
        d = int(rng.choice([1, 1, 2])) if k > 1 and not auto_pad.startswith("SAME") else 1
        s = int(rng.choice([1, 1, 2, 3]))
        b = e = 0
        if auto_pad == "VALID":
            while d * (k - 1) + 1 > size:  # the kernel must fit without padding
                d, k = (1, k) if d > 1 else (d, k - 1)
        elif auto_pad == "NOTSET":
            b, e = int(rng.integers(0, k)), int(rng.integers(0, k))
            e = max(e, d * (k - 1) + 1 - size - b)  # at least one output
        if auto_pad.startswith("SAME"):
            out = -(-size // s)
        else:
            out = _conv_out(size, k, s, d, b, e)
        kernels.append(k)
        strides.append(s)
        dilations.append(d)
        begins.append(b)
        ends.append(e)
        outs.append(out)
    attrs = {"strides": strides, "dilations": dilations}
    if rng.random() < 0.5:
        attrs["kernel_shape"] = kernels
    if auto_pad == "NOTSET":
        if any(begins + ends) or rng.random() < 0.5:
            attrs["pads"] = begins + ends
    else:
        attrs["auto_pad"] = auto_pad
    if all(s == 1 for s in strides) and rng.random() < 0.5:
        del attrs["strides"]
    if all(d == 1 for d in dilations) and rng.random() < 0.5:
        del attrs["dilations"]
    return {**attrs, "_kernel": kernels}, outs


def pool_geometry(rng, sizes: list[int], opset: int):
    r = len(sizes)
    kernels = [int(min(rng.choice([2, 3]), size)) for size in sizes]
    strides = [int(rng.choice([1, 2])) for _ in sizes]
    pads = [int(rng.integers(0, k)) for k in kernels] * 2  # pads below the kernel: onnxruntime insists
    spans = [size + pads[i] + pads[i + r] - kernels[i] for i, size in enumerate(sizes)]
    outs = [span // strides[i] + 1 for i, span in enumerate(spans)]
    # ceil_mode only where it changes nothing: onnx and onnxruntime round the last
    # window differently when it would start in the padding.
    ceil = opset >= 10 and all(span % s == 0 for span, s in zip(spans, strides)) and rng.random() < 0.5
    attrs = {"kernel_shape": kernels, "strides": strides, "pads": pads}
    if ceil:
        attrs["ceil_mode"] = 1
    return attrs, outs
