"""ONNX's own test-data layout: input_<i>.pb TensorProtos, alone in a folder or in
test_data_set_<n>/ folders (onnx's backend tests, the model zoo), read as one set of samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import DataError


def set_number(name: str) -> int:
    """test_data_set_<n>'s n, so that the sets join in their numbers' order (-1: no number)."""
    digits = name.removeprefix("test_data_set_")
    return int(digits) if digits.isdigit() else -1


def read_pb_sets(dirs: list[Path], names: list[str], whole: frozenset[str],
                 states: dict[str, int]) -> dict[str, np.ndarray]:
    """The sets' inputs, concatenated along the sample axis (a recurrent state's along its
    own: ``states``, feeds.state_axes); another input without one (``whole``) must be the
    same in every set, and is taken once."""
    whole = whole - set(states)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for d in dirs:
        files = list(d.glob("input_*.pb"))
        odd = [f.name for f in files if not f.stem.split("_", 1)[1].isdigit()]
        if odd:
            raise DataError(f"{d}: {odd[0]} is not named input_<number>.pb, which gives its input's place")
        files.sort(key=lambda p: int(p.stem.split("_", 1)[1]))
        if len(files) != len(names):
            raise DataError(f"{d}: {len(files)} input_*.pb files for a model with {len(names)} inputs")
        tensors = []
        for f in files:
            if not f.is_file():  # a pipe would block the read until a writer came
                raise DataError(f"{f}: not an input_<i>.pb file (a directory, device or pipe)")
            tensor = onnx.TensorProto()
            try:
                tensor.ParseFromString(f.read_bytes())
                tensors.append((tensor.name, onnx.numpy_helper.to_array(tensor)))
            except Exception as exc:
                raise DataError(f"{f}: not a serialized TensorProto ({exc})") from None
        # By the tensors' names where they name every input once (two inputs of one shape were
        # swapped by a file order of another's), else by the files' numbers, as ONNX's test data.
        by_name = sorted(n for n, _ in tensors) == sorted(names)
        for name, (own, array) in zip(names, tensors):
            parts[own if by_name else name].append(array)
    for name in whole:
        if any(p.shape != parts[name][0].shape or not np.array_equal(p, parts[name][0]) for p in parts[name][1:]):
            raise DataError(f"{dirs[0].parent}: input '{name}' has no batch axis, so every test_data_set_* must "
                            "hold the same value, and they differ")
    for name, p in parts.items():
        axis = states.get(name, 0)
        if name not in whole and len({a.shape[:axis] + a.shape[axis + 1:] for a in p}) > 1:
            shapes = ", ".join(f"{d.name}: {list(a.shape)}" for d, a in zip(dirs, p))
            raise DataError(f"{dirs[0].parent}: input '{name}' has other shapes past the sample axis in different "
                            f"test_data_set_* ({shapes}); they are joined into one batch, so give them one shape")
    return {n: np.concatenate(p, axis=states.get(n, 0)) if len(p) > 1 and n not in whole else p[0]
            for n, p in parts.items()}
