"""aue_edge.core.config_files: the shared YAML/JSON readers name the file and say what failed,
and the one config loader checks values against the dataclass annotations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest

from aue_edge.core.config_files import (load_dataclass, read_json, read_yaml,
                                        read_yaml_with_lines)
from aue_edge.core.errors import ConfigError, ModelFileError


def test_yaml_data_and_key_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# comment\nbackend: ort\n\nmax_faces: 3\n", encoding="utf-8")
    data, lines = read_yaml_with_lines(path, "test config")
    assert data == {"backend": "ort", "max_faces": 3}
    assert lines == {"backend": 2, "max_faces": 4}
    path.write_text("run:\n  seed: 1\nstages:\n  - {lr: 1}\n  - lr: 2\n    epochs: 3\n",
                    encoding="utf-8")
    assert read_yaml_with_lines(path, "test config")[1] == {
        "run": 1, "run.seed": 2, "stages": 3, "stages[0]": 4, "stages[0].lr": 4,
        "stages[1]": 5, "stages[1].lr": 5, "stages[1].epochs": 6}
    path.write_text("", encoding="utf-8")
    assert read_yaml(path, "test config") is None


def test_yaml_errors_name_file_and_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"test config .*missing\.yaml does not exist; "
                                          r"pass another"):
        read_yaml(tmp_path / "missing.yaml", "test config", "pass another")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [ort\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"test config .*bad\.yaml is not valid YAML"):
        read_yaml(bad, "test config")
    bad.write_bytes(b"backend: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML \(UTF-8 text "
                                          r"expected\): 'utf-8' codec"):
        read_yaml(bad, "test config")


def test_json_errors_use_the_callers_error_type(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(path, "run") == {"a": [1, 2]}
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"run .*run\.json is not valid JSON"):
        read_json(path, "run", error=ModelFileError)
    with pytest.raises(ModelFileError, match=r"does not exist$"):
        read_json(tmp_path / "none.json", "run", error=ModelFileError)


@dataclass(frozen=True)
class _Stage:
    epochs: int
    lr: float = 0.1


@dataclass(frozen=True)
class _Run:
    name: str = "run"
    seed: int = 0
    scale: float = 1.0
    amp: bool = True
    threads: int | None = None
    limit: Optional[float] = None
    mode: Literal["fast", "exact"] = "fast"
    tags: tuple[str, ...] = ()
    mean: tuple[float, float] = (0.5, 0.5)
    sizes: list[int] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    anything: Any = None
    first: _Stage = _Stage(1)
    stages: tuple[_Stage, ...] = ()

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


def _load(tmp_path, text: str, **kwargs):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    data, lines = read_yaml_with_lines(path, "test config")
    return load_dataclass(_Run, data, str(path), lines, **kwargs)


def test_load_dataclass_converts_yaml_values_to_the_annotated_types(tmp_path):
    run = _load(tmp_path, "scale: 2\nthreads: 4\nlimit: 3\nmode: exact\ntags: one\n"
                          "mean: [1, 2.5]\nsizes: [3, 4]\noptions: {a: [1]}\n"
                          "weights: {x: 1}\nanything: [1, b]\nfirst: {epochs: 5}\n"
                          "stages:\n  - {epochs: 1, lr: 0.5}\n  - epochs: 2\n")
    assert run.scale == 2.0 and isinstance(run.scale, float)
    assert run.threads == 4 and run.limit == 3.0 and run.mode == "exact"
    assert run.tags == ("one",)                       # one item where a list belongs
    assert run.mean == (1.0, 2.5) and run.sizes == [3, 4]
    assert run.options == {"a": [1]} and run.weights == {"x": 1.0}
    assert run.anything == [1, "b"]
    assert run.first == _Stage(5) and run.stages == (_Stage(1, 0.5), _Stage(2))
    assert _load(tmp_path, "") == _Run()              # an empty file: every default
    assert _load(tmp_path, "first:\nthreads: null\n") == _Run()


@pytest.mark.parametrize("text, message", [
    ("seed: 1.5\n", r"run\.yaml:1: field 'seed': expected an integer, found 1\.5"),
    ("seed: true\n", r"run\.yaml:1: field 'seed': expected an integer, found True"),
    ("scale: yes\n", r"run\.yaml:1: field 'scale': expected a number, found True"),
    ("amp: 1\n", r"run\.yaml:1: field 'amp': expected true or false, found 1"),
    ("name: 8.10\n", r"field 'name': expected a string \(in quotes if it looks like a number\), "
                     r"found 8\.1"),
    ("threads: four\n", r"field 'threads': expected an integer or null, found 'four'"),
    ("mode: slow\n", r"field 'mode': expected one of \['fast', 'exact'\], found 'slow'"),
    ("mean: [1, 2, 3]\n", r"field 'mean': expected a list of 2 values \(a number, a number\)"),
    ("sizes: {a: 1}\n", r"field 'sizes': expected a list of an integer, found \{'a': 1\}"),
    ("weights: [1]\n", r"field 'weights': expected a mapping, found \[1\]"),
    ("weights: {x: heavy}\n", r"run\.yaml:1: field 'weights\.x': expected a number"),
    ("first: 3\n", r"field 'first': expected a mapping of _Stage fields, found 3"),
    ("first: {lr: 1}\n", r"run\.yaml:1: 'first' is missing required field\(s\) \['epochs'\]"),
    ("stages:\n  - epochs: 1\n  - epochs: 2\n    lr: fast\n",
     r"run\.yaml:4: field 'stages\[1\]\.lr': expected a number, found 'fast'"),
    ("sed: 1\n", r"run\.yaml:1: unknown field 'sed' \(did you mean 'seed'\?\); known fields: "
                 r"name, seed"),
    ("first: {epochz: 1}\n", r"run\.yaml:1: unknown field 'first\.epochz' \(did you mean "
                            r"'epochs'\?\)"),
    ("zzz: 1\n", r"run\.yaml:1: unknown field 'zzz'; known"),
    ("seed: -1\n", r"run\.yaml: seed must be >= 0, got -1"),
    ("- 1\n", r"run\.yaml: expected a mapping of field: value, found list"),
])
def test_load_dataclass_errors_name_file_line_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_load_dataclass_reports_every_problem_and_overrides(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "seed: x\nscale: 1\namp: 2\n")
    text = str(info.value)
    assert "run.yaml:1: field 'seed'" in text and "run.yaml:3: field 'amp'" in text
    assert "scale" not in text
    with pytest.raises(ConfigError, match=r"^override: field 'seed': expected an integer"):
        _load(tmp_path, "seed: x\n", overridden=frozenset({"seed"}))
    with pytest.raises(ConfigError, match=r"^<dict>: field 'first\.lr': expected a number"):
        load_dataclass(_Run, {"first": {"epochs": 1, "lr": "x"}}, "<dict>")
    section = load_dataclass(_Stage, {"epochs": 2}, "<dict>", prefix="first")
    assert section == _Stage(2)
    with pytest.raises(ConfigError, match=r"^<dict>: field 'first\.epochs'"):
        load_dataclass(_Stage, {"epochs": "2"}, "<dict>", prefix="first")
