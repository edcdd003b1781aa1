"""sensor_msgs images <-> numpy, validated: the only place the ROS nodes touch pixel bytes.

Sits between the wire and the edge pipeline: the perception node calls :func:`image_to_bgr`
(or :func:`compressed_to_bgr`) on every incoming frame and hands the BGR array to
``aue_edge.edge.pipeline.Pipeline``; the image source calls :func:`bgr_to_image` to publish.
Everything a camera driver or a bag can get wrong (an encoding we cannot read, a ``step`` or
size that does not match the byte count, an empty image) raises
:class:`~aue_edge.core.errors.InputImageError` with a message that says what was expected, so
the node can log it, count it in /diagnostics and keep running. No cv_bridge: the PyPI
``cv-bridge`` is ROS 1 and breaks on numpy 2, and three encodings need no library.
"""
from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from aue_edge.core.errors import InputImageError
from aue_edge.edge.frames import decode_image, is_truncated_jpeg

# encoding -> channels. 8-bit colour and grey only: the pipeline needs 8-bit BGR, and depth or
# Bayer images would need a decision (scaling, demosaicing) that belongs in the camera driver.
CHANNELS_BY_ENCODING = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4}
SUPPORTED_ENCODINGS = tuple(CHANNELS_BY_ENCODING)
# Frames larger than this are rejected before allocating anything (a corrupt header could claim
# gigapixels); 8K UHD fits with margin.
MAX_SIDE_PX = 8192


def check_side_limit(width: int, height: int) -> None:
    """Raw and compressed input alike: at most :data:`MAX_SIDE_PX` per side."""
    if height > MAX_SIDE_PX or width > MAX_SIDE_PX:
        raise InputImageError(f"image of {width}x{height} px is larger than the {MAX_SIDE_PX} px "
                              f"per side this node accepts; downscale it upstream")


def image_to_bgr(msg: Image) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` as a contiguous HxWx3 uint8 BGR array.

    Accepts bgr8, rgb8, mono8, bgra8 and rgba8; rows may be padded (``step`` larger than
    ``width * channels``). Raises :class:`InputImageError` naming the field that is wrong.
    """
    encoding = msg.encoding.strip().lower()
    channels = CHANNELS_BY_ENCODING.get(encoding)
    if channels is None:
        raise InputImageError(
            f"unsupported image encoding {msg.encoding!r}: expected one of "
            f"{', '.join(SUPPORTED_ENCODINGS)}. Configure the camera driver for bgr8/rgb8, "
            f"or convert upstream (e.g. image_proc's debayer/rectify output)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise InputImageError(f"empty image: width={width}, height={height}; expected both > 0")
    check_side_limit(width, height)
    row_bytes = width * channels
    if step < row_bytes:
        raise InputImageError(
            f"image step {step} is smaller than width*channels = {width}*{channels} = "
            f"{row_bytes} for {encoding}; the header does not describe the data")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise InputImageError(
            f"image data has {data.size} bytes, expected step*height = {step}*{height} = "
            f"{step * height} ({width}x{height} {encoding}); the message is truncated or its "
            f"header is wrong")
    pixels = data.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels)
    conversion = {
        "rgb8": cv2.COLOR_RGB2BGR,
        "mono8": cv2.COLOR_GRAY2BGR,
        "bgra8": cv2.COLOR_BGRA2BGR,
        "rgba8": cv2.COLOR_RGBA2BGR,
    }[encoding]
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def compressed_to_bgr(msg: CompressedImage) -> np.ndarray:
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

