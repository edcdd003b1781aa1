"""The ``main()`` every aue node shares: rclpy init, spin, clean exit on Ctrl-C and SIGTERM.

SIGINT and SIGTERM (Ctrl-C, ``docker stop``, systemd, launch) only ask the node to stop: the
handlers here set a flag, and the spin loop ends after the callback that is running (a frame
being published, a configure loading models) has finished. rclpy's own handlers are not used:
they shut the context down at once, under a running callback, which then fails to publish
("publisher's context is invalid") or reports its configure as failed. The node is then
destroyed (the perception node closes its pipeline there), rclpy shut down, and the process
exits with status 0. A second signal while stopping takes Python's default action. The
console scripts install these handlers before anything heavy is imported
(:mod:`aue_edge.ros_nodes.entry`). A bad parameter or model (an
:class:`~aue_edge.core.errors.AueError` while building the node) prints one line and exits
with status 2, as the ``aue`` command does; so do malformed ROS arguments
(:func:`non_ros_args`).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from aue_edge.core.errors import AueError
from aue_edge.ros_nodes.entry import StopRequest
from aue_edge.ros_nodes.params import rcl_reason


def non_ros_args(program: str, argv: Sequence[str]) -> list[str]:
    """``argv`` without its ROS arguments, for the node's own argparse flags. Malformed ROS
    arguments (``-p image_topic:=``, a missing or unparseable ``--params-file``, a value with
    a space) print one line and exit with status 2, as argparse does for its flags."""
    try:
        return remove_ros_args(list(argv))
    except (rclpy_implementation.RCLInvalidROSArgsError,
            rclpy_implementation.UnknownROSArgsError) as exc:
        print(f"{program}: error: invalid ROS arguments: {rcl_reason(exc)}. Write parameters as "
              f"-p NAME:=VALUE (an empty string as -p NAME:=\"''\"), quote values with spaces, "
              f"and give --params-file an existing YAML file", file=sys.stderr)
        raise SystemExit(2) from None


def run_node(program: str, make_node: Callable[[], Node], args: Sequence[str] | None,
             finished: Callable[[Node], bool] | None = None,
             stop: StopRequest | None = None) -> int:
    """Build a node with ``make_node`` and spin it until a stop signal, shutdown or
    ``finished(node)``. ``stop``: the handlers an entry point installed before the imports
    (:mod:`aue_edge.ros_nodes.entry`); None installs them here."""
    stop = stop or StopRequest()
    rclpy.init(args=None if args is None else list(args),
               signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while (rclpy.ok() and not stop.requested
               and not (finished is not None and finished(node))):
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
        stop.restore()
