"""The original's reference output on a part of the calibration data, and compiled
candidates scored against it (search.py's trials, its confirmations and held-out checks)."""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import DataError, original_failed, original_unloadable
from ..io.data import Dataset
from ..measure.compare import run_counting, with_stats
from ..measure.counters import flops_saved
from ..measure.nan_outputs import NaNOutput, refuse_nan
from ..measure.output_kinds import output_kinds
from .label_layout import laid_out
from .metrics import score


def reference_output(session, output: str, data: Dataset, batches, samples: int,
                     original: onnx.ModelProto | None = None) -> tuple[np.ndarray, int]:
    """The original's ``output`` over ``batches`` (``samples`` rows), the reference a
    calibration part is scored against, and the axis its batch was on (0, or 1 for
    PyTorch's sequence-first [T, N, C]: moved first); a failure here is the data's or
    the output's (or the ``original``'s own weights, where they hold NaN)."""
    moved: dict[str, int] = {}
    try:
        got = run_counting(session, [output], {}, batches, samples, key=next(iter(data.inputs)), moved=moved)
        refuse_nan(output, got[0][output], data.source, original)
        return got[0][output], moved.get(output, 0)
    except NaNOutput:
        raise
    except DataError as exc:  # the output has no batch axis (run_counting)
        raise DataError(f"calibration scores output '{output}': {exc}; name another with --score-output, or "
                        "choose a --threshold") from exc
    except Exception as exc:
        raise original_failed(data.source, exc) from exc


class Runner:
    """Runs the original once per part and any compiled candidate against it."""

    def __init__(self, original: onnx.ModelProto, data: Dataset, indices: np.ndarray, batch: int, output: str = "",
                 over: float | None = None):
        from ..runtime import inference_session

        self.data, self.indices, self.batch = data, indices, batch
        try:
            session = inference_session(original)
        except Exception as exc:
            raise original_unloadable(exc) from exc
        self.output = output or original.graph.output[0].name
        # run_counting moves a sequence-first batch axis in every run of a candidate too.
        reference, _ = reference_output(session, self.output, data, data.batches(batch, indices), len(indices),
                                        original)
        # A segmentation map's or yes/no labels, or a Sigmoid's yes/no answers (label_layout.py).
        self.kind = output_kinds(original).get(self.output)
        self.layout, self.reference, self.labels = laid_out(reference, data.labels, data.labels_of(indices), self.kind)
        self.rows = len(indices)  # samples run, the original's pass included
        self.over = over  # relerr: the share of samples whose relative error is over this (metrics.score)

    def run(self, compiled: onnx.ModelProto, metric: str, dense: int):
        from ..runtime import inference_session, uses_library

        ref = self.layout.values(self.reference, metric)
        if not uses_library(compiled):
            return score(metric, ref, ref, self.labels, self.layout.answer_kind, self.over), 0.0, {}
        model, stats_names = with_stats(compiled)
        got, counts = run_counting(inference_session(model), [self.output], stats_names,
                                   self.data.batches(self.batch, self.indices), len(self.indices))
        self.rows += len(self.indices)
        rows = self.data.rows_run(len(self.indices))  # the ops also count a fixed batch's pad rows
        saved = flops_saved(compiled, counts) / rows / dense if dense else 0.0
        got = self.layout.values(self.layout.scores(got[self.output]), metric)
        return score(metric, ref, got, self.labels, self.layout.answer_kind, self.over), saved, counts
