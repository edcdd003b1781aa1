"""One small interface for every inference backend (after mmdeploy's backend manager).

A backend takes named float32 arrays with a leading batch axis and returns named arrays.
ONNX Runtime and TensorRT implement it and must produce the same outputs for the same inputs.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from aue_edge.core.errors import InputImageError


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None or a string for dynamic axes) and numpy dtype of a model tensor."""

    name: str
    shape: tuple
    dtype: np.dtype


class Backend(abc.ABC):
    """Run a model: ``outputs = backend.infer({"image": batch})``. Use as a context manager."""

    name: str = "backend"
    # Largest batch one call accepts (a TensorRT profile's max); None means unbounded.
    max_batch_size: int | None = None

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]:
        """The model's inputs, in graph order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]:
        """The model's outputs, in graph order."""

    @abc.abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; every input by name; returns every output by name."""

    def close(self) -> None:
        """Release the runtime's resources. Safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_feed_names(expected: dict, feeds: dict, what: str) -> None:
    """Every input fed by name and nothing else; ``what`` is "model" or "engine"."""
    missing = sorted(set(expected) - set(feeds))
    unknown = sorted(set(feeds) - set(expected))
    if missing or unknown:
        raise InputImageError(f"{what} inputs are {sorted(expected)}; missing {missing}, "
                              f"unknown {unknown}")
