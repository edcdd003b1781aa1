"""``aue-image-source --source BAG`` as a real process: a bag written here with rosbags is
replayed on a topic and a real rclpy subscriber (this process) checks what arrives: every
frame, its original header stamp and frame_id, its pixels, and the recorded timing (or the set
rate). Isolated like tests/test_ros_nodes.py (random ROS_DOMAIN_ID, localhost only)."""
from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest.importorskip("rosbags", reason="rosbags is not installed: bag replay NOT tested")
rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 from PyPI) is not installed: bag "
                                            "replay NOT tested")

from sensor_msgs.msg import Image  # noqa: E402
from helpers.bags import (STRING, T0_NS, expected_stamp, jpeg_image, raw_image,  # noqa: E402
                          write_bag)
from helpers.ros import start_node  # noqa: E402

from aue_edge.edge.image_messages import image_to_bgr  # noqa: E402

# Receive times of the recording: uneven gaps, as a camera under load gives them.
GAPS_S = (0.0, 0.05, 0.6, 0.65, 1.3, 1.35)
TIMES_NS = [T0_NS + round(gap * 1e9) for gap in GAPS_S]


@pytest.fixture(scope="module")
def bag(tmp_path_factory, astronaut_bgr):
    small = cv2.resize(astronaut_bgr, (256, 256), interpolation=cv2.INTER_AREA)
    return write_bag(tmp_path_factory.mktemp("replay") / "bag", "mcap", {
        "/cam/image": [raw_image(i, small, "rgb8") for i in range(len(GAPS_S))],
        "/cam/image/compressed": [jpeg_image(i, small) for i in range(len(GAPS_S))],
        "/chatter": [STRING(data="hi")]}, times_ns=TIMES_NS), small


def replay(context, ros_env, tmp_path, bag_path, name: str, *args: str):
    """Run the image source on ``bag_path`` until it exits; (messages, arrival times, log)."""
    received: list[tuple[Image, float]] = []
    node = rclpy.create_node(f"{name}_sub", context=context)
    node.create_subscription(Image, f"/{name}/image",
                             lambda m: received.append((m, time.monotonic())), 10)
    process = start_node("image_source",
                         ["--source", str(bag_path), "--topic", f"/{name}/image", "--qos",
                          "reliable", "--wait-for-subscribers", "1", *args],
                         ros_env, tmp_path / f"{name}.log")
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    while process.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
    for _ in range(20):
        executor.spin_once(timeout_sec=0.02)
    node.destroy_node()
    if process.poll() is None:
        process.kill()
    return ([m for m, _ in received], [t for _, t in received],
            (tmp_path / f"{name}.log").read_text())


def test_a_bag_replays_with_its_stamps_at_the_recorded_timing_or_a_set_rate(
        context, ros_env, bag, tmp_path):
    bag_path, small = bag
    n = len(GAPS_S)
    msgs, arrivals, log = replay(context, ros_env, tmp_path, bag_path, "bag_recorded",
                                 "--bag-topic", "/cam/image")
    assert "replaying /cam/image (sensor_msgs/msg/Image, 6 msgs)" in log, log
    assert f"published {n} frames" in log
    assert len(msgs) == n, log                       # reliable QoS: every frame
    assert [{"sec": m.header.stamp.sec, "nanosec": m.header.stamp.nanosec} for m in msgs] == \
        [expected_stamp(i) for i in range(n)]
    assert {m.header.frame_id for m in msgs} == {"head_camera_optical_frame"}
    np.testing.assert_array_equal(image_to_bgr(msgs[0]), small)   # rgb8 in the bag, bgr8 out
    # Recorded timing: no frame arrives well before its recorded offset from the first one
    # (0.1 s allowed for a first frame delivered late; 30 Hz would bring frame 2 at 0.07 s).
    offsets = [t - arrivals[0] for t in arrivals]
    for offset, gap in zip(offsets, GAPS_S):
        assert offset >= gap - 0.1, (offsets, GAPS_S)
    recorded_span = offsets[-1]

    msgs, arrivals, log = replay(context, ros_env, tmp_path, bag_path, "bag_rate",
                                 "--bag-topic", "/cam/image/compressed", "--replay", "rate",
                                 "--rate-hz", "50")
    assert "at 50 Hz" in log and len(msgs) == n, log
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs] == \
        [expected_stamp(i)["sec"] * 10**9 + expected_stamp(i)["nanosec"] for i in range(n)]
    # 50 Hz: the same frames in a fraction of the recorded 1.35 s (a ratio within one run).
    assert arrivals[-1] - arrivals[0] < recorded_span / 2, (arrivals, recorded_span)


def test_a_bag_with_two_image_topics_needs_bag_topic(ros_env, bag):
    bag_path, _ = bag
    result = subprocess.run(
        [sys.executable, "-m", "aue_edge.ros_nodes.image_source", "--source", str(bag_path)],
        env=ros_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "has 2 image topics; choose one with --bag-topic (bag_topic)" in result.stderr
    assert "/cam/image (sensor_msgs/msg/Image, 6 msgs)" in result.stderr
