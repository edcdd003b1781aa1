"""Draw a :class:`FrameResult` on its frame: boxes, track IDs, emotion, a small AU bar chart.

Edge stage, used by ``aue run`` for the annotated PNGs / video and by the demo. Plain OpenCV
drawing (no matplotlib per frame: it would cost more than the inference).
"""
from __future__ import annotations

import cv2
import numpy as np

from aue_edge.edge.results import FrameResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Distinct BGR colours; a track keeps its colour for its whole life.
_PALETTE = ((66, 135, 245), (80, 200, 80), (40, 40, 230), (230, 160, 40), (200, 80, 200),
            (40, 200, 220), (150, 150, 255), (120, 200, 160))
AU_BAR_WIDTH_PX = 7
AU_CHART_HEIGHT_PX = 36


def track_colour(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[(int(track_id) - 1) % len(_PALETTE)]


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float,
          colour: tuple[int, int, int]) -> None:
    """Text with a dark outline so it reads on any background."""
    cv2.putText(image, text, origin, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, _FONT, scale, colour, 1, cv2.LINE_AA)


def _au_chart(image: np.ndarray, au_probs: np.ndarray, au_active: np.ndarray,
              anchor: tuple[int, int], thresholds: np.ndarray, colour) -> None:
    """Bars of AU probabilities, left-to-right in the card's order; active AUs filled; a grey
    tick marks each AU's threshold."""
    height, width = image.shape[:2]
    n = len(au_probs)
    chart_w = n * AU_BAR_WIDTH_PX + 4
    x0 = int(np.clip(anchor[0], 0, max(0, width - chart_w)))
    y0 = int(np.clip(anchor[1], 0, max(0, height - AU_CHART_HEIGHT_PX)))
    region = image[y0:y0 + AU_CHART_HEIGHT_PX, x0:x0 + chart_w]
    region[:] = (region * 0.4).astype(np.uint8)  # darken behind the bars
    base = y0 + AU_CHART_HEIGHT_PX - 2
    for k, (p, on, t) in enumerate(zip(au_probs, au_active, thresholds)):
        x = x0 + 2 + k * AU_BAR_WIDTH_PX
        top = base - int(round(float(p) * (AU_CHART_HEIGHT_PX - 4)))
        cv2.rectangle(image, (x, top), (x + AU_BAR_WIDTH_PX - 2, base), colour,
                      cv2.FILLED if on else 1)
        tick_y = base - int(round(float(t) * (AU_CHART_HEIGHT_PX - 4)))
        cv2.line(image, (x, tick_y), (x + AU_BAR_WIDTH_PX - 2, tick_y), (200, 200, 200), 1)


def annotate(frame_bgr: np.ndarray, result: FrameResult, au_names: tuple[str, ...] = (),
             au_thresholds: np.ndarray | None = None, show_timings: bool = True
             ) -> np.ndarray:
    """A copy of the frame with the results drawn on it."""
    image = np.ascontiguousarray(frame_bgr, dtype=np.uint8).copy()
    scale = max(0.4, min(image.shape[:2]) / 900.0)
    for face in result.faces:
        colour = track_colour(face.track_id)
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box_xyxy)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        for x, y in face.landmarks5:
            cv2.circle(image, (int(round(float(x))), int(round(float(y)))), 2, colour, -1)
        label = f"#{face.track_id}"
        if face.emotion_label is not None:
            label += f" {face.emotion_label} {face.emotion_confidence:.2f}"
        _text(image, label, (x1, max(12, y1 - 6)), scale, colour)
        if face.au_probs is not None:
            thresholds = (np.full(len(face.au_probs), 0.5) if au_thresholds is None
                          else np.asarray(au_thresholds))
            _au_chart(image, face.au_probs, face.au_active, (x1, y2 + 4), thresholds, colour)
            active = [name for name, on in zip(au_names, face.au_active) if on]
            if active:
                _text(image, " ".join(active[:6]) + (" ..." if len(active) > 6 else ""),
                      (x1, min(image.shape[0] - 4, y2 + AU_CHART_HEIGHT_PX + 18)), scale * 0.8,
                      colour)
    if show_timings:
        total = result.timings_ms.get("total")
        header = f"frame {result.frame_index}  faces {len(result.faces)}"
        if total is not None:
            header += f"  {total:.1f} ms"
        _text(image, header, (6, 18), 0.5, (255, 255, 255))
    return image
