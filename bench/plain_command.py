"""Wall time of ``exprune-onnx optimize MODEL --threshold 0`` on a light-zoo CNN.

    python -m bench.plain_command [--model resnet50] [--no-screen]

The plain command took threshold 0 by default when this was written; it now prunes
nothing unless asked, and drops every early-exit layer untimed, so the threshold is
given to time what the screen is for: early-exit layers that prune.

The model is the onnx wheel's light-zoo export with its weights refilled with seeded
random values (tests/zoo_models.py's ``refilled``: structure only, not a trained
network). The command is the default one: latency objective at the model's fixed
batch (1) and 1 thread on 32 seeded random inputs, then the check. ``--no-screen``
turns off the latency objective's per-layer screen (screen.py) to compare; run both
in one session, one after the other, and compare the ratio: the machine's load (shown
before and after) moves both.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_RUN = """
import sys
from exprune_onnx.tuning import objective
from exprune_onnx.cli import main
if sys.argv[1] == "no-screen":
    objective.SCREEN_ABOVE = float("inf")
main(sys.argv[2:])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--no-screen", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import onnx
    from zoo_models import refilled

    with tempfile.TemporaryDirectory(prefix="exprune-bench-") as tmp:
        src = Path(tmp) / f"{args.model}.onnx"
        onnx.save(refilled(args.model), src)
        print(f"{platform.machine()}, {os.cpu_count()} cores, load before {os.getloadavg()}", flush=True)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _RUN, "no-screen" if args.no_screen else "screen",
                              "optimize", str(src), "-o", str(Path(tmp) / "out.onnx"), "--threshold", "0"],
                             capture_output=True, text=True, cwd=tmp)
        seconds = time.perf_counter() - start
    print(out.stdout[-1500:] + out.stderr[-1500:])
    print(f"{args.model}: optimize --threshold 0 {'without' if args.no_screen else 'with'} screening took {seconds:.1f} s "
          f"(exit {out.returncode}); load after {os.getloadavg()}")
    if out.returncode:
        sys.exit(f"the command failed (exit {out.returncode}): the time above is not the command's")


if __name__ == "__main__":
    main()
