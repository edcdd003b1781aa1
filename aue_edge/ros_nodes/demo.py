"""``make demo`` (ROS part): image source -> perception -> emotion listener, then stop.

Starts the three nodes as separate processes, as on a robot, on a private ROS domain limited to
this machine (so a demo never talks to a robot on the same network), with the shared-memory
Fast DDS profile from ``config/fastdds_shm.xml``. The image source plays the bundled sample clip
once; the listener prints every /emotion message and each change; when the clip has ended the
demo stops the perception node and the listener with SIGINT (their clean-shutdown path) and
exits with status 0 only if every process exited cleanly and /emotion messages arrived.

    python -m aue_edge.ros_nodes.demo [--source VIDEO|DIR] [--rate-hz 10] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from aue_edge.core.errors import ConfigError
from aue_edge.core.paths import DEMO_CLIP, share_file

STOP_TIMEOUT_S = 15.0


def isolated_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Environment for a private, machine-local ROS graph with the shared-memory profile."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 100) if domain_id is None else domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share_file("config/fastdds_shm.xml"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: What makes a process part of an isolated graph (set by :func:`isolated_ros_env`).
ROS_ENV_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                "FASTDDS_DEFAULT_PROFILES_FILE")


def join_ros_domain(env: dict[str, str]) -> dict[str, str | None]:
    """This process joins ``env``'s graph (e.g. a probe talking to a node started with it);
    returns what :func:`leave_ros_domain` restores."""
    saved = {key: os.environ.get(key) for key in ROS_ENV_KEYS}
    os.environ.update({key: env[key] for key in ROS_ENV_KEYS})
    return saved


def leave_ros_domain(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def node_command(module: str, *args: str) -> list[str]:
    """The command that starts node ``module`` as ``ros2 run`` does (stop signals handled from
    the first instant: :mod:`aue_edge.ros_nodes.entry`)."""
    return [sys.executable, "-m", "aue_edge.ros_nodes.entry", module, *args]


def stop(process: subprocess.Popen, name: str) -> int:
    """SIGINT (Ctrl-C), then wait; kill only if the node ignores it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"demo: {name} did not stop within {STOP_TIMEOUT_S:g} s of SIGINT; killing it",
                  file=sys.stderr)
            process.kill()
            process.wait()
    return process.returncode


def demo_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aue-ros-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(DEMO_CLIP),
                        help="video file or image folder (default: the bundled sample clip)")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="frames per second")
    parser.add_argument("--model-dir", help="model folder (default: the shipped model)")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: random 1-100)")
    args = parser.parse_args(None if argv is None else list(argv))
    if not Path(args.source).exists():
        print(f"demo: error: {args.source} does not exist; the sample clip ships in "
              f"aue_edge/edge/samples/ (or pass --source VIDEO|DIR)", file=sys.stderr)
        return 2
    try:
        env = isolated_ros_env(args.domain_id)
    except ConfigError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"demo: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, localhost only, Fast DDS profile "
          f"{env['FASTDDS_DEFAULT_PROFILES_FILE']}", flush=True)
    perception_args = ["--ros-args", "-p", "num_threads:=1"]
    if args.model_dir:
        perception_args = ["--model-dir", args.model_dir, *perception_args]
    listener = subprocess.Popen(node_command("emotion_listener", "--print-all"), env=env,
                                stdout=subprocess.PIPE, text=True)
    emotion_lines = []

    def echo_listener() -> None:
        for line in listener.stdout:
            print(line, end="", flush=True)
            if line.startswith("/emotion"):
                emotion_lines.append(line)

    echo = threading.Thread(target=echo_listener, daemon=True)
    echo.start()
    perception = subprocess.Popen(node_command("perception_node", *perception_args), env=env)
    source = subprocess.Popen(node_command(
        "image_source", "--source", args.source, "--rate-hz", str(args.rate_hz),
        "--wait-for-subscribers", "1", "--wait-timeout-s", "120"), env=env)
    codes = {}
    try:
        codes["image_source"] = source.wait()
        # The last frames are still in the pipeline: give them a moment to come out.
        time.sleep(1.5)
    except KeyboardInterrupt:
        codes["image_source"] = stop(source, "image_source")
    finally:
        codes["perception"] = stop(perception, "perception")
        codes["emotion_listener"] = stop(listener, "emotion_listener")
        echo.join(timeout=5.0)
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        print(f"demo: failed: exit status {failed}", file=sys.stderr)
        return 1
    if not emotion_lines:
        print("demo: failed: the listener received no /emotion message (no face found in "
              f"{args.source}?)", file=sys.stderr)
        return 1
    print(f"demo: done: {len(emotion_lines)} /emotion messages; image source -> perception -> "
          f"listener ran and stopped cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(demo_main())
