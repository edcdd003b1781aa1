"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` pixels -> BGR, without ROS.

The one decoder of image messages: the perception node gets them from rclpy, ``aue run
--source BAG`` from a recorded bag (rosbags). Both message kinds are read through their fields
only (``encoding``, ``height``, ``width``, ``step``, ``is_bigendian``, ``data``; ``format`` and
``data``), so no ROS install is needed here (edge stage).

Everything a camera driver or a bag can get wrong (an encoding we cannot read, a ``step`` or
size that does not match the byte count, an empty image) raises
:class:`~aue_edge.core.errors.InputImageError` with a message that says what was expected.
No cv_bridge: the PyPI ``cv-bridge`` is ROS 1 and breaks on numpy 2, and these encodings need
no library.
"""
from __future__ import annotations

import cv2
import numpy as np

from aue_edge.core.errors import InputImageError
from aue_edge.edge.frames import decode_image, is_truncated_jpeg, validate_frame

# encoding -> (channels, bytes per channel). 8-bit colour and grey, and 16-bit grey (IR and
# mono cameras; scaled to 8 bit by validate_frame). Depth (16UC1, 32FC1), Bayer and YUV images
# would need a decision (scaling, demosaicing) that belongs in the camera driver.
LAYOUT_BY_ENCODING = {"bgr8": (3, 1), "rgb8": (3, 1), "mono8": (1, 1), "bgra8": (4, 1),
                      "rgba8": (4, 1), "mono16": (1, 2)}
SUPPORTED_ENCODINGS = tuple(LAYOUT_BY_ENCODING)
_TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "mono8": cv2.COLOR_GRAY2BGR,
           "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR}
# Frames larger than this are rejected before allocating anything (a corrupt header could claim
# gigapixels); 8K UHD fits with margin.
MAX_SIDE_PX = 8192


def check_side_limit(width: int, height: int) -> None:
    """Raw and compressed input alike: at most :data:`MAX_SIDE_PX` per side."""
    if height > MAX_SIDE_PX or width > MAX_SIDE_PX:
        raise InputImageError(f"image of {width}x{height} px is larger than the {MAX_SIDE_PX} px "
                              f"per side this node accepts; downscale it upstream")


def image_to_bgr(msg) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as a contiguous HxWx3 uint8 BGR array.

    Accepts bgr8, rgb8, mono8, bgra8, rgba8 and mono16 (either byte order, scaled to 8 bit over
    the full 16-bit range as :func:`~aue_edge.edge.frames.validate_frame` does); rows may be
    padded (``step`` larger than ``width * channels * bytes``). Raises
    :class:`InputImageError` naming the field that is wrong.
    """
    encoding = msg.encoding.strip().lower()
    layout = LAYOUT_BY_ENCODING.get(encoding)
    if layout is None:
        raise InputImageError(
            f"unsupported image encoding {msg.encoding!r}: expected one of "
            f"{', '.join(SUPPORTED_ENCODINGS)}. Configure the camera driver for bgr8/rgb8, "
            f"or convert upstream (e.g. image_proc's debayer/rectify output)")
    channels, depth = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise InputImageError(f"empty image: width={width}, height={height}; expected both > 0")
    check_side_limit(width, height)
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise InputImageError(
            f"image step {step} is smaller than width*channels*bytes = {width}*{channels}*"
            f"{depth} = {row_bytes} for {encoding}; the header does not describe the data")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise InputImageError(
            f"image data has {data.size} bytes, expected step*height = {step}*{height} = "
            f"{step * height} ({width}x{height} {encoding}); the message is truncated or its "
            f"header is wrong")
    rows = data.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        pixels = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2")
        return validate_frame(pixels.reshape(height, width))
    pixels = rows.reshape(height, width, channels)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_BGR[encoding])


def compressed_to_bgr(msg) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg/png, as image_transport publishes it)."""
    data = bytes(msg.data)
    if not data:
        raise InputImageError(f"empty compressed image (format {msg.format!r}): no bytes")
    if is_truncated_jpeg(data):
        raise InputImageError(f"truncated JPEG of {len(data)} bytes (format {msg.format!r}): "
                              f"no end-of-image marker after its scan data; the message was "
                              f"cut off")
    frame = decode_image(data)
    if frame is None:
        raise InputImageError(
            f"compressed image of {len(data)} bytes (format {msg.format!r}) could not be "
            f"decoded; expected jpeg or png data as image_transport's compressed plugin sends")
    check_side_limit(frame.shape[1], frame.shape[0])
    return frame
