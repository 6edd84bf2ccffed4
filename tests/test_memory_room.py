"""How much memory the process can still take (exprune_onnx/io/memory_room.py), on fake
/proc and /sys/fs/cgroup trees."""

from __future__ import annotations

from pathlib import Path

from exprune_onnx.io.memory_room import available_bytes, size_text

KIB = 1024


def _files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _room(tmp_path: Path, proc_cgroup: str, tree: dict[str, str], available_kb=1000, swap_kb=0):
    _files(tmp_path, {"meminfo": f"MemTotal: 9000 kB\nMemAvailable: {available_kb} kB\nSwapFree: {swap_kb} kB\n",
                      "cgroup": proc_cgroup})
    _files(tmp_path / "fs", tree)
    return available_bytes(str(tmp_path / "meminfo"), str(tmp_path / "cgroup"), str(tmp_path / "fs"))


def test_without_a_cgroup_limit_it_is_memavailable_plus_free_swap(tmp_path):
    assert _room(tmp_path, "0::/\n", {"memory.max": "max\n", "memory.current": "5\n"}, swap_kb=10) == 1010 * KIB


def test_the_tightest_v2_limit_from_the_cgroup_up_counts(tmp_path):
    tree = {"a/b/memory.max": "max\n", "a/b/memory.current": "5\n",
            "a/memory.max": "500000\n", "a/memory.current": "300000\n", "a/memory.stat": "anon 1\ninactive_file 50000\n"}
    # 500000 - 300000 used, of which 50000 is page cache the kernel reclaims first.
    assert _room(tmp_path, "0::/a/b\n", tree) == 250000


def test_v2_swap_counts_up_to_the_systems_free_swap(tmp_path):
    tree = {"memory.max": "500000\n", "memory.current": "100000\n"}  # swap not accounted: all of it
    assert _room(tmp_path, "0::/\n", tree, available_kb=10**6, swap_kb=100) == 400000 + 100 * KIB
    tree.update({"memory.swap.max": "max\n", "memory.swap.current": "0\n"})
    assert _room(tmp_path, "0::/\n", tree, available_kb=10**6, swap_kb=100) == 400000 + 100 * KIB
    tree.update({"memory.swap.max": "30000\n", "memory.swap.current": "10000\n"})
    assert _room(tmp_path, "0::/\n", tree, available_kb=10**6, swap_kb=100) == 400000 + 20000


def test_a_v1_memory_controller_limit_counts_and_its_unlimited_value_does_not(tmp_path):
    line = "9:name=systemd:/\n4:memory:/jobs/x\n0::/\n"
    tree = {"memory/jobs/x/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/jobs/x/memory.usage_in_bytes": "40000\n",
            "memory/jobs/memory.limit_in_bytes": "300000\n", "memory/jobs/memory.usage_in_bytes": "200000\n",
            "memory/jobs/memory.stat": "cache 1\ntotal_inactive_file 20000\n"}
    assert _room(tmp_path, line, tree) == 120000
    tree["memory/jobs/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert _room(tmp_path, line, tree) == 1000 * KIB


def test_nothing_readable_is_none(tmp_path):
    assert available_bytes(str(tmp_path / "none"), str(tmp_path / "none"), str(tmp_path)) is None


def test_sizes_read_as_people_write_them():
    assert [size_text(n) for n in (100, 3000, 5 * 2**20, 3 * 2**29)] == ["1 KiB", "3 KiB", "5 MiB", "1.5 GiB"]
