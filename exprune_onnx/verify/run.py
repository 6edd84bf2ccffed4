"""One verification of a pair, as `exprune-onnx verify` runs it and as Python's
``exprune_onnx.verify_model`` does (api.py): the pair's order, the sizes taken for open
dims without data, the calibrated budget the agreement row reads, and the four rows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import onnx

from ..errors import OriginalRunFailed, error_message
from ..io.batch_memory import feedable
from ..io.data import Dataset, random_dataset
from ..io.feeds import InputSpec
from ..io.open_dims import assumed_shapes, assumed_text
from ..io.open_values import assumed_values, taken_text
from ..ops import DOMAIN
from ..progress import quiet
from ..runtime import uses_library
from ..tuning.metrics import EXACT_TOLERANCE
from .base import Row


@dataclass
class Verification:
    rows: list[Row]  # structure, weights, exactness, agreement
    assumed: dict = field(default_factory=dict)  # sizes taken for open dims, with no data to take them from
    values: dict = field(default_factory=dict)  # values taken for length inputs, likewise (io/open_values.py)
    source: str = ""  # the data's file, or the seeded random inputs
    samples: int = 0

    @property
    def passed(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if not row.ok]

    def as_json(self, original: str, optimized: str) -> dict:
        """What `verify --json` writes (docs/json.md)."""
        from ..report.run_report import assumed_json

        return {"original": original, "optimized": optimized, "passed": self.passed, "source": self.source,
                "samples": self.samples, "assumed_input_shapes": assumed_json(self.assumed),
                "checks": [{"check": row.check, "result": row.verdict, "detail": row.detail,
                            "not_judged": row.not_judged or None, "unjudged_outputs": list(row.unjudged)}
                           for row in self.rows]}


def swapped(original: str, optimized: str, ref: onnx.ModelProto, opt: onnx.ModelProto, command: str) -> str | None:
    """Why the pair reads the wrong way round (ORIGINAL holds this compiler's ops where
    OPTIMIZED holds none: evaluate printed a gain of 54 points for it, a trial's), or None.
    Both may hold them: a model optimised again, or two settings side by side."""
    if uses_library(ref) and not uses_library(opt):
        return f"{original} has {DOMAIN} ops and {optimized} has none: the original goes first ({command})"
    return None


def verify_pair(ref: onnx.ModelProto, opt: onnx.ModelProto, data: Dataset | None, spec: InputSpec, *,
                samples: int = 32, seed: int = 0, min_agreement: float = 0.99, bar_asked: bool = False,
                tolerance: float = EXACT_TOLERANCE, log=quiet) -> Verification:
    """The four rows on ``data``, or on ``samples`` seeded random inputs at the sizes
    ``spec`` gives (open dims it leaves taken as optimize takes them without data). A
    calibrated model is held to its own budget unless ``bar_asked`` (a bar was given)."""
    from . import verify
    from .agreement import read_budget

    spec = dataclasses.replace(spec, shapes=dict(spec.shapes), values=dict(spec.values))
    assumed = assumed_shapes(ref, spec) if data is None else {}
    spec.shapes.update(assumed)
    values = assumed_values(ref, spec) if data is None else {}
    spec.values.update(values)
    try:
        # A batch --input-shape fixes past memory is refused before any run (as optimize's and evaluate's)
        data = feedable(ref, data if data is not None else random_dataset(ref, samples, seed, spec))
        rows = verify(ref, opt, data, min_agreement=min_agreement, tolerance=tolerance, input_shapes=spec.shapes,
                      log=log, budget=read_budget(opt), bar_asked=bar_asked)
    except OriginalRunFailed as exc:
        if not assumed and not values:
            raise
        taken = taken_text(assumed_text(ref, assumed) if assumed else "", values, "--data")
        raise OriginalRunFailed(f"{error_message(exc)} ({taken})") from exc
    return Verification(rows, assumed, values, data.source, len(data))
