"""Starting the product's ROS 2 nodes as real processes in the tests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_node(module: str, args: list, env: dict, log_path: Path,
               stdout=None) -> subprocess.Popen:
    """``python -m aue_edge.ros_nodes.<module> ARGS`` with ``env``, its output in ``log_path``."""
    log = open(log_path, "w", encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", f"aue_edge.ros_nodes.{module}", *args],
                            env=env, stdout=stdout or log, stderr=log, text=True)
