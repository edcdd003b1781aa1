"""Alignment templates: where the 5 landmarks of a face sit in a crop the model was trained on.

Edge stage data, read by :mod:`aue_edge.edge.face.alignment` and written into every model card
(``AlignmentSpec.template_5pt``). Points are (x, y) fractions of the crop's extent (0 = the
left/top edge of the first pixel, 1 = the right/bottom edge of the last pixel), in YuNet order:
right eye, left eye, nose tip, right mouth corner, left mouth corner ("right" = the person's
right = image-left).

:data:`FERPLUS_TEMPLATE_5PT` is measured, not chosen: the mean YuNet landmarks on the FER+
training images, so aligned crops from a camera are framed like the 48x48 FER+ faces
("loosely centred": the face fills most of the crop, eyes at about 37 % of the height, mouth
corners at about 75 %). Derived with::

    .venv/bin/python -m aue_edge.train.derive_alignment_template \\
        --ferplus-root ../shared/data/ferplus --max-images 0 --out runs/alignment_template_all

on all 28,555 FER2013Train images whose top FER+ vote is not NF (3 of 28,558 left out), each
upscaled 48 -> 192 px (INTER_LINEAR) and run through
:class:`~aue_edge.edge.face.yunet.YuNetDetector` (score threshold 0.6, vendored model, ONNX
Runtime CPU): 28,177 images had a face (378 had none and were not used; 12 had two and the
top-scoring face was used), mean score 0.909. The per-point standard deviation is 0.06-0.11 of
the crop (FER+ framing is loose); the median lies within 0.01 of the mean. A random 4,000-image sample (``--max-images 4000 --seed 0``) gives the
same numbers within 0.001.
"""
from __future__ import annotations

import numpy as np

from aue_edge.core.errors import InputImageError

__all__ = ["FERPLUS_TEMPLATE_5PT", "FERPLUS_TEMPLATE_SOURCE", "template_array"]

FERPLUS_TEMPLATE_5PT: tuple[tuple[float, float], ...] = (
    (0.3126, 0.3736),  # right eye (image-left)
    (0.6759, 0.3764),  # left eye (image-right)
    (0.4898, 0.5842),  # nose tip
    (0.3532, 0.7505),  # right mouth corner (image-left)
    (0.6406, 0.7511),  # left mouth corner (image-right)
)

FERPLUS_TEMPLATE_SOURCE = (
    "mean YuNet 5 points on 28,177 of 28,555 FER+ FER2013Train images upscaled 48->192 px "
    "(aue_edge.train.derive_alignment_template --max-images 0)")


def template_array(template_5pt) -> np.ndarray:
    """A template as a validated ``(5, 2)`` float64 array of fractions."""
    try:
        array = np.asarray(template_5pt, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputImageError(f"an alignment template is 5 (x, y) fractions, got "
                              f"{template_5pt!r}") from None
    if array.shape != (5, 2) or not np.isfinite(array).all():
        raise InputImageError(
            f"an alignment template is 5 finite (x, y) fractions of the crop (right eye, left "
            f"eye, nose tip, right and left mouth corner), got shape {array.shape}")
    return array
