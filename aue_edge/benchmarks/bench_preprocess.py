"""Benchmark group "preprocess": what happens to a frame before the model sees it.

decode (a JPEG camera frame, a ROS ``sensor_msgs/Image``), face detection (YuNet on 640x480
frames with 1 and 5 faces), alignment (5-point similarity warp to the model card's template)
and ``to_model_input`` (resize, colour, normalise to the NCHW tensor).
"""
from __future__ import annotations

import cv2
import pytest

GROUP = "preprocess"
JPEG_QUALITY = 90  # what a USB camera's MJPEG stream or a compressed ROS topic typically carries


def bench_decode_jpeg(measure, frames):
    ok, encoded = cv2.imencode(".jpg", frames[1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok, "OpenCV could not encode the benchmark frame as JPEG"
    decoded = measure(lambda: cv2.imdecode(encoded, cv2.IMREAD_COLOR), group=GROUP,
                      item_unit="frames", size_px=list(frames[1].shape[:2]),
                      jpeg_bytes=int(encoded.size))
    assert decoded.shape == frames[1].shape


def bench_decode_ros_image(measure, frames):
    try:
        from builtin_interfaces.msg import Time

        from aue_edge.edge.image_messages import image_to_bgr
        from aue_edge.ros_nodes.conversions import bgr_to_image
    except ImportError as exc:
        pytest.skip(f"ROS 2 message packages are not importable ({exc}): sensor_msgs/Image -> "
                    f"numpy conversion NOT benchmarked")
    msg = bgr_to_image(frames[1], Time(sec=1, nanosec=0), "camera")
    decoded = measure(lambda: image_to_bgr(msg), group=GROUP, item_unit="frames",
                      size_px=list(frames[1].shape[:2]), encoding="bgr8")
    assert decoded.shape == frames[1].shape


def bench_detect(measure, detector, frames, faces):
    found = measure(lambda: detector.detect(frames[faces]), group=GROUP, item_unit="frames",
                    faces=faces, size_px=list(frames[faces].shape[:2]),
                    detect_max_side_px=detector.detect_max_side_px)
    assert len(found) == faces


def bench_align(measure, default_card, alignment_template, frames, detections, faces):
    from aue_edge.edge.face.alignment import align_faces

    size_px = default_card.input.size_px
    aligned = measure(lambda: align_faces(frames[faces], detections[faces].landmarks5,
                                          alignment_template, size_px),
                      group=GROUP, items_per_call=faces, item_unit="faces", faces=faces,
                      crop_size_px=list(size_px))
    assert aligned.shape[0] == faces


def bench_to_model_input(measure, default_card, aligned_crops, faces):
    from aue_edge.edge.preprocess import to_model_input

    crops = aligned_crops[:faces]
    tensor = measure(lambda: to_model_input(crops, default_card.input), group=GROUP,
                     items_per_call=faces, item_unit="faces", faces=faces,
                     color=default_card.input.color)
    assert tensor.shape[0] == faces
