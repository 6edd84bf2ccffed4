"""io/npz_room.py: the arrays of an .npz a run reads are sized from their headers, and an
.npz that cannot fit in memory is refused before any is read."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from cli_calls import one_line_error
from click.testing import CliRunner
from helpers import save_model, three_layer_mlp

from exprune_onnx.cli import main
from exprune_onnx.errors import DataError
from exprune_onnx.io import npz_room


def _write(path, compress: bool, version=None, **arrays):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, a, version=version)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_a_member_is_sized_from_its_header(tmp_path, compress, version):
    path = tmp_path / "d.npz"
    _write(path, compress, version, x=np.zeros((5, 7, 3), np.float32), n=np.zeros((4,), np.int64))
    with np.load(path) as f:
        assert npz_room.member_bytes(f, "x") == 5 * 7 * 3 * 4 and npz_room.member_bytes(f, "n") == 32


def test_a_member_whose_header_is_not_numpy_s_is_left_to_numpy(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"not an array")
    with np.load(path) as f:
        assert npz_room.member_bytes(f, "x") is None
        npz_room.check_npz_fits(f, ["x"], path, room=1)  # nothing known, nothing refused


def test_only_the_members_read_count_and_too_many_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    _write(path, True, x=np.zeros((256, 1024), np.float32), labels=np.zeros(256, np.int64),
           raw=np.zeros((4096, 1024), np.float32))
    with np.load(path) as f:
        need = 256 * 1024 * 4 + 256 * 8
        npz_room.check_npz_fits(f, ["x", "labels"], path, room=need)  # 'raw' is not read: 16 MiB more
        with pytest.raises(DataError, match=r"d.npz: its arrays take 1 MiB once read \('x' 1 MiB\), more than "
                                            r"the 512 KiB of memory free; give fewer samples, or a directory of "):
            npz_room.check_npz_fits(f, ["x", "labels", "missing"], path, room=512 << 10)


def test_the_command_refuses_data_that_cannot_fit_before_reading_it(tmp_path, monkeypatch):
    model = save_model(three_layer_mlp(), tmp_path)
    data = tmp_path / "check.npz"
    _write(data, True, x=np.zeros((64, 64), np.float32))
    monkeypatch.setattr(npz_room, "available_bytes", lambda: 1000)
    r = CliRunner().invoke(main, ["optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--check-data", str(data)])
    assert "its arrays take 16 KiB once read" in one_line_error(r, 6)
    assert not (tmp_path / "o.onnx").exists()
