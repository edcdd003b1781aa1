"""A test and benchmark client of the perception node: publish frames, collect its replies.

Stands where a camera and a robot would (camera -> perception node -> robot): publishes
``sensor_msgs/Image`` frames (or any raw message, e.g. a deliberately broken one) and records
everything the node sends on /emotion, /action_units, /faces and /diagnostics, keyed by the
header stamp the node copies from the input. :meth:`PerceptionProbe.round_trip` times one frame
from publish to the matching reply: the camera-to-/emotion latency the benchmarks report.
Used by the ROS tests and by the benchmark suite; not needed on a robot.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from aue_msgs.msg import ActionUnits, Emotion, FaceArray
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from aue_edge.ros_nodes.conversions import bgr_to_image

REPLY_TOPICS = {"emotion": Emotion, "action_units": ActionUnits, "faces": FaceArray}


def stamp_key(stamp: Time) -> tuple[int, int]:
    return (int(stamp.sec), int(stamp.nanosec))


class PerceptionProbe(Node):
    """Publishes frames to the perception node and records its replies by input stamp."""

    def __init__(self, context: Context | None = None, image_topic: str = "/camera/image_raw",
                 reliable_input: bool = True, reply_topics: dict[str, str] | None = None,
                 diagnostics_topic: str = "/diagnostics", name: str = "aue_probe") -> None:
        super().__init__(name, context=context)
        # Reliable publishing matches both best-effort and reliable subscribers.
        qos = QoSProfile(depth=10, reliability=(ReliabilityPolicy.RELIABLE if reliable_input
                                                else ReliabilityPolicy.BEST_EFFORT))
        self.image_pub = self.create_publisher(Image, image_topic, qos)
        topics = {"emotion": "/emotion", "action_units": "/action_units", "faces": "/faces"}
        topics.update(reply_topics or {})
        self.replies: dict[str, dict[tuple[int, int], tuple[object, float]]] = {
            kind: {} for kind in REPLY_TOPICS}
        self.reply_subs = [
            self.create_subscription(REPLY_TOPICS[kind], topic,
                                     lambda msg, kind=kind: self._on_reply(kind, msg), 100)
            for kind, topic in topics.items()]
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(DiagnosticArray, diagnostics_topic, self.diagnostics.append, 100)
        self._spin_executor = SingleThreadedExecutor(context=context)
        self._spin_executor.add_node(self)
        self._last_stamp_ns = 0

    def _on_reply(self, kind: str, msg) -> None:
        self.replies[kind][stamp_key(msg.header.stamp)] = (msg, time.perf_counter())

    # ------------------------------------------------------------------ spinning
    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Process callbacks until ``done()`` or the timeout; returns ``done()``."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self._spin_executor.spin_once(timeout_sec=0.02)
        return done()

    def spin_for(self, duration_s: float) -> None:
        self.spin_until(lambda: False, duration_s)

    def wait_for_node(self, timeout_s: float = 30.0) -> bool:
        """True once the node subscribes to the images and publishes /faces."""
        return self.spin_until(lambda: self.image_pub.get_subscription_count() > 0
                               and self.count_publishers(self.reply_subs[2].topic_name) > 0,
                               timeout_s)

    def warm_up(self, frame_bgr: np.ndarray, timeout_s: float = 30.0,
                period_s: float = 0.5) -> bool:
        """Publish ``frame_bgr`` every ``period_s`` until one comes back on /faces.

        Seeing the node's subscription is not enough: the node may not have matched this
        publisher yet, and a frame sent in between is lost. A full round trip proves both
        directions are connected (and warms up the pipeline).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamp = self.publish_frame(frame_bgr)
            if self.spin_until(lambda: stamp_key(stamp) in self.replies["faces"], period_s):
                return True
        return False

    # ------------------------------------------------------------------ publishing
    def next_stamp(self) -> Time:
        """The clock's now, made strictly increasing so every frame has its own stamp."""
        now_ns = max(self.get_clock().now().nanoseconds, self._last_stamp_ns + 1000)
        self._last_stamp_ns = now_ns
        return Time(sec=now_ns // 1_000_000_000, nanosec=now_ns % 1_000_000_000)

    def publish_frame(self, frame_bgr: np.ndarray, frame_id: str = "camera",
                      encoding: str = "bgr8") -> Time:
        msg = bgr_to_image(frame_bgr, self.next_stamp(), frame_id, encoding)
        self.image_pub.publish(msg)
        return msg.header.stamp

    def publish_image(self, msg: Image) -> Time:
        """Publish a prepared (possibly malformed) Image with a fresh stamp."""
        msg.header.stamp = self.next_stamp()
        self.image_pub.publish(msg)
        return msg.header.stamp

    def reply(self, kind: str, stamp: Time):
        """The message of ``kind`` ("emotion", "action_units", "faces") for a stamp, or None."""
        entry = self.replies[kind].get(stamp_key(stamp))
        return entry[0] if entry else None

    def wait_reply(self, kind: str, stamp: Time, timeout_s: float = 10.0):
        self.spin_until(lambda: stamp_key(stamp) in self.replies[kind], timeout_s)
        return self.reply(kind, stamp)

    def round_trip(self, frame_bgr: np.ndarray, kind: str = "emotion",
                   timeout_s: float = 5.0) -> float | None:
        """Milliseconds from publishing a frame to receiving its ``kind`` reply (None: none)."""
        t_sent = time.perf_counter()
        stamp = self.publish_frame(frame_bgr)
        if not self.spin_until(lambda: stamp_key(stamp) in self.replies[kind], timeout_s):
            return None
        return (self.replies[kind][stamp_key(stamp)][1] - t_sent) * 1e3

    def latest_diagnostics(self) -> dict[str, str] | None:
        """Key/values and level/message of the newest /diagnostics status."""
        if not self.diagnostics:
            return None
        status = self.diagnostics[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        values["_level"] = int.from_bytes(status.level, "little") \
            if isinstance(status.level, bytes) else int(status.level)
        values["_message"] = status.message
        return values

    def destroy_node(self) -> None:
        self._spin_executor.remove_node(self)
        super().destroy_node()

