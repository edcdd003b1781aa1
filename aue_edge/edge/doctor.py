"""``aue doctor``: one report of what works on THIS Jetson, for a user to attach to a bug.

Edge stage, run on the target device. Steps, each recorded as ``ok`` / ``failed`` /
``skipped`` with its reason and the tail of its output (a failing step never stops the next):

1. environment: Python, L4T release / JetPack, TensorRT, CUDA bindings, ONNX Runtime, device;
2. the TensorRT lint of every shipped model for the installed TensorRT
   (``aue_edge/edge/trt_lint.py``);
3. ``trtexec`` on every shipped model in each precision it supports (FP32, FP16, INT8 from the
   Q/DQ model, and INT8 from the calibration cache on TensorRT 8.x);
4. ``polygraphy run --trt --onnxrt`` on the FP32 classifier (TensorRT vs ONNX Runtime);
5. ``aue build`` of the same engines (the project's own build path, sidecars included);
6. parity: each built classifier engine against ONNX Runtime on the same faces (max absolute
   difference of the probabilities, top-1 agreement);
7. a short engine benchmark (``aue bench --engine``) of each built engine.

Everything goes into ``OUT/doctor_report.json`` (and the engines, logs and sidecars beside it).
What it settles is in docs/jetson.md. NOT EXECUTED in this project: there is no Jetson and no
TensorRT here; the tests drive it with TensorRT absent and with a scripted ``trtexec``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from aue_edge import __version__
from aue_edge.core.errors import ConfigError
from aue_edge.edge.model_card import (CALIBRATION_CACHE_FILENAME, FP32_MODEL_FILENAME,
                                      INT8_QDQ_MODEL_FILENAME)

MODEL_DIR = Path(__file__).resolve().parent / "models"
REPORT_NAME = "doctor_report.json"
TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")
OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class EngineJob:
    """One engine the doctor builds: the model, its precision and how INT8 gets its scales."""

    name: str
    onnx: Path
    precision: str
    detector: bool = False
    calibration_cache: Path | None = None

    def build_argv(self, out: Path) -> list[str]:
        argv = [str(self.onnx), "--precision", self.precision, "--out", str(out), "--overwrite"]
        if self.detector:
            argv.append("--detector")
        if self.calibration_cache is not None:
            argv += ["--calibration-cache", str(self.calibration_cache)]
        return argv

    def trtexec_argv(self, trtexec: str, out: Path) -> list[str]:
        argv = [trtexec, f"--onnx={self.onnx}", f"--saveEngine={out}"]
        if self.precision in ("fp16", "int8"):
            argv.append("--fp16")
        if self.precision == "int8":
            argv.append("--int8")
        if self.calibration_cache is not None:
            argv.append(f"--calib={self.calibration_cache}")
        if self.detector:
            argv += ["--minShapes=input:1x3x32x32", "--optShapes=input:1x3x480x640",
                     "--maxShapes=input:1x3x640x640"]
        else:
            argv += ["--minShapes=image:1x3x112x112", "--optShapes=image:1x3x112x112",
                     "--maxShapes=image:8x3x112x112"]
        return argv


def engine_jobs(model_dir: Path, trt_major: int | None) -> list[EngineJob]:
    """The shipped models in each precision; the cache job only where implicit INT8 exists."""
    classifier, yunet = model_dir / "aue_crl", model_dir / "yunet"
    fp32, qdq = classifier / FP32_MODEL_FILENAME, classifier / INT8_QDQ_MODEL_FILENAME
    jobs = [EngineJob("classifier-fp32", fp32, "fp32"),
            EngineJob("classifier-fp16", fp32, "fp16"),
            EngineJob("classifier-int8-qdq", qdq, "int8"),
            EngineJob("yunet-fp32", yunet / "face_detection_yunet.onnx", "fp32", detector=True),
            EngineJob("yunet-fp16", yunet / "face_detection_yunet.onnx", "fp16", detector=True)]
    if trt_major is None or trt_major < 10:
        jobs.insert(3, EngineJob("classifier-int8-cache", fp32, "int8",
                                 calibration_cache=classifier / CALIBRATION_CACHE_FILENAME))
    return jobs


def _tail(text: str) -> str:
    return text[-OUTPUT_TAIL_CHARS:]


class Doctor:
    """Runs the steps and collects the report. ``run_command`` runs an external command
    (argv, timeout_s) -> (returncode, output); tests pass a scripted one."""

    def __init__(self, out_dir: Path, model_dir: Path = MODEL_DIR, timeout_s: float = 900.0,
                 bench_seconds: float = 5.0,
                 run_command: Callable[[list[str], float], tuple[int, str]] | None = None
                 ) -> None:
        self.out_dir, self.model_dir = out_dir, model_dir
        self.timeout_s, self.bench_seconds = timeout_s, bench_seconds
        self.run_command = run_command or _run_command
        self.report: dict = {"schema": "aue_doctor_report/1", "aue_edge_version": __version__,
                             "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(
                                 timespec="seconds"), "steps": []}
        self.built: dict[str, Path] = {}

    def step(self, name: str, func: Callable[[], dict]) -> dict:
        started = time.perf_counter()
        try:
            result = func()
        except Exception as exc:  # noqa: BLE001 - a doctor records every failure and goes on
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        result = {"step": name, **result, "seconds": round(time.perf_counter() - started, 1)}
        self.report["steps"].append(result)
        tail = (result.get("output_tail") or "").strip().splitlines()
        why = result.get("error") or result.get("reason") or (tail[-1] if tail else "")
        print(f"aue doctor: {name}: {result['status']}"
              + (f" ({why})" if result["status"] != "ok" and why else ""), flush=True)
        return result

    # ------------------------------------------------------------------ steps
    def environment(self) -> dict:
        env = {"status": "ok", "python": sys.version.split()[0], "platform": platform.platform(),
               "machine": platform.machine()}
        release = Path("/etc/nv_tegra_release")
        env["l4t_release"] = release.read_text().splitlines()[0] if release.is_file() else None
        for module in ("tensorrt", "onnxruntime", "numpy", "cv2", "cuda", "pycuda"):
            try:
                env[module] = str(getattr(importlib.import_module(module), "__version__", "?"))
            except ImportError as exc:
                env[module] = f"not importable: {exc}"
        code, output = self.run_command(["dpkg-query", "-W", "nvidia-jetpack"], 30)
        env["jetpack_package"] = output.strip() if code == 0 else None
        return env

    def installed_trt(self) -> tuple[int, ...] | None:
        from aue_edge.edge.backends.trt_api import installed_tensorrt_version
        from aue_edge.edge.trt_targets import parse_version

        version = installed_tensorrt_version()
        return None if version is None else parse_version(version)

    def lint(self, version: tuple[int, ...] | None) -> dict:
        from aue_edge.edge.trt_lint import ALL_TARGETS, breaking, lint_file
        from aue_edge.edge.trt_targets import target_of_version

        targets = ALL_TARGETS if version is None else (target_of_version(version).name,)
        files = {}
        for path in sorted(self.model_dir.glob("*/*.onnx")):
            found = lint_file(path)
            files[str(path.relative_to(self.model_dir))] = {
                "breaking": [f.line(targets) for f in breaking(found, targets)],
                "advice": [f.line(targets) for f in found if not breaking([f], targets)]}
        return {"status": "ok", "targets": list(targets), "files": files}

    def trtexec(self, job: EngineJob) -> dict:
        trtexec = next((c for c in TRTEXEC_CANDIDATES if shutil.which(c)), None)
        if trtexec is None:
            return {"status": "skipped", "reason": "trtexec not found (it ships with JetPack "
                                                   "in /usr/src/tensorrt/bin)"}
        argv = job.trtexec_argv(trtexec, self.out_dir / f"{job.name}.trtexec.engine")
        code, output = self.run_command(argv, self.timeout_s)
        return {"status": "ok" if code == 0 else "failed", "command": argv, "returncode": code,
                "output_tail": _tail(output)}

    def polygraphy(self) -> dict:
        if shutil.which("polygraphy") is None:
            return {"status": "skipped", "reason": "polygraphy not installed (pip install "
                                                   "polygraphy)"}
        argv = ["polygraphy", "run", str(self.model_dir / "aue_crl" / FP32_MODEL_FILENAME), "--trt",
                "--onnxrt", "--input-shapes", "image:[1,3,112,112]"]
        code, output = self.run_command(argv, self.timeout_s)
        return {"status": "ok" if code == 0 else "failed", "command": argv, "returncode": code,
                "output_tail": _tail(output)}

    def aue_build(self, job: EngineJob) -> dict:
        out = self.out_dir / f"{job.name}.engine"
        argv = [sys.executable, "-m", "aue_edge.cli", "build", *job.build_argv(out)]
        code, output = self.run_command(argv, self.timeout_s)
        if code == 0:
            self.built[job.name] = out
        return {"status": "ok" if code == 0 else "failed", "command": argv, "returncode": code,
                "output_tail": _tail(output)}

    def parity(self, name: str, engine: Path) -> dict:
        """TensorRT engine vs ONNX Runtime FP32 on the same (seeded) normalised faces."""
        from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
        from aue_edge.edge.backends.tensorrt_backend import TrtBackend

        batch = np.random.default_rng(0).standard_normal((4, 3, 112, 112)).astype(np.float32)
        with OrtBackend(self.model_dir / "aue_crl" / FP32_MODEL_FILENAME) as ort:
            reference = ort.infer({"image": batch})
        with TrtBackend(engine) as trt:
            got = trt.infer({"image": batch})
        diffs = {k: float(np.abs(got[k].astype(np.float32) - reference[k]).max())
                 for k in reference}
        agreement = float(np.mean(got["emotion_probs"].argmax(1)
                                  == reference["emotion_probs"].argmax(1)))
        return {"status": "ok", "engine": name, "max_abs_diff": diffs,
                "emotion_top1_agreement": agreement}

    def bench(self, name: str, engine: Path) -> dict:
        from aue_edge.benchmarks.engine_bench import EngineBenchConfig, run_engine_benchmark

        summary = run_engine_benchmark(EngineBenchConfig(
            str(engine), batch=1, warmup_ms=200.0, duration_s=self.bench_seconds,
            iterations=10))
        summary.pop("timings", None)
        return {"status": "ok", "engine": name, "summary": summary}

    # ------------------------------------------------------------------ all of it
    def run(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.report["environment"] = self.step("environment", self.environment)
        version = self.installed_trt()
        self.report["tensorrt_version"] = None if version is None else list(version)
        self.step("lint", lambda: self.lint(version))
        jobs = engine_jobs(self.model_dir, None if version is None else version[0])
        for job in jobs:
            self.step(f"trtexec:{job.name}", lambda job=job: self.trtexec(job))
        self.step("polygraphy", self.polygraphy)
        for job in jobs:
            self.step(f"aue build:{job.name}", lambda job=job: self.aue_build(job))
        for name, engine in self.built.items():
            if name.startswith("classifier"):
                self.step(f"parity:{name}", lambda n=name, e=engine: self.parity(n, e))
            self.step(f"bench:{name}", lambda n=name, e=engine: self.bench(n, e))
        counts = {}
        for step in self.report["steps"]:
            counts[step["status"]] = counts.get(step["status"], 0) + 1
        self.report["summary"] = counts
        path = self.out_dir / REPORT_NAME
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")
        partial.replace(path)
        return path


def _run_command(argv: list[str], timeout_s: float) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except FileNotFoundError as exc:
        return 127, str(exc)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
        return 124, output + f"\n(timed out after {timeout_s:.0f} s)"
    return done.returncode, done.stdout + done.stderr


def doctor_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aue doctor", description="On a Jetson: lint, trtexec, polygraphy, 'aue build', "
        "TensorRT-vs-ONNX Runtime parity and a short benchmark of the shipped models, in one "
        "report (OUT/doctor_report.json) to attach to a bug report.")
    parser.add_argument("--out", required=True, help="folder for the report, engines and logs")
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="limit for each external command (default 900 s)")
    parser.add_argument("--bench-seconds", type=float, default=5.0,
                        help="timed seconds of each engine benchmark (default 5)")
    args = parser.parse_args(argv)
    if args.timeout_s <= 0 or args.bench_seconds < 0:
        raise ConfigError("--timeout-s must be > 0 and --bench-seconds >= 0")
    path = Doctor(Path(args.out), timeout_s=args.timeout_s,
                  bench_seconds=args.bench_seconds).run()
    report = json.loads(path.read_text())
    print(f"aue doctor: report written to {path} ({report['summary']})")
    return 0
