"""How much memory this process can still take, for the checks that refuse a run too
large to fit before it starts (batch_memory.py, the random samples in feeds.py).

The figure errs high, never low, since it decides refusals: free memory as the kernel
counts it (MemAvailable, which includes reclaimable cache) plus free swap, or less where a
cgroup above the process (v2, or v1's memory controller) caps it; page cache that the
cgroup can reclaim (inactive files) counts as room, as it does for the kernel.
"""

from __future__ import annotations

from pathlib import Path

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number.
_V1_UNLIMITED = 1 << 62


def available_bytes(meminfo: str = "/proc/meminfo", proc_cgroup: str = "/proc/self/cgroup",
                    cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Memory this process can still take; None where it cannot be read (not Linux)."""
    info = _meminfo(meminfo)
    if "MemAvailable" not in info:
        return None
    swap = info.get("SwapFree", 0)
    room = info["MemAvailable"] + swap
    capped = _cgroup_room(proc_cgroup, cgroup_root, swap)
    return room if capped is None else min(room, capped)


def size_text(n: float) -> str:
    """Bytes for a message: GiB to one decimal, else whole MiB, else whole KiB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{max(n / 1024, 1):.0f} KiB"


def _meminfo(path: str) -> dict[str, int]:
    out = {}
    try:
        for line in Path(path).read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.split()[1:2] == ["kB"]:
                out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _cgroup_room(proc_cgroup: str, cgroup_root: str, swap: int) -> int | None:
    """The least room under the limits of the process's cgroup and its parents, v2 and v1's
    memory controller; None where no level sets a limit."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:  # "hierarchy-id:controllers:path"
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2's unified hierarchy
            rooms += _rooms(Path(cgroup_root), path, ("memory.max", "memory.current", "inactive_file"), swap, True)
        elif "memory" in controllers.split(","):
            rooms += _rooms(Path(cgroup_root, "memory"), path,
                            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"), swap, False)
    return min(rooms) if rooms else None


def _rooms(root: Path, path: str, names: tuple[str, str, str], swap: int, v2: bool) -> list[int]:
    """limit - (usage - reclaimable cache) at each level from the cgroup up to the root, plus
    the swap it may use (v1's is not read: all the system's free swap, to err high)."""
    limit_file, usage_file, inactive_key = names
    parts = [p for p in path.strip().split("/") if p]
    rooms = []
    for depth in range(len(parts), -1, -1):
        folder = root.joinpath(*parts[:depth])
        try:
            limit = (folder / limit_file).read_text().strip()
            used = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= _V1_UNLIMITED:
            continue
        inactive = _stat(folder / "memory.stat", inactive_key)
        rooms.append(max(int(limit) - used + inactive, 0) + (_swap_room(folder, swap) if v2 else swap))
    return rooms


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _swap_room(folder: Path, swap: int) -> int:
    """Swap the cgroup may still use (v2), at most the system's free swap (all of it where
    the cgroup does not account swap)."""
    try:
        limit = (folder / "memory.swap.max").read_text().strip()
        used = int((folder / "memory.swap.current").read_text().strip())
    except (OSError, ValueError):
        return swap
    return swap if limit == "max" else min(max(int(limit) - used, 0), swap)
