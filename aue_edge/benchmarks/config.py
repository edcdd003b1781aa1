"""What a benchmark run measures: one frozen config shared by ``aue bench`` and the suites.

Sits at the end of the flow (edge -> ros_nodes -> benchmarks): it names the models, backends,
precisions and face batches to time, and how many warm-up and timed rounds each case gets.
Defaults live here; a YAML file (``aue bench --config bench.yaml``) overrides them and CLI flags
override the file. The CLI hands the resolved config to the pytest suites as a JSON file
(``--aue-bench-config``), so a run saved on a Jetson says exactly what it measured.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import ConfigError

GROUPS = ("preprocess", "infer", "postprocess", "end_to_end", "ros")
BACKENDS = ("ort", "trt")
# ONNX Runtime runs the .onnx files (fp32, int8 Q/DQ); TensorRT runs engines built by
# `aue build` at fp32, fp16 or int8.
PRECISIONS = ("fp32", "fp16", "int8")
FACE_COUNTS = (1, 5)


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``aue bench`` run measures.

    ``model_dirs`` empty means the shipped models (``aue_edge/edge/models/aue_crl`` first, then
    every other folder of ``aue_edge/edge/models`` with a card). ``rounds``/``warmup_rounds`` apply
    to every case; ``ros_rounds`` to the ROS 2 round trip, whose rounds each cost a
    process-to-process hop; ``ros_stream_s`` is how long frames are streamed at the camera rate for
    the sustained-rate case. ``num_threads`` None leaves ONNX Runtime's own choice (all cores); it
    is recorded either way, it changes the numbers. ``au_model_dir`` (an exported AU detector) adds
    end-to-end cases with the AU output taken from it, beside those without.
    """

    groups: tuple[str, ...] = GROUPS
    model_dirs: tuple[str, ...] = ()
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    batches: tuple[int, ...] = (1, 5, 8)
    num_threads: int | None = None
    rounds: int = 100
    warmup_rounds: int = 10
    ros_rounds: int = 50
    ros_stream_s: float = 5.0
    ros_timeout_s: float = 60.0
    face_image: str | None = None
    au_model_dir: str | None = None
    smoke: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            problems.append(f"groups must be a non-empty subset of {GROUPS}, got "
                            f"{list(self.groups)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            problems.append(f"backends must be a non-empty subset of {BACKENDS}, got "
                            f"{list(self.backends)}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            problems.append(f"precisions must be a non-empty subset of {PRECISIONS}, got "
                            f"{list(self.precisions)}")
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            problems.append(f"batches must be positive integers, got {list(self.batches)}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"num_threads must be >= 1 or null, got {self.num_threads}")
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.warmup_rounds < 0:
            problems.append(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if self.ros_rounds < 1:
            problems.append(f"ros_rounds must be >= 1, got {self.ros_rounds}")
        if self.ros_stream_s <= 0:
            problems.append(f"ros_stream_s must be > 0, got {self.ros_stream_s}")
        if self.ros_timeout_s <= 0:
            problems.append(f"ros_timeout_s must be > 0, got {self.ros_timeout_s}")
        if problems:
            raise ConfigError("invalid benchmark config: " + "; ".join(problems))

    # Smoke mode: every case once more than nothing, so `make test` proves the suite still
    # runs end to end; the numbers it records are not meant to be read.
    def as_smoke(self) -> "BenchConfig":
        return dataclasses.replace(self, rounds=2, warmup_rounds=1, ros_rounds=2,
                                   ros_stream_s=0.5, smoke=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BenchConfig":
        """Read a YAML (or JSON, which is YAML) benchmark config."""
        data, lines = read_yaml_with_lines(path, "benchmark config", "pass an existing YAML "
                                           "file or leave --config out to use the defaults")
        return load_dataclass(cls, data, str(path), lines)
