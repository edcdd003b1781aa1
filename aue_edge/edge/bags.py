"""Recorded ROS 2 bags (rosbag2, MCAP or sqlite3 storage) as a source of camera frames.

``aue run --source BAG`` and ``aue-image-source --source BAG`` read ``sensor_msgs/msg/Image``
and ``sensor_msgs/msg/CompressedImage`` messages with the pure-Python ``rosbags`` package: no
ROS install (edge stage, no torch). A bag is a rosbag2 folder (``metadata.yaml`` + storage
files), or one ``.mcap`` / ``.db3`` storage file.

Each frame keeps its header stamp and frame_id and the time the recorder received it (the
bag's time stamp). Pixels go through :mod:`aue_edge.edge.image_messages` (the decoder the
perception node uses): encodings it refuses (depth, Bayer, YUV, ...) give a frame with an
``error``, counted and skipped by the caller, like an undecodable video frame.

A damaged bag (a recorder killed mid-write, a copy cut short) is read as far as it goes:
when rosbags cannot open it through its index (an MCAP file without its summary and footer, a
sqlite3 file shorter than its header says), the storage files are read front to back without
the index (:func:`_salvage_mcap`, :func:`_salvage_sqlite`). Every message that can be read is
used; what was lost is said in :attr:`Recording.notes`. A file that is not a bag gets an
error saying so.
"""
from __future__ import annotations

import mmap
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from aue_edge.core.errors import ConfigError, InputImageError
from aue_edge.edge.image_messages import compressed_to_bgr, image_to_bgr

# The one version the project tests (requirements.txt); rosbags needs Python >= 3.10.
ROSBAGS_REQUIREMENT = "rosbags==0.11.9"
DECODERS: dict[str, Callable] = {"sensor_msgs/msg/Image": image_to_bgr,
                                 "sensor_msgs/msg/CompressedImage": compressed_to_bgr}
STORAGE_SUFFIXES = (".mcap", ".db3")
_MAGIC = {".mcap": b"\x89MCAP0\r\n", ".db3": b"SQLite format 3\x00"}


def rosbags_modules():
    """``(rosbags.rosbag2, rosbags.typesys)``, or a ConfigError saying what to install."""
    try:
        import rosbags.rosbag2
        import rosbags.typesys
    except ImportError:
        if sys.version_info < (3, 10):
            found = f"{sys.version_info.major}.{sys.version_info.minor}"
            raise ConfigError(
                f"reading ROS 2 bags needs the rosbags package, which needs Python >= 3.10; this "
                f"is Python {found} (JetPack 5): read the bag on a host with Python >= 3.10 "
                f"(pip install '{ROSBAGS_REQUIREMENT}'), or replay it there with "
                f"aue-image-source to the robot") from None
        raise ConfigError(
            f"reading ROS 2 bags needs the rosbags package (pure Python, no ROS install): pip "
            f"install '{ROSBAGS_REQUIREMENT}' or pip install 'aue_edge[bag]'") from None
    return rosbags.rosbag2, rosbags.typesys


def is_bag(path: Path) -> bool:
    """True for a ``.mcap`` / ``.db3`` file and for a folder with ``metadata.yaml`` or storage
    files (a rosbag2 folder whose recorder died before writing its metadata)."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or bool(_storage_files(path))
    return path.suffix.lower() in STORAGE_SUFFIXES


def _storage_files(folder: Path) -> list[Path]:
    # rosbag2 names split files NAME_0, NAME_1, ..., NAME_10: shorter names first keeps that order
    files = [p for p in folder.iterdir() if p.suffix.lower() in STORAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: (len(p.name), p.name))


def check_storage_file(path: Path) -> None:
    """Raise InputImageError when ``path`` cannot be a rosbag2 storage file (its first bytes
    are not MCAP's or SQLite's)."""
    magic = _MAGIC[path.suffix.lower()]
    try:
        with path.open("rb") as file:
            head = file.read(len(magic))
    except OSError as exc:
        raise InputImageError(f"bag file {path}: cannot read it: {exc.strerror}") from None
    if head != magic:
        kind = "MCAP" if path.suffix.lower() == ".mcap" else "SQLite"
        what = "is empty" if not head else f"does not start with the {kind} magic bytes"
        raise InputImageError(f"{path} {what}: not a ROS 2 bag. Expected a rosbag2 recording: "
                              f"a .mcap or .db3 file or a bag folder written by 'ros2 bag record'")


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int | None       # None: unknown (a damaged bag read without its index says nothing)

    def describe(self) -> str:
        return f"{self.name} ({self.msgtype}, {'?' if self.count is None else self.count} msgs)"


@dataclass(frozen=True)
class BagFrame:
    """One image message of the chosen topic."""

    index: int                    # position among the topic's messages (0-based)
    bag_time_ns: int              # when the recorder received it (the bag's time stamp)
    stamp: tuple[int, int] | None  # header.stamp (sec, nanosec); None: undecodable message
    frame_id: str
    image: np.ndarray | None      # HxWx3 uint8 BGR, or None (``error`` says why)
    error: str | None = None

    @property
    def time_s(self) -> float:
        """Header stamp in seconds; the receive time for a message stamped 0 (or undecodable)."""
        if self.stamp and (self.stamp[0] or self.stamp[1]):
            return self.stamp[0] + self.stamp[1] * 1e-9
        return self.bag_time_ns * 1e-9


class Recording:
    """A rosbag2 recording opened for its image topics (see the module docstring).

    ``with Recording(path) as bag: topic = bag.select_topic(None); for f in bag.frames(topic)``
    """

    def __init__(self, path: str | Path) -> None:
        rosbag2, typesys = rosbags_modules()
        self.path = Path(path)
        self.notes: list[str] = []            # what was lost or could not be read, and why
        self._typestore = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
        self._reader = None
        if not self.path.exists():
            raise InputImageError(f"bag {self.path}: no such file or folder")
        if self.path.is_dir():
            self._files = _storage_files(self.path)
            if not self._files:
                raise InputImageError(f"bag folder {self.path} has no .mcap or .db3 storage file; "
                                      f"expected a folder written by 'ros2 bag record'")
        elif self.path.suffix.lower() in STORAGE_SUFFIXES:
            self._files = [self.path]
        else:
            raise InputImageError(f"{self.path} is not a ROS 2 bag: expected a .mcap or .db3 file "
                                  f"or a bag folder written by 'ros2 bag record'")
        for file in self._files:
            check_storage_file(file)
        try:
            reader = rosbag2.Reader(self.path)
            reader.open()
        except (rosbag2.ReaderError, OSError, ValueError) as exc:
            self.damage = f"rosbags could not open it through its index ({exc})"
            self.topics = self._salvage_topics()
        else:
            self.damage = None
            self._reader = reader
            counts: dict[tuple[str, str], int] = {}
            for conn in reader.connections:
                key = (conn.topic, conn.msgtype)
                counts[key] = counts.get(key, 0) + conn.msgcount
            self.topics = {name: TopicInfo(name, msgtype, count)
                           for (name, msgtype), count in sorted(counts.items())}

    # ------------------------------------------------------------------ topics
    @property
    def image_topics(self) -> list[TopicInfo]:
        return [t for t in self.topics.values() if t.msgtype in DECODERS]

    def select_topic(self, requested: str | None, flag: str = "--topic") -> TopicInfo:
        """The topic to read: ``requested``, or the bag's only image topic. Raises ConfigError
        listing the image topics (and the other topics) when that is not possible; ``flag``:
        the option that names the topic, for the message."""
        images = self.image_topics
        listing = "; ".join(t.describe() for t in images) or "none"
        others = [t.describe() for t in self.topics.values() if t.msgtype not in DECODERS]
        also = f". Other topics: {'; '.join(others)}" if others else ""
        if requested is None:
            if len(images) == 1:
                return images[0]
            if not images:
                raise ConfigError(f"bag {self.path} has no sensor_msgs/msg/Image or "
                                  f"CompressedImage topic{also or ' (no topic at all)'}")
            raise ConfigError(f"bag {self.path} has {len(images)} image topics; choose one with "
                              f"{flag}: {listing}{also}")
        topic = self.topics.get(requested)
        if topic is None:
            raise ConfigError(f"{flag} {requested}: no such topic in bag {self.path}; its image "
                              f"topics: {listing}{also}")
        if topic.msgtype not in DECODERS:
            raise ConfigError(f"{flag} {requested} is {topic.msgtype}, not an image topic "
                              f"(sensor_msgs/msg/Image or CompressedImage); the bag's image "
                              f"topics: {listing}")
        return topic

    # ------------------------------------------------------------------ frames
    def frames(self, topic: TopicInfo) -> Iterator[BagFrame]:
        """The messages of ``topic`` in bag order, decoded; never raises for a bad message (it
        becomes a frame with ``image=None`` and an ``error``). Damage that ends the reading is
        added to :attr:`notes`."""
        decode = DECODERS[topic.msgtype]
        for index, (bag_time_ns, raw) in enumerate(self._raw_messages(topic.name)):
            try:
                msg = self._typestore.deserialize_cdr(raw, topic.msgtype)
            except Exception as exc:     # rosbags raises several types for malformed CDR
                yield BagFrame(index, bag_time_ns, None, "", None,
                               f"cannot deserialize the {topic.msgtype} message ({exc})")
                continue
            stamp = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
            try:
                image, error = decode(msg), None
            except InputImageError as exc:
                image, error = None, str(exc)
            yield BagFrame(index, bag_time_ns, stamp, msg.header.frame_id, image, error)

    def _raw_messages(self, topic: str) -> Iterator[tuple[int, bytes]]:
        if self._reader is None:
            yield from self._salvage_messages(topic)
            return
        from rosbags.rosbag2 import ReaderError

        connections = [c for c in self._reader.connections if c.topic == topic]
        try:
            for _conn, bag_time_ns, raw in self._reader.messages(connections=connections):
                yield bag_time_ns, raw
        except (ReaderError, OSError, ValueError) as exc:
            self.notes.append(f"bag {self.path}: reading stopped at a damaged part ({exc}); "
                              f"the messages after it were not read")

    # ------------------------------------------------------------------ damaged bags
    def _salvage_topics(self) -> dict[str, TopicInfo]:
        found = {(name, msgtype) for file in self._files
                 for name, msgtype, _ in _salvage_file(file, None, [])}
        if not found:
            raise InputImageError(f"bag {self.path}: {self.damage}, and no topic could be "
                                  f"recovered from its storage files: not a rosbag2 recording, "
                                  f"or too damaged to read")
        # Without the index the message counts are unknown.
        return {name: TopicInfo(name, msgtype, None) for (name, msgtype) in sorted(found)}

    def _salvage_messages(self, topic: str) -> Iterator[tuple[int, bytes]]:
        self.notes.append(f"bag {self.path}: {self.damage}; read front to back without it")
        for file in self._files:
            for _name, _msgtype, message in _salvage_file(file, topic, self.notes):
                yield message

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _salvage_file(path: Path, topic: str | None, notes: list[str]):
    """``(topic, msgtype, None)`` for each channel of a damaged storage file (``topic`` None),
    or ``(topic, msgtype, (bag_time_ns, raw))`` for each readable message of ``topic``."""
    if path.suffix.lower() == ".mcap":
        return _salvage_mcap(path, topic, notes)
    return _salvage_sqlite(path, topic, notes)


# MCAP record opcodes (https://mcap.dev/spec)
_FOOTER, _SCHEMA, _CHANNEL, _MESSAGE, _CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06


def _mcap_string(body: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", body, pos)
    return body[pos + 4:pos + 4 + size].decode("utf-8", "replace"), pos + 4 + size


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    if compression == "zstd":
        try:
            from compression import zstd      # Python >= 3.14
        except ImportError:
            from backports import zstd
        return zstd.decompress(data)
    raise ValueError(f"unknown chunk compression {compression!r}")


def _salvage_mcap(path: Path, topic: str | None, notes: list[str]):
    """Read an MCAP file's records in order, stopping at the first one cut off."""
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def records(data, start: int, end: int, where: str):
        pos = start
        while pos < end:
            if end - pos < 9:
                raise EOFError(f"{where} ends inside a record header at byte {pos}")
            op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            if pos + 9 + length > end:
                raise EOFError(f"{where} ends inside a record of {length} bytes at byte {pos}")
            yield op, bytes(data[pos + 9:pos + 9 + length])
            pos += 9 + length

    def handle(op: int, body: bytes):
        if op == _SCHEMA:
            (schema_id,) = struct.unpack_from("<H", body, 0)
            schemas[schema_id] = _mcap_string(body, 2)[0]
        elif op == _CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", body, 0)
            name = _mcap_string(body, 4)[0]
            channels[channel_id] = (name, schemas.get(schema_id, ""))
            if topic is None:
                yield name, channels[channel_id][1], None
        elif op == _MESSAGE and topic is not None:
            channel_id, _seq, log_time = struct.unpack_from("<HIQ", body, 0)
            name, msgtype = channels.get(channel_id, ("", ""))
            if name == topic:
                yield name, msgtype, (log_time, body[22:])

    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            for op, body in records(data, 8, len(data), f"{path.name}"):
                if op == _FOOTER:
                    break
                if op != _CHUNK:
                    yield from handle(op, body)
                    continue
                _start, _end, size, crc = struct.unpack_from("<QQQI", body, 0)
                compression, pos = _mcap_string(body, 28)
                (stored,) = struct.unpack_from("<Q", body, pos)
                try:
                    inner = _decompress(compression, body[pos + 8:pos + 8 + stored], size)
                    if len(inner) != size or (crc and zlib.crc32(inner) != crc):
                        raise ValueError("size or CRC mismatch")
                except (ValueError, OSError, RuntimeError) as exc:
                    notes.append(f"{path.name}: a damaged chunk was skipped ({exc}); its "
                                 f"messages are lost")
                    continue
                for inner_op, inner_body in records(inner, 0, len(inner), "a chunk"):
                    yield from handle(inner_op, inner_body)
        except EOFError as exc:
            notes.append(f"{path.name} is cut off: {exc}; the messages after it are lost")
        except struct.error as exc:
            notes.append(f"{path.name}: a malformed record ({exc}); the messages after it are "
                         f"lost")


class _SqlitePages:
    """The table rows of a SQLite file read page by page, without its b-trees: what is left of
    a file cut short (SQLite itself refuses it: "database disk image is malformed"). Follows
    the file format (https://www.sqlite.org/fileformat2.html): table leaf pages (type 13), their
    cells (payload size, rowid, payload) and overflow chains; a cell whose payload runs into a
    missing page is unreadable."""

    def __init__(self, data) -> None:
        self.data = data
        page_size = struct.unpack_from(">H", data, 16)[0]
        self.page_size = 65536 if page_size == 1 else page_size
        self.usable = self.page_size - data[20]
        self.pages = len(data) // self.page_size

    @staticmethod
    def _varint(data, pos: int) -> tuple[int, int]:
        value = 0
        for i in range(9):
            byte = data[pos + i]
            if i == 8:
                return (value << 8) | byte, pos + 9
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                return value, pos + i + 1
        raise AssertionError("unreachable")

    def cells(self) -> Iterator[tuple[int, int, int]]:
        """(rowid, page, offset of the cell's payload size) of every table leaf cell."""
        for page in range(1, self.pages + 1):
            start = (page - 1) * self.page_size
            head = start + (100 if page == 1 else 0)
            if self.data[head] != 13:
                continue
            (count,) = struct.unpack_from(">H", self.data, head + 3)
            for k in range(min(count, self.page_size // 2)):
                (pointer,) = struct.unpack_from(">H", self.data, head + 8 + 2 * k)
                if not 0 < pointer < self.page_size - 4:
                    break
                try:
                    _size, pos = self._varint(self.data, start + pointer)
                    rowid, _ = self._varint(self.data, pos)
                except IndexError:
                    break
                yield rowid, page, start + pointer

    def payload(self, cell: int) -> bytes | None:
        """The payload of the cell at ``cell``; None when it runs past the file's end."""
        size, pos = self._varint(self.data, cell)
        _rowid, pos = self._varint(self.data, pos)
        usable, most = self.usable, self.usable - 35
        if size <= most:
            return bytes(self.data[pos:pos + size])
        least = (usable - 12) * 32 // 255 - 23
        local = least + (size - least) % (usable - 4)
        local = local if local <= most else least
        parts = [bytes(self.data[pos:pos + local])]
        (page,) = struct.unpack_from(">I", self.data, pos + local)
        remaining = size - local
        while remaining > 0:
            if not 1 <= page <= self.pages:
                return None
            start = (page - 1) * self.page_size
            (page,) = struct.unpack_from(">I", self.data, start)
            parts.append(bytes(self.data[start + 4:start + 4 + min(remaining, usable - 4)]))
            remaining -= len(parts[-1])
        return b"".join(parts)

    @classmethod
    def record(cls, payload: bytes) -> list:
        """The column values of a record (NULL -> None, integers, text -> str, blob -> bytes)."""
        header_size, pos = cls._varint(payload, 0)
        types = []
        while pos < header_size:
            serial, pos = cls._varint(payload, pos)
            types.append(serial)
        values, pos = [], header_size
        for serial in types:
            if serial in (0, 8, 9):
                values.append(None if serial == 0 else serial - 8)
            elif serial <= 6:
                width = (0, 1, 2, 3, 4, 6, 8)[serial]
                values.append(int.from_bytes(payload[pos:pos + width], "big", signed=True))
                pos += width
            elif serial == 7:
                values.append(struct.unpack_from(">d", payload, pos)[0])
                pos += 8
            else:
                width = (serial - 12) // 2 if serial % 2 == 0 else (serial - 13) // 2
                raw = payload[pos:pos + width]
                values.append(bytes(raw) if serial % 2 == 0 else raw.decode("utf-8", "replace"))
                pos += width
        return values


def _salvage_sqlite(path: Path, topic: str | None, notes: list[str]):
    """Read a damaged rosbag2 sqlite3 file page by page (:class:`_SqlitePages`): rows of its
    ``topics`` table (id, name, type, serialization_format, ...) and ``messages`` table (id,
    topic_id, timestamp, data) are told apart by their columns."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pages = _SqlitePages(data)
        topics: dict[int, tuple[str, str]] = {}
        candidates: list[tuple[int, int]] = []        # rows that could be messages (4 columns)
        for rowid, _page, cell in pages.cells():
            payload = pages.payload(cell)
            if payload is None:                       # runs into the missing part: lost
                continue
            try:
                row = pages.record(payload)
            except (IndexError, ValueError, struct.error):
                continue
            if len(row) >= 5 and row[0] is None and all(isinstance(v, str) for v in row[1:5]) \
                    and row[3] == "cdr":
                topics[rowid] = (row[1], row[2])
            elif len(row) == 4 and row[0] is None and all(isinstance(v, int) for v in row[1:3]):
                candidates.append((rowid, cell))
        if topic is None:
            for name, msgtype in topics.values():
                yield name, msgtype, None
            return
        wanted = {tid for tid, (name, _) in topics.items() if name == topic}
        msgtype = next((t for name, t in topics.values() if name == topic), "")
        found = 0
        for rowid, cell in sorted(candidates):
            _id, topic_id, timestamp, blob = pages.record(pages.payload(cell))
            if topic_id in wanted and isinstance(blob, bytes):
                found += 1
                yield topic, msgtype, (timestamp, blob)
        last = max((rowid for rowid, _ in candidates), default=0)
        notes.append(f"{path.name} read page by page: {found} messages of {topic} recovered; "
                     f"{last - len(candidates)} messages (of any topic) before the last readable "
                     f"one could not be read, and the messages after it, if any, are lost")
