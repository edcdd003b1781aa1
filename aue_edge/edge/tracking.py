"""Face tracking: stable IDs for the faces of a video stream.

Sits in the per-frame pipeline after detection (``aue_edge/edge/pipeline.py``): each frame's
detected boxes are associated with the live tracks by box overlap (IoU), so a face keeps its ID from
frame to frame and temporal smoothing (``aue_edge/edge/smoothing.py``) can run per ID.

Association is greedy by default (highest IoU pair first), which needs nothing but numpy and is
what a robot image usually needs (a few faces that move little between frames). The Hungarian
assignment (optimal total IoU) is available when scipy is installed; the edge runtime never
requires scipy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aue_edge.core.errors import BackendUnavailableError, ConfigError

ASSIGNMENT_METHODS = ("greedy", "hungarian")


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N,4) and (M,4) xyxy boxes -> (N, M) float32; degenerate boxes give 0."""
    a = np.asarray(boxes_a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float32).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def greedy_assignment(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken in order of decreasing score, each row and column at most once."""
    pairs = []
    if score.size == 0:
        return pairs
    rows, cols = np.nonzero(score >= min_score)
    order = np.argsort(-score[rows, cols], kind="stable")
    used_rows, used_cols = set(), set()
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        pairs.append((r, c))
    return pairs


def hungarian_assignment(score: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Pairs maximising the total score (scipy's linear_sum_assignment), below min_score dropped."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise BackendUnavailableError(
            "track_assignment 'hungarian' needs scipy, which is not installed; install scipy "
            "or use track_assignment: greedy") from None
    if score.size == 0:
        return []
    rows, cols = linear_sum_assignment(-score)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if score[r, c] >= min_score]


@dataclass
class Track:
    """One tracked face: its ID, last box and how many frames ago it was last seen."""

    track_id: int
    box_xyxy: np.ndarray
    frames_since_seen: int = 0
    hits: int = 1


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame did to the tracks.

    ``track_ids[i]`` is the ID of detection ``i``; ``new_ids`` were created this frame (their
    smoothing state must start fresh); ``expired_ids`` were dropped (free their state).
    """

    track_ids: np.ndarray      # (N,) int64, one per detection, in detection order
    new_ids: tuple[int, ...]
    expired_ids: tuple[int, ...]


class IouTracker:
    """Associate detections with tracks by IoU; new IDs for new faces; tracks expire.

    A track not matched for more than ``max_age_frames`` consecutive frames is dropped; a face
    that reappears after that gets a new ID. IDs are never reused within one tracker.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age_frames: int = 10,
                 assignment: str = "greedy") -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ConfigError(f"track_iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age_frames < 0:
            raise ConfigError(f"track_max_age_frames must be >= 0, got {max_age_frames}")
        if assignment not in ASSIGNMENT_METHODS:
            raise ConfigError(f"track_assignment must be one of {ASSIGNMENT_METHODS}, got "
                              f"{assignment!r}")
        self.iou_threshold = float(iou_threshold)
        self.max_age_frames = int(max_age_frames)
        self._assign = greedy_assignment if assignment == "greedy" else hungarian_assignment
        if assignment == "hungarian":
            hungarian_assignment(np.zeros((0, 0)), 0.0)  # fail now, not at the first frame
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)

    def reset(self) -> tuple[int, ...]:
        """Forget every track (e.g. between unrelated images); returns the dropped IDs."""
        dropped = tuple(t.track_id for t in self._tracks)
        self._tracks = []
        return dropped

    def update(self, boxes_xyxy: np.ndarray) -> TrackUpdate:
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        track_boxes = (np.stack([t.box_xyxy for t in self._tracks]) if self._tracks
                       else np.zeros((0, 4), np.float32))
        pairs = self._assign(iou_matrix(track_boxes, boxes), self.iou_threshold)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        matched_tracks = set()
        for t_idx, d_idx in pairs:
            track = self._tracks[t_idx]
            track.box_xyxy = boxes[d_idx].copy()
            track.frames_since_seen = 0
            track.hits += 1
            ids[d_idx] = track.track_id
            matched_tracks.add(t_idx)
        expired, kept = [], []
        for t_idx, track in enumerate(self._tracks):
            if t_idx not in matched_tracks:
                track.frames_since_seen += 1
                if track.frames_since_seen > self.max_age_frames:
                    expired.append(track.track_id)
                    continue
            kept.append(track)
        new_ids = []
        for d_idx in np.nonzero(ids < 0)[0]:
            track = Track(self._next_id, boxes[d_idx].copy())
            self._next_id += 1
            kept.append(track)
            ids[d_idx] = track.track_id
            new_ids.append(track.track_id)
        self._tracks = kept
        return TrackUpdate(ids, tuple(new_ids), tuple(expired))
