"""Compiler options: k, thresholds, per-layer overrides.

A per-layer config file is JSON::

    {
      "default": {"threshold": 0.0, "k": "auto"},
      "layers": {
        "/conv2/Conv": {"threshold": -0.5, "k": 16},
        "/fc1/Gemm": {"skip": true}
      }
    }

Layer names are the ones ``exprune-onnx inspect`` prints (the reduction node's name,
or ``<op>:<output tensor>`` when the node has none or shares its name).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

# The paper decides after 32 units; a quarter of the units caps it for narrow layers
# so the tail stays the larger share of the work.
PAPER_K = 32
SIMD_WIDTH = 8
DEFAULT_MIN_UNITS = 32


def parse_k(text: str | int | float | None) -> str | int | float:
    """``auto``, an absolute count (``16``) or a fraction of n (``0.25``)."""
    if text is None or text == "auto":
        return "auto"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
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
    if isinstance(spec, float):
        return max(1, int(round(spec * n)))
    return int(spec)


@dataclass(frozen=True)
class LayerSetting:
    threshold: float
    k: str | int | float = "auto"
    skip: bool = False


@dataclass
class Options:
    threshold: float = 0.0
    k: str | int | float = "auto"
    min_units: int = DEFAULT_MIN_UNITS
    include_first_layer: bool = False
    emit_stats: bool = False
    layers: dict[str, LayerSetting] = field(default_factory=dict)

    def setting(self, layer: str) -> LayerSetting:
        return self.layers.get(layer, LayerSetting(self.threshold, self.k))


def _threshold(value, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: threshold must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{where}: threshold must be a number, got {value!r}")
    return float(value)


def load_config(path: str | Path, options: Options) -> Options:
    """Read a per-layer JSON config into ``options`` (layer names checked later)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict) or not set(data) <= {"default", "layers"}:
        raise ConfigError(f"{p}: expected an object with 'default' and/or 'layers'")
    default = data.get("default", {})
    if not isinstance(default, dict):
        raise ConfigError(f"{p}: 'default' must be an object")
    if "threshold" in default:
        options.threshold = _threshold(default["threshold"], f"{p}: default")
    if "k" in default:
        options.k = parse_k(default["k"])
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise ConfigError(f"{p}: 'layers' must be an object keyed by layer name")
    for name, entry in layers.items():
        where = f"{p}: layer {name!r}"
        if not isinstance(entry, dict) or not set(entry) <= {"threshold", "k", "skip"}:
            raise ConfigError(f"{where}: expected an object with threshold, k and/or skip")
        options.layers[name] = LayerSetting(
            threshold=_threshold(entry.get("threshold", options.threshold), where),
            k=parse_k(entry.get("k", options.k)),
            skip=bool(entry.get("skip", False)),
        )
    return options
