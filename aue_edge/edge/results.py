"""What the per-frame pipeline returns: plain data, no ROS, no torch.

The ROS nodes turn these into messages, ``aue run`` into JSON lines; both read the same fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceResult:
    """One face in one frame, after tracking and temporal smoothing."""

    track_id: int
    box_xyxy: np.ndarray          # (4,) float32, pixels in the input frame
    score: float                  # detector confidence
    landmarks5: np.ndarray        # (5, 2) float32: right eye, left eye, nose, right/left mouth
    emotion_label: str | None = None
    emotion_confidence: float | None = None
    emotion_probs: np.ndarray | None = None   # (num_labels,), sums to 1, card's label order
    au_probs: np.ndarray | None = None        # (num_aus,), card's AU order
    au_active: np.ndarray | None = None       # (num_aus,) bool, au_probs >= threshold

    def to_json(self, emotion_labels: tuple[str, ...], au_names: tuple[str, ...]) -> dict:
        out = {
            "id": self.track_id,
            "box": [round(float(v), 2) for v in self.box_xyxy],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks5],
        }
        if self.emotion_probs is not None:
            out["emotion"] = self.emotion_label
            out["emotion_confidence"] = round(float(self.emotion_confidence), 4)
            out["emotion_probs"] = {label: round(float(p), 5)
                                    for label, p in zip(emotion_labels, self.emotion_probs)}
        if self.au_probs is not None:
            out["au_probs"] = {name: round(float(p), 5)
                               for name, p in zip(au_names, self.au_probs)}
            out["au_active"] = [name for name, on in zip(au_names, self.au_active) if on]
        return out


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame."""

    frame_index: int
    timestamp_s: float
    width: int
    height: int
    faces: list[FaceResult] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
