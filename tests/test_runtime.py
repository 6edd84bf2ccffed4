"""runtime.py (session_options, inference_session): the library registered once, and what
onnxruntime cannot take refused as the library's errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import exprune_onnx
from exprune_onnx.errors import ConfigError
from exprune_onnx.runtime import MAX_THREADS

EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "fashion_cnn.onnx"


@pytest.fixture(scope="module")
def model():
    return onnx.load(EXAMPLE)


def test_session_options_register_the_library_once(model):
    """Given options it registered already, session_options leaves them be: onnxruntime
    takes a second registration and then refuses to create the session."""
    import onnxruntime as ort

    written = exprune_onnx.optimize_model(model, threshold=-1.0).model
    opts = exprune_onnx.session_options()
    assert exprune_onnx.session_options(opts) is opts
    session = ort.InferenceSession(written.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert session.run(None, {"input": x})[0].shape == (1, 10)


REFUSED = [
    ({"base": {}}, "base must be an onnxruntime.SessionOptions, got dict"),  # an AttributeError before
    ({"threads": -1}, "threads must be a whole number >= 0"),  # taken as given before
    ({"threads": 1.5}, "threads must be a whole number >= 0"),
    ({"threads": True}, "threads must be a whole number >= 0"),
    ({"threads": "2"}, "threads must be a whole number >= 0"),  # a TypeError from onnxruntime
    # A million threads ran out of memory creating the session; 2,000 took a minute.
    ({"threads": 10**6}, f"threads must be a whole number >= 0 and <= {MAX_THREADS}"),
    ({"optimize": "no"}, "optimize must be True or False"),  # read as true
]


@pytest.mark.parametrize(("given", "words"), REFUSED)
def test_session_options_refuse_what_onnxruntime_cannot_take(given, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        exprune_onnx.session_options(**given)


@pytest.mark.parametrize(("given", "words"), [case for case in REFUSED if "base" not in case[0]])  # (it makes its own)
def test_inference_session_refuses_them_too(model, given, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        exprune_onnx.inference_session(model, **given)
