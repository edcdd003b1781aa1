"""Streaming activation statistics: per-tensor |x| histograms, absolute max, signed min/max.

First step of the calibration flow (stats -> calibrators -> cache / Q/DQ model -> report).
Memory is constant in the number of images: each tensor keeps ``num_bins`` float64 counts over
``[0, range]`` of |x| (symmetric int8 only needs magnitudes, as in TensorRT's calibrators).
When a batch exceeds the range, the range grows to the new maximum and the old counts are
re-binned onto the new edges, spreading each old bin uniformly over the new bins it overlaps
(ONNX Runtime and TensorRT also grow their histograms as the range grows; this keeps the bin
count fixed instead of adding bins).
"""
from __future__ import annotations

import numpy as np

from aue_edge.core.errors import CalibrationError


class TensorHistogram:
    """Histogram of |x| of one tensor over all calibration batches."""

    def __init__(self, name: str, num_bins: int = 2048) -> None:
        self.name = name
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.float64)
        self.range = 0.0           # upper edge of the last bin
        self.absmax = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.num_values = 0
        self.num_nonfinite = 0     # NaN/inf values: counted, left out of the histogram

    @property
    def bin_width(self) -> float:
        return self.range / self.num_bins

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, self.num_bins + 1)

    def update(self, values: np.ndarray) -> None:
        flat = np.asarray(values, dtype=np.float32).ravel()
        finite = np.isfinite(flat)
        if not finite.all():
            self.num_nonfinite += int(flat.size - np.count_nonzero(finite))
            flat = flat[finite]
        if flat.size == 0:
            return
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        magnitude = np.abs(flat)
        batch_absmax = float(magnitude.max())
        self.absmax = max(self.absmax, batch_absmax)
        if batch_absmax > self.range:
            self._grow(batch_absmax)
        if self.range > 0.0:
            index = (magnitude * (self.num_bins / self.range)).astype(np.int64)
            np.minimum(index, self.num_bins - 1, out=index)
            self.counts += np.bincount(index, minlength=self.num_bins)
        else:  # every value so far is exactly zero: they belong to the first bin
            self.counts[0] += magnitude.size
        self.num_values += int(magnitude.size)

    def _grow(self, new_range: float) -> None:
        if self.range > 0.0:
            # Cumulative counts are piecewise linear inside old bins (uniform within a bin);
            # sample them at the new edges, difference back to counts. Total is preserved.
            cumulative = np.concatenate(([0.0], np.cumsum(self.counts)))
            new_edges = np.linspace(0.0, new_range, self.num_bins + 1)
            resampled = np.interp(new_edges, self.edges, cumulative)
            self.counts = np.diff(resampled)
        self.range = float(new_range)

    def summary(self) -> dict:
        return {
            "min": float(self.min) if self.num_values else None,
            "max": float(self.max) if self.num_values else None,
            "absmax": float(self.absmax),
            "num_values": int(self.num_values),
            "num_nonfinite": int(self.num_nonfinite),
            "fraction_zero_bin": float(self.counts[0] / self.counts.sum())
            if self.counts.sum() > 0 else None,
        }


class StatsCollector:
    """One :class:`TensorHistogram` per named tensor; feed it dicts of ORT outputs."""

    def __init__(self, tensor_names: list[str], num_bins: int = 2048) -> None:
        if not tensor_names:
            raise CalibrationError("no tensors to collect statistics on: the model has no "
                                   "float activations reachable from its input")
        self.tensor_names = list(tensor_names)
        self.histograms = {name: TensorHistogram(name, num_bins) for name in self.tensor_names}
        self.num_batches = 0
        self.num_images = 0

    def update(self, outputs: dict[str, np.ndarray], batch_size: int) -> None:
        missing = [name for name in self.tensor_names if name not in outputs]
        if missing:
            raise CalibrationError(f"ONNX Runtime did not return tensors {missing[:5]} "
                                   f"(of {len(missing)} missing); the model changed under the "
                                   f"collector?")
        for name in self.tensor_names:
            self.histograms[name].update(outputs[name])
        self.num_batches += 1
        self.num_images += int(batch_size)

    def nonfinite_tensors(self) -> dict[str, int]:
        return {name: h.num_nonfinite for name, h in self.histograms.items() if h.num_nonfinite}
