"""``aue-emotion-listener``: the robot-side example, printing when a person's emotion changes.

The end of the ROS flow (camera -> perception -> this node): subscribes to /emotion
(``aue_msgs/Emotion``, the primary face) and prints one line when the primary face's emotion
changes, when a new face becomes primary, and when the face has not been seen for a while.
:class:`EmotionChangeTracker` holds the logic with no ROS in it; copy this file and replace
:meth:`EmotionListener.react` with what your robot should do (speak, change its face, log).

    aue-emotion-listener
    aue-emotion-listener --min-confidence 0.6 --lost-after-s 2
    ros2 run aue_edge emotion_listener --ros-args -r /emotion:=/robot/emotion
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aue_msgs.msg import Emotion
from rclpy.node import Node
from rclpy.parameter import Parameter

from aue_edge.ros_nodes.conversions import stamp_to_seconds
from aue_edge.ros_nodes.params import ParamSpec, declare_parameters, read_parameters
from aue_edge.ros_nodes.entry import StopRequest
from aue_edge.ros_nodes.spin import non_ros_args, run_node

PARAMS = (
    ParamSpec("topic", "/emotion", "aue_msgs/Emotion topic to listen to", topic=True),
    ParamSpec("min_confidence", 0.5, "ignore labels less probable than this (hysteresis "
              "against flicker between two close labels)", min_value=0.0, max_value=1.0),
    ParamSpec("lost_after_s", 1.5, "report the face as gone after this long without a message",
              min_value=0.1),
    ParamSpec("print_all", False, "also print every message received, not only changes"),
    ParamSpec("max_messages", 0, "exit after this many messages (0: run until Ctrl-C)",
              min_value=0),
)


@dataclass(frozen=True)
class EmotionEvent:
    """Something a robot may react to."""

    kind: str               # "changed" (label of the tracked face), "new_face", "lost"
    face_id: int
    label: str
    confidence: float
    previous_label: str
    stamp_s: float


class EmotionChangeTracker:
    """Turns a stream of Emotion messages into change events (no ROS needed)."""

    def __init__(self, min_confidence: float = 0.5, lost_after_s: float = 1.5) -> None:
        self.min_confidence, self.lost_after_s = min_confidence, lost_after_s
        self.face_id: int | None = None
        self.label = ""
        self._last_seen_s = 0.0

    def update(self, face_id: int, label: str, confidence: float, stamp_s: float,
               now_s: float) -> EmotionEvent | None:
        self._last_seen_s = now_s
        if face_id != self.face_id:
            self.face_id = face_id
            self.label = label if confidence >= self.min_confidence else ""
            return EmotionEvent("new_face", face_id, label, confidence, "", stamp_s)
        if confidence < self.min_confidence or label == self.label:
            return None
        previous, self.label = self.label, label
        return EmotionEvent("changed", face_id, label, confidence, previous, stamp_s)

    def check_lost(self, now_s: float) -> EmotionEvent | None:
        if self.face_id is None or now_s - self._last_seen_s < self.lost_after_s:
            return None
        event = EmotionEvent("lost", self.face_id, self.label, 0.0, self.label, 0.0)
        self.face_id, self.label = None, ""
        return event


def describe(event: EmotionEvent) -> str:
    if event.kind == "new_face":
        return (f"face {event.face_id}: in view, {event.label} ({event.confidence:.2f}) "
                f"[stamp {event.stamp_s:.3f}]")
    if event.kind == "changed":
        was = event.previous_label or "unsure"
        return (f"face {event.face_id}: {was} -> {event.label} ({event.confidence:.2f}) "
                f"[stamp {event.stamp_s:.3f}]")
    return f"face {event.face_id}: gone"


class EmotionListener(Node):
    def __init__(self, overrides: dict | None = None) -> None:
        super().__init__("aue_emotion_listener", parameter_overrides=[
            Parameter(name, value=value) for name, value in (overrides or {}).items()])
        declare_parameters(self, PARAMS)
        self.params = read_parameters(self, PARAMS)
        self.tracker = EmotionChangeTracker(self.params["min_confidence"],
                                            self.params["lost_after_s"])
        self.received = 0
        self.create_subscription(Emotion, self.params["topic"], self._on_emotion, 10)
        self.create_timer(0.2, self._check_lost)

    @property
    def done(self) -> bool:
        return 0 < self.params["max_messages"] <= self.received

    def _on_emotion(self, msg: Emotion) -> None:
        self.received += 1
        if self.params["print_all"]:
            print(f"/emotion face {msg.face_id}: {msg.label} ({msg.confidence:.2f}) "
                  f"[stamp {stamp_to_seconds(msg.header.stamp):.3f}, frame "
                  f"'{msg.header.frame_id}']", flush=True)
        event = self.tracker.update(msg.face_id, msg.label, msg.confidence,
                                    stamp_to_seconds(msg.header.stamp), time.monotonic())
        if event is not None:
            self.react(event)

    def _check_lost(self) -> None:
        event = self.tracker.check_lost(time.monotonic())
        if event is not None:
            self.react(event)

    def react(self, event: EmotionEvent) -> None:
        """What the robot does on an event: here, print it. Replace this in your robot."""
        print(describe(event), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aue-emotion-listener",
                                     description="Print when the primary face's emotion changes.")
    parser.add_argument("--topic", help="Emotion topic (default /emotion)")
    parser.add_argument("--min-confidence", type=float)
    parser.add_argument("--lost-after-s", type=float)
    parser.add_argument("--print-all", action="store_true", default=None,
                        help="print every message, not only changes")
    parser.add_argument("--max-messages", type=int, help="exit after N messages")
    return parser


def main(argv: Sequence[str] | None = None, stop: StopRequest | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = vars(build_parser().parse_args(non_ros_args("aue-emotion-listener", argv)))
    overrides = {name: value for name, value in flags.items() if value is not None}
    return run_node("aue-emotion-listener", lambda: EmotionListener(overrides), argv,
                    finished=lambda node: node.done, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
