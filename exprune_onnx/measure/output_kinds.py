"""Which outputs are not class scores on their last axis, read from the graph.

An array's shape alone cannot tell class scores from other values: a detector's box
regression [N, anchors, 4] or an encoder's hidden states [N, T, 768] look like the
per-position logits of a language model [N, T, V], and a sorted TopK [N, k] like a
classifier's [N, C] (its arg-max is always 0, so top-1 agreement would be 100% whatever
changed). ``output_kinds`` walks back from each output, through ops that keep what the
last axis means (casts, reshapes, transposes, slices, gathers, a constant bias or scale,
a softcap's Tanh, a mask's Where, a sum, mean or max over other axes, a product with or
quotient by an attention mask's values: a masked mean over tokens), to an op that tells:

* ``topk``: TopK's values or indices;
* ``yesno``: a Sigmoid on one or two axes ([N], [N, 1], [N, C]) reached through ops that
  keep its values (not a scale or shift: sigmoid * 100 is a bounded regression): a binary
  or multi-label classifier, each score a yes or a no (label_layout.py reads it so
  without labels too);
* ``values``: a normalisation (LayerNorm or RMSNorm ops, or a division by the root of a
  reduction of the same tensor: a LayerNorm, an RMSNorm or an embedding's L2 norm
  written out), a Sigmoid on three axes or more (DETR's boxes), a Tanh straight on a
  Gemm/MatMul (+ bias: BERT's pooler; a softcap divides first), a Concat over feature
  maps of Reshapes to fours (SSD's boxes; one such Reshape alone may be a 4-class
  tagger's);
* ``values`` too: an output that a further layer (MatMul, Gemm, Einsum, Conv) reads,
  directly or through an activation, pooling or layout op: a hidden activation
  ([N, 128] after a ReLU looks like a 128-class classifier), as class scores end a
  network;
* ``head``: a MatMul/Gemm/Einsum/Conv or a Softmax, where the walk stops;
* ``unknown``: anything else.

Only ``topk``, ``values`` and ``yesno`` overrule the shape (metrics.is_scores), and only evidence
that no classifier shows makes ``values``. Where the graph says nothing clear (a head or
an unknown op), the output's name may: ``boxes``, ``bbox_regression``, ``embeddings``,
``features`` (a word of VALUE_WORDS) are values; the rest is read by its shape.
"""

from __future__ import annotations

import contextlib
import re

import onnx
import onnx.inliner
from onnx import TensorProto, numpy_helper

_STOP = {"MatMul", "Gemm", "Einsum", "Conv", "ConvTranspose", "Softmax", "LogSoftmax"}
_NORMS = {"LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
          "SkipSimplifiedLayerNormalization", "RMSNormalization"}
# One data input, in position 0, whose last axis the output keeps.
_PASS = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten", "Dropout", "Slice", "Gather", "GatherND",
         "GatherElements", "Transpose", "Tanh", "Neg", "Clip", "Reshape"}
_SCALE = {"Add", "Sub", "Mul", "Div"}  # with a constant operand: a bias, a temperature
# Ops the walk passes that change values, not only their layout: past one, a Sigmoid's
# output is no probability any more. (A Clip keeps it one, as clamp(eps, 1 - eps) does;
# one to other bounds leaves values layout_of does not read as probabilities.)
_RESCALE = _SCALE | {"Neg", "Tanh"}
BOX = 4  # coordinates per box
# What a masked mean multiplies by and divides by: an integer or boolean input (an attention
# mask) or a comparison's result, made float, repeated and summed by these.
_MASK_PATH = {"Cast", "CastLike", "Unsqueeze", "Expand", "Reshape", "Squeeze", "Identity", "ReduceSum", "Clip",
              "Max", "Transpose"}
_COMPARISONS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or"}
_NOT_FLOAT = {TensorProto.BOOL, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
              TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64}
# Reductions that keep the last axis when they reduce others: pooling over tokens or positions.
_POOLS = {"ReduceSum", "ReduceMean", "ReduceMax"}
# Words in an output's name that say values, not class scores (each a whole word of it:
# pred_boxes, bboxRegression, last_hidden_state, sentence_embedding).
VALUE_WORDS = {"box", "boxes", "bbox", "bboxes", "coord", "coords", "coordinates", "landmark", "landmarks", "keypoint",
               "keypoints", "kpts", "embedding", "embeddings", "emb", "embed", "feature", "features", "feat", "feats",
               "hidden", "regression", "reg", "depth", "disparity", "offset", "offsets", "delta", "deltas", "loc",
               "pose", "flow", "latent", "recon", "reconstruction"}
CLASS_WORDS = {"logit", "logits", "score", "scores", "prob", "probs", "probability", "probabilities", "cls", "class",
               "classes", "conf", "confidence", "label", "labels"}
DEPTH = 16  # Concats within Concats followed: an unrolled decoder may nest hundreds
ROOT_STEPS = 6  # producers looked back through for a norm's root and reduction
_LAYERS = {"MatMul", "Gemm", "Einsum", "Conv", "ConvTranspose"}
# Ops between a hidden activation and the layer that reads it: activations, pooling, layout.
_TO_A_LAYER = {"Relu", "LeakyRelu", "PRelu", "Clip", "BatchNormalization", "MaxPool", "AveragePool",
               "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Identity", "Dropout",
               "Squeeze", "Unsqueeze", "Cast"}
FEED_STEPS = 8  # ops followed forward from an output to a layer that reads it


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Each graph output's kind: ``head``, ``topk``, ``values``, ``yesno`` or ``unknown``."""
    from ..io.bigmodel import SHAPES_STUB_BYTES, serializable, skeleton

    try:  # every function inlined: the op that tells may be in any
        flat = onnx.inliner.inline_local_functions(model) if model.functions and serializable(model) else model
    except Exception:  # noqa: BLE001 - the kinds only refine what the shapes say
        flat = model
    light = skeleton(flat, stub_from=SHAPES_STUB_BYTES)  # ranks and small constants (shapes, axes) are all the walk needs
    given = list(light.graph.value_info)
    del light.graph.value_info[:]  # inferred afresh: a graph editor may have left stale entries
    with contextlib.suppress(Exception):  # without shapes fewer ops tell, none tells wrongly
        light = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    known = {v.name for v in [*light.graph.value_info, *light.graph.output]}
    # Past an op inference does not know (ours), the model's own entries are all there is.
    light.graph.value_info.extend(v for v in given if v.name not in known)
    walk = _Walk(light.graph)
    return {name: _named(name, kind, walk.stops.get(name)) for name, kind in walk.kinds().items()}


def _named(name: str, kind: str, stop: str | None) -> str:
    """``kind``, or ``values`` where the graph tells nothing and the output's name does: a
    Linear box regression beside a classifier's logits looks like a second classifier.
    A Softmax says classes whatever the name (a depth-bin softmax), as do names that say
    so too (box_scores, pose_logits)."""
    if kind not in ("head", "unknown") or stop in ("Softmax", "LogSoftmax"):
        return kind
    return "values" if named_as_values(name) else kind


def named_as_values(name: str) -> bool:
    """Whether a whole word of ``name`` says values (VALUE_WORDS) and none says classes."""
    words = set(re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()))
    return bool(words & VALUE_WORDS) and not words & CLASS_WORDS


def _dims(v: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]


class _Walk:
    """The walk over one graph (an If branch gets its own, with the outer shapes)."""

    def __init__(self, graph: onnx.GraphProto, outer_shapes: dict | None = None):
        self.graph = graph
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in set(node.input):
                self.consumers.setdefault(name, []).append(node)
        self.constants = {t.name for t in graph.initializer} | {
            n.output[0] for n in graph.node if n.op_type == "Constant"}
        self.masks = {v.name for v in graph.input if v.type.tensor_type.elem_type in _NOT_FLOAT}
        self.values = {t.name: t for t in graph.initializer if len(t.dims) <= 1}
        self.values.update((n.output[0], a.t) for n in graph.node if n.op_type == "Constant"
                           for a in n.attribute if a.name == "value")
        self.shapes = dict(outer_shapes or {})
        self.shapes.update((v.name, _dims(v)) for v in [*graph.input, *graph.value_info, *graph.output]
                           if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"))
        self.steps = 0
        self.stop: str | None = None  # the op the current walk stopped at (_STOP)
        self.stops: dict[str, str | None] = {}

    def kinds(self) -> dict[str, str]:
        """Each output's kind; ``stops`` then holds the op each walk stopped at, if any."""
        out = {}
        for o in self.graph.output:
            self.stop = None
            out[o.name] = self.kind(o.name)
            if out[o.name] in ("head", "unknown") and self._read_by_a_layer(o.name):
                out[o.name], self.stop = "values", None
            self.stops[o.name] = self.stop
        return out

    def _read_by_a_layer(self, name: str) -> bool:
        """Whether a layer reads ``name``, directly or through _TO_A_LAYER ops."""
        todo, seen = [name], set()
        for _ in range(FEED_STEPS):
            nodes = [n for t in todo for n in self.consumers.get(t, []) if id(n) not in seen]
            if any(n.op_type in _LAYERS and n.domain in ("", "ai.onnx") for n in nodes):
                return True
            seen.update(id(n) for n in nodes)
            todo = [o for n in nodes if n.op_type in _TO_A_LAYER for o in n.output]
        return False

    def kind(self, name: str, depth: int = 0, rescaled: bool = False) -> str:
        """The kind of ``name``; ``depth``: the Concats it is an input of (there, a Reshape
        into fours is a feature map's boxes: alone it may be a 4-class tagger);
        ``rescaled``: a scale or shift after it (through a Concat or an If)."""
        ranks = [len(self.shapes[name])] if name in self.shapes else []
        pooled = False  # past a pool, the Sigmoid's own axes are not the output's
        while self.steps < 256:  # bounded: a malformed graph may loop, a Concat may fan out
            self.steps += 1
            node = self.producer.get(name)
            if node is None:
                return "unknown"
            if node.op_type == "Sigmoid" and node.domain in ("", "ai.onnx") and name in self.shapes:
                # On three axes or more, here or in the output (DETR's boxes): values. On
                # fewer, read as is: a yes or no per class; scaled or shifted: unknown. A
                # tagger's frames [N, T, C] pooled to [N, C] (max or mean) are yes/no too.
                ranks += [] if pooled else [len(self.shapes[name])]
                return "values" if max(ranks) >= 3 else "unknown" if rescaled else "yesno"
            told = self._tells(node, name, depth, rescaled)
            if told is not None:
                return told
            rescaled |= node.op_type in _RESCALE
            pooled |= node.op_type in _POOLS
            name = self._through(node, name)
            if name is None:
                return "unknown"
        return "unknown"

    def _tells(self, node: onnx.NodeProto, name: str, depth: int, rescaled: bool) -> str | None:
        op = node.op_type
        if op in _NORMS:  # onnxruntime's fused ones are in its own domain
            return "values"
        if node.domain not in ("", "ai.onnx"):
            return "unknown"  # our own ops among them: never taken for a head
        if op in ("Div", "Mul") and self._normalises(node):
            return "values"  # a norm written out: LayerNorm, RMSNorm, an embedding's L2
        if op in _STOP:
            self.stop = op
            return "head"
        if op == "TopK":
            return "topk"
        if op == "Tanh" and self._straight_from_a_layer(node.input[0]):
            return "values"  # a pooler (BERT's pooler_output); a softcap divides first
        if depth and op == "Reshape" and self._into_boxes(node.input[0], name):
            return "values"
        if op == "Concat":
            return self._concat(node, name, depth, rescaled)
        if op == "If":
            branch = next((a.g for a in node.attribute if a.name == "then_branch"), None)
            if branch is None:
                return "unknown"
            return _Walk(branch, self.shapes).kind(branch.output[list(node.output).index(name)].name, 0, rescaled)
        return None

    def _through(self, node: onnx.NodeProto, name: str) -> str | None:
        """The input of ``node`` whose last axis ``name`` keeps, or None."""
        if node.op_type in _SCALE:
            return self._one_live_input(node)
        if node.op_type == "Where" and len(node.input) == 3:  # a mask: where(cond, x, -inf)
            return node.input[1] if node.input[2] in self.constants else node.input[2]
        if node.op_type in _PASS and node.input:
            return node.input[0]
        if node.op_type in _POOLS and self._keeps_last_axis(node):
            return node.input[0]  # a mean over tokens: each feature is what it was
        return None

    def _keeps_last_axis(self, node: onnx.NodeProto) -> bool:
        """Whether a reduction reduces axes other than the last only (none given: all)."""
        rank = len(self.shapes.get(node.input[0]) or [])
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1] in self.values:
            axes = numpy_helper.to_array(self.values[node.input[1]]).reshape(-1).tolist()
        return bool(rank and axes) and all(int(a) % rank != rank - 1 for a in axes)

    def _from_a_mask(self, name: str) -> bool:
        """Whether ``name`` is a mask (an integer or boolean input, or a comparison) made
        float, repeated or summed: what a masked mean multiplies and divides by."""
        for _ in range(2 * ROOT_STEPS):
            if name in self.masks:
                return True
            node = self.producer.get(name)
            if node is not None and node.op_type in _COMPARISONS:
                return True
            if node is None or node.op_type not in _MASK_PATH or not node.input:
                return False
            name = node.input[0]
        return False

    def _straight_from_a_layer(self, name: str) -> bool:
        """Whether ``name`` is a Gemm/MatMul's output, or that plus a constant bias."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Add" and len(node.input) == 2:
            node = self.producer.get(self._one_live_input(node))
        return node is not None and node.op_type in ("Gemm", "MatMul")

    def _one_live_input(self, node: onnx.NodeProto) -> str | None:
        """``node``'s one input that is not a constant (a bias's, a scale's) nor a mask's
        (a masked mean's weights and count), or None."""
        live = [i for i in node.input if i not in self.constants and not self._from_a_mask(i)]
        return live[0] if len(live) == 1 else None

    def _normalises(self, node: onnx.NodeProto) -> bool:
        """x / r or x * (1 / r) where r is a root of a reduction of x: (x - mean) / sqrt(var
        + eps), x * rsqrt(mean(x^2) + eps), x / max(||x||, eps). A written-out softmax
        divides by a sum without a root; a temperature's root reduces nothing."""
        pairs = [(node.input[0], node.input[1])] if node.op_type == "Div" else \
            [(node.input[0], node.input[1]), (node.input[1], node.input[0])]
        for x, r in pairs if len(node.input) == 2 else []:
            above = self._above(r, ROOT_STEPS)
            if not any(n.op_type in ("Sqrt", "ReduceL2") for n in above):
                continue
            if any(n.op_type.startswith("Reduce") and x in self._tensors_above(n.input[0], ROOT_STEPS)
                   for n in above):
                return True
        return False

    def _above(self, name: str, steps: int) -> list[onnx.NodeProto]:
        """The nodes ``name`` is computed by, up to ``steps`` producers back."""
        out, todo = [], [name]
        for _ in range(steps):
            nodes = [self.producer[t] for t in todo if t in self.producer]
            out += nodes
            todo = [i for n in nodes for i in n.input if i and i not in self.constants]
        return out

    def _tensors_above(self, name: str, steps: int) -> set[str]:
        return {name} | {i for n in self._above(name, steps) for i in n.input}

    def _into_boxes(self, before: str, after: str) -> bool:
        """A Reshape to [.., 4] from a feature map's [.., A * 4] or [.., A, 4] (torchvision)."""
        a, b = self.shapes.get(before), self.shapes.get(after)
        if not (a and b and a[-1] and b[-1] == BOX and a[-1] % BOX == 0):
            return False
        return a[-1] > BOX or len(a) > len(b)  # anchors on the last axis, or their own axis merged away

    def _concat(self, node: onnx.NodeProto, name: str, depth: int, rescaled: bool) -> str:
        """A Concat along another axis than the last: what all its inputs are, if they agree."""
        rank = len(self.shapes[name]) if name in self.shapes else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        if rank is None or axis is None or axis in (-1, rank - 1) or depth >= DEPTH:
            return "unknown"
        kinds = {self.kind(i, depth + 1, rescaled) for i in node.input if i}
        return kinds.pop() if len(kinds) == 1 else "unknown"
