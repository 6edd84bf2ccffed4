"""Random valid ONNX graphs for the property and fuzz tests (tests/test_fuzz.py).

``generate(seed)`` builds graph ``seed`` with onnx.helper, deterministically: chains
and residual blocks of the patterns the compiler rewrites (Conv [+ bias] -> [BN |
Mul/Add affine] -> [residual Add/Sum] -> Relu | Clip(0, c); Gemm with any transA,
transB, alpha, beta and C; MatMul + Add on 2-D and 3-D inputs) mixed with ops it must
leave alone (Sigmoid, Tanh, LeakyRelu, Clip(-1, 1), MaxPool, AveragePool, Concat,
Mul by a constant, Reshape/Flatten, grouped and depthwise convs). Channel counts
straddle ``min_units`` so that some layers qualify and some do not; opsets run from 9
to the newest one onnxruntime loads, IR versions from the oldest the opset allows, the
batch axis is fixed or symbolic.

Every graph passes ``onnx.checker`` with full shape inference (the declared output
shapes are computed here, so the checker also checks this file's arithmetic); the
tests run each one in plain onnxruntime too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import onnx
from graph_builder import Builder, Value, conv_geometry, pool_geometry
from onnx import TensorProto, helper

MIN_OPSET = 9
BATCH = "N"  # the symbolic batch dimension


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The newest default-domain opset that both onnx and onnxruntime know."""
    import onnxruntime as ort

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET, -1):
        opsets = [helper.make_opsetid("", opset)]
        try:
            model = helper.make_model(graph, opset_imports=opsets)
            model.ir_version = helper.find_min_ir_version_for(opsets)
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:  # noqa: BLE001 - onnx or onnxruntime do not know this opset
            continue
    return MIN_OPSET


@functools.lru_cache(maxsize=1)
def max_ir_version() -> int:
    from exprune_onnx.io.ir_version import max_runtime_ir_version

    return max_runtime_ir_version()


@dataclass
class Generated:
    seed: int
    model: onnx.ModelProto
    inputs: list[Value]
    batch: int | str  # BATCH when the batch axis is symbolic
    min_units: int  # what the tests pass to the compiler
    include_first_layer: bool
    layers: list[str] = field(default_factory=list)  # what was built, for failure messages

    def feeds(self, rng: np.random.Generator, batch: int | None = None) -> dict[str, np.ndarray]:
        """Seeded inputs; ``batch`` only matters when the batch axis is symbolic."""
        n = self.batch if isinstance(self.batch, int) else (batch if batch is not None else int(rng.integers(1, 4)))
        return {v.name: rng.standard_normal([n, *v.shape[1:]]).astype(np.float32) for v in self.inputs}

    def describe(self) -> str:
        return f"graph {self.seed} (opset {opset_of(self.model)}, batch {self.batch}): " + " -> ".join(self.layers)


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))



# ---------------------------------------------------------------- layers


class Graph(Builder):
    """A random network: spatial blocks, then dense blocks, tracked shape by shape."""

    def __init__(self, rng, opset):
        super().__init__(rng, opset)
        self.layers: list[str] = []
        self.extra_outputs: list[Value] = []
        self.inputs: list[Value] = []
        self.weights: dict[tuple, str] = {}  # shape -> a weight to share
        self.in_branch = False

    def channels(self) -> int:
        # Half the time enough units for the default --min-units (32), else fewer.
        return int(self.rng.choice([32, 40, 48, 64] if self.rng.random() < 0.5 else [3, 4, 8, 12, 16, 24]))

    def maybe_expose(self, name: str, shape: list) -> None:
        """Sometimes make an intermediate a graph output too (the compiler must then keep it)."""
        if not self.in_branch and self.rng.random() < 0.1 and name not in {v.name for v in self.extra_outputs}:
            self.extra_outputs.append(Value(name, list(shape)))

    # conv family ------------------------------------------------------

    def conv(self, x: Value, out_c: int, act: str, *, preserve=False, residual: Value | None = None,
             group: int = 1, geometry=None) -> Value:
        rng = self.rng
        in_c, sizes = x.shape[1], x.shape[2:]
        attrs, outs = geometry if geometry is not None else conv_geometry(rng, sizes, preserve)
        attrs = dict(attrs)
        kernel = attrs.pop("_kernel", None) or attrs["kernel_shape"]
        if group != 1:
            attrs["group"] = group
        w_shape = (out_c, in_c // group, *kernel)
        if w_shape in self.weights and rng.random() < 0.5:  # one weight shared by two convs
            w = self.weights[w_shape]
        else:
            w = self.weights[w_shape] = self.const("weight", self.weight(list(w_shape), in_c // group * int(np.prod(kernel))))
        inputs = [x.name, w]
        with_bias = rng.random() < 0.6
        if with_bias:
            inputs.append(self.const("bias", self.vector(out_c)))
        y = self.node("Conv", inputs, **attrs)
        shape = [x.shape[0], out_c, *outs]
        self.maybe_expose(y, shape)
        post = rng.random()
        if post < 0.4:
            y = self.batchnorm(y, out_c)
        elif post < 0.5:  # Caffe2's BatchNorm affine: Mul then Add, per channel (a scale may be negative)
            per_channel = [1, out_c] + [1] * len(outs) if rng.random() < 0.5 else [out_c] + [1] * len(outs)
            low = -1.5 if rng.random() < 0.3 else 0.5
            y = self.node("Mul", [y, self.const("scale", self.rng.uniform(low, 1.5, per_channel).astype(np.float32))])
            y = self.node("Add", [y, self.const("shift", self.vector(int(np.prod(per_channel))).reshape(per_channel))])
        elif post < 0.55:  # a constant that varies over space, not per channel: not a bias
            y = self.node("Add", [y, self.const("plane", self.vector(int(np.prod(outs))).reshape([1, 1, *outs]))])
        if residual is not None:
            y = self.residual_add(y, residual.name)
        y = self.activation(y, act)
        self.layers.append(f"Conv{'/g' + str(group) if group != 1 else ''}({in_c}->{out_c}, {attrs})"
                           f"{'+res' if residual is not None else ''}->{act}")
        return Value(y, shape)

    def residual_block(self, x: Value) -> Value:
        """ResNet basic block: two convs, the skip joins before the last activation."""
        c = x.shape[1]
        out_c = c if self.rng.random() < 0.6 else self.channels()
        skip = x
        if out_c != c:  # projection shortcut, no activation
            skip = self.conv(x, out_c, "none", preserve=True)
        h = self.conv(x, out_c, self.random_activation(0.9), preserve=True)
        return self.conv(h, out_c, self.random_activation(0.9), preserve=True, residual=skip)

    def spatial_block(self, x: Value) -> Value:
        rng = self.rng
        in_c, sizes = x.shape[1], x.shape[2:]
        pick = rng.random()
        if pick < 0.35:
            return self.conv(x, self.channels(), self.random_activation())
        if pick < 0.45:
            return self.residual_block(x)
        if pick < 0.5:  # a per-channel gate broadcast over space (squeeze-and-excitation style)
            out_c, r = self.channels(), len(sizes)
            pooled = Value(self.node("GlobalAveragePool", [x.name]), [x.shape[0], in_c] + [1] * r)
            gate = self.conv(pooled, out_c, "none", geometry=({"kernel_shape": [1] * r}, [1] * r))
            return self.conv(x, out_c, self.random_activation(), preserve=True, residual=gate)
        if pick < 0.6:  # grouped or depthwise
            if rng.random() < 0.5:
                mult = int(rng.choice([1, 2]))
                return self.conv(x, in_c * mult, self.random_activation(), group=in_c)
            group = next((g for g in (4, 2, 3) if in_c % g == 0), 1)
            return self.conv(x, group * int(rng.choice([2, 4, 8])), self.random_activation(), group=group)
        if pick < 0.7:
            op = str(rng.choice(["MaxPool", "AveragePool"]))
            attrs, outs = pool_geometry(rng, sizes, self.opset)
            if op == "AveragePool" and rng.random() < 0.5:
                attrs["count_include_pad"] = 1
            self.layers.append(op)
            return Value(self.node(op, [x.name], **attrs), [x.shape[0], in_c, *outs])
        if pick < 0.8:  # two branches joined on the channel axis
            geometry = conv_geometry(rng, sizes, preserve=True)
            a = self.conv(x, self.channels(), self.random_activation(), geometry=geometry)
            b = x if rng.random() < 0.3 else self.conv(x, self.channels(), self.random_activation(), geometry=geometry)
            self.layers.append("Concat")
            return Value(self.node("Concat", [a.name, b.name], axis=1), [x.shape[0], a.shape[1] + b.shape[1], *a.shape[2:]])
        if pick < 0.9:
            self.layers.append("Mul(const)")
            return Value(self.node("Mul", [x.name, self.const("factor", np.array(rng.uniform(0.5, 2), np.float32))]),
                         x.shape)
        act = str(rng.choice(["sigmoid", "tanh", "leaky", "relu"]))
        self.layers.append(act)
        return Value(self.activation(x.name, act), x.shape)

    def to_dense(self, x: Value) -> Value:
        """Spatial [N, C, *S] to features [N, F] or, for 1-D, a sequence [N, L, C]."""
        rng = self.rng
        c, sizes = x.shape[1], x.shape[2:]
        features = c * int(np.prod(sizes))
        pick = rng.random()
        if len(sizes) == 1 and pick < 0.3:
            self.layers.append("Transpose(sequence)")
            return Value(self.node("Transpose", [x.name], perm=[0, 2, 1]), [x.shape[0], sizes[0], c])
        if features > 1024 or pick < 0.5:
            self.layers.append("GlobalAveragePool+Flatten")
            pooled = self.node("GlobalAveragePool", [x.name])
            return Value(self.node("Flatten", [pooled], axis=1), [x.shape[0], c])
        if pick < 0.75:
            self.layers.append("Flatten")
            return Value(self.node("Flatten", [x.name], axis=1), [x.shape[0], features])
        self.layers.append("Reshape")
        shape = self.const("shape", np.array([-1, features] if rng.random() < 0.5 else [0, -1], np.int64))
        return Value(self.node("Reshape", [x.name, shape]), [x.shape[0], features])

    # dense family -----------------------------------------------------

    def gemm(self, x: Value, out: int, act: str, residual: Value | None = None) -> Value:
        rng = self.rng
        n = x.shape[-1]
        trans_a, trans_b = int(rng.integers(2)), int(rng.integers(2))
        alpha = float(rng.choice([1.0, 1.0, rng.uniform(0.5, 2.0)]))
        beta = float(rng.choice([1.0, 1.0, rng.uniform(0.5, 2.0)]))
        a = self.node("Transpose", [x.name], perm=[1, 0]) if trans_a else x.name
        w = self.weight([n, out], n)
        inputs = [a, self.const("weight", w.T.copy() if trans_b else w)]
        c_form = str(rng.choice(["vector", "row", "scalar", "none"]))
        if c_form == "none" and self.opset < 11:  # C is optional from opset 11
            c_form = "vector"
        if c_form != "none":
            c = {"vector": self.vector(out), "row": self.vector(out).reshape(1, out),
                 "scalar": self.vector(1)}[c_form]
            inputs.append(self.const("c", c))
        attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
        for key, default in (("transA", 0), ("transB", 0), ("alpha", 1.0), ("beta", 1.0)):
            if attrs[key] == default and rng.random() < 0.5:
                del attrs[key]
        y = self.node("Gemm", inputs, **attrs)
        shape = [x.shape[0], out]
        self.maybe_expose(y, shape)
        if rng.random() < 0.3:
            y = self.batchnorm(y, out)
        if residual is not None:
            y = self.residual_add(y, residual.name)
        self.layers.append(f"Gemm({n}->{out}, {attrs}, C {c_form}){'+res' if residual is not None else ''}->{act}")
        return Value(self.activation(y, act), shape)

    def matmul(self, x: Value, out: int, act: str, residual: Value | None = None) -> Value:
        rng = self.rng
        n = x.shape[-1]
        y = self.node("MatMul", [x.name, self.const("weight", self.weight([n, out], n))])
        shape = [*x.shape[:-1], out]
        self.maybe_expose(y, shape)
        if rng.random() < 0.8:
            bias_shape = [out] if rng.random() < 0.6 else [1] * (len(shape) - int(rng.integers(1, len(shape)))) + [out]
            bias = self.const("bias", self.vector(out).reshape(bias_shape))
            y = self.node("Add", [y, bias] if rng.random() < 0.7 else [bias, y])
        if len(shape) == 2 and rng.random() < 0.2:
            y = self.batchnorm(y, out)
        if residual is not None:
            y = self.residual_add(y, residual.name)
        self.layers.append(f"MatMul({shape[:-1]}, {n}->{out}){'+res' if residual is not None else ''}->{act}")
        return Value(self.activation(y, act), shape)

    def dense_block(self, x: Value) -> Value:
        rng = self.rng
        pick = rng.random()
        n = x.shape[-1]
        two_d = len(x.shape) == 2
        if pick < 0.55:
            out = self.channels()
            residual = None
            if out == n and rng.random() < 0.5:
                residual = x
            if two_d and rng.random() < 0.5:
                return self.gemm(x, out, self.random_activation(), residual)
            return self.matmul(x, out, self.random_activation(), residual)
        if pick < 0.65:  # a skip connection around two layers
            h = self.matmul(x, self.channels(), self.random_activation(0.9)) if not two_d or rng.random() < 0.5 \
                else self.gemm(x, self.channels(), self.random_activation(0.9))
            return self.matmul(h, n, self.random_activation(0.9), residual=x)
        if pick < 0.75:
            other = self.matmul(x, self.channels(), self.random_activation())
            self.layers.append("Concat")
            return Value(self.node("Concat", [x.name, other.name], axis=-1 if rng.random() < 0.5 else len(x.shape) - 1),
                         [*x.shape[:-1], n + other.shape[-1]])
        if pick < 0.85 and two_d and n % 2 == 0:  # round trip through 3-D
            self.layers.append("Reshape(3-D)")
            y = self.node("Reshape", [x.name, self.const("shape", np.array([-1, 2, n // 2], np.int64))])
            seq = Value(y, [x.shape[0], 2, n // 2])
            seq = self.matmul(seq, self.channels(), self.random_activation())
            flat = seq.shape[1] * seq.shape[2]
            return Value(self.node("Reshape", [seq.name, self.const("shape", np.array([-1, flat], np.int64))]),
                         [x.shape[0], flat])
        if pick < 0.9 and not self.in_branch:
            return self.if_block(x)
        if pick < 0.95:
            self.layers.append("Mul(const)")
            return Value(self.node("Mul", [x.name, self.const("factor", np.array([rng.uniform(0.5, 2)], np.float32))]),
                         x.shape)
        act = str(rng.choice(["sigmoid", "tanh", "leaky"]))
        self.layers.append(act)
        return Value(self.activation(x.name, act), x.shape)


    def if_block(self, x: Value) -> Value:
        """An If on a constant condition, a layer in each branch (the compiler rewrites bodies too)."""
        n, two_d = x.shape[-1], len(x.shape) == 2
        cond = self.const("cond", np.array(bool(self.rng.random() < 0.5)))
        then_body, a = self.branch(lambda: self.matmul(x, n, self.random_activation(0.9)))
        else_body, _ = self.branch(lambda: self.gemm(x, n, self.random_activation(0.9)) if two_d
                                   else self.matmul(x, n, self.random_activation(0.9)))
        self.layers.append("If")
        return Value(self.node("If", [cond], then_branch=then_body, else_branch=else_body), a.shape)

    def branch(self, build) -> tuple[onnx.GraphProto, Value]:
        """A subgraph of what ``build`` adds; it reads outer values by name."""
        outer = self.nodes, self.inits, self.weights
        self.nodes, self.inits, self.weights, self.in_branch = [], [], {}, True
        try:
            out = build()
            body = helper.make_graph(self.nodes, self.fresh("branch"), [], [_value_info(out)], self.inits)
        finally:
            (self.nodes, self.inits, self.weights), self.in_branch = outer, False
        return body, out


def _value_info(v: Value) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, TensorProto.FLOAT, v.shape)


def generate(seed: int) -> Generated:
    """Graph ``seed``: the same seed always gives the same model."""
    rng = np.random.default_rng(seed)
    opset = int(rng.integers(MIN_OPSET, max_opset() + 1))
    g = Graph(rng, opset)
    batch: int | str = BATCH if rng.random() < 0.6 else int(rng.integers(1, 4))
    kind = str(rng.choice(["conv2d", "conv2d", "conv1d", "dense", "sequence"]))
    first = int(rng.choice([1, 3, 8, 16, 32, 40]))
    if kind == "conv2d":
        x = Value(g.fresh("input"), [batch, first, int(rng.integers(3, 13)), int(rng.integers(3, 13))])
    elif kind == "conv1d":
        x = Value(g.fresh("input"), [batch, first, int(rng.integers(4, 25))])
    elif kind == "dense":
        x = Value(g.fresh("input"), [batch, int(rng.choice([4, 16, 32, 40, 64]))])
    else:
        x = Value(g.fresh("input"), [batch, int(rng.integers(1, 6)), int(rng.choice([4, 16, 32, 40, 64]))])
    g.inputs.append(x)
    if kind.startswith("conv"):
        for _ in range(int(rng.integers(1, 5))):
            x = g.spatial_block(x)
        if rng.random() < 0.3:  # a second input joins as a residual
            side = Value(g.fresh("side_input"), [batch, int(rng.choice([32, 40])), *x.shape[2:]])
            g.inputs.append(side)
            x = g.conv(x, side.shape[1], g.random_activation(0.9), preserve=True, residual=side)
        if rng.random() < 0.7:
            x = g.to_dense(x)
    blocks = int(rng.integers(0 if kind.startswith("conv") else 1, 4))
    for _ in range(blocks):
        x = g.dense_block(x)
    if len(x.shape) == 2 and rng.random() < 0.5:  # classifier head: no activation
        x = g.gemm(x, int(rng.integers(2, 11)), "none")
    outputs = [x] + [v for v in g.extra_outputs if v.name != x.name]
    graph = helper.make_graph(g.nodes, f"fuzz_{seed}", [_value_info(v) for v in g.inputs],
                              [_value_info(v) for v in outputs], g.inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="graphgen")
    model.ir_version = int(rng.integers(helper.find_min_ir_version_for(opsets), max_ir_version() + 1))
    onnx.checker.check_model(model, full_check=True)
    min_units = int(rng.choice([32, 32, 8, 2]))
    return Generated(seed, model, g.inputs, batch, min_units, bool(rng.random() < 0.7), g.layers)
