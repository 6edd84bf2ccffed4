"""The calibration search as a picture: trials explored, and prune rate per layer.

matplotlib is an optional extra (``pip install exprune-onnx[plot]``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExPruneError

FORMATS = (".png", ".pdf", ".svg")


def plot_path(path: Path) -> Path:
    """The file ``--plot`` writes: ``path``, with ``.png`` added when it has no suffix (as
    matplotlib would add it, past the checks that no input is overwritten)."""
    from ..workflow import UsageProblem

    if path.is_dir():
        return path  # refused as a directory (io/modelio.check_writable)
    from ..io.outputs import is_stream

    if str(path) == "-" or is_stream(path):  # (it wrote /dev/full.png, /dev/stdout.png, ./-.png)
        raise UsageProblem(f"--plot {path}: a plot is drawn to a file, not to standard output or a device: give a "
                           f"file path ({', '.join(FORMATS)})")
    if not path.suffix:
        return path.with_name(path.name + ".png")
    if path.suffix.lower() not in FORMATS:
        raise UsageProblem(f"--plot {path}: {path.suffix} is not a format it draws ({', '.join(FORMATS)})")
    return path


def calibration_plot(outcome, counts_rows: list[dict], path: Path) -> None:
    """Draw to ``path``; an OSError is the caller's to report (io/outputs.stage)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ExPruneError("--plot needs matplotlib: pip install 'exprune-onnx[plot]'") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    feasible = [t for t in outcome.trials if t.feasible]
    over = [t for t in outcome.trials if not t.feasible]
    left.scatter([100 * t.saved for t in feasible], [100 * t.drop for t in feasible], label="within budget")
    left.scatter([100 * t.saved for t in over], [100 * t.drop for t in over], marker="x", label="over budget")
    left.axhline(100 * outcome.max_drop, linestyle="--", color="gray", label="budget")
    left.scatter([100 * outcome.saved_calibration], [100 * outcome.calibration.drop], s=120, facecolors="none",
                 edgecolors="black", label="chosen (calibration part)")
    if outcome.holdout is not None:
        left.scatter([100 * outcome.saved_holdout], [100 * outcome.holdout.drop], s=120, marker="D",
                     facecolors="none", edgecolors="red", label="chosen (held-out part)")
    left.set_xlabel("FLOPs saved, % of the dense model (measured by the ops)")
    left.set_ylabel(f"{outcome.metric} drop, points")
    left.set_title("Trials of the budget search")
    left.legend(fontsize=8)
    names = [r["layer"] for r in counts_rows]
    rates = [100 * (r["pruned"] or 0.0) for r in counts_rows]
    right.barh(range(len(names)), rates)
    right.set_yticks(range(len(names)), names, fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("outputs pruned on the held-out part, %")
    right.set_title("Per-layer prune rate")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
