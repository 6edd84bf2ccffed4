"""The Debian package graph of this machine's apt lists, for models/build_debian_gnn.py:
the stanzas of ``apt-cache dumpavail`` (running ``apt-get update`` once when the lists are
empty), parsed into packages and dependency edges, cached by the text's sha256."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from build_fashion_cnn import _apt_prefix, _run

APT_LISTS = Path("/var/lib/apt/lists")
MIN_PACKAGES = 1000  # fewer means the lists were never fetched
CACHE_VERSION = 1
EDGE_FIELDS = ("Depends", "Pre-Depends", "Recommends")

_DEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.\-]*")


def _dumpavail() -> str:
    try:
        done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, check=False)
    except FileNotFoundError:
        sys.exit("apt-cache not found: this script needs a Debian-style system with apt")
    if done.returncode != 0:
        sys.exit(f"apt-cache dumpavail failed (exit {done.returncode}): "
                 f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8", errors="replace")


def dumpavail_text() -> str:
    """The package stanzas; runs ``apt-get update`` once when the lists are empty.

    An update changes the graph, so it is never run when lists are already there.
    """
    text = _dumpavail()
    if text.count("\nPackage: ") + text.startswith("Package: ") >= MIN_PACKAGES:
        return text
    if _run(_apt_prefix() + ["apt-get", "update"]) != 0:
        sys.exit("apt-get update failed and the apt lists hold too few packages")
    text = _dumpavail()
    if text.count("\nPackage: ") + text.startswith("Package: ") < MIN_PACKAGES:
        sys.exit(f"apt-cache dumpavail lists fewer than {MIN_PACKAGES} packages even after apt-get update")
    return text


def _release_date(packages_file: str) -> str:
    """The Date: of the InRelease/Release file that signs a Packages list."""
    base = os.path.basename(packages_file)
    dists = base.split("_dists_", 1)
    if len(dists) != 2:
        return "unknown"
    suite = dists[1].split("_", 1)[0]
    for kind in ("InRelease", "Release"):
        path = APT_LISTS / f"{dists[0]}_dists_{suite}_{kind}"
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("Date:"):
                    return line[5:].strip()
    return "unknown"


def list_record(text: str, n_packages: int) -> dict:
    files = sorted(glob.glob(str(APT_LISTS / "*_Packages*")))
    return {
        "packages": n_packages,
        "dumpavail_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "lists": [{"file": os.path.basename(f), "date": _release_date(f)} for f in files],
    }


# --------------------------------------------------------------------------- parse

def _stanzas(text: str):
    """Yields {field: value} per stanza (continuation lines are ignored: only short fields are read)."""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if not line or line[0] in " \t":
                continue
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def _dep_names(value: str) -> list[str]:
    """First alternative of each clause, without version constraint or arch qualifier."""
    out = []
    for clause in value.split(","):
        m = _DEP_NAME.match(clause.split("|", 1)[0].strip())
        if m:
            out.append(m.group(0).split(":", 1)[0])
    return out


def parse_graph(text: str) -> dict:
    names, sections, descs, arch_all, sizes, raw_deps, provides = [], [], [], [], [], [], {}
    index: dict[str, int] = {}
    for f in _stanzas(text):
        name = f["Package"]
        if name in index:  # one node per name; the first stanza wins
            continue
        index[name] = len(names)
        names.append(name)
        section = f.get("Section", "")
        sections.append(section.rsplit("/", 1)[-1])
        descs.append(f.get("Description", ""))
        arch_all.append(f.get("Architecture", "") == "all")
        try:
            sizes.append(float(f.get("Installed-Size", "0")))
        except ValueError:
            sizes.append(0.0)
        raw_deps.append([d for key in EDGE_FIELDS for d in _dep_names(f.get(key, ""))])
        for virtual in _dep_names(f.get("Provides", "")):
            provides.setdefault(virtual, []).append(name)
    resolve = {v: index[min(p)] for v, p in provides.items() if v not in index}
    src, dst = [], []
    for i, deps in enumerate(raw_deps):
        for d in deps:
            j = index.get(d, resolve.get(d))
            if j is not None and j != i:
                src.append(i)
                dst.append(j)
    edges = np.unique(np.array([src, dst], dtype=np.int64).T, axis=0)  # directed, deduplicated
    return {
        "names": np.array(names),
        "sections": np.array(sections),
        "descriptions": np.array(descs),
        "arch_all": np.array(arch_all, dtype=bool),
        "installed_size": np.array(sizes, dtype=np.float64),
        "edges": edges.astype(np.int32),
    }


def load_graph(data_dir: Path) -> tuple[dict, dict]:
    """Parsed graph and the record of the lists it came from; cached by dumpavail's sha256."""
    text = dumpavail_text()
    record = list_record(text, 0)
    cache = data_dir / "debian_graph.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if (meta.get("cache_version") == CACHE_VERSION
                    and meta["record"]["dumpavail_sha256"] == record["dumpavail_sha256"]):
                graph = {k: z[k] for k in z.files if k != "meta"}
                print(f"graph read from cache {cache}")
                return graph, meta["record"]
    t0 = time.perf_counter()
    graph = parse_graph(text)
    record["packages"] = int(len(graph["names"]))
    print(f"parsed dumpavail in {time.perf_counter() - t0:.1f} s")
    data_dir.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"cache_version": CACHE_VERSION, "record": record})
    tmp = data_dir / "debian_graph.tmp.npz"
    np.savez_compressed(tmp, meta=np.array(meta), **graph)
    os.replace(tmp, cache)
    return graph, record
