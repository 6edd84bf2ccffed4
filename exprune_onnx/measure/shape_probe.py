"""FLOPs counted at the shapes of real inputs, with one onnxruntime run for what shape
inference cannot size.

A transformer exported from PyTorch splits its heads with a Reshape to a shape built
from Shape/Gather/Concat at run time: ONNX shape inference (and onnxruntime's symbolic
one) leaves every tensor after it unsized, so its attention MatMuls went uncounted and
no share of FLOPs saved could be given. Running the model once on real inputs, with
those nodes' tensors made graph outputs, sizes them. Only the main graph is probed: a
tensor inside an If/Loop/Scan body cannot be a graph output.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..compiler import functions
from ..compiler.graphutil import all_graphs
from ..io.feeds import with_input_shapes
from .flops import batch_of, counted, node_flops, uncovered


def count_at_run_time(model: onnx.ModelProto, options, data) -> None:
    """``options.runtime_flops`` counted at the shapes of the data's first samples, for the
    nodes shape inference cannot size (one run of the original on them)."""
    options.runtime_flops = runtime_flops(model, data.first(1)) or None


def count_as_inspect(model: onnx.ModelProto, options) -> dict:
    """FLOPs counted as `inspect` counts them, from the command line and from Python: on
    one seeded random input, open dims that ``options.input_shapes`` leaves open taken as
    optimize takes them without data, unless the model cannot run there (a head sized for
    32 x 32 images), where shape inference's count stands. Returns the sizes taken, which
    ``options.input_shapes`` then holds too. (A batch too large to feed, as --input-shape
    may fix one, leaves the count to shape inference as well.)"""
    from ..io.batch_memory import feedable
    from ..io.data import random_dataset
    from ..io.feeds import InputSpec
    from ..io.open_dims import assumed_shapes
    from ..io.open_values import assumed_values
    from ..runtime import inference_session

    assumed = assumed_shapes(model, InputSpec(dict(options.input_shapes)))
    spec = InputSpec({**options.input_shapes, **assumed})
    spec.values.update(assumed_values(model, spec))  # a length input at full length, as optimize takes it
    try:
        one = feedable(model, random_dataset(model, 1, 0, spec))
        if assumed:
            inference_session(model).run(None, one.first(1))
    except Exception:  # noqa: BLE001 - whatever the reason, no count can be made at these sizes
        return {}
    options.input_shapes = {**options.input_shapes, **assumed}
    count_at_run_time(model, options, one)
    return assumed


def runtime_flops(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """FLOPs per sample of each counted main-graph node, keyed by its first output
    (``flops.model_flops`` takes them as ``seen``), at the shapes of ``feed`` (one
    batch): from shape inference with every input dim fixed, and for what that leaves
    unsized, from one onnxruntime run of ``model`` on ``feed``. Fixed dims also size a
    batch folded into another axis that inference lost the symbol of ([N*T, C] after a
    Reshape to -1), which with the batch open counted as one row. A model of 1 GiB of
    weights or more is not run (a session would hold them all once more: the pipeline
    infers such a model's shapes on its skeleton too); a failed run leaves its nodes out.
    A main-graph If is keyed by its first output too: the FLOPs of the branch this batch
    takes (a merged decoder's two branches are never both run)."""
    from ..compiler.pipeline import infer_shapes
    from ..io.bigmodel import BIG_MODEL_BYTES, import_graph, tensor_nbytes

    flat = functions.inline(model)
    names = {i.name for i in model.graph.input}
    feed = {k: v for k, v in feed.items() if k in names}
    shapes = {k: tuple(v.shape) for k, v in feed.items()}
    graph = import_graph(flat, lambda m: infer_shapes(with_input_shapes(m, shapes)))
    batch = batch_of(graph)
    nodes = [n for n in graph.nodes if counted(n) and n.outputs]
    # With every input dim fixed, an unsized first axis is no batch axis but one the batch
    # was folded into ([T*B, C] in a legacy-exported attention at batch 1), which the count
    # would take for the batch: the run sizes it too.
    missing = [n for n in nodes if node_flops(n, batch) is None
               or isinstance(batch, int) and not _sized(n.outputs[0].shape)]
    branches = [n for n in graph.nodes if n.op == "If" and n.inputs and n.outputs]
    wanted = sorted({t.name for n in missing for t in [*n.inputs, n.outputs[0]]
                     if isinstance(t, gs.Variable) and t.name and t.name not in names}
                    | {n.inputs[0].name for n in branches if isinstance(n.inputs[0], gs.Variable)} - names)
    values = {}
    if wanted and sum(tensor_nbytes(t) for t in flat.graph.initializer) < BIG_MODEL_BYTES:
        try:
            (values,) = tensor_values(flat, wanted, [feed])
        except Exception:  # noqa: BLE001 - any failure leaves these nodes as shape inference left them
            values = {}
        tensors = graph.tensors()
        for name, value in values.items():
            tensors[name].shape = list(np.shape(value))
    counts = {n.outputs[0].name: node_flops(n, batch) for n in nodes}
    for n in branches:  # only the branch the data takes: both are not run
        cond = n.inputs[0].values if isinstance(n.inputs[0], gs.Constant) else values.get(n.inputs[0].name,
                                                                                         feed.get(n.inputs[0].name))
        if cond is not None and np.size(cond) == 1:
            body = n.attrs["then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"]
            taken = [m for g in all_graphs(body) for m in g.nodes]
            inside = [node_flops(m, batch) for m in taken if counted(m)]
            # (An uncovered product, a quantized branch's, leaves the If to model_flops, which counts it as such.)
            counts[n.outputs[0].name] = None if None in inside or any(uncovered(m) for m in taken) else sum(inside)
    return {name: flops for name, flops in counts.items() if flops is not None and name}


def _sized(shape) -> bool:
    return shape is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)


def tensor_values(model: onnx.ModelProto, names: list[str], feeds: list[dict], threads: int = 1) -> list[dict]:
    """The values of tensors ``names`` (of any type) when ``model`` runs on each of ``feeds``."""
    from .timing import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    exposed = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in exposed)
    sess = session(probe, threads)
    return [dict(zip(names, sess.run(names, f))) for f in feeds]
