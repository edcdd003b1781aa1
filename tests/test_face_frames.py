"""validate_frame: accepted layouts become contiguous uint8 BGR; bad frames get clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from aue_edge.core.errors import InputImageError
from aue_edge.edge.frames import validate_frame


def test_bgr_uint8_passes_through_and_strided_view_becomes_contiguous(astronaut_bgr):
    out = validate_frame(astronaut_bgr)
    assert out.dtype == np.uint8 and out.shape == astronaut_bgr.shape
    np.testing.assert_array_equal(out, astronaut_bgr)
    view = astronaut_bgr[::2, ::2]
    out = validate_frame(view)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 1)])
def test_mono_is_replicated_to_bgr(shape):
    mono = np.arange(1200, dtype=np.uint8).reshape(shape)
    out = validate_frame(mono)
    assert out.shape == (40, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], mono.reshape(40, 30))


def test_bgra_drops_alpha(astronaut_bgr):
    alpha = np.full(astronaut_bgr.shape[:2] + (1,), 7, np.uint8)
    out = validate_frame(np.concatenate([astronaut_bgr, alpha], axis=2))
    np.testing.assert_array_equal(out, astronaut_bgr)


def test_uint16_is_scaled_over_the_full_range(astronaut_bgr):
    wide = astronaut_bgr.astype(np.uint16) * 257  # 8-bit value v -> 16-bit v * 257
    np.testing.assert_array_equal(validate_frame(wide), astronaut_bgr)
    edge_values = np.array([[0, 128, 65535]], np.uint16)
    np.testing.assert_array_equal(validate_frame(edge_values)[0, :, 0], [0, 0, 255])
    big_endian = wide.astype(">u2")  # e.g. 16-bit PGM/FITS data read as raw bytes
    np.testing.assert_array_equal(validate_frame(big_endian), astronaut_bgr)


@pytest.mark.parametrize("frame, words", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 0), np.uint8), "empty"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.zeros((8, 8, 3), np.float64), "float"),
    (np.zeros((8, 8, 3), np.int32), "uint8"),
    (np.zeros((2, 8, 8, 3), np.uint8), "batch"),
    (np.zeros((8, 8, 2), np.uint8), "channels"),
    (None, "numpy array"),
    ([[0, 1], [2, 3]], "numpy array"),
])
def test_bad_frames_raise_input_image_error(frame, words):
    with pytest.raises(InputImageError, match=words):
        validate_frame(frame)
