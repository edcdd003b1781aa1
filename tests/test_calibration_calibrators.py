"""Calibrators and streaming statistics: hand-checked KL case, reference search, percentiles,
histogram growth. No model needed; the data are real FER+ pixels where it matters."""
from __future__ import annotations

import math

import numpy as np
import pytest

from aue_edge.calibration.calibrators import (AMAX_FLOOR, entropy_threshold, kl_divergences,
                                              minmax_threshold, percentile_threshold,
                                              quantization_snr_db)
from aue_edge.calibration.stats import StatsCollector, TensorHistogram
from aue_edge.core.errors import CalibrationError


def test_kl_hand_checked_slide_example():
    """The worked example of Migacz (GTC 2017): 8 bins quantised to 2 levels.

    Bins [1 0 2 3 5 3 1 7] plus 4 outliers beyond them. P folds the outliers into the last
    kept bin: [1 0 2 3 5 3 1 11] / 26. Q merges the bins into 2 levels, [1+0+2+3, 5+3+1+7] =
    [6, 16], and expands each level over its non-empty bins: [2 0 2 2 4 4 4 4] / 22.
    KL(P||Q) = sum p ln(p/q) over p > 0, written out term by term below.
    """
    p = [1 / 26, 0, 2 / 26, 3 / 26, 5 / 26, 3 / 26, 1 / 26, 11 / 26]
    q = [2 / 22, 0, 2 / 22, 2 / 22, 4 / 22, 4 / 22, 4 / 22, 4 / 22]
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    assert by_hand == pytest.approx(0.2374549672723584, rel=1e-12)
    got = kl_divergences([1, 0, 2, 3, 5, 3, 1, 7, 4], num_levels=2, start_bin=8)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(by_hand, rel=1e-12)


def test_kl_infinite_when_last_kept_bin_is_empty_but_outliers_exist():
    # Candidate i=4 keeps [3 1 2 0]: the outlier mass lands in the empty bin 3, where Q is 0.
    got = kl_divergences([3, 1, 2, 0, 5, 1], num_levels=2, start_bin=4)
    assert math.isinf(got[0]) and math.isfinite(got[1])


def _reference_divergences(counts, levels, start):
    """Plain-loop restatement of the TensorRT search, for comparison with the vectorised one."""
    counts = np.asarray(counts, float)
    out = []
    for i in range(start, counts.size):
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()
        q = np.zeros(i)
        for level in range(levels):
            members = [j for j in range(i) if (j * levels) // i == level]
            nonempty = [j for j in members if counts[j] > 0]
            for j in nonempty:
                q[j] = counts[members].sum() / len(nonempty)
        p, q = p / p.sum(), q / q.sum()
        if np.any((p > 0) & (q == 0)):
            out.append(np.inf)
            continue
        mask = p > 0
        out.append(float(np.sum(p[mask] * np.log(p[mask] / q[mask]))))
    return np.array(out)


def test_kl_vectorised_search_matches_plain_loop():
    rng = np.random.default_rng(3)
    counts = np.round(rng.exponential(1.0, 300) * 50) * (rng.random(300) > 0.2)
    got = kl_divergences(counts, num_levels=16, start_bin=16)
    want = _reference_divergences(counts, 16, 16)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-12)


def test_entropy_threshold_clips_a_long_tail_and_keeps_a_compact_range():
    rng = np.random.default_rng(0)
    tail = TensorHistogram("tail")
    values = rng.standard_normal(400_000)
    values[:20] = 40.0  # a few huge outliers: minmax would waste most int8 levels on them
    tail.update(values)
    amax = entropy_threshold(tail).amax
    assert 2.5 < amax < 10.0
    assert minmax_threshold(tail).amax == pytest.approx(40.0)
    compact = TensorHistogram("compact")
    compact.update(rng.uniform(-1.0, 1.0, 400_000))
    # Uniform data has no tail: the search keeps (almost) the whole range.
    assert entropy_threshold(compact).amax > 0.95


def test_entropy_search_rejects_bad_arguments():
    with pytest.raises(CalibrationError, match="start_bin"):
        kl_divergences(np.ones(100), num_levels=128, start_bin=128)


def test_percentile_matches_numpy_on_real_pixels(ferplus_root):
    import cv2

    folder = ferplus_root / "FER2013Valid"
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("*.png"))[:64]]
    values = (np.stack(images).astype(np.float32) / 255.0 - 0.485) / 0.229
    hist = TensorHistogram("pixels", 2048)
    for chunk in np.array_split(values, 8):  # several batches, so the range grows
        hist.update(chunk)
    for p in (50.0, 99.0, 99.99):
        want = np.percentile(np.abs(values), p)
        assert percentile_threshold(hist, p).amax == pytest.approx(want, abs=3 * hist.bin_width)
    assert percentile_threshold(hist, 100.0).amax == pytest.approx(np.abs(values).max())


def test_histogram_growth_keeps_counts_and_memory():
    rng = np.random.default_rng(1)
    hist = TensorHistogram("t", 2048)
    batches = [rng.normal(0, s, 10_000) for s in (0.1, 1.0, 5.0)]
    for batch in batches:
        hist.update(batch)
    everything = np.abs(np.concatenate(batches))
    assert hist.counts.shape == (2048,)                      # constant memory
    assert hist.counts.sum() == pytest.approx(everything.size)  # nothing lost when rebinning
    assert hist.range == pytest.approx(everything.max())
    direct, _ = np.histogram(everything, bins=2048, range=(0, hist.range))
    # Re-binned counts spread old bins uniformly: cumulative counts stay close.
    assert np.abs(np.cumsum(hist.counts) - np.cumsum(direct)).max() < 0.01 * everything.size


def test_histogram_counts_nonfinite_and_zero_tensors():
    hist = TensorHistogram("t")
    hist.update(np.array([0.0, 0.0, np.nan, np.inf], np.float32))
    assert hist.num_nonfinite == 2 and hist.num_values == 2
    assert hist.counts[0] == 2
    # A tensor that is zero everywhere still gets a valid (positive) range.
    for threshold in (entropy_threshold(hist), percentile_threshold(hist, 99.0),
                      minmax_threshold(hist)):
        assert threshold.amax == AMAX_FLOOR and "zero" in threshold.note
    collector = StatsCollector(["a"], 256)
    with pytest.raises(CalibrationError, match="did not return"):
        collector.update({"b": np.zeros(3)}, 1)


def test_histogram_snr_prefers_the_entropy_threshold_on_a_heavy_tail():
    rng = np.random.default_rng(2)
    hist = TensorHistogram("t")
    hist.update(rng.laplace(0, 1, 500_000))
    entropy_snr = quantization_snr_db(hist, entropy_threshold(hist).amax)
    minmax_snr = quantization_snr_db(hist, minmax_threshold(hist).amax)
    tiny_snr = quantization_snr_db(hist, 0.1)
    assert entropy_snr > minmax_snr and entropy_snr > tiny_snr


def test_zero_bin_flattening_keeps_relu_outputs_from_being_clipped_hard():
    """After a ReLU half the values are exactly 0. Left in, that spike drags the KL search
    down (here to less than half the range, the failure seen on AUE-CRL's stem ReLU)."""
    rng = np.random.default_rng(0)
    hist = TensorHistogram("relu")
    for _ in range(5):
        hist.update(np.maximum(rng.standard_normal(200_000) * 1.5, 0.0))
    assert hist.counts[0] > 0.45 * hist.counts.sum()
    flattened = entropy_threshold(hist).amax
    raw = entropy_threshold(hist, flatten_zero_bin=False).amax
    assert raw < 0.5 * hist.absmax
    assert 0.7 * hist.absmax < flattened <= hist.absmax


def test_guard_against_the_degenerate_threshold_of_distributions_away_from_zero():
    """Sigmoid-like values in [0.3, 0.9]: the unguarded search finds KL = 0 at the start of the
    distribution and clips nearly everything; the guard keeps at least half the values."""
    rng = np.random.default_rng(0)
    hist = TensorHistogram("sigmoid")
    hist.update(rng.uniform(0.3, 0.9, 50_000))
    unguarded = entropy_threshold(hist, max_clip_fraction=1.0).amax
    guarded = entropy_threshold(hist).amax
    assert unguarded < 0.32
    assert guarded > 0.85
