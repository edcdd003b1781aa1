"""Which model x backend x precision combinations a benchmark run times, and why any is skipped.

Part of the benchmark stage. The suites parametrize over :func:`model_variants`; a combination
that cannot run here (no INT8 model yet, TensorRT not installed, no engine built) is still a
case, skipped with a reason that says what was NOT measured and how to get it measured, so a
report never silently loses a row.

The files are the edge pipeline's (``aue_edge.edge.pipeline.MODEL_FILES``), and every file
listed for a precision is timed, not only the one the pipeline prefers: ONNX Runtime runs
``model.onnx`` (FP32), ``model.int8.ort.onnx`` (INT8 for the CPU, ``aue calibrate --target
ort-cpu``) and ``model.int8.onnx`` (the symmetric Q/DQ model made for TensorRT); TensorRT runs
``model.engine``, ``model.fp16.engine`` and ``model.int8.engine`` (``aue build``). A case is named
``<model>-<backend>-<file>``, ``<file>`` being the file name between ``model.`` and the
extension (``int8.ort``, ``int8``, ``fp16``) or the precision for the plain ``model.onnx`` /
``model.engine`` (``fp32``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from aue_edge.benchmarks.config import BenchConfig
from aue_edge.edge.model_card import (CARD_FILENAME, FP32_MODEL_FILENAME, INT8_ORT_MODEL_FILENAME,
                                      INT8_QDQ_MODEL_FILENAME, ModelCard)
# The pipeline's own rule for which extra input it can feed.
from aue_edge.edge.pipeline import DEFAULT_MODEL_DIR, MODEL_FILES, is_landmarks_input

# How each ONNX file is made, for the skip reason of a missing one.
ONNX_MAKERS = {FP32_MODEL_FILENAME: "'aue export'",
               INT8_ORT_MODEL_FILENAME: "'aue calibrate ... --target ort-cpu'",
               INT8_QDQ_MODEL_FILENAME: "'aue calibrate ... --target tensorrt'"}


def file_tag(file_name: str, precision: str) -> str:
    """``model.int8.ort.onnx`` -> ``int8.ort``; ``model.onnx`` / ``model.engine`` -> precision."""
    middle = file_name.split(".")[1:-1]
    return ".".join(middle) or precision


@dataclass(frozen=True)
class ModelVariant:
    """One model file on one backend at one precision; ``skip_reason`` set when it cannot run."""

    model_dir: Path
    backend: str
    precision: str
    path: Path
    skip_reason: str | None = None

    @property
    def model_name(self) -> str:
        return self.model_dir.name

    @property
    def case_id(self) -> str:
        return f"{self.model_name}-{self.backend}-{file_tag(self.path.name, self.precision)}"

    def build_info(self) -> dict:
        """For an engine: how it was built (precision, INT8 mode, DLA core, TensorRT version)
        from its sidecar, recorded with the case; empty for ONNX models."""
        if self.backend != "trt":
            return {}
        from aue_edge.edge.backends.tensorrt_backend import read_sidecar

        sidecar = read_sidecar(self.path, required=False)
        if sidecar is None:
            return {"engine_sidecar": "missing: build details unknown"}
        flags = sidecar.get("build_flags") or {}
        return {"engine_precision": sidecar.get("precision"),
                "int8_mode": sidecar.get("int8_mode"),
                "dla_core": flags.get("dla_core"), "gpu_fallback": flags.get("gpu_fallback"),
                "engine_tensorrt_version": sidecar.get("tensorrt_version")}


def tensorrt_installed() -> bool:
    """Whether ``import tensorrt`` could work (checked without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def model_dirs(config: BenchConfig) -> list[Path]:
    """The config's model folders; by default the shipped one first, then every other shipped
    model folder with a card (e.g. exported AU detectors) in ``aue_edge/edge/models/``."""
    if config.model_dirs:
        return [Path(d) for d in config.model_dirs]
    others = sorted(p for p in DEFAULT_MODEL_DIR.parent.iterdir()
                    if p != DEFAULT_MODEL_DIR and (p / CARD_FILENAME).is_file())
    return [DEFAULT_MODEL_DIR, *others]


def _extra_inputs_reason(directory: Path) -> str | None:
    """Models needing inputs the pipeline cannot feed are not timed (it feeds the face image
    and, where the card declares it, 68 landmarks)."""
    if not (directory / CARD_FILENAME).is_file():
        return None
    card = ModelCard.load(directory / CARD_FILENAME)
    unsupported = sorted(n for n in card.extra_inputs if not is_landmarks_input(n, card))
    if not unsupported:
        return None
    return (f"{directory.name} takes inputs {unsupported} that the edge pipeline cannot feed "
            f"(it feeds the face image and 'landmarks' [batch, 68, 2]), so it was NOT "
            f"benchmarked")


def _skip_reason(directory: Path, backend: str, precision: str, path: Path,
                 trt_available: bool) -> str | None:
    """Why this combination cannot be timed here, or None when it can."""
    extra = _extra_inputs_reason(directory)
    if extra is not None:
        return extra
    if backend == "trt" and not trt_available:
        return (f"TensorRT is not installed on this machine: TensorRT {precision} inference of "
                f"{directory.name} was NOT benchmarked (run 'aue bench' on the Jetson, with "
                f"engines built there by 'aue build')")
    if not path.is_file():
        if backend == "ort":
            how = ONNX_MAKERS.get(path.name, "'aue export' / 'aue calibrate'")
        else:
            source = directory / (INT8_QDQ_MODEL_FILENAME if precision == "int8"
                                  else FP32_MODEL_FILENAME)
            how = f"'aue build {source} --precision {precision} --out {path}' on this device"
        return (f"{path} does not exist: {backend} {precision} was NOT benchmarked; make it "
                f"with {how}")
    return None


def model_variants(config: BenchConfig, trt_available: bool | None = None
                   ) -> list[ModelVariant]:
    """Every (model dir, backend, precision) the config asks for, runnable or with a reason."""
    if trt_available is None:
        trt_available = tensorrt_installed()
    variants = []
    for directory in model_dirs(config):
        for backend in config.backends:
            for precision in config.precisions:
                # e.g. ONNX Runtime has no fp16 file: not a case
                for name in MODEL_FILES[backend].get(precision, ()):
                    path = directory / name
                    variants.append(ModelVariant(directory, backend, precision, path,
                                                 _skip_reason(directory, backend, precision,
                                                              path, trt_available)))
    return variants
