"""measure/output_kinds.py: the graph, not the shape, tells class scores from boxes,
features and sorted TopK values; only class scores get top-1 agreement."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import init, make_model, scaled_normal
from onnx import TensorProto, helper

from exprune_onnx.cli import main
from exprune_onnx.errors import DataError
from exprune_onnx.io.data import dataset_of
from exprune_onnx.measure.compare import compare
from exprune_onnx.measure.output_kinds import output_kinds
from exprune_onnx.tuning.metrics import choose, is_scores

SCORES = ("head", "unknown")  # the kinds read as class scores by their shape


def _out(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def detector() -> onnx.ModelProto:
    """x [N, A, 16] -> MatMul -> Relu -> MatMul -> Relu (rewritable) -> h; h -> MatMul -> Sigmoid -> boxes
    [N, A, 4]; h -> MatMul -> + bias -> Softmax -> scores [N, A, 8]; h -> MatMul ->
    LayerNormalization -> features [N, A, 6]."""
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["q"]), helper.make_node("Relu", ["q"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["p"], name="p"), helper.make_node("Relu", ["p"], ["h"]),
             helper.make_node("MatMul", ["h", "wb"], ["b"]), helper.make_node("Sigmoid", ["b"], ["boxes"]),
             helper.make_node("MatMul", ["h", "ws"], ["s"]), helper.make_node("Add", ["bias", "s"], ["sb"]),
             helper.make_node("Softmax", ["sb"], ["scores"], axis=-1),
             helper.make_node("MatMul", ["h", "wf"], ["f"]),
             helper.make_node("LayerNormalization", ["f", "gamma"], ["features"], axis=-1)]
    return make_model(nodes, [_out("x", ["N", 5, 16])],
                      [_out("boxes", ["N", 5, 4]), _out("scores", ["N", 5, 8]), _out("features", ["N", 5, 6])],
                      [init("w0", scaled_normal(16, 32)), init("w1", scaled_normal(32, 64)), init("wb", scaled_normal(64, 4)),
                       init("ws", scaled_normal(64, 8)), init("bias", np.zeros(8, np.float32)),
                       init("wf", scaled_normal(64, 6)), init("gamma", np.ones(6, np.float32))], opset=17)


def chain(*ops: str, opset: int = 17, **options) -> onnx.ModelProto:
    """x [N, 12] -> MatMul -> [N, 8] -> each of ``ops`` in turn (a constant second operand
    where one is needed; Reshape to [N, 1, 8], or [N, 2, 4] boxes with ``split``; Slice0
    and Slice1 slice [0:1] of axis 0 or 1) -> y."""
    nodes, last = [helper.make_node("MatMul", ["x", "w"], ["t0"])], "t0"
    for i, op in enumerate(ops, 1):
        extra = {"TopK": ["k"], "Reshape": ["split" if options.get("split") else "shape"], "Add": ["c"], "Sub": ["c"],
                 "Mul": ["c"], "LayerNormalization": ["g"], "MatMul": ["w6"],
                 "Slice0": ["zero", "one", "zero"], "Slice1": ["zero", "one", "one"]}.get(op, [])
        attrs = {k: v for k, v in options.items() if k == "axis"} if op in ("Softmax", "LogSoftmax") else {}
        outputs = [f"t{i}", f"t{i}_index"] if op == "TopK" else [f"t{i}"]
        nodes.append(helper.make_node(op.rstrip("01"), [last, *extra], outputs, **attrs))
        last = f"t{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    return make_model(nodes, [_out("x", ["N", 12])], [_out("y", None)],
                      [init("w", scaled_normal(12, 8)), init("k", np.array([3], np.int64)),
                       init("shape", np.array([0, 1, 8], np.int64)), init("c", np.ones(1, np.float32)),
                       init("zero", np.array([0], np.int64)), init("one", np.array([1], np.int64)),
                       init("split", np.array([0, 2, 4], np.int64)), init("g", np.ones(8, np.float32)),
                       init("w6", scaled_normal(8, 8))], opset=opset)


@pytest.mark.parametrize(("ops", "opset", "options", "kind"), [
    ((), 17, {}, "head"),
    (("Add", "Mul", "Reshape"), 17, {}, "head"),  # a bias, a temperature, [N, 1, V] from [N, V]
    (("Softmax",), 17, {}, "head"),
    (("LogSoftmax",), 11, {}, "head"),  # opset 11's default axis 1 is the last of two
    (("Reshape", "Softmax"), 11, {}, "head"),  # a Softmax ends the walk, on any axis
    (("Reshape", "Softmax"), 11, {"axis": 2}, "head"),
    (("Sigmoid",), 17, {}, "yesno"),  # on [N, C]: a multi-label classifier, a yes or no per class
    (("Sigmoid", "Reshape"), 17, {}, "values"),  # the same made [N, 1, 8]: DETR-like
    (("Sigmoid", "Mul"), 17, {}, "unknown"),  # sigmoid * c: a bounded regression, no probability
    (("Sigmoid", "Clip"), 17, {}, "yesno"),  # clamp(eps, 1 - eps) keeps a probability
    (("Reshape", "Sigmoid"), 17, {}, "values"),  # on [N, T, C]: DETR's boxes
    (("Reshape", "LayerNormalization"), 17, {}, "values"),  # an encoder's features
    (("TopK",), 17, {}, "topk"),
    (("Sub", "Tanh", "Mul"), 17, {}, "head"),  # a bias, then Gemma 2's softcap
    (("Mul", "Tanh", "Mul"), 17, {}, "head"),  # the softcap as cap * tanh(x * (1 / cap))
    (("Tanh",), 17, {}, "values"),  # a pooler: tanh(dense(h[:, 0])), BERT's pooler_output
    (("Add", "Tanh"), 17, {}, "values"),  # the same with its bias
    (("Slice0",), 17, {}, "head"),  # logits[:1]
    (("Slice1",), 17, {}, "head"),  # logits[:, :1]: still classes, fewer
    (("Reshape",), 17, {"split": True}, "head"),  # [N, 8] -> [N, 2, 4]: boxes, or a 4-class tagger
])
def test_the_kind_of_an_output_comes_from_what_made_it(ops, opset, options, kind):
    assert output_kinds(chain(*ops, opset=opset, **options)) == {"y": kind}


def test_a_scale_after_a_concat_of_sigmoids_is_seen():
    """0.5 * concat(sigmoid, sigmoid): every value under 0.5, so every answer a "no" in both
    models, and yes/no agreement would be 100% whatever changed."""
    model = chain("Sigmoid")
    identity = model.graph.node[-1]
    identity.CopyFrom(helper.make_node("Concat", [identity.input[0]] * 2, ["both"], axis=0))
    model.graph.node.append(helper.make_node("Mul", ["both", "c"], ["y"]))
    assert output_kinds(model) == {"y": "unknown"}


def test_an_if_branch_and_a_local_function_are_followed():
    then_graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["a"])], "then", [], [_out("a", None)])
    else_graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["b"])], "else", [], [_out("b", None)])
    branchy = make_model([helper.make_node("If", ["flag"], ["y"], then_branch=then_graph, else_branch=else_graph)],
                         [_out("x", ["N", 12]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                         [_out("y", None)], [init("w", scaled_normal(12, 6))])
    assert output_kinds(branchy) == {"y": "head"}  # optimum's merged decoders put the logits in an If
    norm = helper.make_function("local", "Norm", ["x", "g"], ["y"],
                                [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1)],
                                [helper.make_opsetid("", 17)])
    model = chain("Reshape")
    model.graph.node[-1].CopyFrom(helper.make_node("Norm", ["t1", "g"], ["y"], domain="local"))
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(norm)
    assert output_kinds(model) == {"y": "values"}  # inlined first, as the compiler does


def test_written_out_normalisations_and_concatenated_boxes_are_values():
    w = init("w", scaled_normal(16, 8))
    eps, two = init("eps", np.full(1, 1e-5, np.float32)), init("two", np.full(1, 2.0, np.float32))
    # LayerNorm as torch writes it below opset 17: (x - mean) / sqrt(var + eps)
    layer_norm = [helper.make_node("MatMul", ["x", "w"], ["h"]),
                  helper.make_node("ReduceMean", ["h"], ["mu"], axes=[-1]), helper.make_node("Sub", ["h", "mu"], ["d"]),
                  helper.make_node("Pow", ["d", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
                  helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
                  helper.make_node("Div", ["d", "sd"], ["y"])]
    model = make_model(layer_norm, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 8])], [w, eps, two], opset=13)
    assert output_kinds(model) == {"y": "values"}
    # An RMSNorm written out: x * (1 / sqrt(mean(x^2) + eps))
    rms = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "h"], ["sq"]),
           helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1]), helper.make_node("Add", ["ms", "eps"], ["me"]),
           helper.make_node("Sqrt", ["me"], ["r"]), helper.make_node("Reciprocal", ["r"], ["inv"]),
           helper.make_node("Mul", ["h", "inv"], ["y"])]
    model = make_model(rms, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 8])], [w, eps], opset=13)
    assert output_kinds(model) == {"y": "values"}
    # An embedding: x / max(||x||, eps), as F.normalize exports it
    l2 = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("ReduceL2", ["h"], ["n"], axes=[-1]),
          helper.make_node("Clip", ["n", "eps"], ["nc"]), helper.make_node("Expand", ["nc", "shape"], ["ne"]),
          helper.make_node("Div", ["h", "ne"], ["y"])]
    model = make_model(l2, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 8])],
                       [w, eps, init("shape", np.array([1, 5, 8], np.int64))], opset=13)
    assert output_kinds(model) == {"y": "values"}
    # A softmax written out divides by a sum, with no root: class scores
    soft = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Exp", ["h"], ["e"]),
            helper.make_node("ReduceSum", ["e", "axis"], ["s"]), helper.make_node("Div", ["e", "s"], ["y"])]
    model = make_model(soft, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 8])],
                       [w, init("axis", np.array([-1], np.int64))], opset=13)
    assert output_kinds(model)["y"] in SCORES
    # SSD: two feature maps' box regressions, each [N, A_i * 4] -> [N, A_i, 4], concatenated on the anchors
    shape = init("shape", np.array([0, -1, 4], np.int64))
    ssd = [helper.make_node("Flatten", ["x"], ["f"]),
           helper.make_node("MatMul", ["f", "wa"], ["a"]), helper.make_node("Reshape", ["a", "shape"], ["ra"]),
           helper.make_node("MatMul", ["f", "wb"], ["b"]), helper.make_node("Reshape", ["b", "shape"], ["rb"]),
           helper.make_node("Concat", ["ra", "rb"], ["y"], axis=1)]
    model = make_model(ssd, [_out("x", ["N", 5, 16])], [_out("y", ["N", 6, 4])],
                       [shape, init("wa", scaled_normal(80, 8)), init("wb", scaled_normal(80, 16))])
    assert output_kinds(model) == {"y": "values"}
    ssd[-1] = helper.make_node("Concat", ["ra", "rb"], ["y"], axis=-1)  # on the last axis: no longer boxes
    model = make_model(ssd, [_out("x", ["N", 5, 16])], [_out("y", None)],
                       [init("shape", np.array([0, 2, 4], np.int64)), init("wa", scaled_normal(80, 8)),
                        init("wb", scaled_normal(80, 8))])
    assert output_kinds(model) == {"y": "unknown"}


def masked_mean(last: str, opset: int = 17) -> onnx.ModelProto:
    """Token features x [N, T, 16] -> MatMul -> ``last`` (LayerNormalization, or Identity:
    per-token logits) -> a sentence-transformers mean over the tokens the int64 mask keeps:
    sum(h * m, 1) / clamp(sum(m, 1), 1e-9). Below opset 13 the axes are attributes."""
    if opset < 13:
        unsqueeze = helper.make_node("Unsqueeze", ["mask"], ["mu"], axes=[-1])
        sums = [helper.make_node("ReduceSum", [x], [y], keepdims=0, axes=[1]) for x, y in (("hm", "s"), ("m", "c"))]
    else:
        unsqueeze = helper.make_node("Unsqueeze", ["mask", "minus1"], ["mu"])
        sums = [helper.make_node("ReduceSum", [x, "axis"], [y], keepdims=0) for x, y in (("hm", "s"), ("m", "c"))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]),
             helper.make_node(last, ["p", "g"] if last == "LayerNormalization" else ["p"], ["h"]),
             unsqueeze, helper.make_node("Shape", ["h"], ["hs"]), helper.make_node("Expand", ["mu", "hs"], ["me"]),
             helper.make_node("Cast", ["me"], ["m"], to=TensorProto.FLOAT), helper.make_node("Mul", ["h", "m"], ["hm"]),
             *sums, helper.make_node("Clip", ["c", "eps"], ["cc"]), helper.make_node("Div", ["s", "cc"], ["y"])]
    return make_model(nodes, [_out("x", ["N", "T", 16]), helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "T"])],
                      [_out("y", ["N", 8])],
                      [init("w", scaled_normal(16, 8)), init("g", np.ones(8, np.float32)),
                       init("minus1", np.array([-1], np.int64)), init("axis", np.array([1], np.int64)),
                       init("eps", np.array(1e-9, np.float32))], opset=opset)


def test_a_masked_mean_keeps_what_its_features_are():
    """A sentence embedding (LayerNorm'd token features, mean-pooled under the attention
    mask) is values; the same mean over per-token logits is still a head's scores."""
    assert output_kinds(masked_mean("LayerNormalization")) == {"y": "values"}
    assert output_kinds(masked_mean("Identity")) == {"y": "head"}
    assert output_kinds(masked_mean("Identity", opset=11)) == {"y": "head"}
    over_features = masked_mean("LayerNormalization")  # a sum over the last axis makes something else
    over_features.graph.initializer[3].CopyFrom(init("axis", np.array([-1], np.int64)))
    assert output_kinds(over_features) == {"y": "unknown"}


@pytest.mark.parametrize("pool", ["ReduceMax", "ReduceMean"])
def test_a_taggers_frames_pooled_over_time_stay_yes_or_no(pool):
    """A sound-event tagger (PANNs): a Sigmoid per frame [N, T, C], then the max or mean
    over T, [N, C]: clip-level yes/no answers, not values because the Sigmoid had 3 axes."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["frames"]),
             helper.make_node(pool, ["frames"], ["y"], axes=[1], keepdims=0)]
    model = make_model(nodes, [_out("x", ["N", 50, 16])], [_out("y", ["N", 10])], [init("w", scaled_normal(16, 10))],
                       opset=13)
    assert output_kinds(model) == {"y": "yesno"}


def two_heads(second: str) -> onnx.ModelProto:
    """x [N, 16] -> MatMul -> Relu -> h; h -> MatMul -> logits [N, 5]; h -> MatMul -> ``second`` [N, 4]."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Relu", ["p"], ["h"]),
             helper.make_node("MatMul", ["h", "wc"], ["logits"]), helper.make_node("MatMul", ["h", "wb"], [second])]
    return make_model(nodes, [_out("x", ["N", 16])], [_out("logits", ["N", 5]), _out(second, ["N", 4])],
                      [init("w", scaled_normal(16, 32)), init("wc", scaled_normal(32, 5)), init("wb", scaled_normal(32, 4))])


@pytest.mark.parametrize(("second", "kind"), [
    ("boxes", "values"), ("bbox_regression", "values"), ("predBoxes", "values"), ("embeddings", "values"),
    ("output2", "head"), ("class_scores", "head"), ("boxing_logits", "head"),  # whole words only
    ("box_scores", "head"), ("pose_logits", "head"),  # a word of classes too: classes
])
def test_an_output_s_name_tells_where_the_graph_does_not(second, kind):
    """A Linear box regression beside the logits is a head to the graph; its name says values."""
    assert output_kinds(two_heads(second)) == {"logits": "head", second: kind}


def test_a_softmax_says_classes_whatever_the_name():
    """A depth-bin softmax (BEVDepth, LSS) is named depth: it is still class scores."""
    model = two_heads("z")
    model.graph.node.append(helper.make_node("Softmax", ["z"], ["depth"], axis=-1))
    model.graph.output[1].name = "depth"
    assert output_kinds(model) == {"logits": "head", "depth": "head"}


def test_classifiers_the_evidence_rules_must_not_catch():
    # A licence-plate reader: [N, 5 * 36] -> [N, 5, 36], one character per position
    reader = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["z"]),
              helper.make_node("Reshape", ["z", "shape"], ["y"])]
    model = make_model(reader, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 36])],
                       [init("w", scaled_normal(80, 180)), init("shape", np.array([0, 5, 36], np.int64))])
    assert output_kinds(model) == {"y": "head"}
    # CTC: log-probabilities over the classes of axis 1, then [N, C, T] -> [N, T, C]
    ctc = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
           helper.make_node("Conv", ["xt", "w"], ["c"]), helper.make_node("LogSoftmax", ["c"], ["p"], axis=1),
           helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 1])]
    model = make_model(ctc, [_out("x", ["N", 5, 16])], [_out("y", ["N", 5, 12])],
                       [init("w", scaled_normal(12, 16, 1))])
    assert output_kinds(model) == {"y": "head"}
    # A temperature: logits / sqrt(T)
    temperature = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["z"]),
                   helper.make_node("Sqrt", ["t"], ["root"]), helper.make_node("Div", ["z", "root"], ["y"])]
    model = make_model(temperature, [_out("x", ["N", 5, 16])], [_out("y", ["N", 10])],
                       [init("w", scaled_normal(80, 10)), init("t", np.full(1, 2.0, np.float32))])
    assert output_kinds(model)["y"] in SCORES
    # Concats nested deeper than the walk follows (an unrolled decoder): unknown, no recursion error
    nodes, last = [helper.make_node("Flatten", ["x"], ["h0"])], "h0"
    for i in range(400):
        nodes.append(helper.make_node("Concat", [last, "x80"], [f"h{i + 1}"], axis=0))
        last = f"h{i + 1}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    model = make_model(nodes, [_out("x", [1, 5, 16]), _out("x80", [1, 80])], [_out("y", [401, 80])], [])
    assert output_kinds(model) == {"y": "unknown"}
    # Labels say classes: a box-like [N, T, 4] with labels is scored on them
    boxes = np.zeros((4, 5, 4), np.float32)
    assert choose("auto", boxes, np.zeros((4, 5), np.int64), "values") == "accuracy"


def test_only_class_scores_get_top1_agreement_and_the_agreement_metric():
    model = detector()
    assert output_kinds(model) == {"boxes": "values", "scores": "head", "features": "values"}
    x = np.abs(np.random.default_rng(0).standard_normal((24, 5, 16))).astype(np.float32)
    diffs = {d.name: d for d in compare(model, model, dataset_of({"x": x}, model), batch=8).outputs}
    assert diffs["scores"].top1_agreement == 1.0
    assert diffs["boxes"].top1_agreement is None and diffs["features"].top1_agreement is None
    # Labels go to the first output the graph reads as classes (the scores, not the boxes before them)
    labels = np.random.default_rng(1).integers(0, 8, (24, 5))
    checked = compare(model, model, dataset_of({"x": x}, model, labels), batch=8)
    assert checked.accuracy is not None and [d.top1_agreement for d in checked.outputs] == [None, 1.0, None]
    # With no such output, labels make the first shaped as classes one
    boxes_only = onnx.ModelProto()
    boxes_only.CopyFrom(model)
    del boxes_only.graph.output[1:]
    checked = compare(boxes_only, boxes_only, dataset_of({"x": x}, boxes_only, labels % 4), batch=8)
    assert checked.accuracy is not None and checked.outputs[0].top1_agreement == 1.0
    boxes = np.zeros((4, 5, 4), np.float32)
    assert is_scores(boxes) and not is_scores(boxes, "values") and is_scores(boxes, "unknown")
    assert choose("auto", boxes, None, "values") == "relerr" and choose("auto", boxes, None, "unknown") == "agreement"
    assert choose("agreement", boxes, None, "values") == "agreement"  # asked for by name: the user knows
    topk = np.zeros((4, 3), np.float32)
    assert is_scores(topk) and not is_scores(topk, "topk")
    with pytest.raises(DataError, match=r"made by TopK \(sorted values or their indices\)"):
        choose("agreement", topk, None, "topk")


def test_a_model_this_tool_wrote_has_its_originals_kinds():
    """Our ops are of another domain: the walk stops at them ("unknown", read by shape),
    never calls them heads, and a box head's split still shows after them."""
    import exprune_onnx

    model = detector()
    res = exprune_onnx.optimize_model(model, threshold=float("-inf"), min_units=32)
    assert res.rewritten
    assert output_kinds(res.model) == output_kinds(model)
    split = chain("Relu", "MatMul", "Reshape", split=True)  # the second MatMul reads a ReLU: sparse
    identity = next(n for n in split.graph.node if n.op_type == "Identity")
    identity.CopyFrom(helper.make_node("Concat", [identity.input[0]] * 2, ["y"], axis=1))  # two maps' boxes
    rewritten = exprune_onnx.optimize_model(split, threshold=float("-inf"), sparse_relu="on")
    assert "ExPruneSparseMatMul" in [n.op_type for n in rewritten.model.graph.node]
    assert output_kinds(split) == output_kinds(rewritten.model) == {"y": "values"}


def test_calibration_on_a_box_output_budgets_its_relative_error(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(detector(), src)
    x = np.abs(np.random.default_rng(1).standard_normal((96, 5, 16))).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    args = ["optimize", str(src), "-o", str(out), "--min-units", "32", "--calibration", str(tmp_path / "d.npz"),
            "--max-drop", "0.05", "--confidence", "0", "--objective", "flops", "--score-output"]
    r = CliRunner().invoke(main, [*args, "boxes"])
    text = " ".join(r.output.split())  # the check's rows name every output's agreement, if any
    assert r.exit_code == 0 and "mean relative error <= 0.05 on output 'boxes'" in text, r.output
    assert "relative error" in text.split("Calibration", 1)[1], r.output
    r = CliRunner().invoke(main, [*args, "scores"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "answers changed <= 5% on output 'scores'" in text, r.output


def test_an_output_a_further_layer_reads_is_a_hidden_activation():
    """x -> Gemm -> Relu -> h [N, 128] (an output, and read by the next Gemm) -> Gemm -> logits
    -> Softmax -> probs: h was read as a 128-class classifier (a trial's report). The
    pre-activation g (an output too) reaches the next layer through the Relu; the logits,
    read by a Softmax only, stay class scores. A Conv's features reach the head through
    pooling and a Flatten."""
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["g"]), helper.make_node("Relu", ["g"], ["h"]),
             helper.make_node("Gemm", ["h", "w1"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"])]
    model = make_model(nodes, [_out("x", ["N", 16])],
                       [_out("g", ["N", 128]), _out("h", ["N", 128]), _out("logits", ["N", 10]),
                        _out("probs", ["N", 10])], [init("w0", scaled_normal(16, 128)), init("w1", scaled_normal(128, 10))])
    assert output_kinds(model) == {"g": "values", "h": "values", "logits": "head", "probs": "head"}
    cnn = [helper.make_node("Conv", ["x", "w0"], ["c"]), helper.make_node("Relu", ["c"], ["fmap"]),
           helper.make_node("GlobalAveragePool", ["fmap"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
           helper.make_node("Gemm", ["f", "w1"], ["y"])]
    model = make_model(cnn, [_out("x", ["N", 3, 8, 8])], [_out("fmap", ["N", 6, 8, 8]), _out("y", ["N", 10])],
                       [init("w0", scaled_normal(6, 3, 1, 1)), init("w1", scaled_normal(6, 10))])
    assert output_kinds(model) == {"fmap": "values", "y": "head"}
