"""THE preprocessing: face images -> the model's float32 NCHW input tensor.

Every stage uses this one function with the numbers of the model card's
:class:`~aue_edge.edge.model_card.InputSpec`: training feeds FER+ images through it, calibration
feeds its calibration images through it, and the edge pipeline feeds aligned crops through it,
so a model never sees pixels prepared differently from the ones it was trained on. It lives in
``aue_edge/edge/`` (numpy + OpenCV, no torch) because the robot needs it and nothing upstream may be
imported there; aue_edge/train/ and aue_edge/calibration/ import it from here.

Steps, in this order, for each face:

1. resize to ``input_spec.size_px = (h, w)`` with ``cv2.INTER_LINEAR`` (skipped when the size
   already matches);
2. colour per ``input_spec.color``: ``gray3`` = BGR -> gray (``cv2.COLOR_BGR2GRAY``, ITU-R
   BT.601 weights 0.299 R + 0.587 G + 0.114 B) replicated to 3 channels; ``rgb`` = BGR -> RGB;
   ``bgr`` unchanged. A grayscale face is replicated to 3 channels in every mode;
3. ``x / 255``, then ``(x - mean) / std`` per channel (channel order after step 2);
4. HWC -> CHW, stacked to ``(N, 3, h, w)`` float32.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from aue_edge.core.errors import InputImageError
from aue_edge.edge.model_card import COLOR_MODES, InputSpec

__all__ = ["to_model_input"]


def to_model_input(faces: np.ndarray | Sequence[np.ndarray], input_spec: InputSpec
                   ) -> np.ndarray:
    """Preprocess face images into a ``(N, 3, h, w)`` float32 batch (see the module docstring).

    ``faces``: one uint8 array ``(N, H, W)`` / ``(N, H, W, 3)`` (e.g. the crops from
    :func:`~aue_edge.edge.face.alignment.align_faces`) or a sequence of uint8 images, each
    gray ``(H, W)`` / ``(H, W, 1)`` or BGR ``(H, W, 3)``, of any size (e.g. raw 48x48 FER+ PNGs).
    An empty batch gives ``(0, 3, h, w)``.
    """
    height, width = (int(v) for v in input_spec.size_px)
    if height < 1 or width < 1:
        raise InputImageError(f"input_spec.size_px must be positive, got {input_spec.size_px}")
    if input_spec.color not in COLOR_MODES:
        raise InputImageError(f"input_spec.color must be one of {COLOR_MODES}, got "
                              f"{input_spec.color!r}")
    if isinstance(faces, np.ndarray) and (faces.ndim < 3 or (faces.ndim == 3
                                                             and faces.shape[2] in (3, 4))):
        # Iterating a single image would silently treat its rows as images.
        raise InputImageError(
            f"faces must be a batch (N, H, W) / (N, H, W, 3) or a list of images, got one array "
            f"of shape {faces.shape}; for a single face pass [image] or image[None]")
    images = list(faces) if not isinstance(faces, np.ndarray) else faces
    if len(images) == 0:
        return np.zeros((0, 3, height, width), np.float32)
    batch = np.empty((len(images), height, width, 3), np.uint8)
    for i, image in enumerate(images):
        batch[i] = _to_bgr(_checked(image, i), height, width)
    if input_spec.color == "gray3":
        # One cvtColor call over the whole batch viewed as a single tall image.
        gray = cv2.cvtColor(batch.reshape(-1, width, 3), cv2.COLOR_BGR2GRAY)
        batch = np.repeat(gray.reshape(len(images), height, width, 1), 3, axis=3)
    elif input_spec.color == "rgb":
        batch = batch[..., ::-1]
    mean = np.asarray(input_spec.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(input_spec.std, np.float32) * 255.0)
    # (x / 255 - mean) / std == (x - 255 mean) / (255 std): one subtract and one multiply.
    out = (batch.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _checked(image: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputImageError(f"face {index}: expected a numpy uint8 image, got "
                              f"{type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputImageError(f"face {index}: expected dtype uint8 (0..255), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise InputImageError(f"face {index}: expected a non-empty gray (H, W) or BGR (H, W, 3) "
                              f"image, got shape {image.shape}")
    return image


def _to_bgr(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
