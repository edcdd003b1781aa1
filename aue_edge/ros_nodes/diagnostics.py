"""Health counters of the perception node and their /diagnostics message.

Sits beside the perception node: every received, rejected, dropped and processed frame is
counted here, and once per period the node publishes a ``diagnostic_msgs/DiagnosticArray`` built
from a snapshot (fps, per-stage latency, camera-to-publish latency, dropped and rejected
frames, the last rejection reason, backend, precision, model, resident memory). Written without
``diagnostic_updater`` (not on PyPI), in the message layout it produces, so
``rqt_robot_monitor`` and ``diagnostic_aggregator`` read it as usual. No ROS graph is needed to
use the counters: they are plain Python.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_mib(pid: int | str = "self") -> float | None:
    """Current resident set size of a process (this one by default; Linux /proc), or None
    elsewhere or when the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES / 2**20
    except (OSError, ValueError, IndexError):
        return None


FASTDDS_DEFAULT_SHM_SEGMENT_BYTES = 512 * 1024   # Fast DDS's built-in shared-memory transport


def shm_segment_bytes(environ=os.environ) -> tuple[int, str] | None:
    """(bytes, where from) of the Fast DDS shared-memory segment this process uses: the
    largest ``segment_size`` of an SHM transport in ``FASTDDS_DEFAULT_PROFILES_FILE``, else
    Fast DDS's built-in 512 KiB. None for another middleware or an unreadable profile."""
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return None
    profile = environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if not profile:
        return FASTDDS_DEFAULT_SHM_SEGMENT_BYTES, "Fast DDS's built-in shared-memory transport"
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(profile).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    sizes = [int(d.findtext("{*}segment_size") or FASTDDS_DEFAULT_SHM_SEGMENT_BYTES)
             for d in root.findall(".//{*}transport_descriptor") if d.findtext("{*}type") == "SHM"]
    return (max(sizes), f"the Fast DDS profile {profile}") if sizes else None


def drop_reason(frame_bytes: int, segment: tuple[int, str] | None) -> str:
    """Why frames went missing: too large for the shared-memory segment (then they travel over
    UDP in fragments, and best-effort input loses a frame with any one fragment), else replaced
    in the depth-1 input queue while the pipeline was busy."""
    if segment is not None and frame_bytes > segment[0]:
        return (f"frames of {frame_bytes / 1e6:.1f} MB do not fit the "
                f"{segment[0] / 2**20:g} MiB shared-memory segment of {segment[1]} (if the "
                f"camera's process uses it too): they go over UDP in fragments and best-effort "
                f"input loses a frame with any one of them. Give every process of the set "
                f"config/fastdds_shm.xml (sized for 4K) or a larger segment_size, or set "
                f"input_reliability:=reliable")
    return ("the camera publishes faster than the pipeline runs; the node keeps the newest "
            "frame. Lower the camera rate or use a faster backend to process every frame")


@dataclass
class PerceptionStats:
    """Counters since start plus a window of recent per-frame timings (bounded memory)."""

    window_frames: int = 300
    received: int = 0
    processed: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    faces_seen: int = 0
    annotated_published: int = 0
    annotated_skipped: int = 0
    last_rejection: str = ""
    last_failure: str = ""
    last_frame_bytes: int = 0
    _rejected_in_period: int = 0
    _failed_in_period: int = 0
    _received_in_period: int = 0
    _dropped_in_period: int = 0
    _last_sequence: dict = field(default_factory=dict)
    _processed_at_s: deque = field(default_factory=deque)
    _timings_ms: dict = field(default_factory=dict)

    def on_received(self, publisher_key: object | None, sequence_number: int | None,
                    frame_bytes: int = 0) -> None:
        """Count a frame (of ``frame_bytes`` on the wire); a gap in its publisher's sequence
        numbers counts as dropped frames.

        The middleware numbers every sample a publisher sends: with the depth-1 keep-last
        input queue a frame that arrives while the pipeline is busy replaces the waiting one,
        and DDS may lose frames under best-effort QoS. Both show up as gaps here.
        """
        self.received += 1
        self._received_in_period += 1
        self.last_frame_bytes = frame_bytes
        if publisher_key is None or sequence_number is None:
            return
        last = self._last_sequence.get(publisher_key)
        if last is not None and sequence_number > last + 1:
            self.dropped += sequence_number - last - 1
            self._dropped_in_period += sequence_number - last - 1
        # A publisher that restarts begins again at 1: take its new numbering as it comes.
        self._last_sequence[publisher_key] = sequence_number
        if len(self._last_sequence) > 64:
            # Bounded: forget the oldest publishers (a long run can see many camera restarts).
            self._last_sequence.pop(next(iter(self._last_sequence)))

    def on_rejected(self, reason: str) -> None:
        self.rejected += 1
        self._rejected_in_period += 1
        self.last_rejection = reason

    def on_failed(self, reason: str) -> None:
        """A frame whose inference gave no usable output (NaN / inf): no result for it."""
        self.failed += 1
        self._failed_in_period += 1
        self.last_failure = reason

    def on_annotated(self, published: bool) -> None:
        """An ~/annotated image published, or skipped by the node's rate limit."""
        if published:
            self.annotated_published += 1
        else:
            self.annotated_skipped += 1

    def on_processed(self, now_s: float, num_faces: int, timings_ms: dict[str, float]) -> None:
        self.processed += 1
        self.faces_seen += num_faces
        self._processed_at_s.append(now_s)
        while len(self._processed_at_s) > self.window_frames:
            self._processed_at_s.popleft()
        for stage, value_ms in timings_ms.items():
            window = self._timings_ms.setdefault(stage, deque(maxlen=self.window_frames))
            window.append(float(value_ms))

    def fps(self, now_s: float, window_s: float = 5.0) -> float:
        """Processed frames per second over the last ``window_s`` seconds."""
        recent = [t for t in self._processed_at_s if now_s - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def latency_summary(self) -> dict[str, tuple[float, float, float]]:
        """stage -> (mean, p50, max) in milliseconds over the recent window."""
        out = {}
        for stage, window in self._timings_ms.items():
            if window:
                values = np.fromiter(window, dtype=np.float64)
                out[stage] = (float(values.mean()), float(np.median(values)),
                              float(values.max()))
        return out

    def end_period(self) -> PeriodCounts:
        """What happened since the last call; starts a new diagnostics period."""
        counts = PeriodCounts(self._received_in_period, self._rejected_in_period,
                              self._dropped_in_period, self._failed_in_period)
        self._received_in_period = self._rejected_in_period = self._dropped_in_period = 0
        self._failed_in_period = 0
        return counts


@dataclass(frozen=True)
class PeriodCounts:
    """Frames received, rejected (bad input), dropped (stale) and failed (inference gave
    NaN / inf) in one diagnostics period."""

    received: int
    rejected: int
    dropped: int
    failed: int


def diagnostics_msg(stats: PerceptionStats, period: PeriodCounts, stamp: Time, now_s: float,
                    name: str, hardware_id: str, state: str, info: dict[str, str],
                    image_topic: str) -> DiagnosticArray:
    """One DiagnosticStatus for the node; level ERROR when inference failed on a frame of the
    period, WARN when the period had bad or no frames.

    Dropped frames alone stay OK (a camera faster than the pipeline is normal, the node then
    works on the newest frame) but are named in the message; the node adds why
    (:func:`drop_reason`) to ``info``.
    """
    if state != "active":
        level, message = DiagnosticStatus.OK, f"{state}: not subscribed to {image_topic}"
    elif period.failed:
        level = DiagnosticStatus.ERROR
        message = (f"inference failed on {period.failed} of {period.received} frames (no "
                   f"result published): {stats.last_failure}")
    elif period.rejected:
        level = DiagnosticStatus.WARN
        message = (f"rejected {period.rejected} of {period.received} frames: "
                   f"{stats.last_rejection}")
    elif period.received == 0:
        level, message = DiagnosticStatus.WARN, f"no images received on {image_topic}"
    else:
        level, message = DiagnosticStatus.OK, "processing"
    if state == "active" and period.dropped:
        message += f" (dropped {period.dropped} frames)"
    values = {
        "state": state,
        "fps": f"{stats.fps(now_s):.2f}",
        "frames_received": str(stats.received),
        "frames_processed": str(stats.processed),
        "frames_dropped": str(stats.dropped),
        "frames_rejected": str(stats.rejected),
        "frames_failed": str(stats.failed),
        "faces_seen": str(stats.faces_seen),
        "annotated_published": str(stats.annotated_published),
        "annotated_skipped": str(stats.annotated_skipped),
        "last_rejection": stats.last_rejection,
        "last_failure": stats.last_failure,
    }
    for stage, (mean_ms, p50_ms, max_ms) in stats.latency_summary().items():
        values[f"latency_{stage}_ms_mean"] = f"{mean_ms:.2f}"
        values[f"latency_{stage}_ms_p50"] = f"{p50_ms:.2f}"
        values[f"latency_{stage}_ms_max"] = f"{max_ms:.2f}"
    rss_mib = resident_memory_mib()
    if rss_mib is not None:
        values["resident_memory_mib"] = f"{rss_mib:.1f}"
    values.update(info)
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
