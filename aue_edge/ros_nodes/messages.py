"""FrameResult -> aue_msgs: what the perception node publishes, built without a running node.

Sits after the edge pipeline: ``Pipeline.process`` returns an
:class:`~aue_edge.edge.results.FrameResult`; these functions turn it into ``aue_msgs/Emotion``,
``aue_msgs/ActionUnits`` and ``aue_msgs/FaceArray`` whose headers are the camera image's header
(stamp and frame_id copied), and pick the primary face a robot reacts to. Plain functions so
they are tested, and benchmarked, with no ROS graph.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from aue_msgs.msg import ActionUnits, Emotion, Face, FaceArray
from geometry_msgs.msg import Point32
from std_msgs.msg import Header

from aue_edge.core.errors import ConfigError
from aue_edge.edge.results import FaceResult, FrameResult

# How the face published on /emotion and /action_units is chosen when several are in view.
#   largest: biggest box: with one camera, the person nearest to the robot
#   center:  box centre closest to the image centre: the person the camera (head) points at
#   score:   highest detector confidence
PRIMARY_FACE_RULES = ("largest", "center", "score")


def copy_header(header: Header) -> Header:
    """A new Header with the camera frame's stamp and frame_id (messages must not share one)."""
    out = Header()
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    out.frame_id = header.frame_id
    return out


def select_primary_face(faces: Sequence[FaceResult], rule: str, image_width: int,
                        image_height: int, previous_id: int | None = None,
                        sticky: bool = True) -> FaceResult | None:
    """The face a robot should react to, or None when there is no face.

    With ``sticky`` the previous primary face stays primary while it is still tracked, so two
    people of similar size do not make /emotion flip between them from frame to frame.
    """
    if rule not in PRIMARY_FACE_RULES:
        raise ConfigError(f"primary face rule {rule!r} is unknown; choose one of "
                          f"{', '.join(PRIMARY_FACE_RULES)}")
    if not faces:
        return None
    if sticky and previous_id is not None:
        for face in faces:
            if face.track_id == previous_id:
                return face
    if rule == "largest":
        def key(face: FaceResult) -> float:
            x0, y0, x1, y1 = (float(v) for v in face.box_xyxy)
            return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    elif rule == "center":
        cx, cy = image_width / 2.0, image_height / 2.0

        def key(face: FaceResult) -> float:
            x0, y0, x1, y1 = (float(v) for v in face.box_xyxy)
            return -((0.5 * (x0 + x1) - cx) ** 2 + (0.5 * (y0 + y1) - cy) ** 2)
    else:
        def key(face: FaceResult) -> float:
            return float(face.score)
    return max(faces, key=key)


def emotion_msg(face: FaceResult, header: Header, labels: Sequence[str]) -> Emotion:
    msg = Emotion()
    msg.header = copy_header(header)
    msg.face_id = int(face.track_id)
    msg.label = face.emotion_label or ""
    msg.confidence = float(face.emotion_confidence or 0.0)
    msg.label_names = list(labels)
    msg.probabilities = _floats(face.emotion_probs)
    return msg


def action_units_msg(face: FaceResult, header: Header, au_names: Sequence[str],
                     thresholds: Sequence[float]) -> ActionUnits:
    msg = ActionUnits()
    msg.header = copy_header(header)
    msg.face_id = int(face.track_id)
    msg.names = list(au_names)
    msg.probabilities = _floats(face.au_probs)
    msg.active = [bool(v) for v in face.au_active] if face.au_active is not None else []
    msg.thresholds = _floats(thresholds)
    return msg


def face_msg(face: FaceResult, header: Header, labels: Sequence[str], au_names: Sequence[str],
             au_thresholds: Sequence[float], image_width: int, image_height: int) -> Face:
    msg = Face()
    msg.id = int(face.track_id)
    msg.detection_score = float(face.score)
    # RegionOfInterest is unsigned pixels inside the image: clip boxes that reach past an edge.
    x0, y0, x1, y1 = (float(v) for v in face.box_xyxy)
    left = int(np.clip(np.floor(x0), 0, image_width))
    top = int(np.clip(np.floor(y0), 0, image_height))
    right = int(np.clip(np.ceil(x1), left, image_width))
    bottom = int(np.clip(np.ceil(y1), top, image_height))
    msg.roi.x_offset, msg.roi.y_offset = left, top
    msg.roi.width, msg.roi.height = right - left, bottom - top
    msg.roi.do_rectify = False
    msg.landmarks = [Point32(x=float(x), y=float(y), z=0.0) for x, y in face.landmarks5]
    msg.has_emotion = face.emotion_probs is not None
    if msg.has_emotion:
        msg.emotion = emotion_msg(face, header, labels)
    msg.has_action_units = face.au_probs is not None
    if msg.has_action_units:
        msg.action_units = action_units_msg(face, header, au_names, au_thresholds)
    return msg


def face_array_msg(result: FrameResult, header: Header, labels: Sequence[str],
                   au_names: Sequence[str], au_thresholds: Sequence[float],
                   primary: FaceResult | None) -> FaceArray:
    msg = FaceArray()
    msg.header = copy_header(header)
    msg.image_width, msg.image_height = int(result.width), int(result.height)
    msg.faces = [face_msg(face, header, labels, au_names, au_thresholds, result.width,
                          result.height) for face in result.faces]
    msg.primary_face_id = int(primary.track_id) if primary is not None else -1
    return msg


def _floats(values: np.ndarray | None) -> list[float]:
    return [] if values is None else [float(v) for v in np.asarray(values, dtype=np.float32)]
