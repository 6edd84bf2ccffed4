"""The onnx wheel's light model zoo made runnable (test_model_zoo.py, bench/plain_command.py):
its Caffe2 exports with every weight refilled with seeded He-scaled values and BatchNorm fitted
to the data, the layers the compiler must rewrite read off the graph alone, and the feeds
and tolerances they are compared with."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exprune_onnx.config import DEFAULT_MIN_UNITS

LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
REFILL_SEED = 20240601
INPUT_SEEDS = (11, 12)
REL_TOL = 1e-4
ABS_TOL = 1e-6


# Per model: whether it is heavy (marked slow), and how many layers the structural
# analysis (eligible_layers) finds. The count is recorded so that a change to the
# analysis or the files is noticed; the test compares the compiler's choice with the
# analysis layer by layer. Seconds are one test on a 2-core machine (refill, compile,
# two runs each of the original and the optimised model, recompile).
#
# name                slow   eligible
ZOO = {
    # conv1 reads the image, conv2/4/5 are grouped (group 2): conv3, fc6, fc7.  ~8 s
    "bvlc_alexnet":   (False, 3),
    # Pre-activation DenseNet: each x1 bottleneck goes Conv -> BN -> Mul -> Add ->
    # Relu (Caffe2's BN affine as Mul/Add); conv1 reads the image, the x2 convs feed
    # Concat, the transition convs AveragePool and fc6 is the graph output.
    "densenet121":    (False, 58),
    # 57 Conv -> Relu, minus conv1 (n = 3) and the four 5x5 convs after a 16- or
    # 24-channel 5x5_reduce.  ~3 s
    "inception_v1":   (False, 52),
    # Conv -> BN -> Mul -> Add -> Relu everywhere, as in DenseNet, minus conv1.
    "inception_v2":   (False, 68),
    # branch2a, 2b and 2c of the 16 bottlenecks (2c through Caffe2's two-input Sum);
    # where a projection shortcut (branch1) meets branch2c at the Sum, the one first in
    # graph order takes the join; conv1 reads the image.
    "resnet50":       (False, 48),
    # Grouped 1x1 convs (group 4), depthwise 3x3 convs not followed by a Relu,
    # conv3_0 reads the image.  <1 s
    "shufflenet":     (False, 0),
    # 26 Conv -> Relu, minus conv1 (n = 3) and the four expand convs of fire2 and
    # fire3 (n = 16).  ~1 s
    "squeezenet":     (False, 21),
    # 16 convs minus conv1_1 (n = 3), fc6, fc7.  ~60 s, ~8 GB peak memory
    "vgg19":          (True, 17),
    # 5 convs minus conv1 (n = 3), fc6, fc7; AlexNet's coverage again.  ~12 s
    "zfnet512":       (True, 6),
}


_LAYOUT_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Transpose"}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                users[name].append((node, i))
    return users


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _role(name: str, users, shapes) -> tuple[str, int | None]:
    """What a float weight tensor is for: (kind, fan_in); follows layout ops."""
    t = name
    for _ in range(8):
        found = users.get(t, [])
        if not found:
            return "unused", None
        node, idx = found[0]
        if node.op_type in _LAYOUT_OPS and idx == 0:
            t = node.output[0]
            continue
        break
    op = node.op_type
    shape = shapes.get(t)
    if op == "Conv":
        return ("weight", math.prod(shape[1:])) if idx == 1 else ("bias", None)
    if op == "Gemm":
        if idx == 1:
            return "weight", shape[1] if _attr(node, "transB", 0) else shape[0]
        if idx == 2:
            return "bias", None
    if op == "MatMul" and idx == 1:
        return "weight", shape[-2]
    if op == "BatchNormalization":
        return {1: ("scale", None), 2: ("bias", None), 3: ("mean", None), 4: ("var", None)}[idx]
    if op == "Mul":
        return "scale", None
    if op in ("Add", "Sum"):
        return "bias", None
    raise AssertionError(f"no refill rule for '{name}' (input {idx} of {op})")


def _sample(rng: np.random.Generator, kind: str, fan_in: int | None, shape) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    if kind == "weight":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
    if kind == "bias":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
    if kind == "mean":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
    if kind in ("scale", "var"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    raise AssertionError(kind)


def refill(model: onnx.ModelProto, seed: int = REFILL_SEED) -> onnx.ModelProto:
    """``model`` (changed in place and returned) with seeded random weights.

    Every ConstantOfShape with a constant shape becomes an initializer of that shape and
    every used float initializer gets new values; shape and other non-float tensors
    stay. Initializers are taken out of the graph inputs (IR 3 lists them there, which
    would make them overridable, i.e. not constants), the IR version becomes 4 (the
    one of opset 9) and each Softmax's input is exposed as an extra graph output, so
    the comparison also sees the logits, not only saturating probabilities.
    """
    graph = model.graph
    rng = np.random.default_rng(seed)
    users = _consumers(graph)
    shapes = _inferred_shapes(model)
    inits = {t.name: t for t in graph.initializer}

    new_inits: list[onnx.TensorProto] = []
    keep_nodes = []
    for node in graph.node:
        value = _attr(node, "value")
        if (node.op_type == "ConstantOfShape" and node.input[0] in inits
                and value is not None and value.data_type == TensorProto.FLOAT):
            shape = numpy_helper.to_array(inits[node.input[0]])
            kind, fan_in = _role(node.output[0], users, shapes)
            arr = _sample(rng, kind, fan_in, shape)
            new_inits.append(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep_nodes.append(node)
    del graph.node[:]
    graph.node.extend(keep_nodes)

    for t in graph.initializer:
        if t.data_type != TensorProto.FLOAT or not users.get(t.name):
            continue
        kind, fan_in = _role(t.name, users, shapes)
        t.CopyFrom(numpy_helper.from_array(_sample(rng, kind, fan_in, t.dims), t.name))
    graph.initializer.extend(new_inits)

    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    init_names = {t.name for t in graph.initializer}
    data_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(data_inputs)

    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "Softmax" and node.output[0] in outputs and node.input[0] not in outputs:
            shape = shapes.get(node.input[0])
            assert shape is not None, f"no inferred shape for the logits '{node.input[0]}'"
            graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, shape))
            outputs.add(node.input[0])
    model.ir_version = max(model.ir_version, 4)
    onnx.checker.check_model(model)
    return model


def calibrate_batchnorm(model: onnx.ModelProto, seed: int = REFILL_SEED) -> onnx.ModelProto:
    """``model`` (changed in place) with BatchNormalization statistics fitted to its data.

    Random running statistics normalise nothing: in residual networks (ResNet,
    ShuffleNet) the activations then grow ~2x per block until the softmax is one-hot
    for every input. So each BN's ``var`` becomes the per-channel mean square of its
    actual input on one calibration image, making its output RMS ``scale`` (0.5..1.5),
    and ``mean`` a small offset (0.1 x that RMS, random sign). Subtracting the true
    per-channel mean instead (exact standardisation) makes the random network
    ill-conditioned: float rounding of the original model alone then moves the
    ResNet-50 output by ~5e-5 of its range, too close to the 1e-4 tolerance.

    A BN is measured once every BN upstream of it has its final statistics (level by
    level; iterating "measure all, update all" diverges). The statistics are graph
    inputs of a probe model, so one session serves every level.
    """
    graph = model.graph
    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return model
    # level = the number of BNs on the longest path from the graph inputs to the BN.
    depth: dict[str, int] = {}
    level = {}
    for node in graph.node:  # ONNX nodes are topologically sorted
        d = max((depth.get(i, 0) for i in node.input if i), default=0)
        if node.op_type == "BatchNormalization":
            level[node.output[0]] = d
            d += 1
        for o in node.output:
            depth[o] = d
    stat_names = [name for bn in bns for name in bn.input[3:5]]
    assert len(set(stat_names)) == len(stat_names), "BatchNormalizations share statistics"

    inits = {t.name: t for t in graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    kept = [t for t in probe.graph.initializer if t.name not in set(stat_names)]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(kept)
    for name in stat_names:
        probe.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(inits[name].dims)))
    del probe.graph.output[:]
    for x in dict.fromkeys(bn.input[0] for bn in bns):
        probe.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, None))
    session = plain_session(probe)

    rng = np.random.default_rng(seed)
    feeds = zoo_feeds(model, seed)
    feeds.update({name: numpy_helper.to_array(inits[name]) for name in stat_names})
    for lvl in sorted(set(level.values())):
        group = [bn for bn in bns if level[bn.output[0]] == lvl]
        values = session.run([bn.input[0] for bn in group], feeds)
        for bn, v in zip(group, values):
            v = v.astype(np.float64)
            assert np.isfinite(v).all(), f"the input of BN '{bn.output[0]}' is not finite"
            axes = tuple(i for i in range(v.ndim) if i != 1)
            m2 = (v ** 2).mean(axis=axes)
            # A floor keeps near-silent channels from being blown up for other inputs.
            m2 = np.maximum(m2, max(1e-2 * float(np.median(m2)), 1e-6))
            feeds[bn.input[3]] = (0.1 * rng.standard_normal(m2.shape) * np.sqrt(m2)).astype(np.float32)
            feeds[bn.input[4]] = m2.astype(np.float32)
    for name in stat_names:
        inits[name].CopyFrom(numpy_helper.from_array(feeds[name], name))
    return model


def model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


@functools.lru_cache(maxsize=1)
def _refilled_bytes(name: str) -> bytes:
    return refill(onnx.load(str(model_path(name)))).SerializeToString()


@functools.lru_cache(maxsize=1)
def _calibrated_bytes(name: str) -> bytes:
    model = onnx.load_from_string(_refilled_bytes(name))
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return _refilled_bytes(name)
    return calibrate_batchnorm(model).SerializeToString()


def refilled(name: str, calibrated: bool = True) -> onnx.ModelProto:
    """A fresh copy of the refilled model (cached as bytes; each caller gets its own copy).

    ``calibrated=False`` skips the BatchNormalization calibration, which only the
    numeric comparison needs.
    """
    return onnx.load_from_string(_calibrated_bytes(name) if calibrated else _refilled_bytes(name))


def eligible_layers(model: onnx.ModelProto, min_units: int = DEFAULT_MIN_UNITS) -> dict[str, list[str]]:
    """Layers the documented pattern covers, derived from the graph alone.

    ``{layer name: [op types of the group]}`` for every group-1 Conv (1-D/2-D), Gemm
    or MatMul with a constant weight whose output reaches a Relu through a path of
    single-consumer tensors holding only BatchNormalization (constant parameters),
    Adds and Muls of a constant (no Mul after the residual) and at most one two-input
    Add or Sum of a non-constant tensor (a residual),
    with at least ``min_units`` input units and not reading a graph input (through
    layout ops). Layer names follow the compiler: the node's name, or
    ``<op>:<output>`` when it has none or shares it.
    """
    graph = model.graph
    users = _consumers(graph)
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input if i.name not in inits}
    graph_outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    name_counts = defaultdict(int)
    for n in graph.node:
        if n.name:
            name_counts[n.name] += 1

    def reads_graph_input(t: str) -> bool:
        for _ in range(16):
            if t in graph_inputs:
                return True
            p = producer.get(t)
            if p is None or p.op_type not in _LAYOUT_OPS:
                return False
            t = p.input[0]
        return False

    def is_const(t: str) -> bool:
        # Caffe2 feeds the affine Mul/Add through an Unsqueeze of an initializer.
        p = producer.get(t)
        if p is not None and p.op_type in _LAYOUT_OPS:
            return all(is_const(i) for i in p.input if i)
        return t in inits

    found, claimed = {}, set()
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if node.op_type == "Conv":
            if _attr(node, "group", 1) != 1 or len(w.dims) not in (3, 4):
                continue
            n = w.dims[1]
        elif node.op_type == "Gemm":
            if _attr(node, "transA", 0) or len(w.dims) != 2:
                continue
            n = w.dims[1] if _attr(node, "transB", 0) else w.dims[0]
        else:
            if len(w.dims) != 2:
                continue
            n = w.dims[0]
        if n < min_units or reads_graph_input(node.input[0]):
            continue
        ops, t, residuals = [node.op_type], node.output[0], 0
        while True:
            if t in graph_outputs or len(users.get(t, [])) != 1:
                ops = None
                break
            nxt, _ = users[t][0]
            ops.append(nxt.op_type)
            if nxt.op_type == "Relu":
                break
            if nxt.op_type == "BatchNormalization":
                if not all(i in inits for i in nxt.input[1:5]) or len(nxt.output) > 1:
                    ops = None
                    break
            elif nxt.op_type == "Mul":
                # Caffe2's BatchNorm affine: a constant per-channel scale, before any residual.
                other = nxt.input[1] if nxt.input[0] == t else nxt.input[0]
                if not is_const(other) or residuals:
                    ops = None
                    break
            elif nxt.op_type in ("Add", "Sum") and len(nxt.input) == 2:
                other = nxt.input[1] if nxt.input[0] == t else nxt.input[0]
                if other == t:
                    ops = None
                    break
                if not is_const(other):
                    residuals += 1
                    if residuals > 1:
                        ops = None
                        break
            else:
                ops = None
                break
            t = nxt.output[0]
        if ops is None or t in claimed:
            # Two branches meeting at one residual join: the first in graph order takes it.
            continue
        claimed.add(t)
        name = node.name if node.name and name_counts[node.name] == 1 else f"{node.op_type}:{node.output[0]}"
        found[name] = ops
    return found


def zoo_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim]
        dims[0] = 1  # batch 1
        feeds[vi.name] = rng.uniform(0.0, 1.0, dims).astype(np.float32)
    return feeds


def plain_session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |ref - got| / max |ref| (the range-relative error the tolerance is stated in)."""
    assert ref.shape == got.shape, (ref.shape, got.shape)
    scale = float(np.abs(ref).max())
    err = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
    return err / scale if scale > 0 else err


def assert_close(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    assert err <= REL_TOL * scale + ABS_TOL, f"{what}: max abs error {err:.3g} > {REL_TOL} x range {scale:.3g}"


# Every light-zoo model fixes its batch at 1 ([1, 3, 224, 224]). The plain command (the
# latency objective, then the check on 32 random samples: 32 runs of batch 1) must work
# on them; so must --objective flops, where the check compares the rewritten model.
# SqueezeNet (~7 s) and ShuffleNet (nothing to rewrite) run by default; the others take
# 20 s to minutes each and are marked slow.
