"""Declared, described and validated ROS parameters for the aue nodes.

Each node lists its parameters once as :class:`ParamSpec` rows; :func:`declare_parameters` turns
them into ``ParameterDescriptor``s (description, ranges, allowed values, read-only) so
``ros2 param describe`` tells a user what each one means, :func:`read_parameters` reads and
validates them (raising :class:`~aue_edge.core.errors.ConfigError` naming the parameter), and
:func:`reject_invalid_updates` refuses bad values set at run time (``ros2 param set``) with the
same message. Glue only: the meaning of each value belongs to the node or the edge pipeline.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                               InvalidTopicNameException, ParameterUninitializedException)
from rclpy.expand_topic_name import expand_topic_name
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_full_topic_name import validate_full_topic_name

from aue_edge.core.errors import ConfigError

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_UNSET_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER,
                float: Parameter.Type.DOUBLE, str: Parameter.Type.STRING}


def rcl_reason(exc: Exception) -> str:
    """An rcl/rclpy error as one line: its first line without rcl's source locations
    (", at /project/src/...c:352"), which say nothing to a user."""
    reason = re.sub(r", at \S+:\d+", "", str(exc).splitlines()[0])
    return reason.replace(". Error: error not set", "").strip()


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (which fixes its type), meaning and allowed values.

    A type instead of a value as ``default`` (e.g. ``float``) declares a parameter with no
    default: it reads as None unless a params file or the command line sets it (the perception
    node then keeps the pipeline config's value).
    """

    name: str
    default: bool | int | float | str | type
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    read_only: bool = False
    topic: bool = False         # a ROS topic name: checked as rclpy will check it

    @property
    def kind(self) -> type:
        return self.default if isinstance(self.default, type) else type(self.default)

    def descriptor(self) -> ParameterDescriptor:
        kind = self.kind
        descriptor = ParameterDescriptor(name=self.name, type=_TYPES[kind],
                                         description=self.description,
                                         read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if kind is float and (self.min_value is not None or self.max_value is not None):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.min_value if self.min_value is not None else -1e308),
                to_value=float(self.max_value if self.max_value is not None else 1e308),
                step=0.0)]
        elif kind is int and (self.min_value is not None or self.max_value is not None):
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.min_value if self.min_value is not None else -2**63),
                to_value=int(self.max_value if self.max_value is not None else 2**63 - 1),
                step=1)]
        return descriptor

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None."""
        kind = self.kind
        if value is None and isinstance(self.default, type):
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            return (f"parameter '{self.name}' must be a {kind.__name__}, got "
                    f"{type(value).__name__} {value!r}")
        if self.choices and value not in self.choices:
            return (f"parameter '{self.name}' is {value!r}; expected one of "
                    f"{', '.join(self.choices)}")
        if self.min_value is not None and value < self.min_value:
            return f"parameter '{self.name}' is {value}; expected >= {self.min_value}"
        if self.max_value is not None and value > self.max_value:
            return f"parameter '{self.name}' is {value}; expected <= {self.max_value}"
        if self.topic:
            try:
                validate_full_topic_name(expand_topic_name(value, "node", "/"))
            except (InvalidTopicNameException, ValueError) as exc:
                return (f"parameter '{self.name}' is {value!r}, not a valid ROS topic name: "
                        f"{rcl_reason(exc).split(': ', 1)[-1]}")
        return None


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> None:
    """Declare every spec; an override of the wrong type or out of range is a ConfigError.
    An override naming no parameter of the node (a misspelt ``-p`` or params-file entry, which
    rclpy ignores) is warned about with the known names."""
    known = {spec.name for spec in specs}
    # rclpy keeps every override given for this node (command line, params files) here and
    # ignores those never declared; use_sim_time and qos_overrides.* are rclpy's own.
    unknown = sorted(name for name in getattr(node, "_parameter_overrides", {})
                     if name not in known and name != "use_sim_time"
                     and not name.startswith("qos_overrides."))
    if unknown:
        node.get_logger().warning(
            f"unknown parameter{'s' * (len(unknown) > 1)} "
            f"{', '.join(repr(n) for n in unknown)} ignored (misspelt?); this node's "
            f"parameters: {', '.join(sorted(known))}")
    for spec in specs:
        try:
            default = (_UNSET_TYPES[spec.kind] if isinstance(spec.default, type)
                       else spec.default)
            node.declare_parameter(spec.name, default, spec.descriptor())
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ConfigError(f"node '{node.get_name()}': parameter '{spec.name}': {exc}. "
                              f"{spec.description}") from None


def read_parameters(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Current values by name, validated against the specs (ConfigError lists every problem).

    A parameter declared without a default and never set reads as None.
    """
    values, problems = {}, []
    for spec in specs:
        try:
            value = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            value = None
        if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        problem = spec.problem(value)
        if problem:
            problems.append(problem)
        values[spec.name] = value
    if problems:
        raise ConfigError(f"node '{node.get_name()}': " + "; ".join(problems))
    return values


def reject_invalid_updates(node: Node, specs: Sequence[ParamSpec]) -> None:
    """Refuse run-time parameter changes that break a spec, with the reason in the reply."""
    by_name = {spec.name: spec for spec in specs}

    def check(parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            problem = spec.problem(parameter.value) if spec is not None else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check)
