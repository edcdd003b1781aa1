"""Settings of one INT8 calibration run (``aue calibrate``), loaded from YAML and validated.

Defaults live in ``config/calibration.yaml`` (the dataclass defaults below are the same values,
so the package also works when the YAML is not installed); CLI flags override single fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import ConfigError
from aue_edge.core.paths import find_share_file
from aue_edge.edge.trt_cache import CACHE_ALGORITHMS
from aue_edge.edge.trt_targets import resolve_target

METHODS = ("entropy", "percentile", "minmax")
QUANTIZABLE_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_PLACEMENTS = ("inputs", "inputs_outputs")
# What the INT8 model is for: "tensorrt" (model.int8.onnx, symmetric int8, + the TensorRT cache)
# or "ort-cpu" (model.int8.ort.onnx, uint8 activations for ONNX Runtime's x86/ARM CPU kernels).
TARGETS = ("tensorrt", "ort-cpu")


@dataclass(frozen=True)
class CalibrationConfig:
    target: str = "tensorrt"
    method: str = "entropy"
    percentile: float = 99.99
    num_bins: int = 2048
    entropy_start_bin: int = 128
    entropy_max_clip_fraction: float = 0.5
    entropy_flatten_zero_bin: bool = True
    num_images: int = 512
    batch_size: int = 32
    min_images: int = 64
    seed: int = 0
    eval_split: str = "valid"
    eval_images: int = 1000
    snr_images: int = 128
    trt_version: str = "8.5"
    cache_algorithm: str = "auto"
    quantize_op_types: tuple[str, ...] = QUANTIZABLE_OP_TYPES
    qdq_placement: str = "inputs"
    keep_fp32: tuple[str, ...] = ()
    ort_reduce_range: bool = True
    detector_score_threshold: float = 0.6
    data_aligned: bool = False
    num_threads: int = 0
    plot_worst_tensors: int = 6

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, origin: str = "calibration config") -> None:
        problems = []
        if self.target not in TARGETS:
            problems.append(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.method not in METHODS:
            problems.append(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.percentile <= 100.0:
            problems.append(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins < 256:
            problems.append(f"num_bins must be >= 256 (TensorRT uses 2048), got {self.num_bins}")
        if not 128 <= self.entropy_start_bin < self.num_bins:
            problems.append(f"entropy_start_bin must be in [128, num_bins), got "
                            f"{self.entropy_start_bin} (128 = one bin per int8 level)")
        if not 0.0 < self.entropy_max_clip_fraction <= 1.0:
            problems.append(f"entropy_max_clip_fraction must be in (0, 1], got "
                            f"{self.entropy_max_clip_fraction}")
        for name in ("num_images", "batch_size", "min_images"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_images > self.num_images:
            problems.append(f"min_images ({self.min_images}) is larger than num_images "
                            f"({self.num_images})")
        for name in ("eval_images", "snr_images", "num_threads", "plot_worst_tensors"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        try:
            resolve_target(str(self.trt_version))
        except ConfigError as exc:
            problems.append(f"trt_version: {exc}")
        if self.cache_algorithm != "auto" and self.cache_algorithm not in CACHE_ALGORITHMS:
            problems.append(f"cache_algorithm must be 'auto' or one of {CACHE_ALGORITHMS}, got "
                            f"{self.cache_algorithm!r}")
        unknown_ops = sorted(set(self.quantize_op_types) - set(QUANTIZABLE_OP_TYPES))
        if unknown_ops or not self.quantize_op_types:
            problems.append(f"quantize_op_types must be a non-empty subset of "
                            f"{QUANTIZABLE_OP_TYPES}, got {list(self.quantize_op_types)}")
        if self.qdq_placement not in QDQ_PLACEMENTS:
            problems.append(f"qdq_placement must be one of {QDQ_PLACEMENTS}, got "
                            f"{self.qdq_placement!r}")
        if not 0.0 < self.detector_score_threshold < 1.0:
            problems.append(f"detector_score_threshold must be in (0, 1), got "
                            f"{self.detector_score_threshold}")
        if problems:
            raise ConfigError(f"{origin}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "CalibrationConfig":
        """A copy with ``changes`` applied (``None`` values are ignored: unset CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None) -> CalibrationConfig:
    """Read a calibration YAML; ``None`` reads the default file (or the built-in defaults)."""
    if path is None:
        path = find_share_file("config/calibration.yaml")
        if path is None:
            return CalibrationConfig()
    path = Path(path)
    data, lines = read_yaml_with_lines(path, "calibration config", "pass an existing YAML file "
                                       "(the defaults are in config/calibration.yaml)")
    return load_dataclass(CalibrationConfig, data, f"calibration config {path}", lines)
