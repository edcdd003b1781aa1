"""Reading YAML and JSON files (configs, sidecars, benchmark runs) with errors that name the file.

Every stage loads such files: the pipeline and benchmark configs, the training and calibration
configs, the engine sidecar, benchmark runs. They all fail the same ways (no such file, not
UTF-8, not parseable), so the checks and the messages live here once; each caller then checks
the content with its own context; :func:`check_fields` is the first such check for configs held
in frozen dataclasses. No torch; PyYAML is imported on first use.
"""
from __future__ import annotations

import dataclasses
import json
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
    """The parsed YAML file and the 1-based line of each top-level key (for error messages).

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
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {key.value: key.start_mark.line + 1 for key, _value in node.value}
    return data, lines


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


def check_fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` (parsed YAML/JSON) checked to be a mapping of fields of dataclass ``cls``.

    ``where`` starts every message (the file, and the section inside it). Values are not
    checked here: the caller coerces them and the dataclass validates itself.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of field: value, found "
                          f"{type(data).__name__}")
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {known}")
    return data
