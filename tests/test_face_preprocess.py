"""to_model_input: exact numbers on known pixels, colour modes, sizes, batch forms, errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from aue_edge.core.errors import InputImageError
from aue_edge.edge.model_card import InputSpec
from aue_edge.edge.preprocess import to_model_input

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def spec(color: str, size_px=(4, 4)) -> InputSpec:
    return InputSpec(size_px=size_px, color=color, mean=MEAN, std=STD)


def test_known_pixel_in_each_colour_mode():
    face = np.zeros((4, 4, 3), np.uint8)
    face[1, 2] = (10, 200, 50)  # B, G, R
    gray = cv2.cvtColor(face[1:2, 2:3], cv2.COLOR_BGR2GRAY)[0, 0]
    assert gray == round(0.114 * 10 + 0.587 * 200 + 0.299 * 50)
    expected = {
        "bgr": [(v / 255 - MEAN[c]) / STD[c] for c, v in enumerate((10, 200, 50))],
        "rgb": [(v / 255 - MEAN[c]) / STD[c] for c, v in enumerate((50, 200, 10))],
        "gray3": [(gray / 255 - MEAN[c]) / STD[c] for c in range(3)],
    }
    for color, values in expected.items():
        out = to_model_input(face[None], spec(color))
        assert out.shape == (1, 3, 4, 4) and out.dtype == np.float32
        np.testing.assert_allclose(out[0, :, 1, 2], values, rtol=1e-5, atol=1e-5)
        # A black pixel is -mean/std in every mode.
        np.testing.assert_allclose(out[0, :, 0, 0], [-m / s for m, s in zip(MEAN, STD)],
                                   rtol=1e-5)


def test_ferplus_gray_images_of_any_size_in_one_list(ferplus_root):
    gray48 = cv2.imread(str(ferplus_root / "FER2013Test" / "fer0032220.png"),
                        cv2.IMREAD_GRAYSCALE)
    assert gray48 is not None and gray48.shape == (48, 48)
    bgr_big = cv2.cvtColor(cv2.resize(gray48, (112, 112)), cv2.COLOR_GRAY2BGR)
    out = to_model_input([gray48, gray48[:, :, None], bgr_big], spec("gray3", (112, 112)))
    assert out.shape == (3, 3, 112, 112)
    # Gray input: the three channels carry the same gray value, normalised per channel.
    resized = cv2.resize(gray48, (112, 112), interpolation=cv2.INTER_LINEAR)
    for c in range(3):
        np.testing.assert_allclose(out[0, c], (resized / 255 - MEAN[c]) / STD[c], atol=1e-5)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_allclose(out[0], out[2], atol=1e-5)  # same pixels via BGR


def test_aligned_crop_batch_matches_per_image_calls(astronaut_bgr):
    crops = np.stack([astronaut_bgr[:112, :112], astronaut_bgr[200:312, 100:212]])
    batch = to_model_input(crops, spec("rgb", (56, 64)))
    assert batch.shape == (2, 3, 56, 64)
    for i in range(2):
        single = to_model_input([crops[i]], spec("rgb", (56, 64)))[0]
        np.testing.assert_array_equal(batch[i], single)


def test_empty_batch_and_errors():
    assert to_model_input([], spec("gray3")).shape == (0, 3, 4, 4)
    with pytest.raises(InputImageError, match="face 1: expected dtype uint8"):
        to_model_input([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32)], spec("bgr"))
    with pytest.raises(InputImageError, match="shape"):
        to_model_input([np.zeros((4, 4, 2), np.uint8)], spec("bgr"))
    with pytest.raises(InputImageError, match=r"single face pass \[image\]"):
        to_model_input(np.zeros((48, 48, 3), np.uint8), spec("bgr"))
