"""ROS 2 bags written with rosbags for the tests (no ROS install): astronaut frames as Image
and CompressedImage messages with known header stamps and receive times."""
from __future__ import annotations

import cv2
import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
IMAGE = TYPESTORE.types["sensor_msgs/msg/Image"]
COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
STRING = TYPESTORE.types["std_msgs/msg/String"]
HEADER = TYPESTORE.types["std_msgs/msg/Header"]
TIME = TYPESTORE.types["builtin_interfaces/msg/Time"]
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
T0_NS = 1_700_000_000_000_000_000       # bag receive time of the first message
PERIOD_NS = 50_000_000                  # 20 Hz
LATENCY_NS = 23_000_000                 # header stamp = receive time - 23 ms (camera latency)

def header(i: int) -> object:
    stamp_ns = T0_NS + i * PERIOD_NS - LATENCY_NS
    return HEADER(stamp=TIME(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                  frame_id="head_camera_optical_frame")


def expected_stamp(i: int) -> dict:
    stamp_ns = T0_NS + i * PERIOD_NS - LATENCY_NS
    return {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9}


def raw_image(i: int, bgr: np.ndarray, encoding: str = "bgr8"):
    if encoding == "mono16":
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(">u2") * 257   # big endian
    else:
        code = {"bgr8": None, "rgb8": cv2.COLOR_BGR2RGB, "mono8": cv2.COLOR_BGR2GRAY,
                "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA,
                "16UC1": cv2.COLOR_BGR2GRAY}[encoding]
        pixels = bgr if code is None else cv2.cvtColor(bgr, code)
        if encoding == "16UC1":
            pixels = pixels.astype("<u2")
    pixels = np.ascontiguousarray(pixels)
    return IMAGE(header=header(i), height=pixels.shape[0], width=pixels.shape[1],
                 encoding=encoding, is_bigendian=int(encoding == "mono16"),
                 step=pixels.strides[0], data=pixels.view(np.uint8).reshape(-1))


def jpeg_image(i: int, bgr: np.ndarray):
    data = cv2.imencode(".jpg", bgr)[1].reshape(-1)
    return COMPRESSED(header=header(i), format="jpeg", data=data)


def write_bag(path, storage: str, topics: dict, compress: bool = False, times_ns=None):
    """A rosbag2 folder: ``topics`` maps name -> list of messages; message i of each topic is
    received at ``times_ns[i]`` (default: one every PERIOD_NS from T0_NS)."""
    times_ns = times_ns or [T0_NS + i * PERIOD_NS for i in range(max(map(len, topics.values())))]
    writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
    if compress:                                      # zstd-compressed MCAP chunks
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        connections = {name: writer.add_connection(name, msgs[0].__msgtype__,
                                                   typestore=TYPESTORE)
                       for name, msgs in topics.items()}
        for i in range(len(times_ns)):
            for name, msgs in topics.items():
                if i < len(msgs):
                    writer.write(connections[name], times_ns[i],
                                 TYPESTORE.serialize_cdr(msgs[i], msgs[i].__msgtype__))
    return path


def storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def mcap_chunks_as_lz4(path) -> int:
    """Rewrite the zstd chunks of the MCAP file at ``path`` as lz4 chunks (rosbags writes zstd
    only; ros2 bag and the mcap CLI may write lz4); returns the chunks rewritten.
    Records are copied in order; the summary's chunk offsets go stale, so only a reader that
    walks the records (the bag reader's salvage path) reads the result."""
    import struct

    import lz4.frame
    from backports import zstd

    data, out, pos, rewritten = path.read_bytes(), bytearray(), 8, 0
    out += data[:8]                                    # magic
    while pos + 9 <= len(data):
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        body = data[pos + 9:pos + 9 + length]
        if op == 0x06:                                 # Chunk
            head = body[:28]                           # start, end, uncompressed size, crc
            (name_len,) = struct.unpack_from("<I", body, 28)
            assert body[32:32 + name_len] == b"zstd", "write the bag with compress=True"
            (stored,) = struct.unpack_from("<Q", body, 32 + name_len)
            records = zstd.decompress(body[40 + name_len:40 + name_len + stored])
            packed = lz4.frame.compress(records)
            body = (head + struct.pack("<I", 3) + b"lz4"
                    + struct.pack("<Q", len(packed)) + packed)
            rewritten += 1
        out += bytes([op]) + struct.pack("<Q", len(body)) + body
        pos += 9 + length
    out += data[pos:]                                  # closing magic
    path.write_bytes(bytes(out))
    return rewritten
