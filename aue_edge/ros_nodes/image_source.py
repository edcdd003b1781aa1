"""``aue-image-source``: publish camera-like ``sensor_msgs/Image`` frames from a file or webcam.

The front of the ROS flow (image source -> perception -> listener): reads a video file, a folder
of images, one image, a webcam, or a recorded ROS 2 bag, and publishes the frames at a set rate
with proper headers (stamp = the time of capture on the node's clock, frame_id = the camera
frame). The demo, the tests and anyone without a camera driver use it in place of a camera.

A bag (``.mcap``, ``.db3`` or bag folder, read with rosbags: :mod:`aue_edge.edge.bags`) is
replayed from its Image or CompressedImage topic (``bag_topic``; default: its only image topic)
with each message's original header (stamp and frame_id), at the recorded timing (the gaps
between the bag's receive times; ``replay:=recorded``, the default) or at ``rate_hz``
(``replay:=rate``). Messages that cannot be decoded are skipped and counted.

    aue-image-source --source aue_edge/edge/samples/demo_clip.mp4 --rate-hz 15
    aue-image-source --source webcam:0 --rate-hz 30 --frame-id head_camera_optical_frame
    aue-image-source --source recording.mcap --bag-topic /camera/image_raw
    ros2 run aue_edge image_source --ros-args -p source:=/data/faces -p loop:=true

Every flag is also a ROS parameter (``--ros-args -p name:=value``); a flag wins over the same
parameter given after ``--ros-args``.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from aue_edge.edge.bags import BagFrame, Recording, is_bag
from aue_edge.core.errors import ConfigError, InputImageError
from aue_edge.edge.frames import read_image_file
from aue_edge.ros_nodes.conversions import bgr_to_image
from aue_edge.ros_nodes.params import ParamSpec, declare_parameters, read_parameters
from aue_edge.ros_nodes.entry import StopRequest
from aue_edge.ros_nodes.spin import non_ros_args, run_node

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# A webcam that returns this many failed reads in a row is gone (unplugged, taken by another
# process): stop instead of publishing nothing forever.
MAX_CONSECUTIVE_WEBCAM_FAILURES = 30
# After the last frame the node keeps spinning this long: rmw hands samples to the middleware
# asynchronously, and exiting at once can lose the last frames.
LINGER_AFTER_LAST_FRAME_S = 0.5
# A publisher sees a subscriber match before the subscriber has matched the publisher; frames
# sent in between are lost. Wait this long after the match before the first frame.
SETTLE_AFTER_MATCH_S = 0.5
# Timer period of a bag replayed at its recorded timing: each frame leaves within this of its
# due time.
RECORDED_TIMING_TICK_S = 0.002

PARAMS = (
    ParamSpec("source", "", "video file, image folder, image file, ROS 2 bag (.mcap, .db3, bag "
              "folder), or webcam[:N] (device N)"),
    ParamSpec("rate_hz", 30.0, "frames published per second (a bag: with replay:=rate)",
              min_value=0.1, max_value=1000.0),
    ParamSpec("bag_topic", "", "bag sources: the Image or CompressedImage topic to replay "
              "(empty: the bag's only image topic)"),
    ParamSpec("replay", "recorded", "bag sources: 'recorded' keeps the recorded timing, 'rate' "
              "publishes at rate_hz; frames keep their original header either way",
              choices=("recorded", "rate")),
    ParamSpec("topic", "/camera/image_raw", "sensor_msgs/Image topic to publish on",
              topic=True),
    ParamSpec("frame_id", "camera", "header.frame_id of every image (the camera's TF frame); a "
              "bag keeps its own"),
    ParamSpec("encoding", "bgr8", "pixel encoding on the wire", choices=("bgr8", "rgb8", "mono8")),
    ParamSpec("loop", False, "start again at the end of a video or folder"),
    ParamSpec("max_frames", 0, "stop after this many frames (0: no limit)", min_value=0),
    ParamSpec("resize_width", 0, "scale frames to this width in px, keeping the aspect "
              "(0: as read)", min_value=0, max_value=8192),
    ParamSpec("qos", "sensor_data", "publisher QoS: sensor_data (best effort, depth 1, what "
              "camera drivers use) or reliable (depth 10)", choices=("sensor_data", "reliable")),
    ParamSpec("wait_for_subscribers", 0, "publish nothing until the topic has this many "
              "subscribers (0: start at once)", min_value=0),
    ParamSpec("wait_timeout_s", 30.0, "give up waiting for subscribers after this long",
              min_value=0.0),
)


class FrameReader:
    """Frames (HxWx3 uint8 BGR) from a video, an image folder, one image, a webcam or a bag
    (:attr:`last` then holds the message the frame came from: header, receive time)."""

    def __init__(self, source: str, loop: bool = False, bag_topic: str = "") -> None:
        self.source, self.loop = source, loop
        self.skipped = 0            # unreadable folder images / failed webcam reads / bad msgs
        self._capture: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._next_file = 0
        self._webcam_failures = 0
        self._bag: Recording | None = None
        self.last: BagFrame | None = None
        if not source:
            raise ConfigError("no source given: set --source to a video file, an image folder, "
                              "an image file, a ROS 2 bag or webcam[:N]")
        if source == "webcam" or source.startswith("webcam:"):
            index_text = source.partition(":")[2] or "0"
            if not index_text.isdigit():
                raise ConfigError(f"source {source!r}: expected webcam or webcam:N with N a "
                                  f"device number")
            self.kind = "webcam"
            self._capture = cv2.VideoCapture(int(index_text))
            if not self._capture.isOpened():
                raise InputImageError(f"webcam {index_text} could not be opened; check that "
                                      f"/dev/video{index_text} exists and is not in use")
            return
        path = Path(source)
        if path.exists() and is_bag(path):
            self.kind = "bag"
            self._bag = Recording(path)
            try:
                self.topic = self._bag.select_topic(bag_topic or None, "--bag-topic (bag_topic)")
            except BaseException:
                self._bag.close()
                raise
            self._messages = self._bag.frames(self.topic)
        elif bag_topic:
            raise ConfigError(f"bag_topic {bag_topic} is for ROS 2 bag sources (.mcap, .db3, bag "
                              f"folder); source {source} is not a bag")
        elif path.is_dir():
            self.kind = "folder"
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise ConfigError(f"image folder {path} has no {'/'.join(IMAGE_SUFFIXES)} files")
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            self.kind = "folder"
            self._files = [path]
        elif path.is_file():
            self.kind = "video"
            self._capture = cv2.VideoCapture(str(path))
            if not self._capture.isOpened():
                raise InputImageError(f"video {path} could not be opened by OpenCV; expected a "
                                      f"file OpenCV's FFmpeg reads (mp4, avi, mkv, ...)")
        else:
            raise ConfigError(f"source {path} does not exist; expected a video file, an image "
                              f"folder, an image file or webcam[:N]")

    def read(self) -> np.ndarray | None:
        """The next frame, or None when the source is exhausted."""
        if self.kind == "folder":
            return self._read_file()
        if self.kind == "bag":
            return self._read_bag()
        ok, frame = self._capture.read()
        if ok:
            self._webcam_failures = 0
            return frame
        if self.kind == "webcam":
            self.skipped += 1
            self._webcam_failures += 1
            if self._webcam_failures >= MAX_CONSECUTIVE_WEBCAM_FAILURES:
                raise InputImageError(f"webcam {self.source}: {self._webcam_failures} reads in "
                                      f"a row failed; the camera stopped delivering frames")
            return self.read()
        if self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
            return frame if ok else None
        return None

    def _read_file(self) -> np.ndarray | None:
        # Bounded by one pass over the folder, so a folder of unreadable files ends.
        for _attempt in range(len(self._files)):
            if self._next_file >= len(self._files):
                if not self.loop:
                    return None
                self._next_file = 0
            path = self._files[self._next_file]
            self._next_file += 1
            frame = read_image_file(path)
            if frame is not None:
                return frame
            self.skipped += 1
            print(f"aue-image-source: warning: skipped unreadable image {path}", file=sys.stderr)
        return None

    def _read_bag(self) -> np.ndarray | None:
        restarted = False
        while True:
            message = next(self._messages, None)
            if message is None:
                if not self.loop or restarted:    # one pass without a frame: nothing to loop
                    return None
                self._messages, restarted = self._bag.frames(self.topic), True
                continue
            if message.image is not None:
                self.last = message
                return message.image
            self.skipped += 1
            print(f"aue-image-source: warning: skipped {self.topic.name} message "
                  f"{message.index}: {message.error}", file=sys.stderr)

    def close(self) -> None:
        if self._bag is not None:
            for note in self._bag.notes:
                print(f"aue-image-source: warning: {note}", file=sys.stderr)
            self._bag.close()
            self._bag = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageSource(Node):
    """Publishes the frames of a :class:`FrameReader` on a timer."""

    def __init__(self, overrides: dict | None = None) -> None:
        super().__init__("aue_image_source", parameter_overrides=[
            Parameter(name, value=value) for name, value in (overrides or {}).items()])
        declare_parameters(self, PARAMS)
        self.params = read_parameters(self, PARAMS)
        self.reader = FrameReader(self.params["source"], loop=self.params["loop"],
                                  bag_topic=self.params["bag_topic"])
        # A bag at its recorded timing: frame k leaves at start + (its receive time - the
        # first one's); (monotonic s, bag ns) of the first frame, set when it is read.
        self._recorded = self.reader.kind == "bag" and self.params["replay"] == "recorded"
        self._anchor: tuple[float, int] | None = None
        self._pending: np.ndarray | None = None
        if self.params["qos"] == "sensor_data":
            qos = qos_profile_sensor_data
        else:
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.create_publisher(Image, self.params["topic"], qos)
        self.published = 0
        self.finished_at_s: float | None = None
        self._wait_started_s = time.monotonic()
        self._waiting = self.params["wait_for_subscribers"] > 0
        self._settle_until_s = 0.0
        period = RECORDED_TIMING_TICK_S if self._recorded else 1.0 / self.params["rate_hz"]
        self.timer = self.create_timer(period, self._tick)
        if self.reader.kind == "bag":
            how = "at the recorded timing" if self._recorded else \
                f"at {self.params['rate_hz']:g} Hz"
            self.get_logger().info(
                f"replaying {self.reader.topic.describe()} of bag {self.params['source']} on "
                f"{self.params['topic']} {how} ({self.params['encoding']}, original headers)")
        else:
            self.get_logger().info(
                f"publishing {self.reader.kind} {self.params['source']} on "
                f"{self.params['topic']} at {self.params['rate_hz']:g} Hz "
                f"({self.params['encoding']}, frame_id '{self.params['frame_id']}')")

    @property
    def done(self) -> bool:
        """True once the source is finished and the last frame had time to leave."""
        return (self.finished_at_s is not None
                and time.monotonic() - self.finished_at_s >= LINGER_AFTER_LAST_FRAME_S)

    def _tick(self) -> None:
        if self.finished_at_s is not None:
            return
        if self._waiting:
            wanted = self.params["wait_for_subscribers"]
            if self.publisher.get_subscription_count() < wanted:
                if time.monotonic() - self._wait_started_s > self.params["wait_timeout_s"]:
                    self.get_logger().error(
                        f"no {wanted} subscriber(s) on {self.params['topic']} after "
                        f"{self.params['wait_timeout_s']:g} s; stopping")
                    self.finished_at_s = time.monotonic()
                return
            self._waiting = False
            self._settle_until_s = time.monotonic() + SETTLE_AFTER_MATCH_S
        if time.monotonic() < self._settle_until_s:
            return
        frame = self._pending if self._pending is not None else self.reader.read()
        if frame is None:
            self._finish("end of source")
            return
        if self._recorded and not self._due():
            self._pending = frame
            return
        self._pending = None
        if self.params["resize_width"] and frame.shape[1] != self.params["resize_width"]:
            width = self.params["resize_width"]
            height = max(1, round(frame.shape[0] * width / frame.shape[1]))
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        if self.reader.kind == "bag":
            sec, nanosec = self.reader.last.stamp
            stamp, frame_id = Time(sec=sec, nanosec=nanosec), self.reader.last.frame_id
        else:
            stamp, frame_id = self.get_clock().now().to_msg(), self.params["frame_id"]
        msg = bgr_to_image(frame, stamp, frame_id, self.params["encoding"])
        self.publisher.publish(msg)
        self.published += 1
        if self.params["max_frames"] and self.published >= self.params["max_frames"]:
            self._finish(f"published max_frames={self.params['max_frames']}")

    def _due(self) -> bool:
        """Whether the bag frame just read is due (recorded timing); a loop starts afresh."""
        bag_ns = self.reader.last.bag_time_ns
        if self._anchor is None or bag_ns < self._anchor[1]:
            self._anchor = (time.monotonic(), bag_ns)
        return time.monotonic() >= self._anchor[0] + (bag_ns - self._anchor[1]) * 1e-9

    def _finish(self, why: str) -> None:
        skipped = f", skipped {self.reader.skipped} unreadable" if self.reader.skipped else ""
        self.get_logger().info(f"{why}: published {self.published} frames{skipped}")
        self.finished_at_s = time.monotonic()

    def destroy_node(self) -> None:
        self.reader.close()
        super().destroy_node()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue-image-source",
        description="Publish sensor_msgs/Image frames from a video, an image folder, a webcam or "
                    "a recorded ROS 2 bag (original headers, recorded timing).",
        epilog="Any ROS arguments go after --ros-args (e.g. -r __ns:=/robot).")
    parser.add_argument("--source", help="video file, image folder, image file, ROS 2 bag "
                                         "(.mcap, .db3, bag folder) or webcam[:N]")
    parser.add_argument("--rate-hz", type=float, help="frames per second (default 30; a bag: "
                                                      "with --replay rate)")
    parser.add_argument("--bag-topic", help="bag: the image topic to replay (default: its only "
                                            "image topic)")
    parser.add_argument("--replay", choices=("recorded", "rate"),
                        help="bag: recorded timing (default) or --rate-hz")
    parser.add_argument("--topic", help="topic (default /camera/image_raw)")
    parser.add_argument("--frame-id", help="header.frame_id (default camera)")
    parser.add_argument("--encoding", choices=("bgr8", "rgb8", "mono8"))
    parser.add_argument("--loop", action="store_true", default=None,
                        help="start again at the end")
    parser.add_argument("--max-frames", type=int, help="stop after N frames (0: no limit)")
    parser.add_argument("--resize-width", type=int, help="scale frames to this width in px")
    parser.add_argument("--qos", choices=("sensor_data", "reliable"))
    parser.add_argument("--wait-for-subscribers", type=int,
                        help="wait for N subscribers before the first frame")
    parser.add_argument("--wait-timeout-s", type=float)
    return parser


def main(argv: Sequence[str] | None = None, stop: StopRequest | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = vars(build_parser().parse_args(non_ros_args("aue-image-source", argv)))
    overrides = {name: value for name, value in flags.items() if value is not None}
    return run_node("aue-image-source", lambda: ImageSource(overrides), argv,
                    finished=lambda node: node.done, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
