"""5-point similarity alignment: detected landmarks -> face crops framed like the training data.

Edge stage, between detection (:mod:`aue_edge.edge.face.yunet`) and preprocessing
(:mod:`aue_edge.edge.preprocess`). Each face's 5 landmarks are mapped onto a template (by
default :data:`aue_edge.edge.face.templates.FERPLUS_TEMPLATE_5PT`, the framing of FER+) with
a least-squares similarity (rotation, uniform scale, translation; no reflection, no shear), and
the frame is warped with ``cv2.warpAffine``.

Coordinate convention, used everywhere in the package: a template point is a fraction of the
crop's extent, 0 = the left/top edge of the first pixel and 1 = the right/bottom edge of the
last one, so in a crop of ``size_px = (h, w)`` it sits at pixel ``(fx * w - 0.5, fy * h - 0.5)``
(pixel centres at integer coordinates, as OpenCV). The same fractions therefore frame a 48 px
and a 224 px crop identically. Templates are square-framed; a non-square ``size_px`` gets the
least-squares similarity to a stretched template, not a stretched face.
"""
from __future__ import annotations

import cv2
import numpy as np

from aue_edge.core.errors import InputImageError
from aue_edge.edge.face.templates import template_array
from aue_edge.edge.frames import validate_frame

__all__ = ["BORDER_MODES", "align_faces", "alignment_matrices", "invert_affine",
           "similarity_transform", "template_to_pixels", "transform_points", "warp_faces"]

# Replicate is the default: FER+ crops show the face's surroundings up to the image edge (in
# every 10th train image, 73 of 2,856 have even one uniform edge row or column), so a face at
# the frame border should not gain a black band the model rarely saw.
BORDER_MODES = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT,
                "reflect": cv2.BORDER_REFLECT_101}


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src_pts`` onto ``dst_pts`` (Umeyama 1991).

    ``src_pts`` (K, 2) or a batch (N, K, 2); ``dst_pts`` (K, 2) shared by the batch or (N, K, 2).
    Returns the ``(2, 3)`` (or ``(N, 2, 3)``) float64 matrix ``[s R | t]`` with ``det(R) = +1``
    (a mirrored point set is fitted by the best rotation, never by a reflection).
    """
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    single = src.ndim == 2
    if single:
        src = src[None]
    if dst.ndim == 2 and dst.shape == src.shape[1:]:
        dst = np.broadcast_to(dst, src.shape)
    if src.ndim != 3 or src.shape[-1] != 2 or src.shape[1] < 2 or dst.shape != src.shape:
        raise InputImageError(
            f"similarity_transform needs src (K, 2) or (N, K, 2) with K >= 2 and dst of the "
            f"same K, got src {np.shape(src_pts)} and dst {np.shape(dst_pts)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputImageError("similarity_transform got NaN or inf landmark coordinates")
    src_mean = src.mean(axis=1, keepdims=True)
    dst_mean = dst.mean(axis=1, keepdims=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum(axis=(1, 2)) / src.shape[1]
    if np.any(src_var <= 1e-12):
        raise InputImageError(
            "similarity_transform got source points that all coincide (zero spread); a face's "
            "landmarks must be distinct points")
    cov = np.einsum("nki,nkj->nij", dst_c, src_c) / src.shape[1]
    u, sing, vt = np.linalg.svd(cov)
    # Flip the last axis where the best orthogonal map would be a reflection.
    reflect = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    reflect[reflect == 0] = 1.0
    d = np.stack([np.ones_like(reflect), reflect], axis=1)
    rot = np.einsum("nij,nj,njk->nik", u, d, vt)
    scale = (sing * d).sum(axis=1) / src_var
    trans = dst_mean[:, 0, :] - scale[:, None] * np.einsum("nij,nj->ni", rot, src_mean[:, 0, :])
    matrices = np.concatenate([scale[:, None, None] * rot, trans[:, :, None]], axis=2)
    return matrices[0] if single else matrices


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply ``(2, 3)`` / ``(N, 2, 3)`` affine matrices to ``(K, 2)`` / ``(N, K, 2)`` points."""
    points = np.asarray(points, dtype=np.float64)
    matrices = np.asarray(matrices, dtype=np.float64)
    return points @ np.swapaxes(matrices[..., :2], -1, -2) + matrices[..., None, :, 2]


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """Inverse of ``(2, 3)`` or ``(N, 2, 3)`` affine matrices (crop->frame from frame->crop)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    linear_inv = np.linalg.inv(matrices[..., :2])
    shift = -np.einsum("...ij,...j->...i", linear_inv, matrices[..., 2])
    return np.concatenate([linear_inv, shift[..., None]], axis=-1)


def template_to_pixels(template_5pt, size_px: tuple[int, int]) -> np.ndarray:
    """Template fractions -> pixel coordinates in a crop of ``size_px = (h, w)``."""
    height, width = _check_size(size_px)
    return template_array(template_5pt) * np.array([width, height], np.float64) - 0.5


def alignment_matrices(landmarks5: np.ndarray, template_5pt, size_px: tuple[int, int]
                       ) -> np.ndarray:
    """The ``(N, 2, 3)`` frame->crop similarities that put each face's 5 points on the template."""
    landmarks5 = _check_landmarks(landmarks5)
    if landmarks5.shape[0] == 0:
        return np.zeros((0, 2, 3), np.float64)
    return similarity_transform(landmarks5, template_to_pixels(template_5pt, size_px))


def align_faces(frame_bgr: np.ndarray, landmarks5: np.ndarray, template_5pt,
                size_px: tuple[int, int], border_mode: str = "replicate") -> np.ndarray:
    """One aligned ``size_px = (h, w)`` crop per face: ``(N, h, w, 3)`` uint8 BGR.

    ``landmarks5`` (N, 5, 2) in the frame's pixels, YuNet order; ``template_5pt`` (5, 2)
    fractions of the crop (see the module docstring), e.g. a model card's
    ``alignment.template_5pt``. N = 0 gives ``(0, h, w, 3)``. To map points between frame and
    crop, take the matrices from :func:`alignment_matrices` (same arguments) and cut the crops
    with :func:`warp_faces`; this function is exactly those two calls.
    """
    matrices = alignment_matrices(landmarks5, template_5pt, size_px)
    return warp_faces(frame_bgr, matrices, size_px, border_mode)


def warp_faces(frame_bgr: np.ndarray, matrices: np.ndarray, size_px: tuple[int, int],
               border_mode: str = "replicate") -> np.ndarray:
    """Warp a frame by ``(N, 2, 3)`` frame->crop matrices into ``(N, h, w, 3)`` uint8 crops.

    Bilinear interpolation; pixels outside the frame per ``border_mode`` (one of
    :data:`BORDER_MODES`; ``constant`` fills with black).
    """
    frame = validate_frame(frame_bgr)
    height, width = _check_size(size_px)
    if border_mode not in BORDER_MODES:
        raise InputImageError(f"border_mode must be one of {sorted(BORDER_MODES)}, got "
                              f"{border_mode!r}")
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.ndim != 3 or matrices.shape[1:] != (2, 3) or not np.isfinite(matrices).all():
        raise InputImageError(f"matrices must be finite (N, 2, 3) affine matrices, got shape "
                              f"{matrices.shape}")
    crops = np.empty((matrices.shape[0], height, width, 3), np.uint8)
    for i, matrix in enumerate(matrices):
        crops[i] = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=BORDER_MODES[border_mode], borderValue=(0, 0, 0))
    return crops


def _check_size(size_px) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size_px)
    except (TypeError, ValueError):
        raise InputImageError(f"size_px must be (height, width) in pixels, got {size_px!r}"
                              ) from None
    if height < 1 or width < 1:
        raise InputImageError(f"size_px must be positive (height, width), got {size_px!r}")
    return height, width


def _check_landmarks(landmarks5: np.ndarray) -> np.ndarray:
    landmarks5 = np.asarray(landmarks5, dtype=np.float64)
    if landmarks5.ndim != 3 or landmarks5.shape[1:] != (5, 2):
        raise InputImageError(f"landmarks5 must have shape (N, 5, 2) (x, y per point, YuNet "
                              f"order), got {landmarks5.shape}")
    if not np.isfinite(landmarks5).all():
        raise InputImageError("landmarks5 contains NaN or inf coordinates")
    return landmarks5
