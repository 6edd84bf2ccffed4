"""Where the command writes: refused before any work when a path would overwrite an
input or another output, and written all or nothing (a model, its report, its plot)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from ..errors import OutputError
from .modelio import check_writable, clobbered_input, keep_mode, same_file, written_path


def refuse_overwriting(outputs: list, models: list, others: tuple, replaced: bool = True) -> None:
    """Stop before any work when an output path (None: not asked for) cannot be written, is
    an input file or is another output's path; the first output is a model, whose weights
    may go beside it (``<output>.data``). ``replaced``: the outputs are renamed into place
    (modelio.check_writable)."""
    outputs = [o for o in outputs if o is not None]
    for i, out in enumerate(outputs):
        check_writable(out, replaced)
        for model in models:
            problem = clobbered_input(model, out, others)
            if problem:
                raise OutputError(problem)
        if any(Path(out).resolve() == Path(earlier).resolve() or same_file(earlier, out) for earlier in outputs[:i]):
            raise OutputError(f"{out}: two outputs were given the same path")
        sidecar = Path(outputs[0]).with_name(Path(outputs[0]).name + ".data")  # the model's weights, if external
        if i and (Path(out).resolve() == sidecar.resolve() or same_file(sidecar, out)):
            raise OutputError(f"{out}: the output model's weights may be written there ({sidecar.name})")


# The version of the JSON files' layout (docs/json.md): raised when a key is renamed,
# removed or changes meaning, not when one is added.
JSON_SCHEMA = 1


def json_text(payload: dict) -> str:
    import json

    return json.dumps({"schema": JSON_SCHEMA, **payload}, indent=2) + "\n"


def is_stream(path: Path) -> bool:
    """A pipe, a device, or a name under /dev or /proc such as /dev/stdout (whatever it stands
    for now): written in place, never renamed over. /dev/shm is a folder of plain files."""
    path = Path(path)
    if path.is_dir():
        return False  # refused as an output, as any directory is
    name = str(path.absolute())
    special = name.startswith(("/dev/", "/proc/")) and not name.startswith("/dev/shm/")
    return (path.exists() and not path.is_file()) or special


def write_stream(path: Path, text: str) -> None:
    """Append ``text`` to a stream. /dev/stdout (or stderr) is written through Python's own
    stream when it is that stream: opened anew it would truncate a file that stdout is
    redirected to, and with it the tables printed there."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            same = os.path.samestat(os.stat(path), os.fstat(stream.fileno()))
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's captured stream)
            same = False
        if same:
            stream.flush()
            stream.write(text)
            stream.flush()
            return
    if Path(path).is_file():  # a regular file under /dev or /proc (/dev/shm): replaced, as any report file is
        Path(path).write_text(text)
        return
    with open(path, "a") as f:
        f.write(text)


def write_json(path: Path, payload: dict) -> None:
    """A file is written beside its path and renamed over it (``stage``), so that a full
    disk or an interrupt leaves the old report or none. A stream (a pipe, a device, or a
    name under /dev or /proc such as /dev/stdout, whatever it stands for now) or a file in a
    folder we may not create files in is written in place."""
    text = json_text(payload)
    path = Path(path)
    try:
        if is_stream(path):
            write_stream(path, text)
            return
        if not os.access(written_path(path).parent, os.W_OK):
            path.write_text(text)
            return
        staged: list[tuple[Path, Path]] = []
        try:
            stage(staged, path, lambda tmp: tmp.write_text(text))
            move_into_place(staged)
        finally:
            discard(staged)
    except BrokenPipeError:
        raise  # the reader stopped reading (`| head`): the command's exit 141, as for its stdout
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the report ({exc.strerror or exc})") from exc


STALE_SECONDS = 3600  # a staged file lives for the seconds of a write: one this old was left


def _staging_dir(path: Path) -> Path:
    """Where ``path``'s staged file goes: beside it (beside the file a link names)."""
    dest = written_path(path)
    return dest.parent if str(dest.parent) else Path(".")


def left_behind(path: Path) -> list[Path]:
    """The staged files and folders beside ``path`` that a killed run left (``kill -9``, the
    out-of-memory killer: nothing runs to remove them), older than STALE_SECONDS so that a
    run writing now is not among them."""
    def stale(p: Path) -> bool:
        try:
            return time.time() - p.lstat().st_mtime > STALE_SECONDS
        except OSError:  # gone since the listing (another run's, done): that one file only
            return False

    try:
        return sorted(p for p in _staging_dir(path).glob(".exprune-*") if stale(p))
    except OSError:
        return []


def stage(staged: list[tuple[Path, Path]], path: Path, write) -> None:
    """``write(tmp)`` into a hidden file beside ``path`` (beside the file a link names),
    listed in ``staged`` from the moment it exists, for ``move_into_place`` once everything
    else is written, or ``discard``: a failure or a signal on the way leaves no file behind."""
    dest, parent = written_path(path), _staging_dir(path)
    # Listed before it exists, so that an interrupt at any instant leaves nothing behind
    # (blocking signals around mkstemp does not do it: another thread, onnxruntime's, takes
    # the signal and Python still interrupts the main one).
    while True:
        tmp = parent / f".exprune-{secrets.token_hex(6)}{path.suffix}"
        staged.append((tmp, dest))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            break
        except FileExistsError:
            staged.pop()  # another's: try another name
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # made private above; the user's umask decides
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def move_into_place(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged file (``stage``) over its path, then forget it (a file renamed
    but not yet forgotten is gone from its hidden name: ``discard`` finds nothing)."""
    while staged:
        tmp, path = staged[0]
        try:
            keep_mode(path, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        staged.pop(0)


def discard(staged: list[tuple[Path, Path]]) -> None:
    """Remove staged files that were never moved into place (a later step failed)."""
    for tmp, _path in staged:
        tmp.unlink(missing_ok=True)
    staged.clear()
