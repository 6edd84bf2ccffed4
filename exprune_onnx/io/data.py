"""Sample data for checking and calibration: reading it and fitting it to a model's inputs.

Accepted layouts (first axis = samples everywhere):

* ``data.npz``: one array per model input, keyed by input name; an optional ``labels``.
* a directory of ``<input name>.npy`` files (memory-mapped, so large sets stay on
  disk); an optional ``labels.npy``.
* the ONNX test-data layout: a directory of ``input_0.pb, input_1.pb, ...`` (serialized
  TensorProtos in model-input order), or a directory of ``test_data_set_*``
  directories holding them, concatenated along the first axis.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..errors import DataError, LabelError, error_message
from .feeds import (
    InputSpec,
    batch_layout,
    check_batch_first,
    check_spec,
    fixed_batch,
    input_dims,
    input_dtype,
    model_inputs,
    random_arrays,
    resolved_dims,
    state_axes,
)
from .id_inputs import is_mask
from .npz_room import check_npz_fits
from .onnx_test_data import read_pb_sets, set_number

__all__ = ["Dataset", "dataset_of", "input_dims", "input_dtype", "load_dataset", "model_inputs", "quoted_source",
           "random_dataset", "read_labels"]


# The parts of calibration data a check may run on (workflow._checked_part): a Dataset
# of one has the source "<file>, <part>".
HELD_OUT, CALIBRATED_ON = "held out", "calibrated on"
PARTS = {HELD_OUT: "its held-out part", CALIBRATED_ON: "the part calibrated on"}


def quoted_source(source: str) -> str:
    """A data source as the tables name it: a file's name in quotes, the part of it checked
    (PARTS) after them, so that no quote closes on words that are not the name."""
    if source == "random":  # no file: the seeded inputs drawn for the model
        return "seeded random inputs"
    name, comma, part = source.rpartition(", ")
    return f"'{name}' ({PARTS[part]})" if comma and part in PARTS else f"'{source}'"


def named(exc: DataError, source: str, flag: str, labels: str | None = None) -> DataError:
    """``exc`` with the data it is about named first (``flag`` and the file, and the
    ``labels`` file given apart), where its message does not name it already: a label
    error said nothing of which file held them. Subclasses (the original failing to run,
    NaN outputs) say their own."""
    if type(exc) not in (DataError, LabelError) or source in str(exc):
        return exc
    apart = f" with --labels '{labels}'" if labels else ""
    return DataError(f"{flag} {quoted_source(source)}{apart}: {error_message(exc, limit=None)}")


@contextlib.contextmanager
def naming(data: Dataset, flag: str, only: type[DataError] = DataError):
    """Re-raises a DataError (of ``only``'s kind) from the block with ``data`` named
    (``named``); ``only=LabelError`` around a block whose other errors are not the data's
    (an option the calibration refuses)."""
    try:
        yield
    except only as exc:
        worded = named(exc, data.source, flag, data.labels_source)
        if worded is exc:
            raise
        raise worded from exc


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]  # may be memory-mapped; first axis = samples
    labels: np.ndarray | None
    source: str
    shared: dict[str, np.ndarray] = field(default_factory=dict)  # inputs without a batch axis, fed whole to every run
    batch: int | None = None  # the model's fixed batch: every run feeds exactly this many samples
    labels_source: str | None = None  # the file the labels came from, where apart from the inputs (--labels)
    # Shared inputs holding one value a sample along another axis (a recurrent state
    # [layers, N, H]: feeds.state_axes): each run takes its samples' part.
    shared_axes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def take(self, pick) -> dict[str, np.ndarray]:
        """The feeds of the samples ``pick`` (a slice or indices), scalar inputs included."""
        feeds = {**{k: np.ascontiguousarray(v[pick]) for k, v in self.inputs.items()}, **self.shared}
        if self.shared_axes:
            rows = np.arange(len(self))[pick]
            feeds.update({k: np.ascontiguousarray(np.take(self.shared[k], rows, axis=axis))
                          for k, axis in self.shared_axes.items()})
        return feeds

    def first(self, size: int) -> dict[str, np.ndarray]:
        """One feed of exactly ``size`` samples (the fixed batch, if any): the first ones,
        repeated in order when there are fewer. A latency run at the batch asked for, not
        at the data's size."""
        size = self.batch or size
        return self.take(np.resize(np.arange(len(self)), size))

    def batches(self, size: int, indices: np.ndarray | None = None):
        """Feeds of at most ``size`` samples: all in order, or those at ``indices``.

        Under a fixed batch B every feed has exactly B samples: the last partial batch
        is padded by repeating its own samples. Padding rows come after every real one,
        so outputs concatenated over the batches and cut to the sample count are exactly
        the real samples' (``run_counting`` does that); the ops' prune counters do count
        the repeated rows, so rates stay rates of real samples.
        """
        size = self.batch or size
        total = len(self) if indices is None else len(indices)
        for start in range(0, total, size):
            pick = slice(start, start + size) if indices is None else indices[start:start + size]
            feeds = self.take(pick)
            if self.batch is not None:
                feeds = {k: (_pad_rows(v, self.batch) if k in self.inputs else
                             _pad_rows(v, self.batch, self.shared_axes[k]) if k in self.shared_axes else v)
                         for k, v in feeds.items()}
            yield feeds

    def rows_run(self, samples: int) -> int:
        """Rows the ops see when ``samples`` samples are run: a fixed batch pads the last run."""
        return -(-samples // self.batch) * self.batch if self.batch else samples

    def input_shapes(self, model: onnx.ModelProto, given: dict[str, tuple]) -> dict[str, tuple]:
        """``given`` (--input-shape) and, for each other input whose dims past its batch axis
        the model leaves open, the dims these samples have there (the batch axis stays
        open): for shape inference and FLOPs, which are otherwise unknown on a sequence
        model's [batch, sequence] inputs or an image model's [N, 3, H, W]."""
        shapes = dict(given)
        for vi in model_inputs(model):
            dims, batched = input_dims(vi), vi.name in self.inputs
            a = self.inputs.get(vi.name, self.shared.get(vi.name))
            if vi.name in shapes or a is None or a.ndim != len(dims):
                continue
            if any(not (isinstance(d, int) and d > 0) for d in dims[1 if batched else 0:]):
                shapes[vi.name] = ((dims[0] or "N"),) + a.shape[1:] if batched else a.shape
                if vi.name in self.shared_axes:  # (the batch the samples are run at, not the data's count)
                    axis = self.shared_axes[vi.name]
                    shapes[vi.name] = (*a.shape[:axis], dims[axis], *a.shape[axis + 1:])
        return shapes

    def labels_of(self, indices: np.ndarray | None = None) -> np.ndarray | None:
        if self.labels is None or indices is None:
            return self.labels
        return self.labels[indices]


def _pad_rows(a: np.ndarray, rows: int, axis: int = 0) -> np.ndarray:
    return a if a.shape[axis] == rows else np.take(a, np.arange(rows) % a.shape[axis], axis=axis)


def load_dataset(path: str | Path, model: onnx.ModelProto, labels: str | Path | None = None,
                 spec: InputSpec | None = None, seed: int = 0) -> Dataset:
    """Read ``path`` in any accepted layout and check it against ``model``'s inputs (and
    the dims ``spec`` gives; inputs the data lacks take ``spec``'s ``--input-value``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    names = [vi.name for vi in model_inputs(model)]
    if path.is_dir():
        arrays, found_labels = _read_dir(path, names, batch_layout(model, spec)[1], state_axes(model))
    elif not path.is_file():  # a pipe would block until a writer came, and a device may never end
        raise DataError(f"{path}: not a data file or directory (a device or pipe)")
    else:
        arrays, found_labels = _read_npz(path, names)
    found_labels = chosen_labels(labels, found_labels, str(labels), path.name)
    return dataset_of(arrays, model, found_labels, spec, seed, str(path), path.name,
                      labels_where=None if labels is None else str(labels))


def dataset_of(arrays: dict[str, np.ndarray], model: onnx.ModelProto, labels: np.ndarray | None = None,
               spec: InputSpec | None = None, seed: int = 0, where: str = "the arrays given",
               source: str = "arrays", labels_where: str | None = None) -> Dataset:
    """The samples ``arrays`` (keyed by input name) hold, checked against ``model`` as a
    file's are; ``where`` names them in errors, ``labels_where`` labels read apart (--labels)."""
    try:
        arrays = {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in arrays.items()}
    except ValueError as exc:  # a ragged list
        raise DataError(f"{where}: every input must be one rectangular array: {exc}") from exc
    spec = spec or InputSpec()
    check_spec(model, spec)
    check_batch_first(model)
    batch, whole = batch_layout(model, spec, {k: a.shape[0] for k, a in arrays.items() if a.ndim})
    missing = {vi.name for vi in model_inputs(model) if vi.name not in arrays and vi.name in spec.values}
    if missing:
        inputs = {vi.name for vi in model_inputs(model)}
        samples = next((a.shape[0] for k, a in arrays.items() if a.ndim and k in inputs and k not in whole), 1)
        batched, fed_whole = random_arrays(model, samples, seed, _sized_by(model, arrays, spec, missing),
                                           only=missing)
        arrays = {**arrays, **batched, **fed_whole}
    inputs = fit_to_model(arrays, model, where, spec, whole, labelled=labels is not None)
    shared = {k: inputs.pop(k) for k in list(inputs) if inputs[k].ndim == 0 or k in whole}
    if not inputs:
        raise DataError(f"{where}: none of the model's inputs has a batch axis: there is no sample axis to run over")
    axes = {k: axis for k, axis in state_axes(model).items() if k in shared}
    count = next(iter(inputs.values())).shape[0]
    for k, axis in axes.items():
        if shared[k].shape[axis] != count:
            dims = next(input_dims(vi) for vi in model_inputs(model) if vi.name == k)
            raise DataError(f"{where}: input '{k}' {dims} holds {shared[k].shape[axis]} samples' states along its "
                            f"axis {axis}, and the other inputs {count} samples")
    dataset = Dataset(inputs, None if labels is None else np.asarray(labels), source, shared, batch,
                      None if labels_where is None else Path(labels_where).name, axes)
    if dataset.labels is not None and dataset.labels.shape[:1] != (len(dataset),):
        count = dataset.labels.shape[0] if dataset.labels.ndim else 0
        raise DataError(f"{labels_where}: {count} labels for the {len(dataset)} samples of {where}" if labels_where
                        else f"{where}: {count} labels for {len(dataset)} samples")
    return dataset


# The key (and .npy file name) of the labels beside the inputs.
LABELS = "labels"
# Keys that mean labels in the user's eyes, read as such only under 'labels'.
LABEL_LIKE = {"label", "y", "target", "targets", "class", "classes", "gt", "ground_truth", "truth"}


def _sized_by(model: onnx.ModelProto, arrays: dict, spec: InputSpec, missing: set[str]) -> InputSpec:
    """``spec``, with the inputs ``missing`` from the data sized as the data sizes the dims
    they share by name with the inputs it holds (a mask [N, T] beside x [4, 20] asked for T)."""
    sizes: dict[str, int] = {}
    for vi in model_inputs(model):
        a = arrays.get(vi.name)
        if a is not None and np.ndim(a) == len(input_dims(vi)):
            sizes.update({d: n for d, n in zip(input_dims(vi)[1:], np.shape(a)[1:]) if isinstance(d, str)})

    def sized(dims: list) -> tuple:  # the batch stays as it is (unnamed: "N"), a named dim takes the data's size
        return (dims[0] or "N", *(sizes.get(d, d) if isinstance(d, str) else d for d in dims[1:]))

    shapes = {vi.name: sized(input_dims(vi)) for vi in model_inputs(model)
              if vi.name in missing and vi.name not in spec.shapes and input_dims(vi) and
              all(d is not None for d in input_dims(vi)[1:])}
    return InputSpec({**shapes, **spec.shapes}, spec.values)


def fit_to_model(arrays: dict[str, np.ndarray], model: onnx.ModelProto, where: str,
                 spec: InputSpec | None, whole: frozenset[str], labelled: bool = False) -> dict[str, np.ndarray]:
    """``arrays`` checked against the model's inputs; those in ``whole`` (no batch axis,
    feeds.batch_layout) are given whole, the rest share a sample axis. ``labelled``: labels
    were found or given, so an array named like them is the user's own business."""
    feeds = {}
    states = state_axes(model)
    for vi in model_inputs(model):
        if vi.name not in arrays:
            raise DataError(f"{where}: no array for model input '{vi.name}' (has: {', '.join(sorted(arrays)) or 'nothing'})")
        a = arrays[vi.name]
        want = input_dtype(vi)
        if want is not None and a.dtype != want:
            swapped = a.dtype.newbyteorder("=") == np.dtype(want)  # ('>f4, the model wants float32' said nothing more)
            raise DataError(f"{where}: input '{vi.name}' is {a.dtype}, the model wants {np.dtype(want)}"
                            + (f" (the same values, big-endian: save them with .astype('{np.dtype(want).str}'))"
                               if swapped else ""))
        dims = resolved_dims(vi, spec)
        if vi.name in states:  # as many states as samples, whatever batch --input-shape gives the runs
            dims[states[vi.name]] = input_dims(vi)[states[vi.name]]
        first = 0 if vi.name in whole else 1  # an input without a batch axis is given whole
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s
                                      for d, s in zip(dims[first:], a.shape[first:])):
            wants = "the model wants" if dims == input_dims(vi) else "the model and --input-shape want"
            raise DataError(f"{where}: input '{vi.name}' has shape {list(a.shape)}, {wants} {dims}"
                            + (" (it has no batch axis: give it whole)" if first == 0 else ""))
        if a.dtype.kind == "f" and _any_nan(a):
            raise DataError(f"{where}: input '{vi.name}' contains NaN")
        feeds[vi.name] = a
    misnamed = [] if labelled else sorted(k for k in arrays if k not in feeds and k.lower() in LABEL_LIKE)
    if misnamed:  # else left unread, and no accuracy with no word why
        # (--check-data takes no --labels: a trial followed the advice into a usage error)
        raise DataError(f"{where}: '{misnamed[0]}' is no model input; labels go under the key 'labels' "
                        "(--calibration, evaluate and verify also take them apart: --labels)")
    counts = {a.shape[0] for k, a in feeds.items() if a.ndim and k not in whole}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{where}: the inputs must share a non-zero first (sample) axis, got {sorted(counts)}")
    return feeds


def _any_nan(a: np.ndarray, chunk: int = 1024) -> bool:
    # Chunked so a memory-mapped set is never loaded whole.
    if a.ndim == 0:
        return bool(np.isnan(a))
    return any(np.isnan(a[i:i + chunk]).any() for i in range(0, a.shape[0], chunk))


def _numpy_file(path: Path) -> bool:
    """Whether ``path`` starts as numpy.save's .npy or a zip (.npz) does: numpy reads any
    other file as a pickle, and says so, which names no cause a user would see."""
    try:
        with open(path, "rb") as f:
            return f.read(6).startswith((b"PK", b"\x93NUMPY"))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_npz(path: Path, names: list[str]):
    if not _numpy_file(path):
        hint = (": an input_<i>.pb goes in a directory, given as the data, with one file per input (or "
                "test_data_set_*/ directories of them)" if path.suffix == ".pb" else "")
        raise DataError(f"{path}: not an .npz file (a zip of .npy arrays keyed by input name){hint}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a .npy: one array, with no input name to go by
            raise DataError(f"{path}: a .npy file holds one array with no input name; give an .npz keyed by "
                            "input name, or a directory of <input name>.npy files")
        with loaded as f:
            # Only what is read is loaded: an array the model does not take (a file's raw
            # copy, a big extra) keeps its name for the messages and no memory (it cost 400 MB).
            wanted = {*names, LABELS}
            check_npz_fits(f, wanted, path)
            arrays = {k: f[k] if k in wanted else np.empty(0, np.uint8) for k in f.files}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return arrays, labels_apart(arrays, names)


def labels_apart(arrays: dict, names: list[str]):
    """Takes the labels out of ``arrays`` (key 'labels'), unless a model input has that
    name: the array is then the input's, and labels come from --labels only."""
    return None if LABELS in names else arrays.pop(LABELS, None)


def chosen_labels(given, found: np.ndarray | None, given_where: str, found_where: str) -> np.ndarray | None:
    """The labels given apart (--labels) where there are any, else those found beside the
    inputs; both may be given only when they agree, so that neither is silently dropped."""
    if given is None:
        return found
    labels = label_array(given)
    # Of a different count they are refused for it (dataset_of), which says more.
    same_count = found is not None and np.shape(found)[:1] == labels.shape[:1]
    if same_count and not (np.shape(found) == labels.shape and np.array_equal(found, labels)):
        raise DataError(f"{given_where}: these labels differ from the 'labels' in {found_where}: give them one way")
    return labels


def label_array(labels) -> np.ndarray:
    """Labels given as a file's path (read_labels) or as an array (the Python API)."""
    return read_labels(Path(labels)) if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)


def read_labels(path: Path) -> np.ndarray:
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: not a labels file (a directory, device or pipe)")
    if path.is_file() and path.stat().st_size and not _numpy_file(path):
        raise DataError(f"{path}: not a .npy or .npz file; save the labels with numpy.save (a text file's, "
                        "read with numpy.loadtxt first)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):  # by its content, whatever its name ('.NPZ', none)
            with loaded as f:
                if len(f.files) != 1 and "labels" not in f.files:
                    raise DataError(f"{path}: expected one array or one named 'labels'")
                if "labels" in f.files:
                    return f["labels"]
                name = f.files[0]  # numpy.savez(path, y) names it arr_0
                if name != "arr_0" and name.lower() not in LABEL_LIKE:  # a data file's input, taken as labels
                    raise DataError(f"{path}: holds no 'labels' array, only '{name}' (a data file?); save the "
                                    "labels alone, or under the key 'labels'")
                return f[name]
        return loaded
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable labels file, a .npy or an .npz of one array ({exc})") from None


def _read_dir(path: Path, names: list[str], whole: frozenset[str], states: dict[str, int]):
    # In their numbers' order: by name, test_data_set_10 came before _2, and labels given in
    # the sets' order were read against other samples (a review: 100% accuracy shown as 25%).
    sets = sorted((p for p in path.iterdir() if p.is_dir() and p.name.startswith("test_data_set_")),
                  key=lambda p: (set_number(p.name), p.name))
    if sets or any(path.glob("input_*.pb")):
        return read_pb_sets(sets or [path], names, whole, states), None
    arrays = {}
    for name in names:
        f = path / f"{name}.npy"
        if f.exists():
            if not f.is_file():  # a pipe would block the read until a writer came
                raise DataError(f"{f}: not a .npy file (a directory, device or pipe)")
            try:
                arrays[name] = np.load(f, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise DataError(f"{f}: not a readable .npy file ({exc})") from None
    if not arrays:
        raise DataError(f"{path}: holds no <input name>.npy, input_*.pb or test_data_set_* entries")
    labels_file = path / f"{LABELS}.npy"
    return arrays, (read_labels(labels_file) if labels_file.exists() and LABELS not in names else None)


def random_dataset(model: onnx.ModelProto, samples: int, seed: int, spec: InputSpec | None = None) -> Dataset:
    """Seeded inputs (feeds.py says which values); the batch axis is the sample axis, the
    other dims must be known or given by ``spec``."""
    spec = spec or InputSpec()
    check_spec(model, spec)
    check_batch_first(model)
    batched, whole = random_arrays(model, samples, seed, spec)
    if not batched:
        raise DataError("none of the model's inputs has a batch axis: there is no sample axis to run over")
    data = Dataset(batched, None, "random", whole, fixed_batch(model, spec),
                   shared_axes={k: axis for k, axis in state_axes(model).items() if k in whole})
    masks = [vi.name for vi in model_inputs(model)
             if is_mask(model, vi.name, np.dtype(input_dtype(vi) or np.float32)) and vi.name not in spec.values]
    return _masks_unflipped_or_flipped(model, data, masks) if masks else data


def _masks_unflipped_or_flipped(model: onnx.ModelProto, data: Dataset, masks: list[str]) -> Dataset:
    """``data`` with its mask inputs (all True, or all 1) all False or 0 instead, where the
    first makes the original answer NaN and the second does not: True keeps everything in a
    mask that marks what to keep, and masks everything out in one that marks padding
    (PyTorch's ``key_padding_mask``, whose every row then softmaxes over -inf alone)."""
    from ..runtime import inference_session

    def nan_on(feeds: dict) -> bool:
        outs = sess.run(None, feeds)
        return any(isinstance(o, np.ndarray) and o.dtype.kind == "f" and np.isnan(o).any() for o in outs)

    def flip(arrays: dict) -> dict:
        return {k: (np.zeros_like(v) if k in masks else v) for k, v in arrays.items()}

    flipped = Dataset(flip(data.inputs), None, data.source, flip(data.shared), data.batch,
                      shared_axes=data.shared_axes)
    try:  # a refinement only: a model onnxruntime cannot run fails where it is run for real
        sess = inference_session(model, threads=1)
        return flipped if nan_on(data.first(1)) and not nan_on(flipped.first(1)) else data
    except Exception:  # noqa: BLE001
        return data
