"""Errors raised by kerascompress.

Every error says what went wrong and what to do about it, so a user who hits one
does not need to read our source.
"""


class KerasCompressError(Exception):
    """Base class of every error kerascompress raises on purpose."""


class UnsupportedModelError(KerasCompressError):
    """The model cannot be read or rebuilt (subclassed model, Lambda layer, ...)."""


class UnsupportedOnTarget(KerasCompressError):
    """A pass was asked for (in strict mode) that the target cannot use."""


class DataError(KerasCompressError):
    """Data is missing, has the wrong shape, or a data set file is not installed."""


class ConfigError(KerasCompressError):
    """A target profile, recipe or constraint is unknown or malformed."""


class StrategyError(ConfigError):
    """The ``strategy`` is not a tf.distribute.Strategy, or cannot run what was asked of it."""


class ResumeError(ConfigError):
    """Resuming is impossible: no checkpoint to resume, or one written by a different run."""


class ExportError(KerasCompressError):
    """Conversion to TFLite / ONNX / TensorRT failed, or the artifact does not match Keras."""
