"""IoU tracking (stable IDs, new IDs, expiry, greedy vs Hungarian) and temporal smoothing
(EMA, 1-euro, per-track state) on plain numbers."""
from __future__ import annotations

import numpy as np
import pytest

from aue_edge.core.errors import ConfigError
from aue_edge.edge.smoothing import EmaFilter, OneEuroFilter, TrackSmoother
from aue_edge.edge.tracking import IouTracker, greedy_assignment, hungarian_assignment, iou_matrix


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = iou_matrix(a, b)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0], atol=1e-6)
    np.testing.assert_array_equal(iou[1], [0, 0, 0])  # degenerate box never matches
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_greedy_and_hungarian_differ_where_greedy_is_suboptimal():
    score = np.array([[0.9, 0.8], [0.85, 0.1]], np.float32)
    assert sorted(greedy_assignment(score, 0.05)) == [(0, 0), (1, 1)]
    assert sorted(hungarian_assignment(score, 0.05)) == [(0, 1), (1, 0)]
    assert hungarian_assignment(score, 0.5) == [(0, 1), (1, 0)]
    assert greedy_assignment(np.zeros((0, 2)), 0.1) == []


@pytest.mark.parametrize("assignment", ["greedy", "hungarian"])
def test_tracker_keeps_ids_creates_new_ones_and_expires(assignment):
    tracker = IouTracker(iou_threshold=0.3, max_age_frames=1, assignment=assignment)
    face_a = np.array([10, 10, 60, 60], np.float32)
    face_b = np.array([200, 10, 250, 60], np.float32)
    first = tracker.update(np.stack([face_a, face_b]))
    assert list(first.track_ids) == [1, 2] and first.new_ids == (1, 2)
    # moved a little, detection order swapped: IDs follow the faces, not the order
    second = tracker.update(np.stack([face_b + 5, face_a + 5]))
    assert list(second.track_ids) == [2, 1] and second.new_ids == ()
    third = tracker.update(np.stack([face_a + 8]))          # B missing for 1 frame: kept
    assert list(third.track_ids) == [1] and third.expired_ids == ()
    fourth = tracker.update(np.stack([face_a + 8]))         # B missing 2 frames > max_age 1
    assert fourth.expired_ids == (2,)
    fifth = tracker.update(np.stack([face_a + 8, face_b]))  # B returns: a NEW id, never reused
    assert list(fifth.track_ids) == [1, 3] and fifth.new_ids == (3,)
    assert tracker.update(np.zeros((0, 4))).track_ids.shape == (0,)


def test_tracker_rejects_bad_settings():
    with pytest.raises(ConfigError, match="track_iou_threshold"):
        IouTracker(iou_threshold=0.0)
    with pytest.raises(ConfigError, match="track_assignment"):
        IouTracker(assignment="kalman")


def test_ema_is_a_convex_combination():
    ema = EmaFilter(0.25)
    first = ema(np.array([1.0, 0.0]))
    second = ema(np.array([0.0, 1.0]))
    np.testing.assert_allclose(first, [1.0, 0.0])
    np.testing.assert_allclose(second, [0.75, 0.25])
    with pytest.raises(ConfigError):
        EmaFilter(0.0)


def test_one_euro_smooths_noise_and_beta_reduces_lag():
    rng = np.random.default_rng(0)
    times = np.arange(60) / 30.0
    noisy = 0.5 + rng.normal(0, 0.05, 60)
    filt = OneEuroFilter(min_cutoff_hz=1.0, beta=0.0)
    smoothed = np.array([filt(np.array([v]), t)[0] for v, t in zip(noisy, times)])
    assert smoothed[20:].std() < 0.5 * noisy[20:].std()
    step = np.where(times < 1.0, 0.0, 1.0)

    def after_step(beta: float) -> float:
        f = OneEuroFilter(min_cutoff_hz=1.0, beta=beta)
        out = [f(np.array([v]), t)[0] for v, t in zip(step, times)]
        return out[33]  # 3 frames after the step
    assert after_step(5.0) > after_step(0.0) + 0.1
    same_time = OneEuroFilter()
    same_time(np.array([0.0]), 1.0)
    assert abs(same_time(np.array([1.0]), 1.0)[0]) < 1e-3  # no time elapsed: barely moves
    with pytest.raises(ConfigError, match="time stamp"):
        same_time(np.array([1.0]), None)


def test_track_smoother_state_is_per_id_and_dropped():
    smoother = TrackSmoother("ema", ema_alpha=0.5)
    smoother.smooth(1, "emotion", np.array([1.0, 0.0]), 0.0)
    smoother.smooth(2, "emotion", np.array([0.0, 1.0]), 0.0)
    np.testing.assert_allclose(smoother.smooth(1, "emotion", np.array([0.0, 1.0]), 0.1),
                               [0.5, 0.5])
    smoother.drop([1])
    np.testing.assert_allclose(smoother.smooth(1, "emotion", np.array([0.0, 1.0]), 0.2),
                               [0.0, 1.0])  # fresh state after drop (new or expired ID)
    # boxes pass through unless smooth_geometry is on
    np.testing.assert_allclose(smoother.smooth(2, "box", np.array([1.0, 2, 3, 4]), 0.0),
                               [1, 2, 3, 4])
    assert smoother.num_states == 2
    none = TrackSmoother("none")
    np.testing.assert_allclose(none.smooth(1, "au", np.array([0.2]), 0.0), [0.2])
    assert none.num_states == 0
    geometry = TrackSmoother("none", smooth_geometry=True)
    geometry.smooth(1, "box", np.array([0.0, 0, 10, 10]), 0.0)
    moved = geometry.smooth(1, "box", np.array([10.0, 0, 20, 10]), 1 / 30)
    assert 0.0 < moved[0] < 10.0
    with pytest.raises(ConfigError, match="smoothing"):
        TrackSmoother("kalman")
