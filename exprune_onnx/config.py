"""Compiler options: k, thresholds, per-layer overrides.

A per-layer config file is JSON::

    {
      "default": {"threshold": 0.0, "k": "auto", "unit_order": "weight"},
      "layers": {
        "/conv2/Conv": {"threshold": -0.5, "k": 16},
        "/conv3/Conv": {"rule": "statstest", "alpha": 0.01},
        "/block/Conv": {"thresholds": [-0.5, -1.2, 0.1, ...one per output channel]},
        "/conv4/Conv": {"rule": "certified"},
        "/fc1/Gemm": {"skip": true}
      }
    }

Layer names are the ones ``exprune-onnx inspect`` prints (the reduction node's name,
or ``<op>:<output tensor>`` when the node has none or shares its name).
"""

from __future__ import annotations

import json
import math
import numbers  # numpy's scalars are numbers.Real / Integral, not float / int
import os
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import NormalDist

from .errors import ConfigError

# The paper decides after 32 units; a quarter of the units caps it for narrow layers
# so the tail stays the larger share of the work.
PAPER_K = 32
SIMD_WIDTH = 8
DEFAULT_MIN_UNITS = 32
# The command's threshold when nothing asks to prune (no --threshold, --config or
# --calibration): no output is pruned, and only exact rewrites remain.
LOSSLESS = -math.inf


def parse_k(text: str | int | float | None) -> str | int | float:
    """``auto``, an absolute count (``16``) or a fraction of n (``0.25``)."""
    if text is None or text == "auto":
        return "auto"
    if isinstance(text, bool) or not isinstance(text, (str, numbers.Real)):  # JSON's true would read as 1
        raise ConfigError(f"k must be 'auto', a count or a fraction in (0, 1), got {text!r}")
    if isinstance(text, numbers.Real):
        value = text
    else:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"k must be 'auto', a count or a fraction in (0, 1), got {text!r}") from None
    if 0 < value < 1:
        return float(value)
    if value >= 1 and float(value).is_integer():
        return int(value)
    raise ConfigError(f"k must be 'auto', a count >= 1 or a fraction in (0, 1), got {text!r}")


def choose_k(spec: str | int | float, n: int) -> int:
    """The number of units in the partial product for a layer with ``n`` units."""
    if spec == "auto":
        k = min(PAPER_K, n // 4)
        if k >= SIMD_WIDTH:
            k -= k % SIMD_WIDTH
        return max(k, 1)
    if isinstance(spec, float):  # a part of n: never all of it
        return max(1, min(n - 1, int(round(spec * n))))
    return int(spec)


# How an early-exit op decides to prune (docs/custom_ops.md, "Decision rules"); not the
# rewrite rules of rules/, which decide what the compiler rewrites.
DECISION_RULES = ("threshold", "statstest", "certified")
# Which input units go into the partial sum: the stored first k (the paper), or the k
# whose weights carry the most energy. Measured on the bundled CNN, weight order
# prunes about twice as much at the same loss (README, "Unit order").
UNIT_ORDERS = ("weight", "stored")
# What the compiler minimises: time in onnxruntime (objective.py) or FLOPs (the paper).
OBJECTIVES = ("latency", "flops")
SPARSE_RELU = ("auto", "on", "off")
DEFAULT_ALPHA = 0.01


def z_crit(alpha: float) -> float:
    """StatsTest's critical value: prune when the test statistic is below Phi^-1(alpha)."""
    if alpha <= 0:
        return -math.inf
    return NormalDist().inv_cdf(alpha)


@dataclass(frozen=True)
class LayerSetting:
    threshold: float
    k: str | int | float = "auto"
    skip: bool = False
    skip_reason: str = ""  # shown by --explain instead of the config file's
    rule: str = "threshold"
    z_crit: float = -math.inf
    thresholds: tuple[float, ...] | None = None  # threshold rule, one per output channel (overrides threshold)


@dataclass
class Options:
    """The compiler's options: what ``exprune-onnx optimize`` sets from its flags, and the
    keywords of ``optimize_model``, ``inspect_model`` and ``optimize`` (docs/cli.md). Each
    field's comment says what it does; ``layers`` holds per-layer settings, best given as a
    config (``config=``, as ``--config`` reads)."""

    # None: not asked, so no output is pruned (LOSSLESS), in the compiler as on the command
    # line; a config file sets it with its default's threshold (load_config).
    threshold: float | None = None
    k: str | int | float = "auto"
    min_units: int = DEFAULT_MIN_UNITS
    include_first_layer: bool = False
    emit_stats: bool = False
    rule: str = "threshold"
    alpha: float = DEFAULT_ALPHA
    unit_order: str = "weight"
    argmax_only: tuple[str, ...] = ()  # graph outputs of which only the arg-max matters
    sparse_input: bool = True  # a MatMul/Gemm after an early-exit layer skips its zero inputs (passes/sparse_input.py)
    # Also one after a plain Relu or Clip(0, .) that is not an early-exit layer: exact,
    # but faster only where the zeros are many. "on", "off", or "auto": timed by the
    # latency objective (objective.py), which sets "on" for the consumers it keeps.
    sparse_relu: str = "auto"
    # When set, only these consumers of a plain Relu (the latency objective's choice).
    sparse_relu_layers: frozenset[str] | None = None
    layers: dict[str, LayerSetting] = field(default_factory=dict)
    # When set, only these layers may be rewritten: the calibration and the latency
    # objective decide over the candidates they saw, and no other may slip in.
    chosen: frozenset[str] | None = None
    # Numbers for symbolic input dims (--input-shape, feeds.py): input -> dims, used for
    # shape inference and FLOPs only; the written model keeps its open dims.
    input_shapes: dict[str, tuple] = field(default_factory=dict)
    # FLOPs per sample of every counted main-graph node, by first output, at the shapes of
    # one batch of the data, run where shape inference cannot size a node
    # (measure/shape_probe.py); taken before the graph's own count. Set by the workflow.
    runtime_flops: dict[str, int] | None = None
    # Calibration only: the probability, over the draw of the data, that the budget holds on
    # the data distribution (certify.py); 0 keeps the point estimate on the data given. None:
    # the workflow's default (DEFAULT_CONFIDENCE, as on the command line); the search alone
    # reads it as 0.
    confidence: float | None = None

    def setting(self, layer: str) -> LayerSetting:
        threshold = LOSSLESS if self.threshold is None else self.threshold
        default = LayerSetting(threshold, self.k, rule=self.rule, z_crit=z_crit(self.alpha))
        return self.layers.get(layer, default)


def whole_number(name: str, value, low: int, high: int | None = None) -> None:
    """ConfigError unless ``value`` is a whole number in [low, high] (high None: no bound).
    The Python API takes what it is given, where the command line's types check first."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{name} must be a whole number {bounds}, got {value!r}")


def true_or_false(name: str, value) -> None:
    """ConfigError unless ``value`` is True or False ("no" would read as true)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def check_options(options: Options) -> None:
    """Raise ConfigError for a top-level option of the wrong type or out of range: the
    Python API takes them as given, where the command line's types check them first."""
    if isinstance(options.threshold, str):  # (a JSON config spells -inf as a string; Python has float("-inf"))
        raise ConfigError(f"threshold must be a number, got {options.threshold!r}: float({options.threshold!r}) "
                          "if that is what you mean")
    if options.threshold is not None:
        _threshold(options.threshold, "the options")
    _k(options.k, "the options")
    whole_number("min_units", options.min_units, 2)  # as --min-units: one unit has no partial sum short of all
    parse_rule(options.rule, "the options")
    parse_alpha(options.alpha, "the options")
    parse_unit_order(options.unit_order, "the options")
    if isinstance(options.argmax_only, str) or not all(isinstance(n, str) for n in options.argmax_only):
        raise ConfigError(f"argmax_only must be a list of output names, got {options.argmax_only!r}")
    for name in ("include_first_layer", "emit_stats", "sparse_input"):
        true_or_false(name, getattr(options, name))
    if not isinstance(options.layers, dict):
        raise ConfigError(f"layers must be a dict of layer name to LayerSetting, got {type(options.layers).__name__}")
    for name, setting in options.layers.items():
        if not isinstance(setting, LayerSetting):
            raise ConfigError(f"layers[{name!r}] must be a LayerSetting, got {type(setting).__name__}; config= takes "
                              "a config file's content as a dict, e.g. {'layers': {name: {'skip': True}}}")
    if not isinstance(options.input_shapes, dict):
        raise ConfigError("input_shapes must be a dict of input name to dims, got "
                          f"{type(options.input_shapes).__name__}")
    for name, dims in options.input_shapes.items():
        # A size of 0 past the first dim is real data: a decoder's first step has an empty cache.
        if isinstance(dims, str) or not all(
                isinstance(d, str) or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= (i == 0))
                for i, d in enumerate(dims)):
            raise ConfigError(f"input_shapes[{name!r}]: each dim must be a size (>= 1 for the first, >= 0 after it) "
                              f"or a name, got {dims!r}")


# --confidence's default: the budget holds with probability 0.9 over the draw of the data.
DEFAULT_CONFIDENCE = 0.9


# Below it a certificate fails as often as it holds, and its bound sits under the losses seen
# ("risk <= 6.64%, budget 5%" read as certified at 0.01 in a trial): 0 asks for no certificate.
MIN_CONFIDENCE = 0.5


def parse_confidence(value) -> float:
    """``--confidence``: a probability in [0.5, 1) (1 would need infinitely many samples), or 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"confidence must be a number in [0, 1), got {value!r}")
    if 0 < value < MIN_CONFIDENCE:
        raise ConfigError(f"confidence {value:g} promises less than even odds: give {MIN_CONFIDENCE:g} or more (0.9 "
                          "is the default), or 0 for no certificate (a held-out check only)")
    return float(value)


def parse_rule(value, where: str = "rule") -> str:
    if value not in DECISION_RULES:
        raise ConfigError(f"{where}: rule must be one of {', '.join(DECISION_RULES)}, got {value!r}")
    return value


def parse_unit_order(value, where: str = "unit_order") -> str:
    if value not in UNIT_ORDERS:
        raise ConfigError(f"{where}: unit_order must be one of {', '.join(UNIT_ORDERS)}, got {value!r}")
    return value


def parse_alpha(value, where: str = "alpha") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 0.5:
        raise ConfigError(f"{where}: alpha must be a number in [0, 0.5), got {value!r}")
    return float(value)


def _threshold(value, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: threshold must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ConfigError(f"{where}: threshold must be a number, got {value!r}")
    if value == math.inf:  # every output pruned, whatever the input: a model that answers nothing
        raise ConfigError(f"{where}: threshold must be finite or -inf (prunes nothing); +inf prunes every output")
    return float(value)


def _k(value, where: str):
    try:
        return parse_k(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):  # "false" is a true string
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def unknown_option(key: str, *holders) -> TypeError:
    """A keyword that no field of ``holders`` (dataclass instances) has, with the closest
    field's name when one is close: a Python call's error, as for any unknown keyword."""
    import difflib

    names = [f.name for h in holders for f in fields(h)]
    close = difflib.get_close_matches(key, names, n=1)
    return TypeError(f"unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _check_keys(obj, known: tuple[str, ...], what: str) -> None:
    """Refuse anything but an object whose keys are all ``known``, naming the others: a
    misspelt key would otherwise leave its setting at the default without a word."""
    unknown = sorted(set(obj) - set(known)) if isinstance(obj, dict) else []
    if not isinstance(obj, dict) or unknown:
        raise ConfigError(f"{what} {', '.join(known[:-1])} and/or {known[-1]}"
                          + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else ""))


# Thresholds for every output channel of a large model fill a few MB of JSON.
_MAX_CONFIG_BYTES = 256 << 20


def _no_repeats(pairs: list) -> dict:
    """A JSON object whose keys are all different (json keeps the last of a repeated key)."""
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} is given twice")
    return dict(pairs)


def prunes(options: Options) -> bool:
    """Whether ``options`` ask any layer to prune: a threshold above -inf, per-output
    thresholds, or a rule of another kind, by default or for a layer the config sets."""
    def asks(threshold, thresholds, rule) -> bool:
        return rule != "threshold" or thresholds is not None or (threshold is not None and threshold > LOSSLESS)

    return asks(options.threshold, None, options.rule) or any(
        asks(s.threshold, s.thresholds, s.rule) for s in options.layers.values() if not s.skip)


def load_config(path: str | Path, options: Options, typed: tuple[str, ...] | list[str] = ()) -> Options:
    """Read a per-layer JSON config into ``options`` (layer names checked later).
    ``typed``: the options among ``k`` and ``unit_order`` that the command line set, which
    the config's default must then not contradict (one of the two would be ignored)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:  # a name too long, a folder not searchable, a loop of links
        raise ConfigError(f"{p}: cannot use it as a config file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):  # /dev/zero or a FIFO would be read until memory runs out
        raise ConfigError(f"{p}: not a config file (a directory, device or pipe)")
    if st.st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: {st.st_size / 2**20:.0f} MiB is too large for a config file")
    try:
        # utf-8-sig: Windows editors write a byte-order mark, which json refuses in its own words
        data = json.loads(p.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_repeats)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # (json.JSONDecodeError is a ValueError)
        raise ConfigError(f"{p}: not a readable JSON config ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{p}: not a config: nested too deeply to read") from None
    return apply_config(data, options, typed, str(p))


def _json_text(config: str) -> bool:
    """Whether ``config`` is a JSON object's text (a byte-order mark before it, as a file read
    as text keeps it) rather than the path of a file, which may start with '{' too."""
    if not config.strip().lstrip("\ufeff").startswith("{"):
        return False
    try:
        return not Path(config).is_file()
    except (OSError, ValueError):  # too long, or holding NUL, for a path
        return True


def configured(options: Options, config, typed: tuple[str, ...] | list[str] = ()) -> Options:
    """``options`` with ``config`` read into it: a JSON config's path, its content as a dict
    or as JSON text (an object, unless a file has that name), or None (nothing to read)."""
    if config is None:
        return options
    if isinstance(config, dict):
        return apply_config(config, options, typed)
    if isinstance(config, str) and _json_text(config):  # the file's content, as text
        try:
            data = json.loads(config.strip().lstrip("\ufeff"), object_pairs_hook=_no_repeats)
        except ValueError as exc:
            raise ConfigError(f"config: not readable JSON ({exc})") from None
        except RecursionError:
            raise ConfigError("config: nested too deeply to read") from None
        return apply_config(data, options, typed)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, options, typed)
    raise ConfigError(f"config must be a JSON config's path or its content (a dict or JSON text), got "
                      f"{type(config).__name__}")


def apply_config(data: dict, options: Options, typed: tuple[str, ...] | list[str] = (), where: str = "config") -> Options:
    """A config's content (the JSON file's object: ``default`` and ``layers``) read into
    ``options``, as load_config reads a file; ``where`` names it in errors."""
    p = where
    _check_keys(data, ("default", "layers"), f"{p}: expected an object with")
    options.layers = dict(options.layers)  # a copy of the caller's Options shares its dict
    # A config prunes at the thresholds it names: its default's, or a layer's own. The rest
    # stay lossless (a config that only skipped one layer pruned every other at the paper's 0).
    default = data.get("default", {})
    _check_keys(default, ("threshold", "k", "rule", "alpha", "unit_order"), f"{p}: 'default' must be an object with")
    for name in typed:
        parse = _k if name == "k" else parse_unit_order
        if name in default and parse(default[name], f"{p}: default") != getattr(options, name):
            raise ConfigError(f"{p}: its default {name} {default[name]!r} and --{name.replace('_', '-')} "
                              f"{getattr(options, name)!r} disagree: give one of them")
    if "threshold" in default:
        options.threshold = _threshold(default["threshold"], f"{p}: default")
    if "k" in default:
        options.k = _k(default["k"], f"{p}: default")
    if "rule" in default:
        options.rule = parse_rule(default["rule"], f"{p}: default")
    if "alpha" in default:
        options.alpha = parse_alpha(default["alpha"], f"{p}: default")
    if "unit_order" in default:
        options.unit_order = parse_unit_order(default["unit_order"], f"{p}: default")
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise ConfigError(f"{p}: 'layers' must be an object keyed by layer name")
    for name, entry in layers.items():
        where = f"{p}: layer {name!r}"
        _check_keys(entry, ("threshold", "thresholds", "k", "skip", "rule", "alpha"), f"{where}: expected an object with")
        ignored = sorted(set(entry) - {"skip"})
        if _flag(entry.get("skip", False), f"{where}: skip") and ignored:
            raise ConfigError(f"{where}: skip is true, so its {', '.join(ignored)} would be ignored: give one or "
                              "the other")
        thresholds = entry.get("thresholds")
        if thresholds is not None:
            if not isinstance(thresholds, list) or not thresholds:
                raise ConfigError(f"{where}: thresholds must be a non-empty list, one number per output channel")
            thresholds = tuple(_threshold(t, where) for t in thresholds)
        options.layers[name] = LayerSetting(
            threshold=_threshold(entry.get("threshold", LOSSLESS if options.threshold is None else options.threshold),
                                 where),
            k=_k(entry.get("k", options.k), where),
            skip=_flag(entry.get("skip", False), f"{where}: skip"),
            rule=parse_rule(entry.get("rule", options.rule), where),
            z_crit=z_crit(parse_alpha(entry.get("alpha", options.alpha), where)),
            thresholds=thresholds,
        )
        if thresholds is not None and options.layers[name].rule != "threshold":
            raise ConfigError(f"{where}: thresholds go with rule threshold")
    return options
