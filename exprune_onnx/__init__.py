"""exprune-onnx: per-input dynamic pruning for exported ONNX models.

The public names are imported on first use (PEP 562), so that importing the package, as
the command's entry point does before it can handle Ctrl-C, loads nothing heavy.
"""

import importlib

from ._version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "DOMAIN": ".ops",
    "LayerSetting": ".config",
    "VERSION": ".ops",
    "Optimized": ".workflow",
    "Options": ".config",
    "Settings": ".workflow",
    "get_library_path": ".runtime",
    "inference_session": ".runtime",
    "inspect_model": ".api",
    "evaluate_model": ".api",
    "optimize": ".api",
    "optimize_model": ".api",
    "verify_model": ".api",
    "session_options": ".runtime",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
    else:  # a submodule, as `import exprune_onnx` then `exprune_onnx.ops` found it before
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
