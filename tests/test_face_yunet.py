"""YuNetDetector (ONNX Runtime + own decoding) against cv2.FaceDetectorYN on real faces."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import ConfigError, InputImageError, ModelFileError
from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH, YuNetDetector, nms_xyxy

FERPLUS_TEST_IMAGES = 8
UPSCALE_PX = 192


@pytest.fixture(scope="module")
def detector():
    with YuNetDetector(detect_max_side_px=None) as det:
        yield det


def opencv_reference(image_bgr: np.ndarray, score=0.6, nms=0.3):
    """(boxes_xyxy, landmarks5, scores) from cv2.FaceDetectorYN on the same vendored file."""
    ref = cv2.FaceDetectorYN.create(str(DEFAULT_MODEL_PATH), "", (image_bgr.shape[1],
                                    image_bgr.shape[0]), score, nms, 5000)
    _, faces = ref.detect(image_bgr)
    if faces is None:
        return np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0)
    faces = faces[np.argsort(-faces[:, 14])]
    boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, image_bgr.shape[1])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, image_bgr.shape[0])
    return boxes, faces[:, 4:14].reshape(-1, 5, 2), faces[:, 14]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_matches_opencv(found, image_bgr, landmark_tol_px=2.0):
    boxes, landmarks, scores = opencv_reference(image_bgr)
    assert len(found) == len(boxes)
    for i in range(len(boxes)):
        assert iou(found.boxes_xyxy[i], boxes[i]) > 0.9
        assert np.abs(found.landmarks5[i] - landmarks[i]).max() < landmark_tol_px
        assert abs(found.scores[i] - scores[i]) < 1e-3


def ferplus_upscaled(ferplus_root, count):
    split = ferplus_root / "FER2013Test"
    with (split / "label.csv").open(newline="") as handle:
        names = [row[0] for _, row in zip(range(count), csv.reader(handle))]
    for name in names:
        gray = cv2.imread(str(split / name), cv2.IMREAD_GRAYSCALE)
        assert gray is not None, name
        yield name, cv2.cvtColor(cv2.resize(gray, (UPSCALE_PX, UPSCALE_PX)), cv2.COLOR_GRAY2BGR)


def test_astronaut_matches_opencv_and_landmark_order(detector, astronaut_bgr):
    found = detector.detect(astronaut_bgr)
    assert len(found) == 1 and found.scores[0] > 0.9
    assert found.boxes_xyxy.dtype == np.float32 and found.landmarks5.shape == (1, 5, 2)
    assert_matches_opencv(found, astronaut_bgr)
    right_eye, left_eye, nose, right_mouth, left_mouth = found.landmarks5[0]
    # YuNet's "right" is the person's right: image-left on a frontal face.
    assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


def test_upscaled_ferplus_faces_match_opencv(detector, ferplus_root):
    detected = 0
    for _name, image in ferplus_upscaled(ferplus_root, FERPLUS_TEST_IMAGES):
        found = detector.detect(image)
        assert_matches_opencv(found, image)
        detected += len(found) > 0
    assert detected >= FERPLUS_TEST_IMAGES - 1


def test_no_face_in_coins_or_flat_frames(detector):
    coins = skdata.coins()  # mono uint8 photo of coins: no face
    assert len(detector.detect(coins)) == 0
    empty = detector.detect(np.full((240, 320, 3), 128, np.uint8))
    assert len(empty) == 0
    assert empty.boxes_xyxy.shape == (0, 4) and empty.landmarks5.shape == (0, 5, 2)


def test_several_faces_in_one_frame_sorted_by_score(detector, astronaut_bgr):
    face = astronaut_bgr[20:230, 130:320]  # the astronaut's head with some margin
    tiles = [face, cv2.resize(face, None, fx=0.7, fy=0.7), cv2.flip(face, 1),
             cv2.resize(face, None, fx=1.2, fy=1.2)]
    frame = np.full((600, 900, 3), 90, np.uint8)
    origins = [(10, 10), (450, 40), (40, 300), (500, 320)]  # (x, y)
    for tile, (x, y) in zip(tiles, origins):
        frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    found = detector.detect(frame)
    assert len(found) == 4
    assert np.all(np.diff(found.scores) <= 0)
    centres = (found.boxes_xyxy[:, :2] + found.boxes_xyxy[:, 2:]) / 2
    for tile, (x, y) in zip(tiles, origins):
        inside = ((centres[:, 0] > x) & (centres[:, 0] < x + tile.shape[1])
                  & (centres[:, 1] > y) & (centres[:, 1] < y + tile.shape[0]))
        assert inside.sum() == 1
    assert_matches_opencv(found, frame)
    with YuNetDetector(max_faces=2, detect_max_side_px=None) as top2:
        best = top2.detect(frame)
    np.testing.assert_allclose(best.scores, found.scores[:2], rtol=1e-5)


def test_4k_frame_is_downscaled_and_mapped_back(astronaut_bgr):
    frame = np.full((2160, 3840, 3), 60, np.uint8)
    big = cv2.resize(astronaut_bgr, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
    x0, y0 = 1500, 300
    frame[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
    with YuNetDetector() as det:  # default detect_max_side_px=640
        found = det.detect(frame)
    with YuNetDetector(detect_max_side_px=None) as det:
        small = det.detect(astronaut_bgr)
    assert len(found) == 1
    expected_box = small.boxes_xyxy[0] * 3 + np.array([x0, y0, x0, y0])
    assert iou(found.boxes_xyxy[0], expected_box) > 0.85
    expected_points = (small.landmarks5[0] + 0.5) * 3 - 0.5 + np.array([x0, y0])
    # 6x downscaled for detection: a few full-resolution pixels of error are expected.
    eye_distance = np.linalg.norm(expected_points[1] - expected_points[0])
    assert np.abs(found.landmarks5[0] - expected_points).max() < 0.1 * eye_distance


def test_4_channel_and_16_bit_frames_give_the_same_faces(detector, astronaut_bgr):
    reference = detector.detect(astronaut_bgr)
    bgra = np.dstack([astronaut_bgr, np.full(astronaut_bgr.shape[:2], 255, np.uint8)])
    for variant in (bgra, astronaut_bgr.astype(np.uint16) * 257):
        found = detector.detect(variant)
        np.testing.assert_allclose(found.boxes_xyxy, reference.boxes_xyxy, atol=1e-3)
        np.testing.assert_allclose(found.landmarks5, reference.landmarks5, atol=1e-3)


def test_bad_frames_are_rejected(detector):
    with pytest.raises(InputImageError, match="empty"):
        detector.detect(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(InputImageError, match="NaN"):
        detector.detect(np.full((64, 64, 3), np.nan, np.float32))


def test_bad_settings_wrong_graph_and_closed_detector(tmp_path, astronaut_bgr):
    with pytest.raises(ConfigError, match="score_threshold"):
        YuNetDetector(score_threshold=0.0)
    with pytest.raises(ConfigError, match="detect_max_side_px"):
        YuNetDetector(detect_max_side_px=16)
    with pytest.raises(ConfigError, match="region_side_px must be >= 32"):
        YuNetDetector(region_side_px=16)
    with pytest.raises(ModelFileError, match="does not exist"):
        YuNetDetector(model_path=tmp_path / "missing.onnx")
    # A graph that is not YuNet: its outputs are named in the error.
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                             [1, 3, None, None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                                             [1, 3, None, None])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    with pytest.raises(ModelFileError, match="lacks YuNet outputs"):
        YuNetDetector(backend=OrtBackend(path))
    det = YuNetDetector()
    det.close()
    det.close()
    with pytest.raises(ModelFileError, match="closed"):
        det.detect(astronaut_bgr)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]],
                     np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.8], np.float32)
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.3), [1, 2])
    np.testing.assert_array_equal(nms_xyxy(boxes, scores, 0.99), [1, 0, 2])


def test_input_shape_is_downscaled_and_padded_to_32():
    with YuNetDetector() as det:
        assert det.input_shape(480, 640) == (1, 3, 480, 640)
        assert det.input_shape(2160, 3840) == (1, 3, 384, 640)  # 360 -> padded to 384
        assert det.input_shape(100, 50) == (1, 3, 128, 64)


# ---------------------------------------------------------------------------------- regions
def assert_same_faces(found, reference, min_iou=0.75, max_shift=0.2):
    """Each reference face has one found face with a box IoU over ``min_iou`` and landmarks
    within ``max_shift`` eye distances. YuNet's output moves this much with the scale it sees
    a face at, and a region sees a face at another scale than the whole frame: the benchmark
    scenes detected whole at 384-576 px instead of 640 give box IoUs down to 0.85 and
    landmarks up to 0.14 eye distances away."""
    assert len(found) == len(reference)
    for box, points in zip(reference.boxes_xyxy, reference.landmarks5):
        overlaps = [iou(box, other) for other in found.boxes_xyxy]
        k = int(np.argmax(overlaps))
        assert overlaps[k] > min_iou, overlaps
        eye_distance = np.linalg.norm(points[1] - points[0])
        assert np.abs(found.landmarks5[k] - points).max() < max_shift * eye_distance


def test_regions_find_the_faces_of_the_whole_frame_and_map_them_back(astronaut_bgr):
    """The 1- and 5-face benchmark scenes: regions around boxes moved by 8 px (a face moving
    between frames) give the faces the whole-frame detection gives, in frame pixels; a
    detector whose detect_max_side_px fits 2 regions per run gives the same faces."""
    from aue_edge.benchmarks.scenes import benchmark_frames

    with YuNetDetector() as det, YuNetDetector(detect_max_side_px=256) as narrow, \
            YuNetDetector(region_side_px=96) as small:
        assert narrow.region_side_px == 128 and small.region_side_px == 96
        scenes = benchmark_frames(astronaut_bgr, det)
        for count, frame in scenes.items():
            whole = det.detect(frame)
            moved = whole.boxes_xyxy + np.array([8, -8, 8, -8], np.float32)
            for detector in (det, narrow, small):
                found, hit = detector.detect_regions(frame, moved)
                assert_same_faces(found, whole)
                assert hit.tolist() == [True] * count
        # a face at the frame's left edge: its region reaches past the frame (black there)
        edge = np.ascontiguousarray(astronaut_bgr[:, 150:])
        whole = det.detect(edge)
        assert len(whole) == 1 and whole.boxes_xyxy[0, 0] < 40
        assert_same_faces(det.detect_regions(edge, whole.boxes_xyxy)[0], whole)


def test_regions_without_their_face_give_nothing(astronaut_bgr):
    """A region whose face left, and a region holding only another face (no overlap with its
    box), give no face and say so per box; a face seen by two overlapping regions is returned
    once, for the box whose region scored it higher."""
    with YuNetDetector() as det:
        face = det.detect(astronaut_bgr).boxes_xyxy[0]
        blank = np.full_like(astronaut_bgr, 127)
        width = face[2] - face[0]
        beside = face + np.array([1.1 * width, 0, 1.1 * width, 0], np.float32)
        found, hit = det.detect_regions(blank, face[None])
        assert len(found) == 0 and hit.tolist() == [False]
        found, hit = det.detect_regions(astronaut_bgr, np.stack([beside, face]))
        assert len(found) == 1 and hit.tolist() == [False, True]
        found, hit = det.detect_regions(astronaut_bgr, np.stack([face, face + 4]))
        assert len(found) == 1 and hit.sum() == 1
        found, hit = det.detect_regions(astronaut_bgr, np.zeros((0, 4), np.float32))
        assert len(found) == 0 and hit.shape == (0,)
