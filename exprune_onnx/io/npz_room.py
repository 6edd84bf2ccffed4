"""Whether the arrays of an .npz that a run reads fit in memory, before they are read.

numpy reads an .npz member whole (it cannot map one into memory as it maps a .npy), and a
compressed member may unpack to many times its size on disk: a file too big for the
machine was read until the kernel killed the process, with nothing said. Each member's
.npy header gives its shape and type, so the bytes are known before any is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .memory_room import available_bytes, size_text


def member_bytes(npz: np.lib.npyio.NpzFile, key: str) -> int | None:
    """The bytes member ``key`` takes once read, from its header; None where the header
    cannot be read here (numpy's own read then says what is wrong with it)."""
    try:
        with npz.zip.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read(member)
    except Exception:  # noqa: BLE001 - any header numpy's reader would refuse: it says why
        return None
    return math.prod(shape) * dtype.itemsize


def check_npz_fits(npz: np.lib.npyio.NpzFile, keys, path: Path, room: int | None = None) -> None:
    """Refuses, naming the sizes, an .npz whose members ``keys`` take more than the memory
    free (``room``, read here when not given)."""
    sizes = {k: member_bytes(npz, k) for k in keys if k in npz.files}
    total = sum(n for n in sizes.values() if n)
    room = available_bytes() if room is None else room
    if room is None or total <= room:
        return
    largest = max(sizes, key=lambda k: sizes[k] or 0)
    raise DataError(f"{path}: its arrays take {size_text(total)} once read ('{largest}' {size_text(sizes[largest])}), "
                    f"more than the {size_text(room)} of memory free; give fewer samples, or a directory of "
                    "<input name>.npy files, which are read from disk as they are needed")
