"""Mutations of serialized ONNX models, for the CLI fuzz loop (tests/fuzz_loops.py).

Bytes-level damage (bit flips, truncation, insertion, deletion) mostly fails to parse
or to pass the checker; structural changes (wrong dims, dropped initializers, wrong
attribute types and values, rewired inputs, wrong element types and input shapes,
odd opsets, NaN weights, sparse or duplicated or external initializers, wrong
value_info...) keep the file parseable and reach the compiler.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MODELS = Path(__file__).resolve().parent.parent / "models"


def mutate(data: bytes, rng) -> tuple[bytes, str]:
    """Bytes-level damage, or one to three structural changes; returns the bytes and what was done."""
    if rng.random() < 0.3:
        return _mutate_bytes(data, rng)
    steps = []
    for _ in range(int(rng.choice([1, 1, 2, 3]))):
        data, step = _mutate_proto(data, rng)
        steps.append(step)
    return data, ", ".join(steps)


def base_model(rng) -> bytes:
    """The bundled CNN or a generated graph, serialized."""
    from graphgen import generate

    if rng.random() < 0.5:
        return (MODELS / "fashion_cnn.onnx").read_bytes()
    return generate(int(rng.integers(1 << 30))).model.SerializeToString()


def _mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    b = bytearray(data)
    pick = int(rng.integers(6))
    at = int(rng.integers(len(b)))
    size = int(rng.integers(1, 64))
    if pick == 0:
        flips = int(rng.integers(1, 17))
        for _ in range(flips):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b), f"{flips} bit flips"
    if pick == 1:
        return bytes(b[:at]), f"truncated at {at}"
    if pick == 2:
        return bytes(b[:at] + rng.bytes(size) + b[at:]), f"{size} bytes inserted at {at}"
    if pick == 3:
        return bytes(b[:at] + b[at + size:]), f"{size} bytes deleted at {at}"
    if pick == 4:
        return bytes(b[:at] + b[at:at + size] + b[at:]), f"{size} bytes repeated at {at}"
    return bytes(b[:at] + rng.bytes(size) + b[at + size:]), f"{size} bytes overwritten at {at}"


def _mutate_proto(data: bytes, rng) -> tuple[bytes, str]:
    """One structural change that keeps the file parseable: wrong dims, types, names..."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load_from_string(data)
    g = m.graph
    nodes, inits = list(g.node), list(g.initializer)
    pick = str(rng.choice(["dims", "drop_init", "attr_type", "attr_value", "op_type", "domain", "rewire",
                           "elem_type", "input_shape", "opset", "ir_version", "outputs", "special_weights",
                           "drop_node", "dup_node", "external", "value_info", "arity", "sparse", "dup_init",
                           "init_as_input"]))
    node = nodes[int(rng.integers(len(nodes)))] if nodes else None
    init = inits[int(rng.integers(len(inits)))] if inits else None
    what = pick
    readable = init is not None and init.data_location != TensorProto.EXTERNAL  # an earlier step may have moved it
    if pick == "dims" and init is not None and init.dims:
        i = int(rng.integers(len(init.dims)))
        init.dims[i] = int(rng.choice([0, 1, init.dims[i] + 1, max(init.dims[i] - 1, 0), 2 * init.dims[i]]))
        what += f" of {init.name}"
    elif pick == "drop_init" and init is not None:
        g.initializer.remove(init)
        what += f" {init.name}"
    elif pick in ("attr_type", "attr_value") and node is not None and node.attribute:
        a = node.attribute[int(rng.integers(len(node.attribute)))]
        if pick == "attr_type":
            replacement = [helper.make_attribute(a.name, 1.5), helper.make_attribute(a.name, "SAME"),
                           helper.make_attribute(a.name, [1.0, 2.0]), helper.make_attribute(a.name, 3)]
            a.CopyFrom(replacement[int(rng.integers(len(replacement)))])
        elif a.ints:
            a.ints[int(rng.integers(len(a.ints)))] = int(rng.choice([-3, -1, 0, 7, 1000]))
        elif a.type == onnx.AttributeProto.INT:
            a.i = int(rng.choice([-3, -1, 0, 7, 1000]))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(rng.choice([math.nan, math.inf, -1.0, 0.0, 1e30]))
        elif a.type == onnx.AttributeProto.STRING:
            a.s = rng.choice([b"SAME", b"", b"VALID", b"bogus"])
        what += f" {node.op_type}.{a.name}"
    elif pick == "op_type" and node is not None:
        node.op_type = str(rng.choice(["Relu", "Sigmoid", "ConvTranspose", "MatMul", "Gemm", "Conv", "Add",
                                       "BatchNormalization", "Clip", "NoSuchOp"]))
        what += f" -> {node.op_type}"
    elif pick == "domain" and node is not None:
        node.domain = str(rng.choice(["ai.exprune", "com.microsoft", "bogus.domain"]))
        what += f" {node.op_type} -> {node.domain}"
    elif pick == "rewire" and node is not None and node.input:
        names = [i.name for i in g.input] + [t.name for t in inits] + [o for n in nodes for o in n.output]
        i = int(rng.integers(len(node.input)))
        node.input[i] = str(rng.choice(names + ["dangling", node.output[0], ""]))
        what += f" {node.op_type} input {i} -> {node.input[i]!r}"
    elif pick == "elem_type" and g.input:
        target = g.input[0].type.tensor_type if rng.random() < 0.6 or init is None else None
        new = int(rng.choice([TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.STRING]))
        if target is not None:
            target.elem_type = new
        else:
            init.data_type = new
        what += f" -> {TensorProto.DataType.Name(new)}"
    elif pick == "input_shape" and g.input:
        dims = g.input[0].type.tensor_type.shape.dim
        choice = int(rng.integers(4))
        if choice == 0 and dims:
            d = dims[int(rng.integers(len(dims)))]
            d.dim_value = int(rng.choice([0, 1, 2, 3, 64]))  # small: the check allocates inputs of this size
        elif choice == 1 and dims:
            del dims[int(rng.integers(len(dims)))]
        elif choice == 2:
            dims.add().dim_value = 2
        else:
            g.input[0].type.tensor_type.ClearField("shape")
    else:
        return _mutate_more(m, pick, node, init, readable, rng)
    return m.SerializeToString(), what


def _mutate_more(m, pick: str, node, init, readable: bool, rng) -> tuple[bytes, str]:
    """_mutate_proto's changes to the model's header, weights and wiring."""
    import onnx
    from onnx import TensorProto, helper

    g = m.graph
    nodes, inits = list(g.node), list(g.initializer)
    what = pick
    if pick == "opset":
        m.opset_import[0].version = int(rng.choice([1, 7, 8, 30, 1000]))
        what += f" -> {m.opset_import[0].version}"
    elif pick == "ir_version":
        m.ir_version = int(rng.choice([0, 1, 3, 99]))
        what += f" -> {m.ir_version}"
    elif pick == "outputs":
        if rng.random() < 0.5 and g.output:
            g.output.pop()
        else:
            g.output.append(helper.make_tensor_value_info(str(rng.choice(["dangling", g.input[0].name])),
                                                          TensorProto.FLOAT, None))
    elif pick == "special_weights" and readable and init.data_type == TensorProto.FLOAT:
        values = _array(init)
        if values is None:
            return m.SerializeToString(), what + " (no-op)"
        values.reshape(-1)[: max(1, values.size // 3)] = rng.choice([np.nan, np.inf, -np.inf, 0.0])
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    elif pick == "drop_node" and node is not None:
        g.node.remove(node)
        what += f" {node.op_type}"
    elif pick == "dup_node" and node is not None:
        g.node.insert(int(rng.integers(len(nodes) + 1)), node)
    elif pick == "external" and init is not None:
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        entry = init.external_data.add()
        entry.key, entry.value = "location", str(rng.choice(["missing.bin", "../../etc/passwd", "/etc/hostname"]))
    elif pick == "value_info" and node is not None:
        # A wrong shape claim for an intermediate: the compiler must not trust it into a crash.
        g.value_info.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT,
                                                          [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 5)))]))
    elif pick == "arity" and node is not None:
        if node.input and rng.random() < 0.5:
            node.input.pop()
        else:
            node.input.append(str(rng.choice([i.name for i in inits] or [""])) if inits else "")
        what += f" {node.op_type} now has {len(node.input)} inputs"
    elif pick == "sparse" and readable and init.data_type == TensorProto.FLOAT and init.dims:
        dense = _array(init)
        if dense is None:
            return m.SerializeToString(), what + " (no-op)"
        dense = dense.reshape(-1)
        where = np.flatnonzero(rng.random(dense.size) < 0.5)
        values = onnx.numpy_helper.from_array(dense[where].astype(np.float32), init.name)
        indices = onnx.numpy_helper.from_array(where.astype(np.int64), "")
        g.initializer.remove(init)
        g.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(init.dims)))
        what += f" {init.name}"
    elif pick == "dup_init" and init is not None:
        copy = g.initializer.add()
        copy.CopyFrom(init)
        if rng.random() < 0.5 and init.dims:
            copy.dims[0] += 1  # same name, another shape
    elif pick == "init_as_input" and init is not None:
        g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        what += f" {init.name}"
    else:
        what += " (no-op)"
    return m.SerializeToString(), what


def _array(init):
    """The initializer's values, or None when an earlier step left its data unreadable."""
    import onnx

    try:
        return onnx.numpy_helper.to_array(init).copy()
    except Exception:  # noqa: BLE001 - wrong dims for the data, or data gone elsewhere
        return None
