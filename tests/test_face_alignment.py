"""Similarity alignment, the FER+ template and the 68-point mean shape, on real faces."""
from __future__ import annotations

import csv
import importlib.util

import cv2
import numpy as np
import pytest

from aue_edge.core.errors import BackendUnavailableError, InputImageError
from aue_edge.edge.face.alignment import (align_faces, alignment_matrices, invert_affine,
                                          similarity_transform, template_to_pixels,
                                          transform_points, warp_faces)
from aue_edge.edge.face.landmarks import (CANONICAL_MEAN_SHAPE_68, DlibProvider,
                                          MeanShapeProvider, MediapipeProvider,
                                          five_points_from_68, mean_shape_68)
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.face.yunet import YuNetDetector

UPSCALE_PX = 192
FRAMING_IMAGES = 120


@pytest.fixture(scope="module")
def detector():
    with YuNetDetector(detect_max_side_px=None) as det:
        yield det


def rotation_scale(angle_deg: float, scale: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                     [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def test_similarity_recovers_a_known_transform_single_and_batched():
    src = np.array([[10, 20], [50, 22], [30, 45], [15, 70], [48, 71]], np.float64)
    truth = rotation_scale(17, 1.7, (5, -3))
    dst = transform_points(src, truth)
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)
    batch = similarity_transform(np.stack([src, src + 4]), dst)
    assert batch.shape == (2, 2, 3)
    np.testing.assert_allclose(transform_points(src + 4, batch[1]), dst, atol=1e-9)
    np.testing.assert_allclose(invert_affine(truth)[:, :2] @ truth[:, :2], np.eye(2),
                               atol=1e-12)


def test_similarity_never_reflects():
    src = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], np.float64)
    mirrored = src * [-1, 1]
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_similarity_rejects_bad_points():
    with pytest.raises(InputImageError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(InputImageError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(InputImageError, match="same K"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_alignment_puts_detected_points_on_the_template(detector, astronaut_bgr):
    found = detector.detect(astronaut_bgr)
    size = (UPSCALE_PX, UPSCALE_PX)
    matrices = alignment_matrices(found.landmarks5, FERPLUS_TEMPLATE_5PT, size)
    crops = warp_faces(astronaut_bgr, matrices, size)
    np.testing.assert_array_equal(crops, align_faces(astronaut_bgr, found.landmarks5,
                                                     FERPLUS_TEMPLATE_5PT, size))
    assert crops.shape == (1, UPSCALE_PX, UPSCALE_PX, 3) and crops.dtype == np.uint8
    target = template_to_pixels(FERPLUS_TEMPLATE_5PT, (UPSCALE_PX, UPSCALE_PX))
    mapped = transform_points(found.landmarks5[0], matrices[0])
    # A similarity cannot fit 5 real points exactly; the residual is a few % of the crop.
    assert np.abs(mapped - target).max() < 0.04 * UPSCALE_PX
    # Detecting again on the aligned crop finds the face where the template says.
    again = detector.detect(crops[0])
    assert len(again) == 1
    assert np.abs(again.landmarks5[0] - target).max() < 0.05 * UPSCALE_PX
    back = transform_points(mapped, invert_affine(matrices[0]))
    np.testing.assert_allclose(back, found.landmarks5[0], atol=1e-3)


def test_align_faces_zero_faces_and_errors(astronaut_bgr):
    crops = align_faces(astronaut_bgr, np.zeros((0, 5, 2)), FERPLUS_TEMPLATE_5PT, (48, 48))
    matrices = alignment_matrices(np.zeros((0, 5, 2)), FERPLUS_TEMPLATE_5PT, (48, 48))
    assert crops.shape == (0, 48, 48, 3) and matrices.shape == (0, 2, 3)
    with pytest.raises(InputImageError, match=r"\(N, 2, 3\)"):
        warp_faces(astronaut_bgr, np.zeros((1, 3, 3)), (48, 48))
    with pytest.raises(InputImageError, match=r"\(N, 5, 2\)"):
        alignment_matrices(np.zeros((1, 4, 2)), FERPLUS_TEMPLATE_5PT, (48, 48))
    with pytest.raises(InputImageError, match="template"):
        align_faces(astronaut_bgr, np.ones((1, 5, 2)), FERPLUS_TEMPLATE_5PT[:4], (48, 48))
    with pytest.raises(InputImageError, match="border_mode"):
        align_faces(astronaut_bgr, np.asarray(FERPLUS_TEMPLATE_5PT)[None] * 100,
                    FERPLUS_TEMPLATE_5PT, (48, 48), border_mode="wrap")


def test_template_reproduces_ferplus_framing(detector, ferplus_root):
    """Aligning upscaled FER+ test faces to the template gives back FER+-framed crops."""
    split = ferplus_root / "FER2013Test"
    with (split / "label.csv").open(newline="") as handle:
        names = [row[0] for _, row in zip(range(FRAMING_IMAGES), csv.reader(handle))]
    template = np.asarray(FERPLUS_TEMPLATE_5PT)
    variants = {"template": template, "shifted_x": template + [0.05, 0],
                "shifted_y": template + [0, 0.05], "smaller": (template - 0.5) * 0.9 + 0.5,
                "larger": (template - 0.5) * 1.1 + 0.5}
    originals, aligned, own_error = [], {k: [] for k in variants}, []
    for name in names:
        gray = cv2.imread(str(split / name), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(gray, (UPSCALE_PX, UPSCALE_PX), interpolation=cv2.INTER_LINEAR)
        found = detector.detect(big)
        if len(found) == 0:
            continue
        originals.append(gray.astype(np.float64))
        for key, points in variants.items():
            crops = align_faces(big, found.landmarks5[:1], points, (48, 48))
            aligned[key].append(crops[0, :, :, 0].astype(np.float64))
        # With the image's own detected points as template, alignment undoes the upscaling.
        own = (found.landmarks5[0] + 0.5) / UPSCALE_PX
        crops = align_faces(big, found.landmarks5[:1], own, (48, 48))
        own_error.append(np.abs(crops[0, :, :, 0].astype(np.float64) - gray).mean())
    assert len(originals) >= 0.95 * FRAMING_IMAGES
    assert np.mean(own_error) < 3.0  # grey levels out of 255
    mean_original = np.mean(originals, axis=0).ravel()
    corr = {key: np.corrcoef(np.mean(crops, axis=0).ravel(), mean_original)[0, 1]
            for key, crops in aligned.items()}
    assert corr["template"] > 0.93
    # The derived template frames FER+ better than the same template moved or rescaled.
    assert all(corr["template"] > corr[key] + 0.01 for key in variants if key != "template")


def test_mean_shape_is_published_shape_placed_on_the_template():
    assert CANONICAL_MEAN_SHAPE_68.shape == (68, 2) and not CANONICAL_MEAN_SHAPE_68.flags.writeable
    shape = mean_shape_68()
    assert shape.shape == (68, 2)
    five = five_points_from_68(shape)
    np.testing.assert_allclose(five, FERPLUS_TEMPLATE_5PT, atol=0.02)
    # Anatomy in aligned fractions: brows above eyes above nose tip above mouth above chin,
    # and the person's right side (0-7, 36-41, 48) on the image-left.
    assert shape[17:27, 1].max() < shape[36:48, 1].min() < shape[30, 1] < shape[48:68, 1].min()
    assert shape[48:68, 1].max() < shape[8, 1]
    assert shape[36:42, 0].mean() < 0.5 < shape[42:48, 0].mean()
    assert shape[0, 0] < shape[16, 0] and shape[48, 0] < shape[54, 0]


def test_mean_shape_provider_agrees_with_alignment(detector, astronaut_bgr):
    found = detector.detect(astronaut_bgr)
    provider = MeanShapeProvider()
    points = provider.landmarks68(astronaut_bgr, found.boxes_xyxy, found.landmarks5)
    assert points.shape == (1, 68, 2) and points.dtype == np.float32
    size = (112, 112)
    matrices = alignment_matrices(found.landmarks5, FERPLUS_TEMPLATE_5PT, size)
    in_crop = transform_points(points[0], matrices[0])
    # Same fraction -> pixel convention as the template: x_px = fraction * 112 - 0.5.
    np.testing.assert_allclose(in_crop, mean_shape_68() * 112 - 0.5, atol=0.05)
    # The 68 points sit on the detected face: eye centres near the detected eyes.
    eye_distance = np.linalg.norm(found.landmarks5[0, 1] - found.landmarks5[0, 0])
    np.testing.assert_allclose(five_points_from_68(points[0])[:2], found.landmarks5[0, :2],
                               atol=0.2 * eye_distance)
    assert provider.landmarks68(astronaut_bgr, np.zeros((0, 4)),
                                np.zeros((0, 5, 2))).shape == (0, 68, 2)


@pytest.mark.parametrize("provider, module", [(MediapipeProvider, "mediapipe"),
                                              (DlibProvider, "dlib")])
def test_optional_providers_name_their_extra_when_missing(provider, module):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here; this test checks the error when it is not")
    with pytest.raises(BackendUnavailableError, match=rf"aue_edge\[{module}\]"):
        provider()


@pytest.mark.parametrize("provider, module", [(MediapipeProvider, "mediapipe"),
                                              (DlibProvider, "dlib")])
def test_optional_providers_find_the_astronauts_landmarks(provider, module, detector,
                                                          astronaut_bgr):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: {provider.__name__} was NOT executed "
                    f"(pip install 'aue_edge[{module}]' to run it)")
    found = detector.detect(astronaut_bgr)
    with provider() as landmarks:
        points = landmarks.landmarks68(astronaut_bgr, found.boxes_xyxy, found.landmarks5)
    assert points.shape == (1, 68, 2)
    # A real landmark detector agrees with YuNet's 5 points to a fraction of the eye distance.
    eye_distance = np.linalg.norm(found.landmarks5[0, 1] - found.landmarks5[0, 0])
    np.testing.assert_allclose(five_points_from_68(points[0]), found.landmarks5[0],
                               atol=0.25 * eye_distance)
    assert points[0, 17:27, 1].max() < points[0, 30, 1] < points[0, 8, 1]
