"""Temporal smoothing of per-face outputs, one state per track ID.

Sits in the per-frame pipeline after tracking (``aue_edge/edge/pipeline.py``). Frame-by-frame
emotion and AU probabilities flicker; a robot should react to a smile, not to one noisy frame.

- ``ema``: exponential moving average, ``y = alpha * x + (1 - alpha) * y_prev``. A convex
  combination, so smoothed emotion probabilities still sum to 1.
- ``one_euro``: the 1-euro filter (Casiez, Roussel & Vogel, CHI 2012): a low-pass filter whose
  cutoff rises with the signal's speed, so it is smooth when still and follows fast changes
  with little lag. It works on time stamps (seconds), so it is right at any frame rate.
  Applied per component it does not keep a sum; the pipeline renormalises emotion
  probabilities afterwards.

State starts fresh for a new track ID and is dropped when the track expires.
"""
from __future__ import annotations

import math

import numpy as np

from aue_edge.core.errors import ConfigError

SMOOTHING_METHODS = ("none", "ema", "one_euro")
# dt used when two frames carry the same time stamp: the new value then barely moves the output
# (a frame with no time elapsed carries no evidence of motion), instead of dividing by zero.
_MIN_DT_S = 1e-6


class EmaFilter:
    """Exponential moving average of a vector; ``alpha`` is the weight of the new value."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"ema_alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._value: np.ndarray | None = None

    def __call__(self, value: np.ndarray, timestamp_s: float | None = None) -> np.ndarray:
        value = np.asarray(value, dtype=np.float32)
        if self._value is None or self._value.shape != value.shape:
            self._value = value.copy()
        else:
            self._value = self.alpha * value + (1.0 - self.alpha) * self._value
        return self._value.copy()


def _smoothing_factor(dt_s: float, cutoff_hz: np.ndarray | float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """The 1-euro filter on a vector, per component.

    ``min_cutoff_hz``: cutoff when the signal is still (lower = smoother, more lag);
    ``beta``: how fast the cutoff rises with speed (higher = less lag on fast motion);
    ``d_cutoff_hz``: cutoff of the speed estimate.
    """

    def __init__(self, min_cutoff_hz: float = 1.0, beta: float = 0.0,
                 d_cutoff_hz: float = 1.0) -> None:
        if min_cutoff_hz <= 0:
            raise ConfigError(f"one_euro_min_cutoff_hz must be > 0, got {min_cutoff_hz}")
        if beta < 0:
            raise ConfigError(f"one_euro_beta must be >= 0, got {beta}")
        if d_cutoff_hz <= 0:
            raise ConfigError(f"one_euro_d_cutoff_hz must be > 0, got {d_cutoff_hz}")
        self.min_cutoff_hz = float(min_cutoff_hz)
        self.beta = float(beta)
        self.d_cutoff_hz = float(d_cutoff_hz)
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, value: np.ndarray, timestamp_s: float | None = None) -> np.ndarray:
        if timestamp_s is None:
            raise ConfigError("the one_euro filter needs a time stamp per frame")
        x = np.asarray(value, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(timestamp_s)
            return x.astype(np.float32)
        dt = max(float(timestamp_s) - self._t, _MIN_DT_S)
        dx = (x - self._x) / dt
        a_d = _smoothing_factor(dt, self.d_cutoff_hz)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        a = _smoothing_factor(dt, cutoff)
        self._x = a * x + (1.0 - a) * self._x
        self._t = float(timestamp_s)
        return self._x.astype(np.float32)


class TrackSmoother:
    """Per-track, per-stream filters: ``smooth(track_id, "emotion", probs, t)``.

    ``method`` is applied to probabilities (streams "emotion", "au");
    ``smooth_geometry`` additionally runs a 1-euro filter on boxes and landmarks (streams
    "box", "landmarks"), which steadies the drawn box without lagging a moving head much.
    """

    def __init__(self, method: str = "ema", ema_alpha: float = 0.5,
                 one_euro_min_cutoff_hz: float = 1.0, one_euro_beta: float = 0.0,
                 one_euro_d_cutoff_hz: float = 1.0, smooth_geometry: bool = False) -> None:
        if method not in SMOOTHING_METHODS:
            raise ConfigError(f"smoothing must be one of {SMOOTHING_METHODS}, got {method!r}")
        self.method = method
        self.smooth_geometry = bool(smooth_geometry)
        self._ema_alpha = ema_alpha
        self._one_euro = (one_euro_min_cutoff_hz, one_euro_beta, one_euro_d_cutoff_hz)
        # Build one of each now so bad parameters fail at start-up, not at the first face.
        EmaFilter(ema_alpha)
        OneEuroFilter(*self._one_euro)
        self._filters: dict[tuple[int, str], EmaFilter | OneEuroFilter] = {}

    def _new_filter(self, stream: str) -> EmaFilter | OneEuroFilter | None:
        if stream in ("box", "landmarks"):
            return OneEuroFilter(*self._one_euro) if self.smooth_geometry else None
        if self.method == "ema":
            return EmaFilter(self._ema_alpha)
        if self.method == "one_euro":
            return OneEuroFilter(*self._one_euro)
        return None

    def smooth(self, track_id: int, stream: str, value: np.ndarray,
               timestamp_s: float) -> np.ndarray:
        key = (int(track_id), stream)
        filt = self._filters.get(key)
        if filt is None:
            filt = self._new_filter(stream)
            if filt is None:
                return np.asarray(value, dtype=np.float32)
            self._filters[key] = filt
        return filt(value, timestamp_s)

    def drop(self, track_ids) -> None:
        """Forget the state of these IDs (expired or newly created tracks)."""
        ids = {int(i) for i in track_ids}
        for key in [k for k in self._filters if k[0] in ids]:
            del self._filters[key]

    def reset(self) -> None:
        self._filters.clear()

    @property
    def num_states(self) -> int:
        return len(self._filters)
