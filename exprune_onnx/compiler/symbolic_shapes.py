"""Shapes from onnxruntime's symbolic shape inference, bounded in time and quiet.

It does arithmetic on symbolic dims (a padded 3x3 Conv keeps 'H'), so a residual Add over
dynamic H and W provably has the output's shape (pipeline.infer_shapes calls it where
onnx's own inference leaves dims unnamed). It needs sympy, whose expressions can grow
with the graph: on a ShuffleNet v2 exported with symbolic H and W, its Slices took 29 of
33 s, and it logged a warning a Slice ("Unable to determine if ... treat as equal"), 58
lines on one optimize run, which a user of this tool cannot act on. So:

* it gives up after ``SECONDS`` (the caller then keeps onnx's shapes, with fewer dims
  proved equal, so fewer residual groups fused: never a wrong one);
* its logger is held at ERROR while it runs;
* a model's answer is kept for the next call with the same model (a compile per trial
  of the latency objective asks again for the same original).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict

import onnx

SECONDS = 5.0
_KEPT = 4  # models whose answers are kept
_SMALL = 4096  # bytes of an initializer hashed whole: shapes, axes, indices
_cache: OrderedDict[bytes, onnx.ModelProto | None] = OrderedDict()


class _OutOfTime(Exception):
    pass


def symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` with the shapes onnxruntime's symbolic inference finds, or None when it
    cannot finish within ``SECONDS``. The caller may change what it is given."""
    key = _key(model)
    if key not in _cache:
        _cache[key] = _infer(model)
        while len(_cache) > _KEPT:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    found = _cache[key]
    if found is None:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(found)
    return out


def _key(model: onnx.ModelProto) -> bytes:
    """What the inference reads of ``model``: everything but the bytes of large weights (a
    shape it follows comes from a small constant; a VGG's 500 MB are not hashed a call)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(model.ir_version.to_bytes(8, "little"))
    g = model.graph
    for item in [*model.opset_import, *g.input, *g.output, *g.value_info, *g.node]:
        h.update(item.SerializeToString())
    for t in g.initializer:
        small = t.ByteSize() <= _SMALL
        h.update(t.SerializeToString() if small else f"{t.name}:{t.data_type}:{list(t.dims)}".encode())
    return h.digest()


def _infer(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """Its public ``infer_shapes`` writes a file into the working directory when it gives
    up, so its steps are run here instead; auto_merge (assume unequal symbols equal) stays
    off."""
    log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        ssi = SymbolicShapeInference(2**31 - 1, auto_merge=False, guess_output_rank=False, verbose=0)
        deadline = time.perf_counter() + SECONDS
        ssi.dispatcher_ = {op: _bounded(infer, deadline) for op, infer in ssi.dispatcher_.items()}
        ssi._preprocess(model)
        complete = False
        while ssi.run_:
            complete = ssi._infer_impl()
        ssi._update_output_from_vi()
        return ssi.out_mp_ if complete else None
    except Exception:  # _OutOfTime, or a model it cannot follow
        return None
    finally:
        log.setLevel(level)


def _bounded(infer, deadline: float):
    def run(node):
        if time.perf_counter() > deadline:
            raise _OutOfTime
        return infer(node)
    return run
