"""Would a second checkpoint pay? One decision at k1 or k2 against deciding at k1, then at k2.

    python models/fashion_data.py          # writes models/data/fashion_calib.npz
    python bench/checkpoints.py [--samples 1000] [--shares 0.001,0.005,0.01]

For every layer of the bundled CNN, on the same sampled output elements: the Threshold
rule's estimate after k1 = n/4 and after k2 = n/2 units (weight order, per-output
thresholds, exactly as the calibration search places them) and the true output. For a
given share of the layer's output mass that may be lost, it compares the FLOPs per
output element executed by

* one checkpoint at k1, one at k2 (the search's two choices today), and
* two checkpoints: prune at k1 with part of the loss share, then at k2 among the
  survivors with the rest (the split is searched on a grid and the best one shown;
  the extra units k1..k2 are paid only by the survivors of k1).

The cost model is the compiler's (2 FLOPs per multiply-accumulate, one per decision).
The numbers are in-sample on the calibration images: they bound what a two-checkpoint
op could save, they are not a held-out result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from exprune_onnx.compiler.pipeline import optimize
from exprune_onnx.config import Options
from exprune_onnx.io.data import load_dataset
from exprune_onnx.io.modelio import load_model
from exprune_onnx.runtime import inference_session
from exprune_onnx.tuning.calibrate import LayerStats, exact_options, probe_model, statistics

ROOT = Path(__file__).resolve().parent.parent
SPLITS = np.linspace(0.0, 1.0, 11)


KEEP = 400_000  # sampled elements per layer


def estimates(model: onnx.ModelProto, k: float, data, indices):
    """layer -> (est, y, channel, taps, n, outputs, k) on sampled elements, the same ones for every k."""
    result = optimize(model, exact_options(Options(k=k)))
    probing, probes = probe_model(result.model)
    layer_of = {r.op_node.name: r.candidate for r in result.rewritten}
    session = inference_session(probing)
    names = [o.name for o in probing.graph.output]
    parts: dict[str, dict[str, list]] = {node: {"est": [], "y": [], "channel": []} for node in probes}
    for b, feeds in enumerate(data.batches(64, indices)):
        outs = dict(zip(names, session.run(names, feeds)))
        for i, (node, probe) in enumerate(sorted(probes.items())):
            y = outs[probe.y]
            rate = KEEP / (y[0].size * len(indices))
            keep = np.random.default_rng([b, i]).random(y.size) < rate
            est = statistics(probe, outs)["threshold"]
            chan = np.broadcast_to(np.arange(y.shape[probe.channel_axis]).reshape(
                [-1 if i == probe.channel_axis % y.ndim else 1 for i in range(y.ndim)]), y.shape)
            parts[node]["est"].append(est.reshape(-1)[keep])
            parts[node]["y"].append(y.reshape(-1)[keep].astype(np.float64))
            parts[node]["channel"].append(chan.reshape(-1)[keep])
    found = {}
    for node, p in parts.items():
        c = layer_of[node]
        found[c.layer] = (np.concatenate(p["est"]), np.concatenate(p["y"]), np.concatenate(p["channel"]),
                          c.taps, c.n, c.outputs, probes[node].k_terms // c.taps)
    return found


def stats_of(est, y, channel, outputs) -> LayerStats:
    order = np.argsort(est, kind="stable")
    lost = np.cumsum(y[order])
    return LayerStats("", "", est[order], lost, float(lost[-1]) if lost.size else 0.0, float(np.mean(y == 0)),
                      channel[order].astype(np.int32), outputs)


def cost(n, taps, ks, survivors):
    """FLOPs per output element: partial over k[0], then each stage's extra units for its survivors."""
    total, units = 2 * ks[0] * taps, ks[0]
    for k_next, alive in zip(ks[1:] + [n], survivors):
        total += 1 + alive * 2 * (k_next - units) * taps
        units = k_next
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ROOT / "models" / "fashion_cnn.onnx", type=Path)
    parser.add_argument("--calibration", default=ROOT / "models" / "data" / "fashion_calib.npz", type=Path)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--shares", default="0.001,0.005,0.01")
    args = parser.parse_args()
    if not args.calibration.exists():
        parser.error(f"{args.calibration} is missing: run `python models/fashion_data.py` first")
    model = load_model(args.model)
    data = load_dataset(args.calibration, model)
    indices = np.arange(min(args.samples, len(data)))
    first, second = estimates(model, 0.25, data, indices), estimates(model, 0.5, data, indices)
    print(f"{args.model.name}, {len(indices)} calibration images; FLOPs per output element (dense = 2 n taps); "
          f"in-sample\n")
    print("| layer | n | share | dense | one at k1 | one at k2 | k1 then k2 (best split) | two vs best one |")
    print("|---|---|---|---|---|---|---|---|")
    for layer in first:
        est1, y, chan, taps, n, outputs, k1 = first[layer]
        est2, y2, _, _, _, _, k2 = second[layer]
        assert np.allclose(y, y2, rtol=1e-4, atol=1e-4), "the two passes must see the same outputs"
        s1, s2 = stats_of(est1, y, chan, outputs), stats_of(est2, y, chan, outputs)
        for share in (float(v) for v in args.shares.split(",")):
            one1 = cost(n, taps, [k1], [1 - s1.prune_rate(s1.thresholds_for(share))])
            one2 = cost(n, taps, [k2], [1 - s2.prune_rate(s2.thresholds_for(share))])
            best = None
            for split in SPLITS:
                t1 = s1.thresholds_for(share * split)
                pruned1 = est1 < t1[chan]
                alive = ~pruned1
                lost1 = y[pruned1].sum() / y.sum()
                rest = stats_of(est2[alive], y[alive], chan[alive], outputs)
                # The second stage's share is of the whole layer's mass, as the first one's.
                left = max(share - lost1, 0.0) * y.sum() / max(rest.total_y, 1e-300)
                t2 = rest.thresholds_for(left)
                pruned2 = alive & (est2 < t2[chan])
                two = cost(n, taps, [k1, k2], [alive.mean(), 1 - (pruned1 | pruned2).mean()])
                best = two if best is None else min(best, two)
            print(f"| {layer} | {n} | {share:g} | {2 * n * taps} | {one1:.0f} | {one2:.0f} | {best:.0f} | "
                  f"{100 * (1 - best / min(one1, one2)):+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
