"""Which node wrote the exact zeros a tensor carries, looking through the ops that keep them.

Skipping zero inputs is exact whatever wrote them; the zero-input passes only look for
readers of tensors likely to hold many, and the latency objective decides whether
skipping them pays. A ReLU's zeros often reach a MatMul or Conv through ops that move
values without changing them, or keep a zero wherever a whole window is zero:

    Relu -> MaxPool -> AveragePool(1x1) -> Flatten -> Gemm      (PyTorch VGG, AlexNet heads)
    Relu -> MaxPool -> Transpose -> Reshape -> MatMul           (tf2onnx Keras VGG heads)
    Relu -> Dropout / Identity -> Conv
    Relu -> Pad (zeros, reflect, edge) / Resize (nearest) -> Conv   (padding_mode, UNet up-paths)
    Relu -> DepthToSpace -> Conv                                 (PixelShuffle: super-resolution)
    Relu -> LRN -> MaxPool -> Conv                               (Caffe's AlexNet, GoogLeNet)
    Concat -> Reshape -> Transpose -> Reshape -> Split / Slice -> Conv  (ShuffleNet's channel
                                                                   shuffle and split)

A MaxPool of non-negative values is zero exactly where its whole window is; a 1x1
AveragePool (PyTorch's AdaptiveAvgPool2d when the map already has the size asked for)
moves values, as do a Pad that copies the border or fills it with zeros and a nearest
Resize. Ops that combine values (a larger AveragePool, GlobalAveragePool, a linear
Resize, Add) are not looked through. Where a reshape or a Split moves a value, a zero
goes with it: the reader skips it in its own layout, so any reader may look through them.
A Concat keeps each input's zeros in its own part: ``zero_writers`` follows each of its
inputs for a Conv (SqueezeNet's fire modules, Inception's branches and DenseNet's blocks
feed their convs so).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..rules import chain

# Ops whose outputs hold some of their first input's values, moved but unchanged (the other
# inputs give shapes, axes or sizes).
MOVES = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Split", "Slice", "DepthToSpace",
                   "SpaceToDepth"})
_LIMIT = 8  # ops looked through at most: real exports have two to four


def keeps_zeros(node: gs.Node) -> bool:
    """Whether each of ``node``'s outputs (a MaxPool's Indices and a Dropout's mask aside) is
    zero wherever the values it is made of from its first input are all zero, and takes no
    other tensor's values."""
    if not chain.is_default_domain(node) or not node.inputs or not node.inputs[0].name:
        return False
    # A MaxPool's Indices or a Dropout's mask, used or not, leaves the first output as it is.
    if node.op in ("Identity", "Dropout", "MaxPool"):
        return True
    if node.op == "AveragePool":
        return all(int(k) == 1 for k in node.attrs.get("kernel_shape", [0]))
    if node.op == "Pad":  # copies (reflect, edge, wrap) or a border of zeros
        return node.attrs.get("mode", "constant") != "constant" or _zero_fill(node)
    if node.op in ("Resize", "Upsample"):  # nearest copies values; linear or cubic mixes them
        return node.attrs.get("mode", "nearest") == "nearest"
    if node.op == "LRN":  # x / (bias + ...)^beta: zero where x is, unless bias 0 makes 0 / 0
        return float(node.attrs.get("bias", 1.0)) > 0
    return node.op in MOVES


def _zero_fill(pad: gs.Node) -> bool:
    """Whether a constant Pad fills with 0: no value given (the default), or a 0."""
    value = pad.inputs[2] if len(pad.inputs) > 2 and pad.inputs[2].name else None  # opset 11 on
    if value is None:
        return float(pad.attrs.get("value", 0.0)) == 0.0
    return isinstance(value, gs.Constant) and value.values.size == 1 and float(value.values.reshape(-1)[0]) == 0.0


def zero_writer(x: gs.Tensor) -> gs.Node | None:
    """The node whose output ``x`` carries unchanged in its zeros, looking up through ops
    that keep them; None for a graph input or a constant."""
    producer = x.inputs[0] if x.inputs else None
    for _ in range(_LIMIT):
        if producer is None or not keeps_zeros(producer):
            return producer
        src = producer.inputs[0]
        producer = src.inputs[0] if src.inputs else None
    return producer


def zero_writers(x: gs.Tensor, _depth: int = 0) -> list[gs.Node | None]:
    """``zero_writer``'s node, or where that is a Concat, the writers of each of its inputs
    in turn (the Concat itself past ``_LIMIT`` levels of them: DenseNet nests one a layer)."""
    writer = zero_writer(x)
    if writer is None or writer.op != "Concat" or not chain.is_default_domain(writer) or _depth >= _LIMIT \
            or not writer.inputs:
        return [writer]
    return [w for t in writer.inputs for w in zero_writers(t, _depth + 1)]
