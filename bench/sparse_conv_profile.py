"""Where ExPruneSparseConv's time goes: shares of its samples by stage, from `perf`.

    perf record -e cpu-clock -F 2000 -o /tmp/op.data python -m bench.sparse_conv_profile run C S ZEROS
    python -m bench.sparse_conv_profile report /tmp/op.data [LIBRARY]

`run` builds the bench layer 3x3 C -> C @ S x S (bench/sparse_conv_kernels.py, i.i.d.
zeros) and runs the op alone, 1 thread, batch 1, for a few seconds. `report` maps the
samples that fell in the op's library to functions with `nm` on an unstripped copy (the
installed one is stripped; LIBRARY defaults to the one pip's build left in
build/*/libexprune_ops.so, which must come from the same build) and prints each
stage's share of the library's samples:
  tile        the Sweep3 / Taps register tiles (sparse_conv_tile_impl.h);
  listing     the AVX-512 List (sparse_conv_tile_avx512.cc), or the listing task's
              lambda where the portable ListRow is inlined;
  write-back  Finish (bias, residual, activation, transposed NCHW store);
  loops       the tile tasks outside the tiles (Block::RunRows, RunSegment);
  set-up      SparseConvKernel::Compute, RunBatch and the non-zero share sampling.
Sampling needs no hardware counters (cpu-clock works in a VM).
"""

from __future__ import annotations

import bisect
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

STAGES = (("Sweep3", "tile"), ("Taps<", "tile"), ("::List(", "listing"), ("::Finish(", "write-back"),
          ("lambda(unsigned long)#1}>", "listing"), ("lambda(unsigned long)#2}>", "loops"), ("RunSegment", "loops"),
          ("RunRows", "loops"), ("SparseConvKernel::Compute(", "set-up"), ("RunBatch(", "set-up"),
          ("SampleImage(", "set-up"))


def run(c: int, s: int, zeros: float, seconds: float = 6.0) -> None:
    import numpy as np

    from bench import sparse_conv_kernels as bench
    from exprune_onnx import inference_session

    layer = (c, c, s, 3)
    _, op = bench.models(layer)
    feeds = {"x": bench.iid_input(layer, zeros, np.random.default_rng(0))}
    session = inference_session(op.SerializeToString(), threads=1)
    session.run(None, feeds)
    runs, end = 0, time.time() + seconds
    while time.time() < end:
        session.run(None, feeds)
        runs += 1
    print(f"3x3 {c}->{c} @{s}x{s} zeros {zeros}: {runs} runs")


def tool(*args: str) -> str:
    """A command's standard output; a missing tool or a failure exits with its message."""
    try:
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise SystemExit(f"{args[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(args)} failed: {e.stderr.strip()[-300:]}") from None


def symbols(library: Path) -> tuple[list[int], list[str]]:
    text = tool("nm", "-C", "--defined-only", str(library))
    table = sorted((int(p[0], 16), p[2]) for p in (line.split(" ", 2) for line in text.splitlines())
                   if len(p) == 3 and p[1] in "tTwW")
    return [a for a, _ in table], [n for _, n in table]


def load_base(data: str) -> int:
    """Where perf saw the library's code mapped, minus its file offset."""
    text = tool("perf", "script", "-i", data, "--show-mmap-events")
    for line in text.splitlines():
        m = re.search(r"\[(0x[0-9a-f]+)\(0x[0-9a-f]+\) @ (0x[0-9a-f]+) .*r-xp .*libexprune_ops\.so", line)
        if m:
            return int(m.group(1), 16) - int(m.group(2), 16)
    raise SystemExit(f"{data}: no mapping of libexprune_ops.so recorded")


def report(data: str, library: Path) -> None:
    addrs, names = symbols(library)
    base = load_base(data)
    text = tool("perf", "script", "-i", data, "-F", "ip,dso")
    counts = collections.Counter()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and "libexprune_ops" in parts[1]:
            name = names[bisect.bisect_right(addrs, int(parts[0], 16) - base) - 1]
            counts[next((stage for key, stage in STAGES if key in name), "other")] += 1
    total = sum(counts.values())
    if total == 0:
        raise SystemExit(f"{data}: no samples in libexprune_ops.so")
    print(f"{total} samples in the op's library: " +
          ", ".join(f"{stage} {n / total:.0%}" for stage, n in counts.most_common()))


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[0] == "run":
        try:
            c, s, zeros = int(argv[1]), int(argv[2]), float(argv[3])
        except ValueError:
            raise SystemExit("run needs integers C, S >= 1 and 0 <= ZEROS <= 1") from None
        if c < 1 or s < 1 or not 0.0 <= zeros <= 1.0:
            raise SystemExit("run needs integers C, S >= 1 and 0 <= ZEROS <= 1")
        run(c, s, zeros)
    elif len(argv) in (2, 3) and argv[0] == "report":
        built = sorted(Path("build").glob("*/libexprune_ops.so"))
        library = Path(argv[2]) if len(argv) == 3 else (built[0] if built else None)
        if library is None or not library.is_file():
            raise SystemExit("no unstripped libexprune_ops.so: pass its path")
        if not Path(argv[1]).is_file():
            raise SystemExit(f"{argv[1]}: no such perf data file")
        report(argv[1], library)
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
