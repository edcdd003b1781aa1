"""``aue bench --soak MINUTES``: the ROS 2 perception node under a camera's load for minutes.

Where the latency benchmarks time single frames, the soak checks what a robot relies on over
time: that the node keeps answering, that latency and memory stay flat, that nothing piles up.
The perception node runs as its own process with its shipped defaults (best-effort input,
keep-last 1), as on a robot, on a private ROS domain limited to this machine with the
shared-memory Fast DDS profile (``config/fastdds_shm.xml``). A client
(:class:`~aue_edge.ros_nodes.probe.PerceptionProbe`) publishes 640x480 bgr8 frames at 30 Hz,
switching every :data:`SCENE_S` seconds between the 1-face and the 5-face frame of the latency
benchmarks, and matches each /faces reply to its frame by header stamp.

Recorded: per minute, frames published and answered and the publish -> /faces latency p50 / p99
(for 1 and 5 faces); once per second, the node's resident memory (``/proc/PID/statm``), the
frames in flight (published after the newest answered frame and younger than
:data:`REPLY_TIMEOUT_S`: the queue depth the robot sees; a backlog would grow here) and the
node's own /diagnostics counters. A frame that is not answered (replaced in the node's depth-1
queue while it was busy, or lost by best-effort transport) counts as not answered; the node
answers in order, so a frame older than an answered one will not be. Written:
``OUT/NAME.json``, ``OUT/NAME.png`` and the node's log ``OUT/NAME.node.log``.

Exit status 1 when the node exits during the soak (a crash), answers nothing for
:data:`STALL_S` seconds, or does not stop cleanly (status 0) on SIGINT at the end.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aue_edge.core.errors import PlotsUnavailableError

CAMERA_RATE_HZ = 30.0
SCENE_S = 5.0            # the camera's view alternates between 1 and 5 faces this often
REPLY_TIMEOUT_S = 2.0    # a frame not answered by then is counted as not answered
STALL_S = 15.0           # no reply at all for this long: the node is stuck
SAMPLE_PERIOD_S = 1.0
START_TIMEOUT_S = 120.0
FACE_COUNTS = (1, 5)


@dataclass
class MinuteStats:
    """Frames of one minute of the soak (by publish time), per face count."""

    published: dict[int, int] = field(default_factory=lambda: dict.fromkeys(FACE_COUNTS, 0))
    latencies_ms: dict[int, list[float]] = field(
        default_factory=lambda: {n: [] for n in FACE_COUNTS})

    def row(self, minute: int) -> dict:
        def percentiles(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"p50_ms": None, "p99_ms": None}
            return {"p50_ms": round(float(np.percentile(values, 50)), 2),
                    "p99_ms": round(float(np.percentile(values, 99)), 2)}

        every = [v for n in FACE_COUNTS for v in self.latencies_ms[n]]
        row = {"minute": minute + 1, "published": sum(self.published.values()),
               "answered": len(every), **percentiles(every)}
        for n in FACE_COUNTS:
            row[f"{n}face"] = {"published": self.published[n],
                               "answered": len(self.latencies_ms[n]),
                               **percentiles(self.latencies_ms[n])}
        return row


def _latest_values(probe) -> dict[str, str]:
    status = probe.latest_diagnostics() or {}
    return {key: status[key] for key in ("frames_received", "frames_processed", "frames_dropped",
                                         "frames_rejected", "frames_failed", "fps")
            if key in status}


def _collect(probe, pending: dict, minutes_stats: list[MinuteStats]) -> int:
    """Match the /faces replies received so far to their frames (latency recorded under the
    frame's minute and face count), forget frames older than :data:`REPLY_TIMEOUT_S` (not
    answered) and every other reply; returns how many frames were answered."""
    matched, newest_answered = 0, None
    for key, (_msg, t_received) in probe.replies["faces"].items():
        sent = pending.pop(key, None)
        if sent is not None:
            t_sent, faces, minute = sent
            minutes_stats[minute].latencies_ms[faces].append((t_received - t_sent) * 1e3)
            matched += 1
            newest_answered = max(t_sent, newest_answered or t_sent)
    for replies in probe.replies.values():
        replies.clear()     # bounded memory over a long soak
    now = time.perf_counter()
    # The node answers in order: a frame older than an answered one was skipped (replaced in
    # its depth-1 queue or lost in transport), so what stays pending is what waits.
    for key in [k for k, (t_sent, _f, _m) in pending.items()
                if now - t_sent > REPLY_TIMEOUT_S
                or (newest_answered is not None and t_sent < newest_answered)]:
        del pending[key]
    return matched


def run_soak(minutes: float, out_dir: Path, name: str, model_dir: str | None = None,
             num_threads: int | None = None, face_image: str | None = None,
             command: str = "") -> int:
    """Run the soak, write ``NAME.json`` and ``NAME.png`` into ``out_dir``; 0, or 1 on a crash."""
    import rclpy
    from rclpy.context import Context

    from aue_edge.benchmarks import scenes
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH, YuNetDetector
    from aue_edge.ros_nodes.demo import (isolated_ros_env, join_ros_domain, leave_ros_domain,
                                         node_command, stop)
    from aue_edge.ros_nodes.diagnostics import resident_memory_mib
    from aue_edge.ros_nodes.probe import PerceptionProbe, stamp_key

    photo = scenes.load_face_image(face_image) if face_image else scenes.astronaut_bgr()
    with YuNetDetector(backend=OrtBackend(DEFAULT_MODEL_PATH, num_threads=1)) as detector:
        frames = scenes.benchmark_frames(photo, detector)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{name}.node.log"
    args = ["--ros-args"]
    if model_dir:
        args += ["-p", f"model_dir:={Path(model_dir).resolve()}"]
    if num_threads is not None:
        args += ["-p", f"num_threads:={num_threads}"]
    env = isolated_ros_env()
    saved = join_ros_domain(env)  # the probe joins the domain
    log = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(node_command("perception_node", *args), env=env, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    probe = PerceptionProbe(context=context)
    minutes_stats: list[MinuteStats] = []
    samples: list[dict] = []
    failure = None
    published = answered = 0
    try:
        if not (probe.wait_for_node(START_TIMEOUT_S)
                and probe.warm_up(frames[1], timeout_s=START_TIMEOUT_S)):
            failure = (f"the perception node did not come up within {START_TIMEOUT_S:g} s "
                       f"(exit status {process.poll()})")
        else:
            probe.replies = {kind: {} for kind in probe.replies}
            pending: dict = {}      # stamp -> (publish time, faces, minute)
            period_s = 1.0 / CAMERA_RATE_HZ
            t_start = time.monotonic()
            t_next = t_start
            t_sample = t_start
            last_answer = t_start
            while (now := time.monotonic()) - t_start < minutes * 60.0:
                if process.poll() is not None:
                    failure = (f"the perception node exited with status {process.returncode} "
                               f"after {now - t_start:.0f} s of the soak")
                    break
                if now - last_answer > STALL_S:
                    failure = f"no reply for {STALL_S:g} s after {now - t_start:.0f} s"
                    break
                minute = int((now - t_start) // 60)
                while len(minutes_stats) <= minute:
                    minutes_stats.append(MinuteStats())
                faces = FACE_COUNTS[int((now - t_start) // SCENE_S) % 2]
                stamp = probe.publish_frame(frames[faces])
                pending[stamp_key(stamp)] = (time.perf_counter(), faces, minute)
                minutes_stats[minute].published[faces] += 1
                published += 1
                t_next = max(t_next + period_s, now)   # never publish a burst to catch up
                probe.spin_until(lambda: time.monotonic() >= t_next, period_s)
                matched = _collect(probe, pending, minutes_stats)
                answered += matched
                if matched:
                    last_answer = time.monotonic()
                if time.monotonic() >= t_sample:
                    samples.append({"t_s": round(time.monotonic() - t_start, 2),
                                    "rss_mib": resident_memory_mib(process.pid),
                                    "in_flight": len(pending), **_latest_values(probe)})
                    probe.diagnostics.clear()
                    t_sample += SAMPLE_PERIOD_S
            # The last frames: their replies or their timeout.
            deadline = time.monotonic() + REPLY_TIMEOUT_S + 0.5
            while pending and time.monotonic() < deadline:
                probe.spin_for(0.05)
                answered += _collect(probe, pending, minutes_stats)
    finally:
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        code = stop(process, "perception node")
        log.close()
        leave_ros_domain(saved)
    if failure is None and code != 0:
        failure = f"the perception node did not stop cleanly on SIGINT (exit status {code})"
    doc = _document(minutes, name, command, minutes_stats, samples, failure, published,
                    answered, str(log_path))
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    try:
        plot_line = f"plot: {plot_soak(doc, out_dir / f'{name}.png')}"
    except PlotsUnavailableError as exc:   # matplotlib is optional on a robot
        plot_line = f"plot: not drawn: {exc}"
    summary = doc["summary"]
    print(f"aue bench --soak: {summary['answered']} of {summary['published']} frames answered "
          f"in {summary['minutes']:g} min; latency p50 {summary['p50_ms']} ms, p99 "
          f"{summary['p99_ms']} ms; node RSS {summary['rss_mib_first']} -> "
          f"{summary['rss_mib_last']} MiB; frames in flight at most {summary['in_flight_max']}")
    print(f"results: {json_path}\n{plot_line}\nnode log: {log_path}")
    if failure:
        print(f"aue bench --soak: error: {failure}; see {log_path}", file=sys.stderr)
        return 1
    return 0


def _document(minutes: float, name: str, command: str, minutes_stats: list[MinuteStats],
              samples: list[dict], failure: str | None, published: int, answered: int,
              node_log: str) -> dict:
    from aue_edge.benchmarks.machine import collect_machine_record

    latencies = {n: [v for m in minutes_stats for v in m.latencies_ms[n]] for n in FACE_COUNTS}
    every = [v for n in FACE_COUNTS for v in latencies[n]]
    rss = [s["rss_mib"] for s in samples if s["rss_mib"] is not None]

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 2) if values else None

    summary = {
        "minutes": minutes, "published": published, "answered": answered,
        "answered_fraction": round(answered / published, 4) if published else None,
        "p50_ms": pct(every, 50), "p99_ms": pct(every, 99),
        **{f"{n}face_p50_ms": pct(latencies[n], 50) for n in FACE_COUNTS},
        **{f"{n}face_p99_ms": pct(latencies[n], 99) for n in FACE_COUNTS},
        "rss_mib_first": round(rss[0], 1) if rss else None,
        "rss_mib_last": round(rss[-1], 1) if rss else None,
        "rss_mib_max": round(max(rss), 1) if rss else None,
        "in_flight_max": max((s["in_flight"] for s in samples), default=0),
        "node_counters": {k: v for k, v in (samples[-1] if samples else {}).items()
                          if k.startswith("frames_")},
        "failure": failure,
    }
    return {"kind": "aue soak", "name": name, "command": command,
            "camera": f"640x480 bgr8 at {CAMERA_RATE_HZ:g} Hz, 1 and 5 faces alternating every "
                      f"{SCENE_S:g} s; node defaults (best-effort input, keep-last 1); Fast DDS "
                      f"shared-memory profile",
            "reply_timeout_s": REPLY_TIMEOUT_S, "summary": summary,
            "per_minute": [m.row(i) for i, m in enumerate(minutes_stats)],
            "samples": samples, "node_log": node_log, "machine": collect_machine_record()}


def plot_soak(doc: dict, path: Path) -> Path:
    """Latency p50/p99 and frames answered per minute; node RSS and frames in flight over
    time."""
    from aue_edge.core.plotting import pyplot, save_figure

    plt = pyplot()

    rows, samples, summary = doc["per_minute"], doc["samples"], doc["summary"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), dpi=100)
    minute = [r["minute"] for r in rows]
    ax = axes[0, 0]
    for n, colour in zip(FACE_COUNTS, ("tab:blue", "tab:orange")):
        for q, style in (("p50_ms", "-o"), ("p99_ms", "--^")):
            values = [np.nan if r[f"{n}face"][q] is None else r[f"{n}face"][q] for r in rows]
            ax.plot(minute, values, style, color=colour, label=f"{n} face{'s' * (n > 1)} "
                                                               f"{q[:3]}")
    ax.set(title="publish -> /faces latency per minute", xlabel="minute", ylabel="ms")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.bar(minute, [r["published"] for r in rows], color="lightgray", label="published")
    ax.bar(minute, [r["answered"] for r in rows], color="tab:green", label="answered")
    ax.set(title="frames per minute", xlabel="minute", ylabel="frames")
    ax.legend(fontsize=8)
    t_min = [s["t_s"] / 60 for s in samples]
    ax = axes[1, 0]
    ax.plot(t_min, [np.nan if s["rss_mib"] is None else s["rss_mib"] for s in samples],
            color="tab:purple")
    ax.set(title="perception node resident memory", xlabel="minute", ylabel="MiB")
    ax = axes[1, 1]
    ax.plot(t_min, [s["in_flight"] for s in samples], color="tab:red")
    ax.set(title="frames in flight (published after the newest answered one)",
           xlabel="minute", ylabel="frames")
    status = "FAILED: " + summary["failure"] if summary["failure"] else "no crash"
    fig.suptitle(f"soak {summary['minutes']:g} min: {summary['answered']} of "
                 f"{summary['published']} frames answered, p50 {summary['p50_ms']} ms, p99 "
                 f"{summary['p99_ms']} ms; {status}", fontsize=10)
    return save_figure(fig, path)
