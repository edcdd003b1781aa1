"""ROS message layer without a ROS graph: Image <-> numpy, FrameResult -> aue_msgs, diagnostics.

Runs in-process (no nodes, no DDS) on a real face photo; needs rclpy and the built aue_msgs.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

cv2 = pytest.importorskip("cv2")
pytest.importorskip("rclpy", reason="rclpy (ROS 2 from PyPI) is not installed: ROS tests "
                                    "were NOT run")
pytest.importorskip("aue_msgs", reason="aue_msgs is not built: run "
                                       "'pip install --no-build-isolation ./aue_msgs'")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from aue_edge.core.errors import ConfigError, InputImageError  # noqa: E402
from aue_edge.edge.image_messages import compressed_to_bgr, image_to_bgr  # noqa: E402
from aue_edge.edge.results import FaceResult, FrameResult  # noqa: E402
from aue_edge.ros_nodes.conversions import bgr_to_image  # noqa: E402
from aue_edge.ros_nodes.diagnostics import PerceptionStats, diagnostics_msg  # noqa: E402
from aue_edge.ros_nodes.emotion_listener import EmotionChangeTracker  # noqa: E402
from aue_edge.ros_nodes.messages import (action_units_msg, emotion_msg,  # noqa: E402
                                         face_array_msg, select_primary_face)
from aue_edge.ros_nodes.params import ParamSpec  # noqa: E402

LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
AUS = ("AU1", "AU2", "AU4", "AU6", "AU12")
STAMP = Time(sec=1700000000, nanosec=123456789)


def _face(track_id: int, box, score=0.9, emotion_index=1) -> FaceResult:
    probs = np.full(len(LABELS), 0.02, np.float32)
    probs[emotion_index] = 1.0 - 0.02 * (len(LABELS) - 1)
    au = np.array([0.1, 0.7, 0.5, 0.2, 0.9], np.float32)
    x0, y0, x1, y1 = box
    landmarks = np.array([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)]] * 5, np.float32)
    return FaceResult(track_id=track_id, box_xyxy=np.array(box, np.float32), score=score,
                      landmarks5=landmarks, emotion_label=LABELS[emotion_index],
                      emotion_confidence=float(probs[emotion_index]), emotion_probs=probs,
                      au_probs=au, au_active=au >= 0.5)


# ---------------------------------------------------------------------- conversions
@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_image_round_trip_keeps_pixels(astronaut_bgr, encoding):
    msg = bgr_to_image(astronaut_bgr, STAMP, "head_camera", encoding)
    assert (msg.header.frame_id, msg.encoding) == ("head_camera", encoding)
    back = image_to_bgr(msg)
    assert back.shape == astronaut_bgr.shape and back.dtype == np.uint8
    if encoding == "mono8":
        gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(back[:, :, 0], gray)
    else:
        np.testing.assert_array_equal(back, astronaut_bgr)


def test_padded_rows_and_alpha_encodings(astronaut_bgr):
    h, w = 64, 50
    crop = np.ascontiguousarray(astronaut_bgr[:h, :w])
    bgra = cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA)
    padded = np.zeros((h, w * 4 + 8), np.uint8)       # 8 padding bytes per row
    padded[:, :w * 4] = bgra.reshape(h, -1)
    msg = Image(height=h, width=w, encoding="bgra8", step=w * 4 + 8, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_bgr(msg), crop)


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_either_byte_order_is_scaled_to_8_bit(bigendian):
    h, w = 6, 5
    values = np.linspace(0, 65535, h * w).astype(np.uint16).reshape(h, w)
    rows = np.zeros((h, w + 3), values.dtype.newbyteorder(">" if bigendian else "<"))
    rows[:, :w] = values                                    # 6 padding bytes per row
    msg = Image(height=h, width=w, encoding="mono16", is_bigendian=bigendian,
                step=(w + 3) * 2, data=rows.tobytes())
    back = image_to_bgr(msg)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert back.shape == (h, w, 3) and back[0, 0, 0] == 0 and back[-1, -1, 0] == 255
    np.testing.assert_array_equal(back, np.repeat(expected[:, :, None], 3, axis=2))


@pytest.mark.parametrize("field, value, message", [
    ("encoding", "yuv422", "unsupported image encoding 'yuv422'"),
    ("encoding", "16UC1", "unsupported image encoding '16UC1'"),
    ("step", 10, "step 10 is smaller than width*channels"),
    ("height", 511, "expected step*height"),
    ("width", 0, "empty image"),
])
def test_bad_images_raise_clear_errors(astronaut_bgr, field, value, message):
    msg = bgr_to_image(astronaut_bgr, STAMP, "camera")
    setattr(msg, field, value)
    with pytest.raises(InputImageError, match=message.replace("*", r"\*")):
        image_to_bgr(msg)


def test_truncated_data_is_rejected(astronaut_bgr):
    msg = bgr_to_image(astronaut_bgr, STAMP, "camera")
    msg.data = bytes(msg.data[:-100])
    with pytest.raises(InputImageError, match="truncated"):
        image_to_bgr(msg)


def test_compressed_images(astronaut_bgr):
    ok, jpeg = cv2.imencode(".png", astronaut_bgr)
    assert ok
    decoded = compressed_to_bgr(CompressedImage(format="png", data=jpeg.tobytes()))
    np.testing.assert_array_equal(decoded, astronaut_bgr)
    with pytest.raises(InputImageError, match="could not be decoded"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"not a jpeg"))


# ---------------------------------------------------------------------- messages
def test_primary_face_rules():
    big_corner = _face(1, (0, 0, 200, 200), score=0.7)
    small_centre = _face(2, (300, 220, 340, 260), score=0.8)
    confident = _face(3, (500, 10, 560, 70), score=0.99)
    faces = [big_corner, small_centre, confident]
    assert select_primary_face(faces, "largest", 640, 480).track_id == 1
    assert select_primary_face(faces, "center", 640, 480).track_id == 2
    assert select_primary_face(faces, "score", 640, 480).track_id == 3
    # sticky: the previous primary stays while tracked, and only then
    assert select_primary_face(faces, "largest", 640, 480, previous_id=3).track_id == 3
    assert select_primary_face(faces, "largest", 640, 480, previous_id=3,
                               sticky=False).track_id == 1
    assert select_primary_face(faces, "largest", 640, 480, previous_id=9).track_id == 1
    assert select_primary_face([], "largest", 640, 480) is None
    with pytest.raises(ConfigError, match="nearest"):
        select_primary_face(faces, "nearest", 640, 480)


def test_messages_copy_header_and_follow_card_order():
    header = Header(stamp=STAMP, frame_id="head_camera_optical_frame")
    face = _face(7, (-5.5, 10.2, 120.0, 700.0))       # reaches past the left and bottom edges
    result = FrameResult(frame_index=0, timestamp_s=1.0, width=640, height=480, faces=[face])
    emotion = emotion_msg(face, header, LABELS)
    assert emotion.header.stamp == STAMP and emotion.header.frame_id == header.frame_id
    assert emotion.header is not header
    assert list(emotion.label_names) == list(LABELS) and emotion.label == "happiness"
    assert abs(sum(emotion.probabilities) - 1.0) < 1e-5
    assert emotion.confidence == pytest.approx(max(emotion.probabilities))
    thresholds = [0.3 + 0.02 * i for i in range(len(AUS))]
    aus = action_units_msg(face, header, AUS, thresholds)
    assert list(aus.names) == list(AUS)
    assert list(aus.thresholds) == pytest.approx(thresholds)
    assert list(aus.active) == list(face.au_active)
    array = face_array_msg(result, header, LABELS, AUS, thresholds, face)
    assert array.primary_face_id == 7 and (array.image_width, array.image_height) == (640, 480)
    roi = array.faces[0].roi
    assert (roi.x_offset, roi.y_offset) == (0, 10)
    assert roi.x_offset + roi.width <= 640 and roi.y_offset + roi.height == 480
    assert len(array.faces[0].landmarks) == 5
    assert array.faces[0].has_emotion and array.faces[0].emotion.face_id == 7
    empty = face_array_msg(FrameResult(0, 1.0, 640, 480), header, LABELS, AUS, 0.5, None)
    assert empty.faces == [] and empty.primary_face_id == -1


# ---------------------------------------------------------------------- diagnostics, params
def test_stats_count_sequence_gaps_as_dropped_frames():
    stats = PerceptionStats(window_frames=10)
    for seq in (1, 2, 5, 6, 10):              # 2 + 3 frames never arrived
        stats.on_received(b"camera", seq)
    stats.on_received(b"other", 100)           # another publisher has its own numbering
    stats.on_received(b"camera", 1)            # the camera restarted: not a gap
    assert stats.dropped == 5 and stats.received == 7
    for i in range(20):
        stats.on_processed(now_s=i * 0.1, num_faces=1, timings_ms={"total": float(i)})
    assert stats.fps(now_s=1.9) == pytest.approx(10.0, rel=0.05)
    mean_ms, p50_ms, max_ms = stats.latency_summary()["total"]
    assert max_ms == 19.0 and mean_ms == pytest.approx(14.5)  # only the last 10 frames kept


def test_diagnostics_warn_on_rejected_frames():
    stats = PerceptionStats()
    stats.on_received(None, None)
    stats.on_rejected("unsupported image encoding 'yuv422'")
    msg = diagnostics_msg(stats, stats.end_period(), STAMP, 0.0,
                          "aue_perception: face perception", "host", "active",
                          {"backend": "ort"}, "/camera/image_raw")
    status = msg.status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN and "yuv422" in status.message
    assert values["frames_rejected"] == "1" and values["backend"] == "ort"
    # the next period had no frames at all: still a warning, with another reason
    status = diagnostics_msg(stats, stats.end_period(), STAMP, 1.0, "n", "h", "active", {},
                             "/cam").status[0]
    assert status.level == DiagnosticStatus.WARN and "no images" in status.message
    # frames dropped (the reason is the node's drop_reason value): named, but not a warning
    stats.on_received(b"cam", 1)
    stats.on_received(b"cam", 4)
    status = diagnostics_msg(stats, stats.end_period(), STAMP, 2.0, "n", "h", "active", {},
                             "/cam").status[0]
    assert status.level == DiagnosticStatus.OK
    assert status.message == "processing (dropped 2 frames)"


def test_param_spec_validation():
    spec = ParamSpec("primary_face", "largest", "rule", choices=("largest", "center"))
    assert spec.problem("center") is None
    assert "expected one of largest, center" in spec.problem("tallest")
    rate = ParamSpec("rate_hz", 30.0, "rate", min_value=0.1)
    assert rate.problem(5) is None                 # an int where a double is expected is fine
    assert ">= 0.1" in rate.problem(0.0)
    assert "must be a float" in rate.problem("fast")
    unset = ParamSpec("max_faces", int, "limit", min_value=1)
    assert unset.problem(None) is None and ">= 1" in unset.problem(0)


def test_listener_reports_changes_only_above_confidence():
    tracker = EmotionChangeTracker(min_confidence=0.5, lost_after_s=1.0)
    events = [tracker.update(1, label, conf, 0.0, now_s=t) for t, (label, conf) in enumerate(
        [("neutral", 0.9), ("neutral", 0.8), ("happiness", 0.4), ("happiness", 0.7)])]
    kinds = [(e.kind, e.label, e.previous_label) if e else None for e in events]
    assert kinds == [("new_face", "neutral", ""), None, None, ("changed", "happiness", "neutral")]
    assert tracker.check_lost(now_s=3.5) is None
    assert tracker.check_lost(now_s=4.5).kind == "lost"
    assert tracker.update(2, "anger", 0.9, 0.0, now_s=5.0).kind == "new_face"


def test_truncated_and_oversized_compressed_images_are_rejected(astronaut_bgr):
    """A cut-off JPEG decodes in OpenCV as a grey-filled image with only a libjpeg warning: it
    must be rejected, like the raw images' truncated data; the raw images' 8192 px per side
    limit holds for compressed input too."""
    jpeg = cv2.imencode(".jpg", astronaut_bgr)[1].tobytes()
    with pytest.raises(InputImageError, match="truncated JPEG"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=jpeg[:len(jpeg) * 2 // 3]))
    wide = cv2.imencode(".png", np.zeros((2, 9000), np.uint8))[1].tobytes()
    with pytest.raises(InputImageError, match="9000x2 px is larger than the 8192 px"):
        compressed_to_bgr(CompressedImage(format="png", data=wide))


def test_the_drop_reason_names_a_shared_memory_segment_too_small_for_the_frames(repo_root):
    from aue_edge.ros_nodes.diagnostics import drop_reason, shm_segment_bytes

    shipped = shm_segment_bytes({"FASTDDS_DEFAULT_PROFILES_FILE":
                                 str(repo_root / "config" / "fastdds_shm.xml")})
    uhd_bytes = 3840 * 2160 * 3
    assert shipped[0] >= 2 * uhd_bytes            # the shipped profile holds 4K frames
    assert "faster than the pipeline" in drop_reason(uhd_bytes, shipped)
    builtin = shm_segment_bytes({})
    assert builtin[0] == 512 * 1024
    reason = drop_reason(640 * 480 * 3, builtin)
    assert "frames of 0.9 MB do not fit the 0.5 MiB shared-memory segment" in reason
    assert shm_segment_bytes({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None


def test_the_shipped_params_file_matches_the_perception_node(repo_root,
                                                            check_documented_defaults):
    """config/perception.yaml names only declared parameters and shows each node default as
    it is (a default changed in the node must be changed in the documented file too)."""
    from aue_edge.ros_nodes.perception_node import NODE_NAME, NODE_PARAMS, PARAMS

    path = repo_root / "config" / "perception.yaml"
    check_documented_defaults(path, {spec.name: spec.default for spec in NODE_PARAMS},
                              section=(NODE_NAME, "ros__parameters"),
                              also_known=tuple(spec.name for spec in PARAMS))
    for spec in NODE_PARAMS:
        assert spec.problem(spec.default) is None, spec.name



def test_schedule_parameters_reach_the_pipeline_config():
    """detect_interval_frames / infer_interval_frames set on the node become the pipeline's;
    unset, the pipeline config's values stay; out of range, the parameter is refused."""
    from aue_edge.edge.pipeline import PipelineConfig
    from aue_edge.ros_nodes.perception_node import PARAMS, pipeline_config_from_params

    params = {spec.name: None if isinstance(spec.default, type) else spec.default
              for spec in PARAMS}
    config = pipeline_config_from_params({**params, "detect_interval_frames": 1,
                                          "infer_interval_frames": 4})
    assert (config.detect_interval_frames, config.infer_interval_frames) == (1, 4)
    default = pipeline_config_from_params(params)
    assert default.detect_interval_frames == PipelineConfig().detect_interval_frames
    specs = {spec.name: spec for spec in PARAMS}
    assert specs["detect_interval_frames"].problem(0) is not None
    assert specs["infer_interval_frames"].problem(3) is None
