"""Frame validation: the one gate every image passes before the edge pipeline touches it.

Cameras, video files, ROS messages and test code hand the pipeline arrays of many shapes and
dtypes. :func:`validate_frame` turns each of them into the single form the face front-end
(detection, alignment, preprocessing) works on -- a C-contiguous ``uint8`` ``H x W x 3`` BGR
image -- or raises :class:`~aue_edge.core.errors.InputImageError` saying what was wrong.
No torch here (edge stage).
"""
from __future__ import annotations

import cv2
import numpy as np

from aue_edge.core.errors import InputImageError

__all__ = ["decode_image", "is_truncated_jpeg", "read_image_file", "read_video",
           "validate_frame"]

_UINT16_MAX = 65535
_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def is_truncated_jpeg(data: bytes) -> bool:
    """True for JPEG data cut off inside its image: no end-of-image marker after the last
    start-of-scan. OpenCV decodes such data as an image whose missing rows are grey, with only
    a libjpeg warning on stderr. (0xFF is always byte-stuffed in a scan's entropy-coded data,
    so neither marker can occur there by chance.)"""
    return data[:2] == _JPEG_SOI and data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS)


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """An encoded image (file bytes, a CompressedImage's data) decoded with OpenCV, or None
    when it cannot be decoded or is a truncated JPEG (:func:`is_truncated_jpeg`)."""
    if not data or is_truncated_jpeg(data):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def read_image_file(path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """The image file at ``path`` decoded (:func:`decode_image`), or None when it cannot be
    read or decoded: the one reader of image files for ``aue run`` and the image source."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    return decode_image(data, flags)


def read_video(path) -> tuple[list, float]:
    """Every frame of the video file at ``path`` (BGR, as OpenCV decodes them) and its frame
    rate (10 when the file does not say); :class:`InputImageError` when no frame decodes."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise InputImageError(f"{path}: no frame could be decoded; for the bundled clip, restore "
                              f"it (git checkout) or regenerate it with "
                              f"aue_edge/edge/samples/make_demo_clip.py")
    return frames, float(fps)


def validate_frame(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as a contiguous ``uint8`` ``(H, W, 3)`` BGR image.

    Accepted inputs (anything else raises :class:`InputImageError`):

    - ``uint8`` ``(H, W, 3)`` BGR: returned as is (made contiguous if it is a strided view);
    - mono ``(H, W)`` or ``(H, W, 1)``: replicated to three BGR channels;
    - 4-channel ``(H, W, 4)`` BGRA: the alpha channel is dropped (not blended);
    - ``uint16`` (any of the layouts above, e.g. 16-bit mono or IR cameras): scaled to 8 bit
      over the full 16-bit range, ``round(v * 255 / 65535)``. The scale is fixed, not adapted
      per frame, so a sensor that only uses the low 10-12 bits gives a dark image: scale such
      frames yourself before calling this.

    Rejected: non-arrays, empty or zero-size arrays, float arrays (including NaN/inf: the
    pipeline does not guess whether floats are 0..1 or 0..255), other integer and bool dtypes,
    ndim other than 2 or 3, and 2 or more-than-4 channels.
    """
    if not isinstance(frame, np.ndarray):
        raise InputImageError(
            f"a frame must be a numpy array (H x W x 3 uint8 BGR), got {type(frame).__name__}; "
            f"decode images with cv2.imread / cv2.VideoCapture first")
    if frame.size == 0:
        raise InputImageError(
            f"the frame is empty (shape {frame.shape}); expected H x W x 3 with H, W >= 1. "
            f"A camera or video that returned no image should be skipped, not passed on")
    if frame.ndim not in (2, 3):
        raise InputImageError(
            f"a frame needs 2 (mono) or 3 (H x W x C) dimensions, got shape {frame.shape}; "
            f"pass one image at a time, not a batch")
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels not in (1, 3, 4):
        raise InputImageError(
            f"a frame needs 1 (mono), 3 (BGR) or 4 (BGRA) channels, got {channels} "
            f"(shape {frame.shape})")
    if frame.dtype.kind == "u" and frame.dtype.itemsize == 2:  # uint16, either byte order
        # Integer rounding of v * 255 / 65535 without a float copy of the whole frame.
        frame = ((frame.astype(np.uint32) * 255 + _UINT16_MAX // 2) // _UINT16_MAX).astype(
            np.uint8)
    elif frame.dtype != np.uint8:
        hint = ""
        if np.issubdtype(frame.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(frame)))
            hint = (f" ({bad} NaN/inf values)" if bad else "") + (
                "; float frames are ambiguous (0..1 or 0..255?): convert with "
                "np.clip(x * 255, 0, 255).astype(np.uint8) or the equivalent for your range")
        raise InputImageError(
            f"a frame must be uint8 (or uint16, scaled to 8 bit), got dtype {frame.dtype}"
            f"{hint}")
    if channels == 1:
        frame = cv2.cvtColor(frame.reshape(frame.shape[0], frame.shape[1]), cv2.COLOR_GRAY2BGR)
    elif channels == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)
