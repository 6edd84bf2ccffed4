"""Reading and writing models: clear errors on bad files, atomic writes, IR versions, and a walk over every node."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model, set_external_data

from ..errors import ModelLoadError, OutputError, error_message
from .data_files import check_data_files, read_linked
from .file_kinds import refuse_other_format
from .node_order import in_order


def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the If/Loop/Scan bodies inside it, outermost first."""
    yield from _nodes_within(graph.node)


def _nodes_within(nodes):
    for node in nodes:
        yield node
        for body in _bodies(node):
            yield from _nodes_within(body.node)


def _bodies(node: onnx.NodeProto) -> list:
    return [g for attr in node.attribute for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)]


def all_graphs(graph: onnx.GraphProto):
    """``graph`` and every If/Loop/Scan body inside it."""
    yield graph
    for node in all_nodes(graph):
        yield from _bodies(node)


def all_tensors(model: onnx.ModelProto):
    """Every tensor that may keep its data in a file, as onnx's loader finds them: the
    initializers of every graph (If, Loop and Scan bodies too) and the tensors of node
    attributes (a Constant's value), in the main graph and in local functions."""
    yield from model.graph.initializer
    for node in [*_nodes_within(model.graph.node), *(n for f in model.functions for n in _nodes_within(f.node))]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
        for body in _bodies(node):
            yield from body.initializer


# Protobuf refuses single messages over 2 GiB; stay well clear of the limit.
_EXTERNAL_DATA_BYTES = 1 << 30


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and validate a model, resolving external data next to it."""
    return read_model(path)[0]


def read_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, bool]:
    """The validated model and whether its weights were stored as external data."""
    p = Path(path)
    try:
        if not p.exists():
            raise ModelLoadError(f"{p}: " + ("a link to no file (its target is missing, or links lead back to it)"
                                             if p.is_symlink() else "no such file"))
    except OSError as exc:  # a name too long, a folder not searchable
        raise ModelLoadError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not an ONNX file")
    if not p.is_file():  # a pipe or device: it read as "empty"
        raise ModelLoadError(f"{p}: not an ONNX file (a device or pipe)")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: the file is empty")
    try:
        str(p).encode("utf-8")
    except UnicodeEncodeError:  # bytes the locale could not decode: the checker's message blamed the model
        raise ModelLoadError(f"{p}: the path holds bytes that are not text in this system's encoding (a C or "
                             "POSIX locale?), and onnx cannot open such a path: run with a UTF-8 locale "
                             "(LANG=C.UTF-8) or rename the file") from None
    try:
        model = onnx.load(str(p), load_external_data=False)
        external = uses_external_data(model)
        linked = False
        if external:
            stored = [t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
            check_data_files(stored, p)
            linked = read_linked(stored, p)
            onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except ModelLoadError:
        raise
    except Exception as exc:  # protobuf and IO errors come in many types
        refuse_other_format(p)
        raise ModelLoadError(f"{p}: not a readable ONNX model ({error_message(exc)})") from exc
    if not model.HasField("graph"):  # other bytes may parse as a message of unknown fields
        refuse_other_format(p)
    shaped = declare_output_shapes(in_order(model) or model)
    # The path form of the checker copes with models over 2 GiB, but reads the file as it is.
    # (The file's checker would refuse a linked data file, whose data is read in already.)
    check_model(shaped, str(p), checked=str(p) if shaped is model and not linked else None)
    return shaped, external


def checked_in_memory(model: onnx.ModelProto) -> onnx.ModelProto:
    """What read_model makes of a file's model, for one given in memory: the model, or a
    copy with its outputs' shapes declared, checked (the caller's is never changed)."""
    shaped = declare_output_shapes(in_order(model) or model) if isinstance(model, onnx.ModelProto) else model
    check_model(shaped)  # refuses what is no ModelProto
    return shaped


def declare_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy of it in which the graph outputs declared without a shape (graph
    editors write them; onnxruntime runs them, the ONNX checker refuses them) have the one
    ONNX shape inference gives them. An output inference cannot shape stays as it is, for
    check_model to refuse."""
    def unshaped(v: onnx.ValueInfoProto) -> bool:
        return v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")

    if not any(unshaped(o) for o in model.graph.output) or model.ByteSize() >= _EXTERNAL_DATA_BYTES:
        return model
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - whatever stops inference, the checker's refusal stands
        return model
    shapes = {o.name: o.type.tensor_type.shape for o in inferred.graph.output if not unshaped(o)}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for o in fixed.graph.output:
        if unshaped(o) and o.name in shapes:
            o.type.tensor_type.shape.CopyFrom(shapes[o.name])
    return fixed


def check_model(model: onnx.ModelProto, where: str = "the model", checked: str | None = None) -> None:
    """Raise ModelLoadError unless ``model`` is a model the compiler can read: a graph, an
    opset, outputs, well-formed tensors and text, and the ONNX checker's consent (run on
    the file ``checked`` when given, else on the model in memory, when under 1 GiB)."""
    if not isinstance(model, onnx.ModelProto):
        raise ModelLoadError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{where}: not an ONNX model (no graph or no opset import)")
    if not model.graph.output:  # the checker lets it pass; onnxruntime cannot load it, and nothing is computed
        raise ModelLoadError(f"{where}: the graph has no outputs")
    problem = _short_tensor(model.graph) or _malformed(model)
    if problem:
        raise ModelLoadError(f"{where}: {problem}")
    # onnxruntime runs a graph input or output declared without a shape (graph editors write
    # them), but the checker refuses it, and so would refuse the model written from it
    # (declare_output_shapes gives an output the shape inference finds, where it finds one).
    unshaped = next((v.name for v in [*model.graph.input, *model.graph.output]
                     if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")), None)
    if unshaped is not None:
        raise ModelLoadError(f"{where}: '{unshaped}' is declared without a shape, which the ONNX checker refuses: "
                             "declare one (its dims may be names, e.g. ['N', 1000])")
    # The graph library the compiler rewrites with cannot carry these through (it failed inside).
    odd = next(((v.name, kind) for v in [*model.graph.input, *model.graph.output]
                for kind in [v.type.WhichOneof("value")] if kind in ("map_type", "optional_type")), None)
    if odd is not None:
        raise ModelLoadError(f"{where}: '{odd[0]}' is {'a map' if odd[1] == 'map_type' else 'an optional'}, "
                             "which this compiler cannot carry through (tensors and sequences it can)")
    if checked is None and model.ByteSize() >= _EXTERNAL_DATA_BYTES:
        return  # the in-memory checker cannot take it; the compiler's own reading still does
    try:
        onnx.checker.check_model(checked if checked is not None else model)
    except Exception as exc:
        raise ModelLoadError(f"{where}: fails the ONNX checker: {error_message(exc)}") from exc


def _short_tensor(graph: onnx.GraphProto) -> str | None:
    """The first initializer whose data does not match its dims and type (the checker lets it pass)."""
    packed = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
              if hasattr(onnx.TensorProto, n)}
    for t in graph.initializer:
        if t.data_type in packed:  # two or four values a byte
            continue
        if t.data_location == onnx.TensorProto.EXTERNAL:
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            return (f"initializer '{t.name}' is external data ('{where}') that was not loaded: give the model's path, "
                    "or load it with onnx.load(path), which loads its external data")
        try:
            count = math.prod(t.dims)
            unit = "bytes"
            if t.HasField("raw_data"):
                have, want = len(t.raw_data), count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            else:
                field = onnx.helper.tensor_dtype_to_field(t.data_type)
                pair = t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
                have, want, unit = len(getattr(t, field)), count * (2 if pair else 1), "values"
        except Exception:  # noqa: BLE001 - unknown types are the checker's business
            continue
        if have != want:
            dtype = onnx.TensorProto.DataType.Name(t.data_type)
            return f"initializer '{t.name}' holds {have} {unit} where {dtype} {list(t.dims)} needs {want}"
    return None


_TYPES = set(onnx.TensorProto.DataType.values())


def _malformed(message) -> str | None:
    """Text that is not UTF-8 or an unknown element type anywhere in ``message``: the
    checker lets both pass and graphsurgeon fails on them."""
    kind = message.DESCRIPTOR.full_name
    if (kind == "onnx.ValueInfoProto" and message.type.HasField("tensor_type")
            and message.type.tensor_type.elem_type not in _TYPES):
        return f"'{message.name}' has unknown element type {message.type.tensor_type.elem_type}"
    if kind in ("onnx.TypeProto.Tensor", "onnx.TypeProto.SparseTensor") and message.elem_type not in _TYPES:
        return f"unknown element type {message.elem_type}"
    if kind == "onnx.TensorProto":  # its name and type only: listing its fields would copy the data
        if isinstance(message.name, bytes):
            return f"a tensor name that is not UTF-8 text ({message.name[:60]!r})"
        return None if message.data_type in _TYPES else f"tensor '{message.name}' has unknown data type {message.data_type}"
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        items = value if repeated else [value]
        if field.type == field.TYPE_STRING and any(isinstance(v, bytes) for v in items):
            return f"a {field.name} that is not UTF-8 text ({next(v for v in items if isinstance(v, bytes))[:60]!r})"
        if field.type == field.TYPE_MESSAGE:
            for item in items:
                problem = _malformed(item)
                if problem:
                    return problem
    return None


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensors(model))


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of weights held in the initializers of every graph (ours are always loaded, not external)."""
    return sum(len(t.raw_data) for graph in all_graphs(model.graph) for t in graph.initializer)


def check_writable(out: str | os.PathLike, replaced: bool = True) -> None:
    """Raise OutputError when a file cannot be written at ``out``; checked before any work
    is done, and again when writing. ``replaced``: the file is written beside ``out`` and
    renamed over it, which a device or a pipe there must not see (a plain write to
    /dev/stdout is fine)."""
    out = Path(out)
    if replaced:
        _refuse_descriptor(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"{out}: the directory {parent} {problem}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: the directory {parent} is not writable")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    if replaced and out.exists() and not out.is_file():  # a rename would replace the node (/dev/null as root)
        raise OutputError(f"{out}: is not a regular file (a device, a pipe or a socket); give a file path")
    if not out.exists() and str(out.absolute()).startswith(("/proc/", "/sys/")):  # root may "write" there
        raise OutputError(f"{out}: no new file can be made under {out.absolute().parts[1]}; give a file path")


def _refuse_descriptor(path: Path) -> None:
    """Refuse /dev/stdout, /dev/fd/N, /proc/self/fd/N and the like, links to whatever is open
    there: its file would be replaced (a redirected stdout's log became the model)."""
    text = str(path.absolute())
    if text in ("/dev/stdin", "/dev/stdout", "/dev/stderr") or text.startswith("/dev/fd/") or (
            text.startswith("/proc/") and "/fd/" in text):
        raise OutputError(f"{path}: names an open stream (standard output?), not a file; a model is written to a "
                          "file: give a file path")


def written_path(out: str | os.PathLike) -> Path:
    """Where a file given as ``out`` is written: through a symbolic link, the file it names,
    so that the link stays a link."""
    return Path(os.path.realpath(out)) if os.path.islink(out) else Path(out)


def save_model(model: onnx.ModelProto, out: str | os.PathLike, *, external_data: bool = False,
               before_commit=None, raw: bytes | None = None) -> None:
    """Write ``model`` to ``out`` atomically: all or nothing, never a partial file.
    ``before_commit``: called once everything is written, just before the renames into
    place (the command stops taking signals there). ``raw``: its file's bytes, for a model
    written unchanged (serialised again, a trial's dynamo export differed).

    Weights go to ``<out>.data`` when asked to or when the model is too large for one
    protobuf message. Once written, ``model`` is as it was. Through a link, the file it
    names is replaced (its weights beside it) and the link stays.
    """
    _refuse_descriptor(Path(out))  # (before the link is followed to the file it would replace)
    out = written_path(out)
    check_writable(out)
    parent = out.parent if str(out.parent) else Path(".")
    external_data = external_data or tensor_bytes(model) > _EXTERNAL_DATA_BYTES
    data_name = out.name + ".data"
    # The data file of the output this one replaces: left beside an inline model it would
    # look like this model's weights.
    stale = parent / data_name if os.path.exists(parent / data_name) and any(
        same_file(f, parent / data_name) for f in external_data_files(out)) else None
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix=".exprune-") as tmp:
            tmp_model, tmp_data = Path(tmp) / out.name, Path(tmp) / data_name
            moved = _mark_external(model, data_name) if external_data and raw is None else []
            if raw is not None:
                _write_raw(raw, tmp_model)
            else:
                onnx.save_model(model, str(tmp_model))
            if moved:
                # onnx.save_model moved their data out of ``model`` (the report still reads it).
                load_external_data_for_model(model, tmp)
                for t, had_location in moved:
                    if not had_location:
                        t.ClearField("data_location")
            wrote_data = os.path.exists(tmp_data)  # (False, not OSError, for a name too long to be written)
            keep_mode(out, tmp_model)
            if before_commit is not None:
                before_commit()
            if wrote_data:
                # onnx makes the data file private (0600); the model file's mode follows the umask.
                shutil.copymode(tmp_model, tmp_data)
                keep_mode(parent / data_name, tmp_data)
                os.replace(tmp_data, parent / data_name)
            os.replace(tmp_model, out)
            if stale is not None and not wrote_data:
                stale.unlink()
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc


def _write_raw(raw: bytes, path: Path) -> None:
    path.write_bytes(raw)


def keep_mode(path: Path, tmp: Path) -> None:
    """Give ``tmp``, about to replace ``path``, the permissions ``path`` has, if it exists: a
    pipeline that made its model file private (0600) found it 0644 after a rewrite."""
    if path.exists():
        shutil.copymode(path, tmp)


def _mark_external(model: onnx.ModelProto, data_name: str) -> list:
    """Mark ``model``'s large initializers for ``data_name``; returns them, each with whether
    it had a data location set. Done here, not by onnx.save_model(location=...), which
    refuses a location that exists relative to the working directory (a previous output
    there) rather than to the model."""
    marked = []
    for graph in all_graphs(model.graph):
        for t in graph.initializer:
            if t.HasField("raw_data") and len(t.raw_data) >= 1024 and t.data_location != onnx.TensorProto.EXTERNAL:
                marked.append((t, t.HasField("data_location")))
                set_external_data(t, data_name)
    return marked


def clobbered_input(model: str | os.PathLike, out: str | os.PathLike, others=()) -> str | None:
    """Why writing ``out`` would overwrite an input: the model, its external data or one of
    ``others`` (paths or None; a directory stands for the files in it), or None."""
    if same_file(model, out):
        return f"{out}: the output would overwrite the input model"
    inputs = external_data_files(model)
    if any(same_file(f, out) for f in inputs):
        return f"{out}: the output would overwrite the input model's external data"
    data = Path(out).with_name(Path(out).name + ".data")
    # os.path.exists: a data name too long to exist (the output's own is legal) is no input
    # (Path.exists raised, and a model that writes no .data was refused); so in save_model.
    if os.path.exists(data) and any(same_file(f, data) for f in inputs):
        return f"{out}: its data file {data.name} would overwrite the input model's external data"
    for other in others:
        if other is not None and any(same_file(f, out) for f in _files(Path(other))):
            return f"{out}: the output would overwrite the input {other}"
        if other is not None and os.path.exists(data) and any(same_file(f, data) for f in _files(Path(other))):
            return f"{out}: its data file {data.name} would overwrite the input {other}"
    return None


def _files(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.is_dir() else [path]


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The files a model's tensors keep their data in, each once (none when it is unreadable,
    or no regular file: a pipe would block this read before the model's own refused it)."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:
        return []
    files = []
    for t in all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), None)
            if location and p.parent / location not in files:
                files.append(p.parent / location)
    return files


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file; False where ``b`` cannot be looked at (a name too
    long, a folder not searchable): writing or reading it then fails with its own message."""
    try:
        return Path(b).exists() and os.path.samefile(a, b)
    except OSError:  # (``a`` missing: no file both are)
        return False
