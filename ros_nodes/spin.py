"""The ``main()`` every aue node shares: rclpy init, spin, clean exit on Ctrl-C and SIGTERM.

rclpy's default signal handlers turn SIGINT and SIGTERM into a context shutdown; the loop then
ends (``ExternalShutdownException`` or ``rclpy.ok()`` false), the node is destroyed (the
perception node closes its pipeline there) and the process exits with status 0. A bad
parameter or model (an :class:`~aue_edge.edge.errors.AueError` while building the node) prints
one line and exits with status 2, as the ``aue`` command does.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from aue_edge.edge.errors import AueError


def run_node(program: str, make_node: Callable[[], Node], args: Sequence[str] | None,
             finished: Callable[[Node], bool] | None = None) -> int:
    """Build a node with ``make_node`` and spin it until shutdown or ``finished(node)``."""
    rclpy.init(args=None if args is None else list(args))
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not (finished is not None and finished(node)):
            executor.spin_once(timeout_sec=0.1)
        return 0
    except AueError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
