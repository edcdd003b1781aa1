"""``aue build``: a TensorRT engine for the Jetson from an ONNX model (+ its sidecar JSON).

Edge stage, run ON the target device (engines are tied to the TensorRT release and GPU that
built them). Order of work, so that nothing is decided inside TensorRT:

1. validate every flag against the ONNX file and its model card (:func:`plan_build`):
   precision vs. Q/DQ nodes vs. calibration cache, DLA restrictions, batch profile, workspace,
   timing cache, output path;
2. print the equivalent ``trtexec`` command and write the sidecar ``X.engine.json`` (model card,
   ONNX hash, precision, build flags; ``build_status: pending``) BEFORE touching TensorRT;
3. build through ``aue_edge/edge/backends/trt_api.py`` (the one module that imports TensorRT), then
   complete the sidecar with the TensorRT version, the device and any warnings.

Without TensorRT, step 3 fails with BackendUnavailableError after steps 1-2, so the printed
``trtexec`` command can be run by hand on the Jetson.

Precision is never changed silently: INT8 needs a Q/DQ model (explicit quantization, TensorRT
8.5+ and the only INT8 path on TensorRT >= 10.1 / 11) or a calibration cache (implicit INT8,
TensorRT 8.5 / JetPack 5); a platform without fast FP16/INT8 is reported loudly and recorded.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aue_edge import __version__
from aue_edge.core.checksums import sha256_of_files
from aue_edge.edge.backends.factory import ENGINE_SUFFIXES, find_model_card
from aue_edge.edge.backends.tensorrt_backend import SIDECAR_SCHEMA, sidecar_path
from aue_edge.core.errors import (BackendUnavailableError, CalibrationError, ConfigError,
                                  ModelFileError)
from aue_edge.edge.model_card import ModelCard
from aue_edge.edge.trt_cache import CalibrationCache, read_cache
from aue_edge.edge.trt_lint import ALL_TARGETS, lint_model, raise_for_targets
from aue_edge.edge.trt_targets import TrtTarget, parse_version, resolve_target, target_of_version

PRECISIONS = ("fp32", "fp16", "int8")
MAX_BATCH_LIMIT = 256
DEFAULT_MAX_BATCH = 8
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MIB = 1024
DETECTOR_STRIDE_PX = 32  # YuNet pads its input to a multiple of its largest stride
DEFAULT_DETECT_MAX_SIDE_PX = 640


@dataclass(frozen=True)
class OnnxFacts:
    """What ``aue build`` needs to know about an ONNX file, read without TensorRT."""

    path: Path
    sha256: str
    opset: int
    inputs: dict[str, tuple]          # name -> dims (int, or str for a named/dynamic axis)
    qdq_nodes: int
    tensor_names: frozenset[str]      # every tensor of the graph (a cache may name only these)
    model: object                     # the onnx.ModelProto, without external weights (lint)


@dataclass(frozen=True)
class CalibrationCacheFacts:
    path: Path
    sha256: str
    cache: CalibrationCache           # validated by read_cache + check_matches

    @property
    def header(self) -> str:
        return self.cache.header

    @property
    def num_tensors(self) -> int:
        return len(self.cache.scales)


@dataclass(frozen=True)
class BuildPlan:
    """Every decision of a build, made before TensorRT is touched."""

    onnx: OnnxFacts
    card: ModelCard | None            # None for the face detector
    engine_path: Path
    precision: str
    int8_mode: str | None             # "explicit-qdq" | "implicit-calibration-cache" | None
    fp16_fallback: bool
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    static_shapes: bool
    workspace_mib: int
    dla_core: int | None
    gpu_fallback: bool
    calibration_cache: CalibrationCacheFacts | None
    timing_cache: Path | None
    device_index: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    detect_max_side_px: int | None = None   # set for a face-detector engine (--detector)
    trt_target: TrtTarget | None = None     # --trt-version, else the installed TensorRT
    trt_version_flag: str | None = None     # --trt-version as given (for the rebuild command)

    @property
    def builder_flags(self) -> tuple[str, ...]:
        flags = []
        if self.precision == "fp16" or self.fp16_fallback:
            flags.append("FP16")
        if self.precision == "int8":
            flags.append("INT8")
        if self.dla_core is not None and self.gpu_fallback:
            flags.append("GPU_FALLBACK")
        return tuple(flags)

    @property
    def batch_range(self) -> tuple[int, int, int]:
        shapes = next(iter(self.profiles.values()))
        return shapes[0][0], shapes[1][0], shapes[2][0]

    def trtexec_command(self) -> list[str]:
        cmd = ["trtexec", f"--onnx={self.onnx.path}", f"--saveEngine={self.engine_path}"]
        if not self.static_shapes:
            # trtexec refuses shape flags for a model whose shapes are all static.
            for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
                cmd.append(f"{flag}=" + ",".join(
                    f"{name}:" + "x".join(str(d) for d in shapes[k])
                    for name, shapes in self.profiles.items()))
        cmd.append(f"--memPoolSize=workspace:{self.workspace_mib}")  # MiB
        if "FP16" in self.builder_flags:
            cmd.append("--fp16")
        if self.precision == "int8":
            cmd.append("--int8")
        if self.calibration_cache is not None:
            cmd.append(f"--calib={self.calibration_cache.path}")
        if self.dla_core is not None:
            cmd.append(f"--useDLACore={self.dla_core}")
            if self.gpu_fallback:
                cmd.append("--allowGPUFallback")
        if self.timing_cache is not None:
            cmd.append(f"--timingCacheFile={self.timing_cache}")
        return cmd

    def rebuild_command(self) -> list[str]:
        cmd = ["aue", "build", str(self.onnx.path), "--precision", self.precision,
               "--workspace-mib", str(self.workspace_mib), "--out", str(self.engine_path)]
        if self.detect_max_side_px is not None:
            cmd += ["--detector", "--detect-max-side-px", str(self.detect_max_side_px)]
        else:
            low, opt, high = self.batch_range
            cmd += ["--min-batch", str(low), "--opt-batch", str(opt), "--max-batch", str(high)]
        if self.fp16_fallback:
            cmd.append("--fp16-fallback")
        if self.calibration_cache is not None:
            cmd += ["--calibration-cache", str(self.calibration_cache.path)]
        if self.dla_core is not None:
            cmd += ["--dla-core", str(self.dla_core)]
            if not self.gpu_fallback:
                cmd.append("--no-gpu-fallback")
        if self.timing_cache is not None:
            cmd += ["--timing-cache", str(self.timing_cache)]
        if self.trt_version_flag is not None:
            cmd += ["--trt-version", self.trt_version_flag]
        return cmd + ["--overwrite"]

    def sidecar(self, status: str, **extra) -> dict:
        low, opt, high = self.batch_range
        data = {
            "schema": SIDECAR_SCHEMA,
            "role": "face_detector" if self.detect_max_side_px is not None else "classifier",
            "build_status": status,
            "engine_file": self.engine_path.name,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "aue_edge_version": __version__,
            "onnx": {"file": str(self.onnx.path), "sha256": self.onnx.sha256,
                     "opset": self.onnx.opset, "qdq_nodes": self.onnx.qdq_nodes},
            "precision": self.precision,
            "int8_mode": self.int8_mode,
            "build_flags": {
                "builder_flags": list(self.builder_flags),
                "workspace_mib": self.workspace_mib,
                "batch": {"min": low, "opt": opt, "max": high},
                "profiles": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])}
                             for name, s in self.profiles.items()},
                "static_shapes": self.static_shapes,
                "dla_core": self.dla_core,
                "gpu_fallback": self.gpu_fallback if self.dla_core is not None else None,
                "calibration_cache": None if self.calibration_cache is None else {
                    "file": str(self.calibration_cache.path),
                    "sha256": self.calibration_cache.sha256,
                    "header": self.calibration_cache.header,
                    "num_tensors": self.calibration_cache.num_tensors},
                "timing_cache": None if self.timing_cache is None else str(self.timing_cache),
            },
            "tensorrt_version": None,
            "tensorrt_target": None if self.trt_target is None else self.trt_target.name,
            "device": None,
            "trtexec_command": shlex.join(self.trtexec_command()),
            "rebuild_command": shlex.join(self.rebuild_command()),
            "warnings": list(self.warnings),
            "model_card": None if self.card is None else self.card.to_dict(),
            "detect_max_side_px": self.detect_max_side_px,
        }
        data.update(extra)
        return data


# ---------------------------------------------------------------------------------- inspection
def inspect_onnx(path: Path) -> OnnxFacts:
    """Inputs, opset and Q/DQ facts of an ONNX file (onnx package only, no TensorRT)."""
    import onnx

    if not path.is_file():
        raise ModelFileError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError / its own types
        raise ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                             f"{exc}); re-export it with 'aue export'") from None
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in value.type.tensor_type.shape.dim)
        inputs[value.name] = dims
    if not inputs:
        raise ModelFileError(f"{path} has no graph inputs")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    external = sorted({path.parent / entry.value for init in graph.initializer
                       for entry in init.external_data if entry.key == "location"})
    missing = [p for p in external if not p.is_file()]
    if missing:
        raise ModelFileError(f"{path} keeps weights in {[str(p) for p in missing]}, which do not "
                             f"exist; copy the .onnx.data file(s) along with the model")
    if external:  # the lint reads Q/DQ scales and zero points, which may live there too
        onnx.load_external_data_for_model(model, str(path.parent))
    names = {name for node in graph.node for name in (*node.input, *node.output) if name}
    names.update(value.name for value in graph.input)
    return OnnxFacts(path, sha256_of_files(path, *external), int(opset), inputs, len(qdq),
                     frozenset(names), model)


def read_calibration_cache(path: Path, facts: OnnxFacts,
                           target_version: tuple[int, ...] | None) -> CalibrationCacheFacts:
    """The project's one cache validator (:func:`read_cache`: header, calibrator, every line,
    finite positive scales, no duplicates), then: only tensors of this model, every network
    input present, and (when the TensorRT version is known) a header that TensorRT replays."""
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist; write it with "
                               f"'aue calibrate'")
    cache = read_cache(path)
    cache.check_matches(facts.tensor_names, str(facts.path), required=list(facts.inputs))
    if target_version is not None:
        cache.check_replayable(target_version)
    return CalibrationCacheFacts(path, hashlib.sha256(path.read_bytes()).hexdigest(), cache)


# ---------------------------------------------------------------------------------- planning
def classifier_profiles(facts: OnnxFacts, card: ModelCard, low: int, opt: int, high: int
                        ) -> tuple[dict, bool]:
    """(min, opt, max) per input of a face classifier: batch from the flags, every other axis
    fixed (dynamic H/W take the card's input size); True when all shapes are static."""
    if not 1 <= low <= opt <= high <= MAX_BATCH_LIMIT:
        raise ConfigError(f"batch profile needs 1 <= --min-batch <= --opt-batch <= --max-batch "
                          f"<= {MAX_BATCH_LIMIT}; got {low}, {opt}, {high}")
    profiles = {}
    for name, dims in facts.inputs.items():
        if not dims:
            raise ModelFileError(f"{facts.path}: input {name!r} is a scalar; expected a batch "
                                 f"axis")
        rest = []
        for axis, d in enumerate(dims[1:], start=1):
            if isinstance(d, int) and d > 0:
                rest.append(d)
            elif name == card.input.name and axis >= 2:
                rest.append(card.input.size_px[axis - 2])  # dynamic H/W: the card's input size
            elif name == card.input.name and axis == 1:
                rest.append(3)
            else:
                raise ModelFileError(f"{facts.path}: input {name!r} axis {axis} is dynamic "
                                     f"({d!r}); only the batch axis may be dynamic")
        batch = dims[0]
        if isinstance(batch, int) and batch > 0 and (low, opt, high) != (batch,) * 3:
            raise ConfigError(f"{facts.path}: input {name!r} has a fixed batch of {batch}, so "
                              f"--min/--opt/--max-batch must all be {batch} (got {low}, {opt}, "
                              f"{high}); re-export with a dynamic batch axis for more")
        profiles[name] = ((low, *rest), (opt, *rest), (high, *rest))
    static = all(isinstance(d[0], int) and d[0] > 0 for d in facts.inputs.values())
    return profiles, static


def _round_up_px(value: float) -> int:
    return int(-(-int(round(value)) // DETECTOR_STRIDE_PX) * DETECTOR_STRIDE_PX)


def detector_profiles(facts: OnnxFacts, max_side_px: int) -> dict:
    """The profile of a YuNet engine: one frame, dynamic H and W padded to /32, up to the
    pipeline's ``detect_max_side_px`` square, tuned for a 4:3 landscape camera frame."""
    if len(facts.inputs) != 1:
        raise ModelFileError(f"{facts.path}: a face detector has one input, found "
                             f"{sorted(facts.inputs)}")
    (name, dims), = facts.inputs.items()
    batch_ok = dims[0] == 1 or isinstance(dims[0], str) if dims else False
    if len(dims) != 4 or dims[1] != 3 or not batch_ok:
        raise ModelFileError(f"{facts.path}: expected a 1x3xHxW detector input, found {name!r} "
                             f"{dims}")
    if not DETECTOR_STRIDE_PX <= max_side_px <= 4096:
        raise ConfigError(f"--detect-max-side-px must be in [{DETECTOR_STRIDE_PX}, 4096], got "
                          f"{max_side_px}")
    side = _round_up_px(max_side_px)
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims[2:]]
    low = tuple(f or DETECTOR_STRIDE_PX for f in fixed)
    opt = (fixed[0] or _round_up_px(max_side_px * 3 / 4), fixed[1] or side)
    high = tuple(f or side for f in fixed)
    return {name: ((1, 3, *low), (1, 3, *opt), (1, 3, *high))}


def build_target(flag: str | None, installed: str | None) -> TrtTarget | None:
    """The TensorRT the engine is for: --trt-version, else the installed one, else unknown.
    Both given and of different families is an error (the lint would check the wrong rules)."""
    installed_target = None
    if installed is not None:
        version = parse_version(installed)
        installed_target = dataclasses.replace(target_of_version(version), version=version)
    if flag is None:
        return installed_target
    target = resolve_target(flag)
    if installed_target is not None and installed_target.name != target.name:
        raise ConfigError(f"--trt-version {flag} but this machine runs TensorRT {installed}; "
                          f"drop --trt-version (the installed TensorRT is used)")
    return installed_target or target


def plan_build(model: str | Path, out: str | Path, *, precision: str = DEFAULT_PRECISION,
               calibration_cache: str | Path | None = None, fp16_fallback: bool = False,
               dla_core: int | None = None, gpu_fallback: bool = True,
               workspace_mib: int = DEFAULT_WORKSPACE_MIB, min_batch: int | None = None,
               opt_batch: int | None = None, max_batch: int | None = None,
               detector: bool = False, detect_max_side_px: int | None = None,
               timing_cache: str | Path | None = None, trt_version: str | None = None,
               device: int = 0, overwrite: bool = False,
               installed_trt: str | None = None) -> BuildPlan:
    """Validate every option (one per ``aue build`` flag, same names); raise ConfigError /
    ModelFileError / CalibrationError on the first problem (each says what to do). No TensorRT
    here: ``installed_trt`` is the version of the TensorRT that will build (None when there is
    none), for the lint and the cache check."""
    onnx_path = Path(model)
    if onnx_path.suffix.lower() != ".onnx":
        raise ConfigError(f"MODEL must be an .onnx file, got {onnx_path}")
    facts = inspect_onnx(onnx_path)
    detector = bool(detector)
    # The face detector (YuNet) has no model card: its pre/post-processing lives in
    # aue_edge/edge/face.
    card = None if detector else find_model_card(onnx_path)
    notes = []
    out = Path(out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise ConfigError(f"--out {out}: an engine file name ends with one of {ENGINE_SUFFIXES}")
    if out.resolve() == onnx_path.resolve():
        raise ConfigError("--out must not overwrite the ONNX model")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; pass --overwrite to replace it (the old "
                          f"engine is deleted first, so engine and sidecar never disagree)")
    if card is not None and card.input.name not in facts.inputs:
        raise ModelFileError(f"{onnx_path}: the card's input {card.input.name!r} is not a graph "
                             f"input (inputs: {sorted(facts.inputs)})")

    # ---- precision and INT8 mode
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    cache_path = Path(calibration_cache) if calibration_cache else None
    is_qdq = facts.qdq_nodes > 0
    int8_mode = None
    if precision == "int8":
        if is_qdq and cache_path:
            raise ConfigError(f"{onnx_path} already holds Q/DQ scales ({facts.qdq_nodes} Q/DQ "
                              f"nodes); --calibration-cache would be a second, conflicting set "
                              f"of scales. Drop --calibration-cache, or pass the FP32 model "
                              f"with the cache.")
        if not is_qdq and not cache_path:
            raise ConfigError(f"--precision int8 needs INT8 scales: {onnx_path} has no Q/DQ "
                              f"nodes and no --calibration-cache was given. Use the Q/DQ model "
                              f"(model.int8.onnx from 'aue calibrate') or pass its "
                              f"calibration.cache (TensorRT 8.5).")
        int8_mode = "explicit-qdq" if is_qdq else "implicit-calibration-cache"
    else:
        if is_qdq:
            raise ConfigError(f"{onnx_path} is quantized ({facts.qdq_nodes} Q/DQ nodes) but "
                              f"--precision is {precision}; build it with --precision int8, or "
                              f"build the FP32 model.onnx for {precision}")
        if cache_path:
            raise ConfigError(f"--calibration-cache only applies to --precision int8 (got "
                              f"{precision})")
    if fp16_fallback and precision != "int8":
        raise ConfigError("--fp16-fallback lets layers left unquantized run in FP16; it only "
                          "applies to --precision int8 (use --precision fp16 for FP16)")
    target = build_target(trt_version, installed_trt)
    cache_facts = (read_calibration_cache(cache_path, facts, target and target.version)
                   if cache_path else None)
    if int8_mode == "implicit-calibration-cache":
        notes.append("implicit INT8 from a calibration cache is deprecated since TensorRT 10.1 "
                     "and removed in TensorRT 11; on TensorRT >= 10 build the Q/DQ model instead")

    # ---- optimisation profile
    max_side_px = None
    if detector:
        if any(v not in (None, 1) for v in (min_batch, opt_batch, max_batch)):
            raise ConfigError("--detector engines run one frame at a time: leave --min/--opt/"
                              "--max-batch unset (or 1)")
        max_side_px = detect_max_side_px or DEFAULT_DETECT_MAX_SIDE_PX
        profiles = detector_profiles(facts, max_side_px)
        static_shapes = False
    else:
        if detect_max_side_px is not None:
            raise ConfigError("--detect-max-side-px only applies with --detector")
        low, opt, high = min_batch or 1, opt_batch or 1, max_batch or DEFAULT_MAX_BATCH
        profiles, static_shapes = classifier_profiles(facts, card, low, opt, high)

    # ---- DLA
    if dla_core is not None:
        if dla_core < 0:
            raise ConfigError(f"--dla-core must be >= 0 (Orin and Xavier have cores 0 and 1), "
                              f"got {dla_core}")
        if precision == "fp32":
            raise ConfigError("DLA runs FP16 and INT8 only; use --precision fp16 or int8 with "
                              "--dla-core")
        dynamic = {name: shapes for name, shapes in profiles.items()
                   if not shapes[0] == shapes[1] == shapes[2]}
        if dynamic:
            what = ("the detector's image size is dynamic; build it for the GPU" if detector
                    else "--min-batch, --opt-batch and --max-batch must be equal with "
                         "--dla-core")
            raise ConfigError(f"DLA does not support dynamic shapes (profile {dynamic}): {what}")
        if gpu_fallback:
            notes.append("GPU fallback is on: layers the DLA cannot run go to the GPU without "
                         "an error; check the TensorRT build log for layer placement")
    elif not gpu_fallback:
        raise ConfigError("--no-gpu-fallback only applies with --dla-core")

    # ---- TensorRT compatibility: stop on what the target's parser or builder rejects; with
    # no target known (no TensorRT here, no --trt-version) stop on what every target rejects.
    findings = lint_model(facts.model, dla=dla_core is not None, gpu_fallback=gpu_fallback)
    lint_targets = (target.name,) if target is not None else ALL_TARGETS
    stoppers = findings if target is not None else [
        f for f in findings if set(ALL_TARGETS) <= set(f.breaks)]
    raise_for_targets(stoppers, lint_targets, str(onnx_path),
                      "Fix the model or the flags: docs/jetson.md lists each rule with its "
                      "source ('aue export' and 'aue calibrate' write files that pass).")
    notes += [f"TensorRT lint: {f.line(lint_targets)}" for f in findings]

    # ---- sizes and files
    if not 1 <= workspace_mib <= 1 << 16:
        raise ConfigError(f"--workspace-mib must be in [1, 65536], got {workspace_mib}")
    timing_cache = Path(timing_cache) if timing_cache else None
    if timing_cache is not None:
        if timing_cache.exists() and not timing_cache.is_file():
            raise ConfigError(f"--timing-cache {timing_cache} exists but is not a file")
        if not timing_cache.parent.is_dir():
            raise ConfigError(f"--timing-cache {timing_cache}: folder {timing_cache.parent} "
                              f"does not exist")
    if device < 0:
        raise ConfigError(f"--device must be >= 0, got {device}")
    return BuildPlan(facts, card, out, precision, int8_mode, bool(fp16_fallback), profiles,
                     static_shapes, int(workspace_mib), dla_core, bool(gpu_fallback), cache_facts,
                     timing_cache, int(device), tuple(notes),
                     max_side_px, target, trt_version)


def write_sidecar(plan: BuildPlan, status: str, **extra) -> Path:
    path = sidecar_path(plan.engine_path)
    path.write_text(json.dumps(plan.sidecar(status, **extra), indent=2) + "\n", encoding="utf-8")
    return path


def platform_warnings(plan: BuildPlan, platform: dict) -> list[str]:
    """Loud notes for a platform that lacks fast kernels of the requested precision; raises
    when a DLA core is asked for that does not exist. Precision itself is never changed."""
    notes = []
    if plan.dla_core is not None and plan.dla_core >= platform.get("num_dla_cores", 0):
        raise ConfigError(f"--dla-core {plan.dla_core} asked for, this device has "
                          f"{platform.get('num_dla_cores', 0)} DLA core(s)")
    if "FP16" in plan.builder_flags and platform.get("fast_fp16") is False:
        notes.append("this GPU has no fast FP16: the engine is built as asked, but FP16 layers "
                     "may run slower than FP32")
    if plan.precision == "int8" and platform.get("fast_int8") is False:
        notes.append("this GPU has no fast INT8: the engine is built as asked (INT8), but may "
                     "run slower than FP16/FP32")
    return notes


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue build", description="Build a TensorRT engine from an ONNX model, on the device "
        "that will run it; writes ENGINE and ENGINE.json (sidecar: model card, flags, versions).")
    parser.add_argument("model", help="the .onnx model (its card.json beside it or embedded)")
    parser.add_argument("--out", required=True, help="engine file to write (.engine)")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"engine precision (default {DEFAULT_PRECISION}); int8 needs a "
                             "Q/DQ model or --calibration-cache")
    parser.add_argument("--calibration-cache", help="TensorRT INT8 calibration cache (implicit "
                                                    "INT8, TensorRT 8.5) for a non-Q/DQ model")
    parser.add_argument("--fp16-fallback", action="store_true",
                        help="with int8: let layers without Q/DQ run in FP16 instead of FP32")
    parser.add_argument("--dla-core", type=int, help="run on this DLA core (fp16/int8, fixed "
                                                     "batch)")
    parser.add_argument("--no-gpu-fallback", action="store_false", dest="gpu_fallback",
                        help="with --dla-core: fail instead of running unsupported layers on "
                             "the GPU")
    parser.add_argument("--workspace-mib", type=int, default=DEFAULT_WORKSPACE_MIB,
                        help=f"builder workspace memory pool limit in MiB (default "
                             f"{DEFAULT_WORKSPACE_MIB})")
    parser.add_argument("--min-batch", type=int, help="smallest batch of faces (default 1)")
    parser.add_argument("--opt-batch", type=int, help="batch TensorRT tunes for (default 1)")
    parser.add_argument("--max-batch", type=int,
                        help=f"largest batch of faces (default {DEFAULT_MAX_BATCH}); the "
                             f"pipeline splits larger batches")
    parser.add_argument("--detector", action="store_true",
                        help="MODEL is the YuNet face detector (no model card; one frame, "
                             "dynamic image size)")
    parser.add_argument("--detect-max-side-px", type=int,
                        help="with --detector: the largest frame side the engine accepts "
                             f"(the pipeline's detect_max_side_px; default "
                             f"{DEFAULT_DETECT_MAX_SIDE_PX})")
    parser.add_argument("--timing-cache", help="timing cache file to reuse and update")
    parser.add_argument("--trt-version",
                        help="TensorRT the engine is for (8.5, 8.6, 10.x or e.g. 8.6.2): the "
                             "lint and the cache check use its rules; default: the installed "
                             "TensorRT (without one, only what every version rejects stops "
                             "the build)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def build_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from aue_edge.edge.backends import trt_api

    plan = plan_build(**vars(args), installed_trt=trt_api.installed_tensorrt_version())
    print("Equivalent trtexec command:\n  " + shlex.join(plan.trtexec_command()))
    for note in plan.warnings:
        print(f"aue build: warning: {note}", file=sys.stderr)
    plan.engine_path.parent.mkdir(parents=True, exist_ok=True)
    plan.engine_path.unlink(missing_ok=True)  # --overwrite: never leave an old engine behind
    side = write_sidecar(plan, "pending")
    print(f"Sidecar written: {side}")

    try:
        api = trt_api.TrtApi(device_index=plan.device_index)
    except BackendUnavailableError as exc:
        write_sidecar(plan, "not_built", not_built_reason=str(exc))
        raise BackendUnavailableError(
            f"{exc} The engine was NOT built; run the trtexec command above on the device "
            f"(then keep {side.name} beside the engine: it carries the model card), or run "
            f"'aue build' there.") from None
    try:
        device = api.device_info()
        extra_notes: list[str] = []

        def check(platform: dict) -> None:
            extra_notes.extend(platform_warnings(plan, platform))
            for note in extra_notes:
                print(f"aue build: WARNING: {note}", file=sys.stderr)

        started = time.perf_counter()
        output = api.build_engine(
            plan.onnx.path, {} if plan.static_shapes else plan.profiles, plan.builder_flags,
            plan.workspace_mib << 20,
            calibration_cache=(plan.calibration_cache.path.read_bytes()
                               if plan.calibration_cache else None),
            dla_core=plan.dla_core,
            timing_cache=(plan.timing_cache.read_bytes()
                          if plan.timing_cache and plan.timing_cache.is_file()
                          else (b"" if plan.timing_cache else None)),
            check_platform=check)
        seconds = time.perf_counter() - started
        partial = plan.engine_path.with_name(plan.engine_path.name + ".partial")
        partial.write_bytes(output.engine_bytes)
        partial.replace(plan.engine_path)  # a crash mid-write leaves no truncated engine
        if plan.timing_cache is not None and output.timing_cache_bytes:
            plan.timing_cache.write_bytes(output.timing_cache_bytes)
        write_sidecar(plan, "built", tensorrt_version=api.version,
                      device={"name": device.name,
                              "compute_capability": device.compute_capability,
                              "total_memory_mib": device.total_memory_mib},
                      platform=output.platform, build_seconds=round(seconds, 1),
                      warnings=list(plan.warnings) + extra_notes,
                      engine_sha256=sha256_of_files(plan.engine_path))
    finally:
        api.close()
    print(f"Engine written: {plan.engine_path} ({len(output.engine_bytes) / 1e6:.1f} MB, "
          f"TensorRT {api.version}, {device.name}, {seconds:.0f} s)")
    return 0
