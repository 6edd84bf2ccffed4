"""Errors the CLI turns into one-line messages and distinct exit codes."""


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


class RuntimeCheckError(ExPruneError):
    """The optimised model failed to load or run in onnxruntime."""

    exit_code = 7


class VerificationFailed(ExPruneError):
    """`verify`: the optimised model is not what the compiler would have produced from the original."""

    exit_code = 8
