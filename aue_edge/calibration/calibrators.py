"""Calibrators: turn a tensor's |x| histogram into the clipping threshold ``amax`` for int8.

Second step of the calibration flow (stats -> calibrators -> cache / Q/DQ model -> report).
The int8 scale of a tensor is ``amax / 127`` (symmetric, zero point 0), both in TensorRT's
implicit-INT8 cache and in the Q/DQ model.

- ``minmax``: amax = the largest |x| seen (TensorRT's MinMaxCalibration).
- ``percentile``: amax = the given percentile of |x| (interpolated inside the histogram bin).
- ``entropy``: TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC
  2017): for every candidate number of kept bins ``i`` from ``start_bin`` (128) to ``num_bins``
  (2048, exclusive), the reference distribution P is the first ``i`` bins with every count
  beyond them (the outliers) added to bin ``i-1``; the candidate Q quantises the first ``i`` bins
  (without the outliers) into 128 levels (bin j -> level floor(j*128/i)), then expands each level
  back over its non-empty bins, evenly; both are normalised and KL(P||Q) is computed. The ``m``
  with the smallest divergence gives ``amax = (m + 0.5) * bin_width`` (as on the slides). A
  candidate whose last kept bin is empty while outliers exist has P > 0 where Q = 0: its
  divergence is infinite (it is never chosen). ONNX Runtime's own "Entropy" option cannot be
  given this bin count and in practice equals MinMax, so the search is implemented here.

  Before the search the count of bin 0 is replaced by the count of bin 1, as NVIDIA's
  pytorch-quantization does in its entropy calibrator (``bins[0] = bins[1]``): after a ReLU
  half or more of a tensor is exactly zero, and that spike, spread over the first int8 level
  by Q, would dominate the divergence and drag the threshold far down (measured on an AUE-CRL
  export: the stem ReLU clipped at 0.9 of a 7.2 range, FER+ INT8 accuracy 87 -> 35 %).
  ``flatten_zero_bin=False`` runs the search on the raw counts.

  One guard is ours, not TensorRT's: candidates that would clip more than
  ``max_clip_fraction`` (default 0.5) of the values are not considered. For a tensor whose
  values do not reach zero (a sigmoid or softmax output, attention logits), the first
  candidate past the start of the distribution makes P and Q the same single spike, KL = 0,
  and the unguarded search returns a threshold that clips almost every value. Pass 1.0 for
  the unguarded search.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aue_edge.calibration.stats import TensorHistogram
from aue_edge.core.errors import CalibrationError

INT8_LEVELS = 128           # non-negative int8 levels of a symmetric quantiser (0..127)
# Smallest amax written for a tensor that was exactly zero on every calibration image: a scale
# of 0 is invalid for TensorRT and ONNX Runtime; any positive scale represents zero exactly.
AMAX_FLOOR = 1e-8
_CANDIDATE_CHUNK = 128      # candidates evaluated together (rows x num_bins float64 arrays)


@dataclass(frozen=True)
class Threshold:
    """The chosen clipping threshold of one tensor and how it was chosen."""

    amax: float
    method: str
    note: str = ""

    @property
    def scale(self) -> float:
        return self.amax / 127.0


def kl_divergences(counts: np.ndarray, num_levels: int = INT8_LEVELS,
                   start_bin: int = 128) -> np.ndarray:
    """KL(P||Q) for every candidate ``i`` in ``[start_bin, len(counts))`` (see module doc).

    Returns an array of ``len(counts) - start_bin`` divergences; ``inf`` marks candidates whose
    reference has mass where the quantised candidate has none.
    """
    counts = np.asarray(counts, dtype=np.float64)
    num_bins = counts.size
    if not num_levels <= start_bin < num_bins:
        raise CalibrationError(f"entropy search needs num_levels <= start_bin < num_bins, got "
                               f"{num_levels}, {start_bin}, {num_bins}")
    tail = np.concatenate((np.cumsum(counts[::-1])[::-1], [0.0]))  # tail[i] = sum(counts[i:])
    nonzero = counts > 0
    bins = np.arange(num_bins)
    divergences = np.empty(num_bins - start_bin, dtype=np.float64)
    for first in range(start_bin, num_bins, _CANDIDATE_CHUNK):
        kept = np.arange(first, min(first + _CANDIDATE_CHUNK, num_bins))  # candidate i values
        rows = kept.size
        width = int(kept[-1])         # bins at or beyond the largest candidate are never kept
        head, head_nonzero, cols = counts[:width], nonzero[:width], bins[:width]
        inside = cols[None, :] < kept[:, None]                          # (rows, width)
        level = (cols[None, :] * num_levels) // kept[:, None]
        level = np.where(inside, level, 0)
        used = inside & head_nonzero[None, :]
        flat = (np.arange(rows)[:, None] * num_levels + level).ravel()
        level_sum = np.bincount(flat, weights=(head[None, :] * used).ravel(),
                                minlength=rows * num_levels).reshape(rows, num_levels)
        level_nonzero = np.bincount(flat, weights=used.ravel().astype(np.float64),
                                    minlength=rows * num_levels).reshape(rows, num_levels)
        row_index = np.arange(rows)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            expanded = np.where(used, level_sum[row_index, level] /
                                level_nonzero[row_index, level], 0.0)
        reference = np.where(inside, head[None, :], 0.0)
        reference[np.arange(rows), kept - 1] += tail[kept]
        p = reference / reference.sum(axis=1, keepdims=True)
        q_total = expanded.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = expanded / q_total
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        kl = terms.sum(axis=1)
        impossible = ((p > 0) & (q <= 0)).any(axis=1) | (q_total[:, 0] <= 0)
        kl[impossible] = np.inf
        divergences[first - start_bin:first - start_bin + rows] = kl
    return divergences


def entropy_threshold(hist: TensorHistogram, start_bin: int = 128,
                      max_clip_fraction: float = 0.5, flatten_zero_bin: bool = True
                      ) -> Threshold:
    """TensorRT's KL-divergence threshold of one histogram (zero bin and guard: module doc)."""
    if hist.num_values == 0 or hist.range <= 0.0:
        return Threshold(AMAX_FLOOR, "entropy", "tensor was zero on every calibration image")
    counts = hist.counts.copy()
    if flatten_zero_bin:
        counts[0] = counts[1]
    divergences = kl_divergences(counts, INT8_LEVELS, start_bin)
    total = hist.counts.sum()
    if max_clip_fraction < 1.0 and total > 0:
        beyond = total - np.cumsum(hist.counts)[start_bin - 1:hist.num_bins - 1]
        divergences[beyond > max_clip_fraction * total] = np.inf
    if not np.isfinite(divergences).any():
        return Threshold(hist.absmax, "entropy",
                         "no finite KL divergence (histogram too sparse): used the absolute max")
    best = start_bin + int(np.argmin(divergences))
    return Threshold(float(min((best + 0.5) * hist.bin_width, hist.absmax)), "entropy")


def percentile_threshold(hist: TensorHistogram, percentile: float) -> Threshold:
    """The ``percentile`` of |x|, linear inside the histogram bin that holds it."""
    if not 0.0 < percentile <= 100.0:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    total = hist.counts.sum()
    if hist.num_values == 0 or hist.range <= 0.0 or total <= 0:
        return Threshold(AMAX_FLOOR, "percentile", "tensor was zero on every calibration image")
    if percentile >= 100.0:
        return Threshold(float(hist.absmax), "percentile")
    cumulative = np.cumsum(hist.counts) / total
    target = percentile / 100.0
    k = int(np.searchsorted(cumulative, target, side="left"))
    k = min(k, hist.num_bins - 1)
    below = cumulative[k - 1] if k > 0 else 0.0
    in_bin = hist.counts[k] / total
    fraction = (target - below) / in_bin if in_bin > 0 else 1.0
    amax = (k + min(max(fraction, 0.0), 1.0)) * hist.bin_width
    return Threshold(float(min(max(amax, AMAX_FLOOR), hist.absmax)), "percentile")


def minmax_threshold(hist: TensorHistogram) -> Threshold:
    if hist.num_values == 0 or hist.absmax <= 0.0:
        return Threshold(AMAX_FLOOR, "minmax", "tensor was zero on every calibration image")
    return Threshold(float(hist.absmax), "minmax")


def compute_thresholds(histograms: dict[str, TensorHistogram], method: str,
                       percentile: float = 99.99, start_bin: int = 128,
                       max_clip_fraction: float = 0.5, flatten_zero_bin: bool = True,
                       progress: bool = True) -> dict[str, Threshold]:
    """The chosen threshold of every tensor, with a progress bar for the entropy search."""
    from tqdm import tqdm

    if method not in ("entropy", "percentile", "minmax"):
        raise CalibrationError(f"unknown calibration method {method!r}; choose entropy, "
                               f"percentile or minmax")
    result = {}
    for name, hist in tqdm(histograms.items(), desc=f"{method} thresholds", unit="tensor",
                           disable=not progress or method != "entropy"):
        if method == "entropy":
            result[name] = entropy_threshold(hist, start_bin, max_clip_fraction,
                                             flatten_zero_bin)
        elif method == "percentile":
            result[name] = percentile_threshold(hist, percentile)
        else:
            result[name] = minmax_threshold(hist)
    return result


def quantization_snr_db(hist: TensorHistogram, amax: float) -> float:
    """SNR (dB) of quantising this tensor alone with ``amax``, estimated from its histogram.

    Every value is taken at its bin centre: rounding to the int8 grid and clipping at ``amax``
    both count as noise. ``inf`` when the quantised histogram is exact.
    """
    total = hist.counts.sum()
    if total <= 0 or hist.range <= 0.0:
        return float("inf")
    centres = (np.arange(hist.num_bins) + 0.5) * hist.bin_width
    scale = max(amax, AMAX_FLOOR) / 127.0
    quantised = np.minimum(np.round(centres / scale), 127.0) * scale
    signal = float((hist.counts * centres ** 2).sum())
    noise = float((hist.counts * (centres - quantised) ** 2).sum())
    if noise <= 0.0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def clipped_fraction(hist: TensorHistogram, amax: float) -> float:
    """Fraction of the tensor's values with |x| above ``amax`` (from the histogram)."""
    total = hist.counts.sum()
    if total <= 0 or hist.range <= 0.0 or amax >= hist.range:
        return 0.0
    position = amax / hist.bin_width
    whole = int(position)
    above = hist.counts[whole + 1:].sum() + hist.counts[whole] * (1.0 - (position - whole))
    return float(above / total)
