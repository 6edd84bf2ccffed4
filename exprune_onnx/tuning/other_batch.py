"""The written model timed once more at a second batch, where the model's batch is open and
the latency objective chose at batch 1 (``--latency-batch`` left out).

A rewrite faster at one batch can be slower at another. A zero-input MatMul reads each row
of its input alone, where onnxruntime's dense one shares every weight across the rows of
a batch: a trial's 784-1024-1024-512-10 MLP, chosen at batch 1, ran 1.24x slower than the
original at batch 8. Timing every decision at two batches would double the objective's
time, so the choice stands and the run says, with the two times, when it is slower at
``BATCH`` (report/advice.py), naming ``--latency-batch`` to choose at the batch served.
"""

from __future__ import annotations

import time

import onnx

from ..io.data import Dataset
from .pairs import session, time_pair, timing_feeds

BATCH = 8  # a server's batch, as the reports use beside batch 1
SLOWER = 0.02  # over this much slower at BATCH: warned of
FEEDS_HERE = 3  # of the objective's seeded batches: a check of one model, not a choice among many
PASS_SECONDS = 0.4  # about this long per model, at least two passes


def time_other_batch(original: onnx.ModelProto, written: onnx.ModelProto, choice, data: Dataset, seed: int) -> None:
    """Time ``written`` (the model the run writes) against ``original`` at ``BATCH`` on
    ``data``, with the choice's threads; sets ``choice.other_batch`` to (batch, original
    ms, optimised ms). A model that cannot run at ``BATCH`` though its inputs leave the
    batch open (a Reshape to a fixed batch inside, as exports often have) is left as
    chosen, untimed there: no batch but the one chosen at runs it."""
    try:
        feeds = timing_feeds(data, BATCH, seed)[:FEEDS_HERE]
        sess = session(original, choice.threads)
        names = [o.name for o in original.graph.output]
        sess.run(names, feeds[0])  # warm up, then one run sizes the passes
        start = time.perf_counter()
        sess.run(names, feeds[1])
        seconds = time.perf_counter() - start
        # As the objective's passes, but from 2: a large CNN's batch of 8 takes seconds.
        passes = int(min(max(PASS_SECONDS / (seconds * len(feeds)), 2), 200))
        del sess
        optimized_ms, original_ms = time_pair(written, original, feeds, choice.threads, passes)
    except Exception:  # noqa: BLE001 - any failure at this batch is the model's own, not the run's
        return
    choice.other_batch = (BATCH, original_ms, optimized_ms)


def slower_text(choice) -> str | None:
    """The warning for a written model over SLOWER slower at the other batch, or None."""
    if choice is None or choice.other_batch is None:
        return None
    batch, original_ms, optimized_ms = choice.other_batch
    if original_ms <= 0 or optimized_ms <= original_ms * (1 + SLOWER):
        return None
    return (f"the rewrites were chosen at batch {choice.batch}, and the model takes any batch: at batch {batch} the "
            f"optimised model took {optimized_ms:.3f} ms against the original's {original_ms:.3f} ms (ratio "
            f"{optimized_ms / original_ms:.2f}); give --latency-batch with the batch you serve to choose at it")
