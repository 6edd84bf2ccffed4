"""What a run of a model gives, as the comparisons read it: an output's arrays run by
run, and onnxruntime's class-probability dicts as arrays."""

from __future__ import annotations

import numpy as np


class PerRun(list):
    """An output's arrays as each run gave them (run_counting with ``per_run``), and
    whether each run's first axis was the batch: when it is not in either model (a
    detection count that changes from input to input), the runs cannot be joined."""

    batched = True


def joined(a: PerRun, b: PerRun, samples: int):
    """Two models' runs of an output joined into per-sample arrays when both gave it a
    batch axis in every run; else the runs themselves, to compare run by run."""
    if a.batched and b.batched:
        return np.concatenate(a)[:samples], np.concatenate(b)[:samples]
    return a, b


def as_array(value):
    """onnxruntime's list of {class: probability} dicts (a ZipMap) as [N, classes], the
    classes in sorted order; anything else as it is."""
    if isinstance(value, list) and value and all(isinstance(d, dict) for d in value):
        keys = sorted(value[0])
        return np.array([[d[k] for k in keys] for d in value], np.float32)
    if isinstance(value, list) and not value:
        return np.zeros((0, 0), np.float32)
    return value
