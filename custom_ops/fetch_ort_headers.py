#!/usr/bin/env python3
"""Fetch onnxruntime's C/C++ headers into a directory, for building the custom ops.

The PyPI onnxruntime wheel ships no headers, and the custom-op library needs nothing
else. Routes, tried in order until one works:

  apt      download the Debian package libonnxruntime-dev (suite trixie by default)
           with a private apt configuration that reuses the mirror already configured
           on this machine, and unpack it with dpkg-deb. Nothing is installed and
           nothing outside DEST is written.
  release  the official onnxruntime-linux-<arch>-<version>.tgz from GitHub releases.

The headers end up in DEST/include (flat). A later run with the same DEST reuses them.
On success the last two lines of stdout are `route=<how>` and `include=<dir>`; on
failure the exit status is 1 and stderr says what was tried.

Usage: fetch_ort_headers.py --dest DIR [--version 1.21.0] [--suite trixie]
       [--routes apt,release]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

MARKER = "onnxruntime_cxx_api.h"
RELEASE_URL = (
    "https://github.com/microsoft/onnxruntime/releases/download/"
    "v{version}/onnxruntime-linux-{arch}-{version}.tgz"
)
# Suites of the Debian main archive. Entries for -security, -updates or -backports
# live on other archives or carry only a few packages, so they are not mirrors of it.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SOURCES = "/etc/apt/sources.list"
APT_SOURCE_PARTS = "/etc/apt/sources.list.d"


class RouteFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"fetch_ort_headers: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- apt sources


def _one_line_entries(text: str):
    """Entries of a one-line-style sources.list: `deb [opts] uri suite comp...`."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, opt_text, rest = m.groups()
            for item in opt_text.split():
                if "=" in item:
                    key, value = item.split("=", 1)
                    opts[key.lower()] = value
        else:
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            kind, rest = parts
        fields = rest.split()
        if kind != "deb" or len(fields) < 3:
            continue
        yield {
            "uris": [fields[0]],
            "suites": [fields[1]],
            "components": fields[2:],
            "signed_by": opts.get("signed-by", ""),
        }


def _deb822_entries(text: str):
    """Entries of a deb822 .sources file (stanzas separated by blank lines)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
                continue
            m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", raw)
            if m:
                key = m.group(1).lower()
                fields[key] = m.group(2).strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        yield {
            "uris": fields.get("uris", "").split(),
            "suites": fields.get("suites", "").split(),
            "components": fields.get("components", "").split(),
            # Signed-By may also hold an inline key block; only a path is reusable.
            "signed_by": fields.get("signed-by", "").split("\n")[0].strip(),
        }


def configured_entries():
    files = []
    if os.path.isfile(APT_SOURCES):
        files.append(APT_SOURCES)
    files += sorted(glob.glob(os.path.join(APT_SOURCE_PARTS, "*.list")))
    files += sorted(glob.glob(os.path.join(APT_SOURCE_PARTS, "*.sources")))
    for path in files:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        parse = _deb822_entries if path.endswith(".sources") else _one_line_entries
        yield from parse(text)


def debian_mirror():
    """(uri, signed_by) of the first configured Debian main-archive entry."""
    for entry in configured_entries():
        if "main" not in entry["components"]:
            continue
        if not any(s in DEBIAN_SUITES for s in entry["suites"]):
            continue
        for uri in entry["uris"]:
            if uri.startswith(("http://", "https://")):
                return uri.rstrip("/"), entry["signed_by"]
    return None, None


# ---------------------------------------------------------------- routes


def _run(what, cmd, cwd=None, timeout=300):
    """Runs cmd; `what` names it in the failure message."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouteFailed(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        tail = "\n    ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
        raise RouteFailed(f"{what} exited {proc.returncode}:\n    {tail}")
    return proc


def route_apt(work: Path, suite: str):
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RouteFailed(f"{tool} not found (not a Debian-like system)")
    uri, signed_by = debian_mirror()
    if uri is None:
        raise RouteFailed("no Debian main-archive entry in this machine's apt sources")
    keyring = DEBIAN_KEYRING if os.path.isfile(DEBIAN_KEYRING) else signed_by
    option = f"[signed-by={keyring}] " if keyring and os.path.isfile(keyring) else ""

    apt = work / "apt"
    parts = apt / "sources.list.d"  # empty: keeps the machine's own sources out
    lists = apt / "lists"
    cache = apt / "cache"
    debs = work / "debs"
    for d in (parts, lists / "partial", cache / "archives" / "partial", debs):
        d.mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(f"deb {option}{uri} {suite} main\n")
    conf = [
        "-q",
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
        # As root apt would hand downloads to the _apt user, who cannot write here.
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
        "-o", "Acquire::Retries=1",
        "-o", "Acquire::http::Timeout=30",
    ]
    log(f"apt: private sources list, suite {suite}, mirror taken from this machine")
    _run("apt-get update", ["apt-get", *conf, "update"])
    for old in debs.glob("*.deb"):
        old.unlink()
    _run("apt-get download", ["apt-get", *conf, "download", "libonnxruntime-dev"], cwd=debs)
    found = sorted(debs.glob("libonnxruntime-dev_*.deb"))
    if not found:
        raise RouteFailed("apt-get download produced no libonnxruntime-dev .deb")
    unpacked = work / "deb_root"
    shutil.rmtree(unpacked, ignore_errors=True)
    _run("dpkg-deb -x", ["dpkg-deb", "-x", str(found[-1]), str(unpacked)])
    include = unpacked / "usr" / "include" / "onnxruntime"
    if not (include / MARKER).is_file():
        raise RouteFailed(f"{found[-1].name} has no usr/include/onnxruntime/{MARKER}")
    return include, f"Debian package {found[-1].name} (suite {suite})"


def release_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x64"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    raise RouteFailed(f"no official Linux release tarball for machine type {machine!r}")


def route_release(work: Path, version: str):
    url = RELEASE_URL.format(version=version, arch=release_arch())
    archive = work / url.rsplit("/", 1)[1]
    log(f"release: downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
    except Exception as exc:  # any network or HTTP failure means: try the next route
        archive.unlink(missing_ok=True)
        raise RouteFailed(f"download of {url} failed: {exc}") from None
    unpacked = work / "tgz_root"
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir()
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/include/" in m.name and (m.isfile() or m.isdir())]
            for m in members:
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise RouteFailed(f"unsafe path {m.name!r} in {archive.name}")
            # The "data" filter (Python >= 3.12, backported) refuses links out of the tree.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(unpacked, members=members, **safe)
    except (tarfile.TarError, OSError) as exc:
        raise RouteFailed(f"cannot unpack {archive.name}: {exc}") from None
    hits = sorted(unpacked.glob(f"*/include/{MARKER}")) + sorted(unpacked.glob(f"*/include/*/{MARKER}"))
    if not hits:
        raise RouteFailed(f"{archive.name} has no include/{MARKER}")
    return hits[0].parent, f"release tarball {archive.name}"


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--version", default="1.21.0", help="release tarball version")
    ap.add_argument("--suite", default="trixie", help="Debian suite for the apt route")
    ap.add_argument("--routes", default="apt,release")
    args = ap.parse_args(argv)

    dest = args.dest.resolve()
    include = dest / "include"
    route_file = dest / "route.txt"
    if (include / MARKER).is_file() and route_file.is_file():
        print(f"route=cached in {dest} ({route_file.read_text().strip()})")
        print(f"include={include}")
        return 0

    dest.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in [r.strip() for r in args.routes.split(",") if r.strip()]:
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=dest))
        try:
            if name == "apt":
                found, how = route_apt(work, args.suite)
            elif name == "release":
                found, how = route_release(work, args.version)
            else:
                raise RouteFailed("unknown route")
            staged = dest / "include.new"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(found, staged)
            shutil.rmtree(include, ignore_errors=True)
            staged.rename(include)
            route_file.write_text(how + "\n")
            print(f"route={how}")
            print(f"include={include}")
            return 0
        except RouteFailed as exc:
            log(f"{name}: {exc}")
            failures.append(f"{name}: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log("no route worked:\n  " + "\n  ".join(failures))
    return 1


if __name__ == "__main__":
    sys.exit(main())
