"""Reading YAML and JSON files (configs, sidecars, benchmark runs) with errors that name the file.

Every stage loads such files: the pipeline and benchmark configs, the training and calibration
configs, the engine sidecar, benchmark runs. They all fail the same ways (no such file, not
UTF-8, not parseable), so the checks and the messages live here once.

The five configs (pipeline, calibration, AUE-CRL training, AU-detector training, benchmarks)
are frozen dataclasses, and :func:`load_dataclass` is their one loader: it checks every value
against the field's annotation (nested dataclasses, ``X | None`` / ``Optional``, lists and
tuples, ``dict``, ``Literal``; an integer is not a bool, a number is not a string), rejects
unknown keys with the closest known one, and names ``file:line`` (from
:func:`read_yaml_with_lines`) and the dotted field in every message. No torch; PyYAML is
imported on first use.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import difflib
import functools
import json
import sys
import typing
from pathlib import Path
from typing import Any

from aue_edge.core.errors import AueError, ConfigError


def _read_text(path: Path, what: str, hint: str, fmt: str, error: type[AueError]) -> str:
    if not path.is_file():
        raise error(f"{what} {path} does not exist" + (f"; {hint}" if hint else ""))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not valid {fmt} (UTF-8 text expected): {exc}") from None


def read_yaml_with_lines(path: str | Path, what: str, hint: str = "",
                         error: type[AueError] = ConfigError) -> tuple[Any, dict[str, int]]:
    """The parsed YAML file and the 1-based line of each key (for error messages), by dotted
    path: ``backend``, ``stage1.epochs``, ``lp_net.stages[1].lr_stem``.

    ``what`` names the file in messages ("pipeline config"); ``hint`` says what to do when it
    does not exist. An empty file parses to None. Raises ``error`` (a typed AueError).
    """
    import yaml

    path = Path(path)
    text = _read_text(path, what, hint, "YAML", error)
    # One parse gives both the node tree (key lines) and the data, as yaml.safe_load does.
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML (UTF-8 text expected): {exc}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    _key_lines(node, "", lines)
    return data, lines


def _key_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines.setdefault(path, key.start_mark.line + 1)
                _key_lines(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}[{index}]"
            lines.setdefault(path, item.start_mark.line + 1)
            _key_lines(item, path, lines)


def read_yaml(path: str | Path, what: str, hint: str = "",
              error: type[AueError] = ConfigError) -> Any:
    """The parsed YAML file (None when empty); see :func:`read_yaml_with_lines`."""
    return read_yaml_with_lines(path, what, hint, error)[0]


def read_json(path: str | Path, what: str, hint: str = "",
              error: type[AueError] = ConfigError) -> Any:
    """The parsed JSON file; ``what``, ``hint`` and ``error`` as for :func:`read_yaml`."""
    path = Path(path)
    text = _read_text(path, what, hint, "JSON", error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON (UTF-8 text expected): {exc}") from None


def load_dataclass(cls: type, data: Any, where: str, lines: dict[str, int] | None = None,
                   overridden: frozenset[str] = frozenset(), prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from ``data`` (parsed YAML/JSON), every value checked
    against its field's annotation; raises one :class:`ConfigError` listing every problem.

    ``where`` names the source (a file path, "calibration config x.yaml"); ``lines`` maps dotted
    key paths to lines of that file (:func:`read_yaml_with_lines`), so messages say
    ``where:line: field 'stage1.epochs': expected an integer, found 'ten'``; keys in
    ``overridden`` came from flags or parameters (messages say "override" instead of a line);
    ``prefix`` is the dotted path of ``data`` inside the file (a section loaded on its own).
    YAML lists become the tuples a frozen dataclass holds, integers become floats where a float
    is declared, a missing or empty section gets its defaults. After the types, the dataclass
    validates itself: a :class:`ConfigError` it raises is prefixed with ``where``; one with a
    ``problems() -> [(field, message)]`` method gets each problem on its own line.
    """
    loader = _Loader(where, lines or {}, overridden)
    result = loader.dataclass(cls, data, prefix)
    if loader.problems:
        raise ConfigError("; ".join(loader.problems) + loader.hint)
    return result


class _Mismatch(Exception):
    """A value that does not have its field's type (the message says what was expected)."""


_MISSING = object()


class _Loader:
    def __init__(self, where: str, lines: dict[str, int], overridden: frozenset[str]) -> None:
        self.where, self.lines, self.overridden = where, lines, overridden
        self.problems: list[str] = []
        self.hint = ""

    def location(self, path: str) -> str:
        if path in self.overridden:
            return "override"
        return f"{self.where}:{self.lines[path]}" if path in self.lines else self.where

    def dataclass(self, cls: type, data: Any, prefix: str) -> Any:
        """``cls`` from ``data``, or ``_MISSING`` after recording why not."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problems.append(f"{self.location(prefix)}: "
                                 f"{f'field {prefix!r}: ' if prefix else ''}expected a mapping "
                                 f"of field: value, found {type(data).__name__}")
            return _MISSING
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        values = {}
        count = len(self.problems)
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                self.problems.append(
                    f"{self.location(path)}: unknown field {path!r}"
                    f"{f' (did you mean {close[0]!r}?)' if close else ''}; known fields: "
                    f"{', '.join(fields)}")
                continue
            spec = _field_types(cls)[key]
            if value is None and spec[0] == "dataclass" and \
                    fields[key].default is not dataclasses.MISSING:
                values[key] = fields[key].default     # an empty section: its defaults
                continue
            values[key] = self.value(spec, value, path)
        missing = [name for name, f in fields.items() if name not in data and
                   f.default is dataclasses.MISSING and
                   f.default_factory is dataclasses.MISSING]
        if missing:
            self.problems.append(f"{self.location(prefix)}: "
                                 f"{f'{prefix!r} ' if prefix else ''}is missing required "
                                 f"field(s) {missing}")
        if len(self.problems) > count:
            return _MISSING
        try:
            return cls(**values)
        except ConfigError as exc:
            self.invalid(cls, fields, values, prefix, exc)
            return _MISSING

    def invalid(self, cls: type, fields: dict, values: dict, prefix: str,
                exc: ConfigError) -> None:
        """Record the dataclass's own validation error (per field, when it can say which)."""
        if not hasattr(cls, "problems"):
            self.problems.append(f"{self.location(prefix)}: {exc}")
            return
        probe = object.__new__(cls)
        for name, f in fields.items():
            value = values.get(name, f.default)
            if name not in values and f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            object.__setattr__(probe, name, value)
        problems = probe.problems()
        if not problems:
            self.problems.append(f"{self.location(prefix)}: {exc}")
            return
        for name, message in problems:
            path = f"{prefix}.{name}" if prefix else name
            self.problems.append(f"{self.location(path)}: field {path!r}: {message}")
            if path not in self.overridden and path in self.lines:
                self.hint = ". Fix the value, or delete the line to use the default."
        if not self.hint:
            self.hint = ". Fix the value."

    def value(self, spec: tuple, value: Any, path: str) -> Any:
        try:
            return self.convert(spec, value, path)
        except _Mismatch as exc:
            self.problems.append(f"{self.location(path)}: field {path!r}: expected {exc}, "
                                 f"found {value!r}")
            return _MISSING

    def convert(self, spec: tuple, value: Any, path: str) -> Any:
        kind = spec[0]
        if kind == "any":
            return value
        if kind == "none":
            if value is None:
                return None
            raise _Mismatch("null")
        if kind == "union":
            options = spec[1]
            for option in options:
                if option[0] == "dataclass" and value is None:
                    continue
                try:
                    return self.convert(option, value, path)
                except _Mismatch:
                    pass
            raise _Mismatch(" or ".join(_describe(option) for option in options))
        if kind == "literal":
            if any(value == choice and type(value) is type(choice) for choice in spec[1]):
                return value
            raise _Mismatch(_describe(spec))
        if kind == "dataclass":
            if value is not None and not isinstance(value, dict):
                raise _Mismatch(_describe(spec))
            return self.dataclass(spec[1], value, path)
        if kind == "type":
            return _scalar(spec[1], value)
        if kind == "dict":
            if not isinstance(value, dict):
                raise _Mismatch(_describe(spec))
            return {self.convert(spec[1], k, path): self.value(spec[2], v, f"{path}.{k}")
                    for k, v in value.items()}
        # "list", "tuple" (any length) and "fixed" (one type per position)
        if kind != "fixed" and not isinstance(value, (list, tuple, dict)) and \
                value is not None:
            value = [value]          # one item where a list belongs
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(_describe(spec))
        if kind == "fixed":
            if len(value) != len(spec[1]):
                raise _Mismatch(_describe(spec))
            items = [self.value(s, v, f"{path}[{i}]") for i, (s, v) in
                     enumerate(zip(spec[1], value))]
        else:
            items = [self.value(spec[1], v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if kind == "list" else tuple(items)


def _scalar(kind: type, value: Any) -> Any:
    # bool is an int in Python; a YAML 'true' where a number belongs is a mistake, and so is a
    # number where text belongs (8.10 would read as 8.1).
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    raise _Mismatch(_describe(("type", kind)))


def _describe(spec: tuple) -> str:
    kind = spec[0]
    if kind == "type":
        return {int: "an integer", float: "a number", bool: "true or false",
                str: "a string (in quotes if it looks like a number)"}.get(
            spec[1], f"a {spec[1].__name__}")
    if kind == "none":
        return "null"
    if kind == "any":
        return "any value"
    if kind == "union":
        return " or ".join(_describe(option) for option in spec[1])
    if kind == "literal":
        return f"one of {list(spec[1])}"
    if kind == "dataclass":
        return f"a mapping of {spec[1].__name__} fields"
    if kind == "dict":
        return "a mapping"
    if kind == "fixed":
        return f"a list of {len(spec[1])} values ({', '.join(_describe(s) for s in spec[1])})"
    return f"a list of {_describe(spec[1])}"


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, tuple]:
    """Field name -> type spec, from the dataclass's annotations. String annotations (``from
    __future__ import annotations``) are parsed here rather than evaluated, so ``X | None`` and
    ``tuple[str, ...]`` work on Python 3.8 too."""
    namespace = {**vars(builtins), **vars(sys.modules[cls.__module__])}
    out = {}
    for f in dataclasses.fields(cls):
        annotation = f.type
        if isinstance(annotation, str):
            spec = _parse(ast.parse(annotation, mode="eval").body, namespace)
        elif isinstance(annotation, type):
            spec = _spec_of(annotation)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: annotation {annotation!r} is not "
                            f"supported by load_dataclass; write it as a string")
        out[f.name] = spec
    return out


def _spec_of(obj: Any) -> tuple:
    if obj is None or obj is type(None):
        return ("none",)
    if obj is Any:
        return ("any",)
    if obj in (tuple, typing.Tuple):
        return ("tuple", ("any",))
    if obj in (list, typing.List):
        return ("list", ("any",))
    if obj in (dict, typing.Dict):
        return ("dict", ("any",), ("any",))
    if dataclasses.is_dataclass(obj):
        return ("dataclass", obj)
    if isinstance(obj, type):
        return ("type", obj)
    raise TypeError(f"load_dataclass cannot check values of type {obj!r}")


def _parse(node: ast.expr, namespace: dict) -> tuple:
    if isinstance(node, ast.Constant) and node.value is None:
        return ("none",)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        options = []
        for side in (node.left, node.right):
            spec = _parse(side, namespace)
            options += list(spec[1]) if spec[0] == "union" else [spec]
        return ("union", tuple(options))
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _spec_of(_resolve(node, namespace))
    if isinstance(node, ast.Subscript):
        base = _resolve(node.value, namespace)
        inner = node.slice.value if isinstance(node.slice, getattr(ast, "Index", ())) \
            else node.slice   # Python 3.8 wraps the subscript in ast.Index
        args = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if base is typing.Literal:
            return ("literal", tuple(ast.literal_eval(arg) for arg in args))
        specs = [_parse(arg, namespace) for arg in args
                 if not (isinstance(arg, ast.Constant) and arg.value is Ellipsis)]
        if base is typing.Optional:
            return ("union", (specs[0], ("none",)))
        if base is typing.Union:
            return ("union", tuple(specs))
        if base in (tuple, typing.Tuple):
            variable = isinstance(args[-1], ast.Constant) and args[-1].value is Ellipsis
            return ("tuple", specs[0]) if variable else ("fixed", tuple(specs))
        if base in (list, typing.List):
            return ("list", specs[0])
        if base in (dict, typing.Dict):
            return ("dict", specs[0], specs[1])
    raise TypeError(f"load_dataclass cannot check values of type {ast.dump(node)}")


def _resolve(node: ast.expr, namespace: dict) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in namespace:
            raise TypeError(f"load_dataclass: unknown type name {node.id!r}")
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr)
    raise TypeError(f"load_dataclass cannot check values of type {ast.dump(node)}")
