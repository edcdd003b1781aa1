"""``aue run --out-bag PATH``: a run's results as ``aue_msgs`` messages in a rosbag2 (MCAP).

The messages the perception node publishes, built by the same functions
(:mod:`aue_edge.ros_nodes.messages`): ``/faces`` (FaceArray) for every processed frame,
``/emotion`` and ``/action_units`` for the primary face (the node's default rule: largest,
sticky). Each carries the camera frame's header (a bag source's original stamp and frame_id);
its bag time is the source message's receive time (bag sources) or its header stamp. rclpy
serializes them (CDR, as on the wire) and rosbags writes them with the definitions of the
installed ``aue_msgs`` (``share/aue_msgs/msg/*.msg``), registered in a rosbags typestore, so
the bag can be read without this package (rosbags, Foxglove, ``ros2 bag``).

The bag is written in a hidden folder beside PATH and moved to PATH only when the run ends
(normally or stopped by a signal); a failed run leaves nothing. PATH must not exist, as for
``ros2 bag record -o``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from aue_edge.core.errors import ConfigError
from aue_edge.core.paths import find_share_file
from aue_edge.edge.results import FrameResult

TOPICS = {"/faces": "FaceArray", "/emotion": "Emotion", "/action_units": "ActionUnits"}


def check_out_bag(path: Path) -> None:
    """Fail before any work when ``--out-bag`` cannot be written."""
    if path.exists():
        raise ConfigError(f"--out-bag {path} exists; rosbag2 bags are written once: choose a new "
                          f"path (or remove it)")
    if not path.parent.is_dir():
        raise ConfigError(f"--out-bag {path}: the folder {path.parent} does not exist")
    _message_definitions()


def _message_definitions() -> list[Path]:
    """The ``aue_msgs`` .msg files: from this source checkout, else the installed package's share
    folder (this venv or an ament prefix; :func:`aue_edge.core.paths.share_file`)."""
    try:
        import aue_msgs.msg  # noqa: F401
        import rclpy.serialization  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--out-bag needs rclpy and the built aue_msgs package ({exc}): pip "
                          f"install -r requirements.txt && pip install --no-build-isolation "
                          f"./aue_msgs") from None
    found = find_share_file("msg/Face.msg", "aue_msgs")
    if found is None:
        raise ConfigError("--out-bag: the aue_msgs message definitions (share/aue_msgs/msg/*.msg) "
                          "were not found in AMENT_PREFIX_PATH or this Python's prefix; install "
                          "aue_msgs (pip install --no-build-isolation ./aue_msgs)")
    return sorted(found.parent.glob("*.msg"))


class ResultBag:
    """``write`` each frame's results; ``close(keep)`` renames the bag into place."""

    def __init__(self, path: str | Path, emotion_labels, au_names, au_thresholds) -> None:
        from rclpy.serialization import serialize_message
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        from aue_edge.ros_nodes import messages

        self.path = Path(path)
        check_out_bag(self.path)
        self._messages, self._serialize = messages, serialize_message
        self._labels, self._au_names, self._thresholds = emotion_labels, au_names, au_thresholds
        self._primary_id: int | None = None
        typestore = get_typestore(Stores.ROS2_JAZZY)
        types = {}
        for file in _message_definitions():
            types.update(get_types_from_msg(file.read_text(encoding="utf-8"),
                                            f"aue_msgs/msg/{file.stem}"))
        typestore.register(types)
        # The storage file takes the bag folder's name: stage the folder itself, under PATH's name.
        self._stage = self.path.parent / f".aue-partial-{os.getpid()}-{self.path.name}"
        shutil.rmtree(self._stage, ignore_errors=True)
        self._stage.mkdir()
        self._writer = Writer(self._stage / self.path.name, version=9,
                              storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(
            topic, f"aue_msgs/msg/{name}", typestore=typestore) for topic, name in TOPICS.items()}
        self.counts = dict.fromkeys(TOPICS, 0)

    def write(self, result: FrameResult, stamp: tuple[int, int], frame_id: str,
              bag_time_ns: int) -> None:
        from std_msgs.msg import Header

        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = stamp
        m = self._messages
        primary = m.select_primary_face(result.faces, "largest", result.width, result.height,
                                        self._primary_id)
        self._primary_id = primary.track_id if primary is not None else None
        out = {"/faces": m.face_array_msg(result, header, self._labels, self._au_names,
                                          self._thresholds, primary)}
        if primary is not None and primary.emotion_probs is not None:
            out["/emotion"] = m.emotion_msg(primary, header, self._labels)
        if primary is not None and primary.au_probs is not None:
            out["/action_units"] = m.action_units_msg(primary, header, self._au_names,
                                                      self._thresholds)
        for topic, msg in out.items():
            self._writer.write(self._connections[topic], bag_time_ns, self._serialize(msg))
            self.counts[topic] += 1

    def close(self, keep: bool) -> None:
        """Finish the bag: renamed to its path when ``keep``, deleted otherwise."""
        try:
            self._writer.close()
            if keep:
                os.rename(self._stage / self.path.name, self.path)
        finally:
            shutil.rmtree(self._stage, ignore_errors=True)
