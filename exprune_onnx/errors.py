"""Errors the CLI turns into one-line messages and distinct exit codes, and the one formatter
of other libraries' exceptions (:func:`error_message`) that every message quoting one uses."""

from __future__ import annotations

import re


class ExPruneError(Exception):
    """Base class: a problem with what the user gave us, not a bug."""

    exit_code = 1


class ModelLoadError(ExPruneError):
    """The input model is missing, unreadable or not valid ONNX."""

    exit_code = 3


class ConfigError(ExPruneError):
    """A threshold/k setting or a per-layer config file is wrong."""

    exit_code = 4


class OutputError(ExPruneError):
    """The output path cannot be written (or would overwrite the input)."""

    exit_code = 5


class DataError(ExPruneError):
    """Check data does not fit the model's inputs."""

    exit_code = 6


class LabelError(DataError):
    """Labels that do not fit the output they score (io/data.py names their file)."""


class RuntimeCheckError(ExPruneError):
    """The optimised model failed to load or run in onnxruntime."""

    exit_code = 7


class VerificationFailed(ExPruneError):
    """`verify`: the optimised model is not what the compiler would have produced from the original."""

    exit_code = 8


# onnxruntime puts the C++ source line and function signature before its message.
_ORT_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+ .*?\) (?:const )?(?=[A-Za-z])")
# Lines that carry no information for the user: stack frames and empty ones.
_NOISE = re.compile(r"^(?:Stacktrace:|#\d+ |\s*$)")
_MAX_CHARS = 600


def error_message(exc: BaseException, limit: int | None = _MAX_CHARS) -> str:
    """The whole message of ``exc`` on one line, for an error message.

    Multi-line messages (onnxruntime's "Got invalid dimensions ... index: 0 Got: 32
    Expected: 1") keep every informative line, joined with "; ", because the detail
    is usually on the lines after the first. Source locations and stack frames are
    dropped; a message over ``limit`` characters keeps both ends (the reason is often
    at the end). Our own errors are shown whole (``limit=None``): they quote paths.
    """
    text = str(exc).strip() or type(exc).__name__
    lines = [_ORT_LOCATION.sub("", line, count=1).strip() for line in text.splitlines() if not _NOISE.match(line)]
    joined = "; ".join(line for line in lines if line)
    if limit is None or len(joined) <= limit:
        return joined
    return f"{joined[:limit // 2 - 5]} ... {joined[-(limit // 2):]}"


# A command-line option in a message (not a word with a hyphen in it).
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def in_keywords(exc: ExPruneError, keywords: set[str], renamed: dict[str, str]) -> ExPruneError:
    """``exc`` with the command-line options it names given as the Python keywords that set
    the same (``--max-drop`` as ``max_drop``; ``renamed``: option -> text where the keyword
    is spelt otherwise, ``no-check`` -> ``check=False``); ``exc`` itself when it names none.
    The messages are the command line's, and a Python caller has no ``--max-drop`` to give."""
    text = keyword_text(str(exc), keywords, renamed)
    return exc if text == str(exc) else type(exc)(text)


def keyword_text(text: str, keywords: set[str], renamed: dict[str, str]) -> str:
    """``text`` with the command-line options it names given as Python keywords (in_keywords)."""
    def keyword(m: re.Match) -> str:
        name = m.group(1)
        if name in renamed:
            return renamed[name]
        return name.replace("-", "_") if name.replace("-", "_") in keywords else m.group(0)

    return _FLAG.sub(keyword, text)


class OriginalRunFailed(DataError):
    """onnxruntime failed to run the original model on the inputs (original_failed)."""


def original_failed(source: str, exc: BaseException) -> DataError:
    """onnxruntime failing on the original model is the inputs' fault, not the rewrite's
    (token ids past the embedding, inputs whose lengths disagree). ``source`` names the
    data (Dataset.source; "random" for the seeded inputs we drew)."""
    if source == "random":
        return OriginalRunFailed(f"onnxruntime cannot run the original model on seeded random inputs "
                                 f"({error_message(exc)}): give sample data (--check-data; verify: --data), or "
                                 "--input-value for the inputs whose values matter; if it fails on real data too, "
                                 "onnxruntime cannot run this model")
    # onnxruntime says INVALID_ARGUMENT alike for ids past a table and for a kernel it lacks
    # (a dilated Conv with auto_pad SAME), so both causes are named.
    return OriginalRunFailed(f"onnxruntime cannot run the original model on '{source}' ({error_message(exc)}): the "
                             "data does not fit the model, or onnxruntime cannot run this model on any input (does it "
                             "run in plain onnxruntime?)")


def original_unloadable(exc: BaseException) -> ModelLoadError:
    """onnxruntime refusing to load the original model (an op of a domain it has no kernel
    for, an opset it does not know): the model's problem, found before any rewrite."""
    return ModelLoadError(f"onnxruntime cannot load the original model ({error_message(exc)}): the check, "
                          "calibration, timing, evaluate and verify run it (`optimize --no-check --objective flops` "
                          "compiles without running it)")
