"""A Conv + Relu split by input channel: onnxruntime's Conv over the densest channels,
ExPruneSparseConv over the rest (issue 16; a measurement, not a rewrite the compiler makes).

    python -m bench.channel_split [--layers block3_conv1,block4_conv1] [--calib 24] [--test 16]
                                  [--rounds 5] [--threads 1]
    python -m bench.channel_split --whole RESULTS --layers block3_conv1_1/Relu=160,... [--rounds 3]

On a core where a listed input costs more than a dense multiply-add (docs/sparse_conv.md,
"On a second CPU"), the sparse op loses on channels that are mostly non-zero and wins on
the others; real ReLU maps hold both. For each 3x3 conv of the VGG16 bench model
(bench/models.py ``vgg16_tumor``; ``--layers`` picks them by a part of their input's
name) it takes the conv's real inputs on calibration and test crops, ranks the input
channels by their non-zero share on the calibration crops, and times on the test crops,
one crop at a time, each standalone model in turn, round after round:

* ``ort``: Conv + Relu in onnxruntime (the reference);
* ``sparse``: ExPruneSparseConv with the Relu fused, every channel listed;
* ``split k``: the k densest channels through onnxruntime's Conv (with the bias), its
  output the residual of an ExPruneSparseConv over the other channels (two Slices
  first, of the input with its channels in rank order, as a compiler would order them
  by permuting the producer's output channels).

It prints each model's median time over ``ort``'s, the test crops' non-zero share of the
k-th densest channel, and checks every output against ``ort``'s.

``--whole RESULTS`` measures in the whole model instead: the lossless model of a
bench.lossless results file (its first 1 x 1 lossless row's kept zero-input layers,
compiled again), against the same model with each conv named in ``--layers`` (``part=k``)
split at k channels; two Gathers pick the channels, as the producer's channels are not
permuted here. Both are timed alternately on 8 test crops (the latency objective's
time_pair), ``--rounds`` rounds, and against the original.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exprune_onnx import ops

from .lossless import MODELS_BY_NAME
from .tail_tiles import conv_attrs, conv_groups

MODEL = "vgg16_tumor"
SHARES = (8, 4, 8 / 3, 2, 8 / 5, 4 / 3)  # split after C / share channels: C/8 .. 3C/4
GEOMETRY = ("pads", "strides", "dilations", "auto_pad")  # the Conv attributes every form keeps


def nonzero_share(x: np.ndarray) -> np.ndarray:
    """Per channel of NCHW ``x``, the share of its values that are non-zero."""
    return (x != 0).mean(axis=(0, 2, 3))


def densest_first(share: np.ndarray) -> np.ndarray:
    """Channel indices by decreasing ``share`` (ties in channel order)."""
    return np.argsort(-share, kind="stable")


def build(weight: np.ndarray, bias: np.ndarray, x_shape, k, attrs: dict) -> onnx.ModelProto:
    """The standalone model of one form: ``k`` "ort", 0 (the sparse op alone) or the
    number of leading input channels onnxruntime's Conv takes."""
    c = x_shape[1]
    inits = [numpy_helper.from_array(bias.astype(np.float32), "b")]
    if k == "ort":
        inits.append(numpy_helper.from_array(weight, "W"))
        nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])]
    elif k == 0:
        inits.append(numpy_helper.from_array(ops.sparse_conv_weights(weight), "w"))
        nodes = [helper.make_node(ops.SPARSE_CONV, ["x", "w", "b"], ["y"], domain=ops.DOMAIN, activation="relu",
                                  **attrs)]
    else:
        for name, value in (("zero", 0), ("k", k), ("c", c), ("axis", 1)):
            inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
        inits += [numpy_helper.from_array(np.ascontiguousarray(weight[:, :k]), "Wd"),
                  numpy_helper.from_array(ops.sparse_conv_weights(weight[:, k:]), "ws")]
        nodes = [helper.make_node("Slice", ["x", "zero", "k", "axis"], ["xd"]),
                 helper.make_node("Slice", ["x", "k", "c", "axis"], ["xs"]),
                 helper.make_node("Conv", ["xd", "Wd", "b"], ["cd"], **attrs),
                 helper.make_node(ops.SPARSE_CONV, ["xs", "ws", "", "cd"], ["y"], domain=ops.DOMAIN,
                                  activation="relu", **attrs)]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(ops.DOMAIN, ops.VERSION)])


def lossless_model(original: onnx.ModelProto, kept) -> onnx.ModelProto:
    """The lossless compile of ``original`` with exactly the zero-input layers ``kept``:
    threshold -inf, every early-exit layer left dense (as the latency objective drops
    them)."""
    from exprune_onnx.compiler.pipeline import optimize
    from exprune_onnx.config import Options
    from exprune_onnx.tuning.objective import skipping

    options = Options(threshold=float("-inf"), sparse_relu="on", sparse_relu_layers=frozenset(kept))
    early = [rw.candidate.layer for rw in optimize(original, options).rewritten]
    options = skipping(options, early, early)
    options.sparse_relu, options.sparse_relu_layers = "on", frozenset(kept)
    return optimize(original, options).model


def split_conv(graph, conv, k: int, density: np.ndarray) -> None:
    """Rewrites ``conv`` -> Relu of onnx-graphsurgeon ``graph`` in place as onnxruntime's
    Conv over the ``k`` input channels densest by ``density`` feeding an ExPruneSparseConv
    over the others (Relu fused), the channels picked by two Gathers."""
    import onnx_graphsurgeon as gs

    relu = conv.outputs[0].outputs[0]
    x, weight = conv.inputs[0], conv.inputs[1].values
    bias = conv.inputs[2].values if len(conv.inputs) > 2 else np.zeros(weight.shape[0], np.float32)
    order = densest_first(density)
    dense, sparse = np.sort(order[:k]), np.sort(order[k:])
    attrs = {key: v for key, v in conv.attrs.items() if key in GEOMETRY}
    xd, xs, cd = (gs.Variable(f"{x.name}_{tag}", dtype=np.float32) for tag in ("dense", "sparse", "dense_conv"))
    graph.nodes += [
        gs.Node("Gather", inputs=[x, gs.Constant(f"{x.name}_dense_idx", dense.astype(np.int64))], outputs=[xd],
                attrs={"axis": 1}),
        gs.Node("Gather", inputs=[x, gs.Constant(f"{x.name}_sparse_idx", sparse.astype(np.int64))], outputs=[xs],
                attrs={"axis": 1}),
        gs.Node("Conv", inputs=[xd, gs.Constant(f"{x.name}_Wd", np.ascontiguousarray(weight[:, dense])),
                                gs.Constant(f"{x.name}_b", bias)], outputs=[cd], attrs=attrs),
        gs.Node(ops.SPARSE_CONV, domain=ops.DOMAIN, outputs=list(relu.outputs), attrs={**attrs, "activation": "relu"},
                inputs=[xs, gs.Constant(f"{x.name}_ws", ops.sparse_conv_weights(weight[:, sparse])),
                        gs.Variable.empty(), cd]),
    ]
    for node in (conv, relu):
        node.inputs.clear()
        node.outputs.clear()
    graph.cleanup().toposort()


def session(model: onnx.ModelProto, threads: int):
    from exprune_onnx.runtime import inference_session

    return inference_session(model, threads=threads, library=True)


def _bias(model: onnx.ModelProto, conv: onnx.NodeProto, inits: dict) -> np.ndarray:
    """The Conv's bias, or the constant of the Add after it (tf2onnx), or zeros."""
    if len(conv.input) > 2 and conv.input[2]:
        return inits[conv.input[2]]
    for node in model.graph.node:
        if node.op_type == "Add" and conv.output[0] in node.input:
            other = next(name for name in node.input if name != conv.output[0])
            if other in inits:
                return inits[other].reshape(-1)
    return np.zeros(inits[conv.input[1]].shape[0], np.float32)


def measure_layer(weight, bias, attrs, calib: np.ndarray, test: np.ndarray, rounds: int, threads: int) -> dict:
    """Median time of every form over ``ort``'s on ``test`` (NCHW crops of the conv's input)."""
    order = densest_first(nonzero_share(calib))
    weight, test = np.ascontiguousarray(weight[:, order]), np.ascontiguousarray(test[:, order])
    c = test.shape[1]
    forms = ["ort", 0] + [int(round(c / share)) for share in SHARES]
    sessions = {k: session(build(weight, bias, (1,) + test.shape[1:], k, attrs), threads) for k in forms}
    times: dict = {k: [] for k in forms}
    worst = 0.0
    reference = [sessions["ort"].run(None, {"x": test[i : i + 1]})[0] for i in range(len(test))]
    for k in forms:
        for i in range(len(test)):
            got = sessions[k].run(None, {"x": test[i : i + 1]})[0]
            worst = max(worst, float(np.abs(got - reference[i]).max() / max(np.abs(reference[i]).max(), 1e-30)))
    for _ in range(rounds):
        for k in forms:
            for i in range(len(test)):
                t0 = time.perf_counter()
                sessions[k].run(None, {"x": test[i : i + 1]})
                times[k].append(time.perf_counter() - t0)
    base = float(np.median(times["ort"]))
    share = nonzero_share(test)
    return {"channels": c, "nonzero": float((test != 0).mean()), "ort_ms": base * 1e3,
            "ratios": {str(k): float(np.median(times[k]) / base) for k in forms[1:]},
            "kth_share": {str(k): float(share[k - 1]) for k in forms[2:]}, "max_rel_diff": worst}


def _crops(path, model: onnx.ModelProto, count: int) -> np.ndarray:
    data = np.load(path)
    inp = model.graph.input[0].name
    return data[inp if inp in data else "input"][:count]


def _activations(model: onnx.ModelProto, names: list[str], crops: np.ndarray) -> dict:
    from exprune_onnx.measure.shape_probe import tensor_values

    inp = model.graph.input[0].name
    outs = tensor_values(model, names, [{inp: crops[s : s + 4]} for s in range(0, len(crops), 4)])
    return {name: np.concatenate([o[name] for o in outs]) for name in names}


def per_layer(args, parser, m, model: onnx.ModelProto) -> None:
    """The standalone forms of every chosen conv (module docstring)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [conv for conv, _ in conv_groups(model)
             if inits.get(conv.input[1]) is not None and inits[conv.input[1]].shape[1] >= 16]
    wanted = [part for part in args.layers.split(",") if part]
    missing = [part for part in wanted if not any(part in conv.input[0] for conv in convs)]
    if missing:
        parser.error(f"no 3x3 conv of {MODEL} reads an input named like {missing[0]!r}")
    convs = [conv for conv in convs if not wanted or any(part in conv.input[0] for part in wanted)]
    names = [c.input[0] for c in convs]
    calib = _activations(model, names, _crops(m.calibration, model, args.calib))
    test = _activations(model, names, _crops(m.test, model, args.test))
    print(f"{MODEL}: {args.calib} calibration and {args.test} test crops, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    for conv in convs:
        attrs = {key: v for key, v in conv_attrs(conv).items() if key in GEOMETRY}
        r = measure_layer(inits[conv.input[1]], _bias(model, conv, inits), attrs, calib[conv.input[0]],
                          test[conv.input[0]], args.rounds, args.threads)
        cells = "  ".join(f"{k}: {v:.2f}" for k, v in r["ratios"].items())
        print(f"{conv.input[0]}  C={r['channels']}  non-zero {r['nonzero']:.2f}  ort {r['ort_ms']:.2f} ms | "
              f"over ort, by channels to ort's Conv: {cells} | max rel. diff {r['max_rel_diff']:.1e}")
        print("    non-zero share of the k-th densest: "
              + "  ".join(f"{k}: {v:.2f}" for k, v in r["kth_share"].items()))


def kept_layers(path: Path) -> list[str]:
    """The zero-input layers kept in the first 1 x 1 lossless row of a bench.lossless results file."""
    for entry in json.loads(path.read_text())["models"]:
        for row in entry["rows"]:
            if (row["mode"], row["batch"], row["threads"]) == ("lossless", 1, 1):
                return [t["layer"] for t in row["layers"] if t["rewrite"] == "zero inputs" and t["kept"]]
    raise ValueError("it has no lossless row at batch 1, 1 thread")


def whole(args, parser, m, model: onnx.ModelProto) -> None:
    """The lossless model against the same with the named convs split (module docstring)."""
    import onnx_graphsurgeon as gs

    from exprune_onnx.tuning.objective import time_pair

    try:
        kept = kept_layers(args.whole)
        wanted = {part: int(k) for part, k in (item.split("=") for item in args.layers.split(",") if item)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--whole {args.whole} with --layers {args.layers!r}: {exc} (--layers are part=k, k >= 1)")
    if not wanted or min(wanted.values()) < 1:
        parser.error("--whole needs --layers part=k,... with k >= 1")
    base = lossless_model(model, kept)
    graph = gs.import_onnx(base)
    convs = {}
    for part, k in wanted.items():
        found = [n for n in graph.nodes if n.op == "Conv" and part in n.inputs[0].name
                 and n.outputs[0].outputs and n.outputs[0].outputs[0].op == "Relu"]
        if len(found) != 1:
            parser.error(f"{len(found)} dense Conv -> Relu of the lossless model read an input named like {part!r}")
        if not 1 <= k < found[0].inputs[1].shape[1]:
            parser.error(f"{part}={k}: k must leave channels on both sides of the split")
        convs[found[0].inputs[0].name] = (found[0], k)
    density = _activations(model, list(convs), _crops(m.calibration, model, args.calib))
    for name, (conv, k) in convs.items():
        split_conv(graph, conv, k, nonzero_share(density[name]))
    split = gs.export_onnx(graph)
    inp = model.graph.input[0].name
    crops = _crops(m.test, model, 8)
    feeds = [{inp: crops[i : i + 1]} for i in range(len(crops))]
    print(f"{MODEL}: lossless model of {args.whole} ({len(kept)} zero-input layers), "
          f"{len(convs)} convs split; load average {os.getloadavg()[0]:.1f}")
    for r in range(args.rounds):
        split_ms, base_ms = time_pair(split, base, feeds, args.threads, 5)
        original_ms, _ = time_pair(model, base, feeds, args.threads, 3)
        print(f"round {r}: split {split_ms:.2f} ms / lossless {base_ms:.2f} ms = {split_ms / base_ms:.3f}; "
              f"over the original's {original_ms:.2f} ms: lossless {base_ms / original_ms:.3f}, "
              f"split {split_ms / original_ms:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="", help="parts of the conv inputs' names, comma-separated (all); "
                                                     "with --whole, part=k")
    parser.add_argument("--whole", type=Path, metavar="RESULTS", help="time in the whole lossless model")
    parser.add_argument("--calib", type=int, default=24, help="calibration crops that rank the channels")
    parser.add_argument("--test", type=int, default=16, help="test crops timed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if min(args.calib, args.test, args.rounds, args.threads) < 1:
        parser.error("--calib, --test, --rounds and --threads must be at least 1")
    m = MODELS_BY_NAME[MODEL]
    if not (m.onnx.is_file() and m.calibration.is_file() and m.test.is_file()):
        parser.error(f"{MODEL}: its model or data files are missing; build them with `{m.build}`")
    model = onnx.load(m.onnx)
    (whole if args.whole else per_layer)(args, parser, m, model)


if __name__ == "__main__":
    main()
