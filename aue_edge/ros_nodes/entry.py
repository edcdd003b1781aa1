"""Entry points of the aue ROS 2 nodes: stop signals are caught before anything heavy loads.

Importing rclpy, the messages and ONNX Runtime takes a few tenths of a second; a Ctrl-C or
SIGTERM (launch, systemd, ``docker stop``) in that time would end the process with a
KeyboardInterrupt traceback. The console scripts (``aue-perception``, ``aue-image-source``,
``aue-emotion-listener``) and ``ros2 run aue_edge NODE`` (``aue_edge/ros_nodes/bin``, which runs
``python -m aue_edge.ros_nodes.entry NODE``) start here: :class:`StopRequest` takes over SIGINT
and SIGTERM first, with nothing but the standard library imported, then the node module is
imported and its ``main`` runs with it (:func:`aue_edge.ros_nodes.spin.run_node`).
"""
from __future__ import annotations

import importlib
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
NODE_MODULES = ("perception_node", "image_source", "emotion_listener")


class StopRequest:
    """Set by the first SIGINT / SIGTERM; restores the previous actions for a second one."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def _on_signal(self, signum: int, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def run(module: str, argv: list[str] | None = None) -> int:
    """Install the stop handlers, then import ``aue_edge.ros_nodes.<module>`` and run it."""
    stop = StopRequest()
    node_main = importlib.import_module(f"aue_edge.ros_nodes.{module}").main
    if stop.requested:  # stopped while importing: nothing started yet
        return 0
    return node_main(argv, stop=stop)


def perception() -> int:
    return run("perception_node")


def image_source() -> int:
    return run("image_source")


def emotion_listener() -> int:
    return run("emotion_listener")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
        print(f"usage: python -m aue_edge.ros_nodes.entry {{{','.join(NODE_MODULES)}}} ARGS...",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))
