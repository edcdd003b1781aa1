"""numpy -> sensor_msgs images: what the ROS nodes publish.

The image source and the annotated-image topic call :func:`bgr_to_image` to publish. The other
direction (incoming Image / CompressedImage -> BGR, validated) is
:mod:`aue_edge.edge.image_messages`, shared with ``aue run --source BAG``: it needs no ROS.
"""
from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from aue_edge.core.errors import InputImageError


def bgr_to_image(frame_bgr: np.ndarray, stamp: Time, frame_id: str,
                 encoding: str = "bgr8") -> Image:
    """A ``sensor_msgs/Image`` with the given header from an HxWx3 uint8 BGR frame.

    ``encoding`` picks what goes on the wire: bgr8 (no conversion), rgb8 or mono8.
    """
    if encoding not in ("bgr8", "rgb8", "mono8"):
        raise InputImageError(f"cannot publish encoding {encoding!r}; choose bgr8, rgb8 or mono8")
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise InputImageError(f"expected an HxWx3 uint8 BGR frame, got shape "
                              f"{frame_bgr.shape} dtype {frame_bgr.dtype}")
    if encoding == "rgb8":
        pixels = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        pixels = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    else:
        pixels = np.ascontiguousarray(frame_bgr)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    # bytes, not the array itself: rclpy copies a numpy array element by element (~50x slower).
    msg.data = pixels.tobytes()
    return msg


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9

