"""exprune-onnx: per-input dynamic pruning for exported ONNX models."""

from ._version import __version__
from .api import inspect_model, optimize_model
from .config import Options
from .ops import DOMAIN, VERSION
from .runtime import get_library_path, inference_session, session_options
from .workflow import Optimized, Settings, optimize

__all__ = [
    "DOMAIN",
    "VERSION",
    "Optimized",
    "Options",
    "Settings",
    "__version__",
    "get_library_path",
    "inference_session",
    "inspect_model",
    "optimize",
    "optimize_model",
    "session_options",
]
