"""Benchmark group "ros": camera image published -> /emotion received, through ROS 2.

The robot's view of latency: a client node (``aue_edge.ros_nodes.probe.PerceptionProbe``)
publishes 640x480 bgr8 ``sensor_msgs/Image`` frames with 1 or 5 real faces and matches the
perception node's /emotion messages to them by header stamp. Two cases:

- ``ros_round_trip``: one frame in flight at a time: publish, wait for its /emotion (timed by
  pytest-benchmark). The latency of an idle node.
- ``ros_stream_30hz``: frames published at 30 Hz for ``ros_stream_s`` seconds, as a camera does;
  each received /emotion gives one latency (publish -> receive), frames the node dropped
  because it was still busy (its depth-1 queue keeps only the newest) are counted, and the
  achieved rate is recorded. The latency of a loaded node, including waiting in the queue.
- ``ros_stream_30hz_annotated``: the same stream to a second node that also publishes
  ``~/annotated`` (``publish_annotated``) for every frame (``annotated_max_hz`` at its maximum,
  far above the camera rate: the most it can cost; the default 5 Hz draws one frame in six
  at 30 Hz). Against
  ``ros_stream_30hz`` of the same run it gives the cost of the annotated topic; the node's own
  time per annotated image (draw + convert + publish) is recorded from its /diagnostics.

The perception node runs as its own process (``python -m aue_edge.ros_nodes.perception_node``),
as on a robot, on a private ROS domain limited to this machine, with the shared-memory Fast DDS
profile from ``config/fastdds_shm.xml``. Its input QoS is set to reliable so that a frame is
never lost in transport (a best-effort loss would time a timeout, not the node); frames it
drops are then only those its depth-1 queue replaces while it is busy.
"""
from __future__ import annotations

import subprocess
import tempfile
import time

import pytest

GROUP = "ros"
FRAME_TIMEOUT_S = 10.0
CAMERA_RATE_HZ = 30.0
# A limit no camera reaches: every frame is annotated (a limit at the camera rate would skip
# frames that arrive a little early).
ANNOTATE_EVERY_FRAME_HZ = 1000.0

pytestmark = pytest.mark.ros


def _perception_node(bench_config, name: str, *ros_args: str):
    """(probe node, perception node process, node info) on a private ROS domain; the node is
    named ``name`` and publishes under ``/name/`` (two such nodes never share a topic)."""
    try:
        import rclpy
        from rclpy.context import Context

        from aue_edge.ros_nodes.demo import (isolated_ros_env, join_ros_domain,
                                             leave_ros_domain, node_command, stop)
        from aue_edge.ros_nodes.probe import PerceptionProbe
    except ImportError as exc:
        pytest.skip(f"ROS 2 (rclpy) or aue_msgs is not importable ({exc}): the camera-to-"
                    f"/emotion latency was NOT benchmarked (pip install ./aue_msgs)")
    from aue_edge.benchmarks.cases import model_dirs

    env = isolated_ros_env()
    saved = join_ros_domain(env)  # this process joins the domain
    log = tempfile.TemporaryFile(mode="w+")
    topics = {kind: f"/{name}/{kind}" for kind in ("emotion", "action_units", "faces")}
    args = ["--model-dir", str(model_dirs(bench_config)[0]), "--ros-args", "-r",
            f"__node:={name}", "-p", "input_reliability:=reliable",
            "-p", f"image_topic:=/{name}/image", "-p", f"diagnostics_topic:=/{name}/diagnostics",
            *ros_args]
    args += [a for kind, topic in topics.items() for a in ("-p", f"{kind}_topic:={topic}")]
    if bench_config.num_threads is not None:
        args += ["-p", f"num_threads:={bench_config.num_threads}"]
    process = subprocess.Popen(node_command("perception_node", *args), env=env, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    probe = PerceptionProbe(context=context, image_topic=f"/{name}/image", reliable_input=True,
                            reply_topics=topics, diagnostics_topic=f"/{name}/diagnostics",
                            name=f"{name}_probe")
    try:
        ready = probe.spin_until(lambda: process.poll() is not None or (
            probe.image_pub.get_subscription_count() > 0
            and probe.count_publishers(topics["emotion"]) > 0), bench_config.ros_timeout_s)
        if process.poll() is not None or not ready:
            log.seek(0)
            pytest.fail(f"the perception node did not come up within "
                        f"{bench_config.ros_timeout_s:g} s (exit status {process.poll()}); its "
                        f"output:\n{log.read()[-3000:]}", pytrace=False)
        # What the node really runs, from its own /diagnostics (recorded with each case).
        probe.spin_until(lambda: bool(probe.diagnostics), 5.0)
        status = probe.latest_diagnostics() or {}
        node_info = {key: status.get(key, "unknown (no /diagnostics received)")
                     for key in ("backend", "precision", "model_file")}
        yield probe, process, node_info
    finally:
        probe.destroy_node()
        rclpy.shutdown(context=context)
        stop(process, "perception node")
        log.close()
        leave_ros_domain(saved)


@pytest.fixture(scope="module")
def perception(bench_config):
    yield from _perception_node(bench_config, "aue_perception_bench")


@pytest.fixture
def perception_annotated(bench_config, frames, faces):
    """A fresh node per case, warmed up on the case's frame: its /diagnostics (counts since
    start, timings over the last 300 frames) then describe this case alone."""
    for probe, process, node_info in _perception_node(
            bench_config, "aue_perception_bench_annotated", "-p", "publish_annotated:=true",
            "-p", f"annotated_max_hz:={ANNOTATE_EVERY_FRAME_HZ}"):
        if not probe.warm_up(frames[faces], timeout_s=FRAME_TIMEOUT_S):
            pytest.fail(f"no reply from the annotated node within {FRAME_TIMEOUT_S:g} s "
                        f"(exit status {process.poll()})", pytrace=False)
        yield probe, process, node_info


def bench_ros_round_trip(measure, perception, frames, faces, bench_config):
    probe, process, node_info = perception
    frame = frames[faces]

    def round_trip():
        stamp = probe.publish_frame(frame)
        reply = probe.wait_reply("emotion", stamp, timeout_s=FRAME_TIMEOUT_S)
        if reply is None:
            pytest.fail(f"no /emotion reply within {FRAME_TIMEOUT_S:g} s for a {faces}-face "
                        f"frame (perception node exit status {process.poll()})",
                        pytrace=False)
        return reply

    reply = measure(round_trip, group=GROUP, rounds=bench_config.ros_rounds, item_unit="frames",
                    faces=faces, num_threads=bench_config.num_threads, **node_info,
                    transport="sensor_msgs/Image bgr8 640x480, Fast DDS shared memory profile, "
                              "reliable QoS", topic="/emotion")
    assert reply.label, "the /emotion reply carries no label"


def bench_ros_stream_30hz(record_series, perception, frames, faces, bench_config):
    _stream_30hz(record_series, perception, frames, faces, bench_config)


def bench_ros_stream_30hz_annotated(record_series, perception_annotated, frames, faces,
                                    bench_config):
    from sensor_msgs.msg import Image

    probe = perception_annotated[0]
    # A viewer (rviz2, Foxglove) subscribed, so the images really travel.
    received: list = []
    topic = "/aue_perception_bench_annotated/annotated"
    probe.create_subscription(Image, topic, lambda msg: received.append(msg.header.stamp), 10)
    probe.spin_until(lambda: probe.count_publishers(topic) > 0, FRAME_TIMEOUT_S)
    probe.spin_for(0.5)

    def node_stats() -> dict:
        """Annotated images and time per image (draw + convert + publish), from a
        /diagnostics message sent after the stream."""
        probe.diagnostics.clear()
        probe.spin_until(lambda: bool(probe.diagnostics), 3.0)
        status = probe.latest_diagnostics() or {}
        stats = {key: status.get(key, "unknown (no /diagnostics received)") for key in
                 ("annotated_published", "annotated_skipped", "latency_annotate_ms_mean",
                  "latency_callback_ms_mean")}
        return dict(stats, annotated_received=len(received))

    _stream_30hz(record_series, perception_annotated, frames, faces, bench_config, node_stats,
                 annotated_max_hz=ANNOTATE_EVERY_FRAME_HZ)


def _stream_30hz(record_series, perception, frames, faces, bench_config,
                 node_stats=dict, **extra) -> None:
    """Stream ``frames[faces]`` at the camera rate and record each /emotion latency, with
    what ``node_stats()`` reads from the node afterwards."""
    from aue_edge.ros_nodes.probe import stamp_key

    probe, process, node_info = perception
    frame = frames[faces]
    period_s = 1.0 / CAMERA_RATE_HZ
    count = max(int(round(bench_config.ros_stream_s * CAMERA_RATE_HZ)), 2)
    sent: dict[tuple[int, int], float] = {}
    start = time.perf_counter()
    for i in range(count):
        # Replies are processed while waiting for the next camera tick.
        probe.spin_until(lambda: time.perf_counter() >= start + i * period_s, period_s)
        t_sent = time.perf_counter()
        sent[stamp_key(probe.publish_frame(frame))] = t_sent
    last = max(sent)
    probe.spin_until(lambda: last in probe.replies["emotion"], FRAME_TIMEOUT_S)
    stream_s = time.perf_counter() - start
    replies = probe.replies["emotion"]
    latencies_ms = [(replies[key][1] - t_sent) * 1e3 for key, t_sent in sent.items()
                    if key in replies]
    if not latencies_ms:
        pytest.fail(f"no /emotion reply to any of {count} frames streamed at "
                    f"{CAMERA_RATE_HZ:g} Hz (perception node exit status {process.poll()})",
                    pytrace=False)
    record_series(latencies_ms, group=GROUP, item_unit="frames", faces=faces,
                  frames_sent=count, frames_answered=len(latencies_ms),
                  frames_dropped=count - len(latencies_ms),
                  throughput_per_s=round(len(latencies_ms) / stream_s, 2),
                  camera_rate_hz=CAMERA_RATE_HZ, topic="/emotion",
                  num_threads=bench_config.num_threads, **node_info, **node_stats(), **extra)
    assert len(latencies_ms) <= count
