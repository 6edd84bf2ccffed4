"""Sizes for an input's open dims past its batch axis when no data and no ``--input-shape``
gives them: the example the error shows, and the sizes ``optimize`` and ``verify`` run at
and ``inspect`` counts FLOPs at (224 for an image's spatial dims, 128 for any other, the
channels a Conv's weight takes for an open channel dim it reads; the batch keeps its name
or number).

A model exported to take any image size ([1, 3, H, W]) or any sequence length
([N, T, C]) is what most exporters write; with nothing to run it on, it is run at a size
most such models take, and the command says so: the check, the latency objective's choices
and the FLOPs are those of that size, and the written model keeps its open dims.
"""

from __future__ import annotations

import ast
import operator

import onnx

from .feeds import InputSpec, _show, input_dims, model_inputs, resolved_dims, state_axes

IMAGE_SIDE = 224  # ImageNet's crop, which most exported CNNs were trained at
OTHER_SIZE = 128


def _fixed(d, batch: bool = False) -> bool:
    """A size: past the batch axis, 0 is one (an empty cache); a batch of 0 is none."""
    return isinstance(d, int) and d >= (1 if batch else 0)


def _image_like(dims: list) -> bool:
    """NCHW or NHWC with a few channels and both spatial dims open; a KV cache fixes its
    head size (and may have as few heads as an image has channels)."""
    if len(dims) != 4:
        return False
    nchw = _fixed(dims[1]) and dims[1] <= 4 and not _fixed(dims[2]) and not _fixed(dims[3])
    nhwc = _fixed(dims[3]) and dims[3] <= 4 and not _fixed(dims[1]) and not _fixed(dims[2])
    return nchw or nhwc


def _weight_shapes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                shapes[node.output[0]] = list(value.dims)
    return shapes


def conv_channels(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """input name -> (axis, channels) for the inputs a Conv reads directly, or through one
    Transpose (an NHWC export), whose weight is a constant: the channels are its second dim
    times the group count, what the model can take and nothing else."""
    graph = model.graph
    weights = _weight_shapes(graph)
    inputs = {vi.name for vi in model_inputs(model)}
    perms = {n.output[0]: (n.input[0], list(next((a.ints for a in n.attribute if a.name == "perm"), [])))
             for n in graph.node if n.op_type == "Transpose" and n.input and n.input[0] in inputs}
    found = {}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or len(weights.get(node.input[1], [])) < 3:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        channels = weights[node.input[1]][1] * max(group, 1)
        source, axis = node.input[0], 1
        if source in perms and len(perms[source][1]) > 1:
            source, axis = perms[source][0], perms[source][1][1]
        if source in inputs and channels > 0:
            found.setdefault(source, (axis, channels))
    return found


def _open(model: onnx.ModelProto, spec: InputSpec | None):
    """(input, its dims with ``spec``'s numbers, an open channel dim a Conv reads filled in)
    for the inputs with an open dim past the first."""
    channels = conv_channels(model)
    for vi in model_inputs(model):
        dims = resolved_dims(vi, spec)
        if all(_fixed(d) for d in dims[1:]):
            continue
        axis, count = channels.get(vi.name, (0, 0))
        if 0 < axis < len(dims) and not _fixed(dims[axis]):
            dims = [*dims[:axis], count, *dims[axis + 1:]]
        yield vi, dims


def _batch_name(vi: onnx.ValueInfoProto) -> str:
    batch = str(input_dims(vi)[0] or "")
    return batch if batch.isidentifier() else "N"  # parse_input_shape takes a name, not "2*N"


def shape_example(model: onnx.ModelProto, spec: InputSpec | None = None) -> str:
    """``--input-shape`` options for every input with an open dim, built from its known dims
    (the batch keeps its name: a number would fix it)."""
    parts = []
    states = state_axes(model)
    for vi, dims in _open(model, spec):
        fill = IMAGE_SIDE if _image_like(dims) else OTHER_SIZE
        shown = [str(d) if _fixed(d, i == 0) else (_batch_name(vi) if i == 0 else str(fill))
                 for i, d in enumerate(dims)]
        if vi.name in states:  # a recurrent state's batch stays the batch's name (128 fixed it there)
            shown[states[vi.name]] = str(input_dims(vi)[states[vi.name]])
        parts.append(f"--input-shape {vi.name}:{','.join(shown)}")
    return " ".join(parts)


def assumed_shapes(model: onnx.ModelProto, spec: InputSpec | None = None) -> dict[str, tuple]:
    """``--input-shape`` entries (name -> dims) for the inputs whose open dims past the first
    ``spec`` leaves open. A dim name keeps one size across inputs: the one ``spec`` gives it
    in another input (a sequence length given for input_ids reaches attention_mask), else an
    image's if an image has it, else 128. Nothing is assumed for an input of five axes or
    more (a video's 128 frames of 224 x 224 run out of memory) or with a dim named as a
    batch is (an adjacency [N, N]): those still ask for data or --input-shape."""
    batches = {input_dims(vi)[0] for vi in model_inputs(model) if input_dims(vi) and isinstance(input_dims(vi)[0], str)}
    sizes: dict[str, int] = {}
    for vi in model_inputs(model):  # the sizes spec gives to names
        for own, given in zip(input_dims(vi), resolved_dims(vi, spec)):
            if isinstance(own, str) and _fixed(given):
                sizes.setdefault(own, given)
    given = set(sizes)
    found = [(vi, dims) for vi, dims in _open(model, spec)
             if len(dims) < 5 and not any(isinstance(d, str) and d in batches for d in dims[1:])]
    for _vi, dims in sorted(found, key=lambda item: not _image_like(item[1])):  # images first
        fill = IMAGE_SIDE if _image_like(dims) else OTHER_SIZE
        for d in dims[1:]:
            if isinstance(d, str):
                sizes.setdefault(d, fill)
    # A dim written as arithmetic of named ones (a mask's "T + 1" beside a sequence of T) follows them.
    sizes.update({d: v for _vi, dims in found for d in dims[1:]
                  if isinstance(d, str) and not d.isidentifier() and d not in given
                  for v in [_evaluated(d, sizes)] if v is not None})
    out = {}
    for vi, dims in found:
        fill = IMAGE_SIDE if _image_like(dims) else OTHER_SIZE
        rest = tuple(d if _fixed(d) else sizes.get(d, fill) if isinstance(d, str) else fill for d in dims[1:])
        out[vi.name] = (dims[0] if _fixed(dims[0], batch=True) else _batch_name(vi), *rest)
    return out


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _evaluated(expr: str, sizes: dict[str, int]) -> int | None:
    """``expr`` ("T + 1", "2*T") with the sizes of the names in it: integers, + - * // only;
    None for anything else, or a size under 1."""
    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and _fixed(sizes.get(node.id)):
            return sizes[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if left is not None and right is not None and not (isinstance(node.op, ast.FloorDiv) and right == 0):
                return _OPS[type(node.op)](left, right)
        return None

    try:
        result = value(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None
    return result if result is not None and result > 0 else None


def assumed_text(model: onnx.ModelProto, assumed: dict[str, tuple]) -> str:
    """Which inputs took which assumed size, e.g. "'x' [1, 3, H, W] as [1, 3, 224, 224]"."""
    dims = {vi.name: input_dims(vi) for vi in model_inputs(model)}
    return ", ".join(f"'{name}' {_show(dims.get(name, []))} as {_show(list(shape))}" for name, shape in assumed.items())


def assumed_note(model: onnx.ModelProto, assumed: dict[str, tuple], shapes_given: bool, data_flag: str) -> str:
    """The note of sizes taken for open dims without data (``data_flag`` names the option
    that gives data): with ``--input-shape`` given, a size may be the one it gives a dim of
    the same name in another input, and "no --input-shape" would be untrue."""
    if shapes_given:
        return (f"no {data_flag}, and --input-shape leaves open dims: took {assumed_text(model, assumed)} (a size "
                "most such models take, or the one --input-shape gives a dim of that name in another input)")
    return f"no {data_flag} and no --input-shape for open dims: took {assumed_text(model, assumed)} (a size most " \
        "such models take)"
