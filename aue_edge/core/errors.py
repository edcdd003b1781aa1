"""Typed errors shared by every stage.

Each message says what failed, what was expected, what was found and what to do. The CLI turns
an :class:`AueError` into one line on stderr and exit status 2.
"""


class AueError(Exception):
    """Base class of every error the package raises on bad input or a bad environment."""


class InputImageError(AueError, ValueError):
    """An image or frame that cannot be processed (empty, wrong dtype/shape, NaN, unreadable)."""


class ModelFileError(AueError):
    """A model, engine, checkpoint or card that is missing, corrupt or does not match."""


class ModelCardError(ModelFileError):
    """A model card that is missing, malformed or inconsistent with its model."""


class InferenceError(AueError):
    """An inference whose output cannot be a result (NaN or inf values) for one frame: that
    frame is counted as failed and skipped, never reported."""


class BackendUnavailableError(AueError):
    """A backend whose runtime (TensorRT, CUDA, an execution provider) is not installed here."""


class DatasetError(AueError, ValueError):
    """A data set folder, label file or row that does not follow the published layout."""


class ConfigError(AueError, ValueError):
    """A configuration file or flag with a missing, unknown or out-of-range value."""


class CalibrationError(AueError):
    """INT8 calibration input or output that cannot be trusted (cache mismatch, too few images)."""


class PlotsUnavailableError(AueError):
    """A plot asked for where matplotlib (the optional ``plots`` extra) is not installed."""
