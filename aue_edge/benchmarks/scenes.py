"""Real-face camera frames for the benchmarks: 640x480 BGR with 1 or 5 faces.

The benchmark suites time the pipeline on what a robot's camera gives it, so the frames are
built from a real photo: scikit-image's public-domain astronaut portrait (Eileen Collins) by
default, or the user's own photo of one face (``aue bench --face-image``). The 1-face frame is the
photo scaled to the frame height and centred; the 5-face frame tiles five head-and-shoulder crops
at slightly different sizes (faces about 75-90 px wide, as at a few metres from a VGA camera).
The suites check with the detector that the frames really hold 1 and 5 faces before timing.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from aue_edge.core.errors import InputImageError

FRAME_SIZE_PX = (480, 640)  # (height, width): VGA, the usual robot camera mode
BACKGROUND_GRAY = 96
# Where the five heads go in a 640x480 frame: (x, y, side) in pixels.
FIVE_FACE_SLOTS = ((10, 10, 200), (220, 20, 190), (430, 10, 200), (110, 250, 220),
                   (340, 260, 210))
# Side of the head crop relative to the detected face box (head and a little shoulder).
HEAD_CROP_SCALE = 2.1


def astronaut_bgr() -> np.ndarray:
    """scikit-image's astronaut photo as BGR uint8 (scikit-image is the test extra)."""
    try:
        from skimage import data
    except ImportError:
        raise InputImageError(
            "the default benchmark face image comes from scikit-image, which is not installed; "
            "pip install 'aue_edge[test]' or pass --face-image PATH (a photo of one face)"
        ) from None
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def load_face_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputImageError(f"face image {path} could not be read (missing or not an image "
                              f"OpenCV decodes); pass a JPEG/PNG photo of one face")
    return image


def one_face_frame(face_bgr: np.ndarray, size_px: tuple[int, int] = FRAME_SIZE_PX) -> np.ndarray:
    """The photo scaled to the frame height (keeping its aspect) and centred on gray."""
    height, width = size_px
    canvas = np.full((height, width, 3), BACKGROUND_GRAY, np.uint8)
    scale = min(height / face_bgr.shape[0], width / face_bgr.shape[1])
    new_w, new_h = int(face_bgr.shape[1] * scale), int(face_bgr.shape[0] * scale)
    resized = cv2.resize(face_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def head_crop(face_bgr: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
    """A square around a detected face box, widened by :data:`HEAD_CROP_SCALE`."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    side = int(max(x1 - x0, y1 - y0) * HEAD_CROP_SCALE)
    x, y = int((x0 + x1) / 2 - side / 2), int((y0 + y1) / 2 - side / 2)
    padded = cv2.copyMakeBorder(face_bgr, side, side, side, side, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(padded[y + side:y + 2 * side, x + side:x + 2 * side])


def five_face_frame(head_bgr: np.ndarray, size_px: tuple[int, int] = FRAME_SIZE_PX
                    ) -> np.ndarray:
    """Five head crops tiled into one frame (slots scaled to the frame size)."""
    height, width = size_px
    canvas = np.full((height, width, 3), BACKGROUND_GRAY, np.uint8)
    sx, sy = width / 640, height / 480
    for x, y, side in FIVE_FACE_SLOTS:
        side_px = max(int(side * min(sx, sy)), 8)
        x_px, y_px = int(x * sx), int(y * sy)
        tile = cv2.resize(head_bgr, (side_px, side_px), interpolation=cv2.INTER_AREA)
        canvas[y_px:y_px + side_px, x_px:x_px + side_px] = tile
    return canvas


def benchmark_frames(face_photo: np.ndarray, detector) -> dict[int, np.ndarray]:
    """{faces: 640x480 BGR frame} for 1 and 5 faces, each checked with ``detector`` (a
    :class:`~aue_edge.edge.face.yunet.YuNetDetector`) to hold exactly that many faces."""
    found = detector.detect(face_photo)
    if len(found) != 1:
        raise InputImageError(f"the benchmark face photo must show exactly one face; YuNet "
                              f"found {len(found)}. Pass --face-image with a photo of one face.")
    built = {1: one_face_frame(face_photo),
             5: five_face_frame(head_crop(face_photo, found.boxes_xyxy[0]))}
    for count, frame in built.items():
        detected = len(detector.detect(frame))
        if detected != count:
            raise InputImageError(f"the {count}-face benchmark frame holds {detected} detectable "
                                  f"faces; the '{count}face' cases would not time what their "
                                  f"name says. Use another --face-image.")
    return built
