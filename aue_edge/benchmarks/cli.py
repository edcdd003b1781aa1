"""``aue bench``: run the latency benchmarks, report on saved runs, time a TensorRT engine.

The benchmark stage's command line (``aue_edge.cli`` dispatches ``aue bench`` here):

- ``aue bench [--config bench.yaml] [flags]`` runs the pytest-benchmark suites in this folder
  (groups preprocess, infer, postprocess, end_to_end, ros) with the config's warm-up and
  rounds, writes ``OUT/NAME.json`` (pytest-benchmark JSON, raw timings and the machine record
  inside), ``OUT/NAME.machine.json`` and the report ``OUT/NAME_report/``;
- ``aue bench --report RUN.json [BASELINE.json] [--out DIR]`` writes the Markdown table and
  plots for a saved run, with ratios against a baseline run (e.g. Jetson vs workstation);
- ``aue bench --engine X.engine [--batch N] [--cuda-graph] [--no-data-transfers] ...`` times a
  TensorRT engine like trtexec (needs TensorRT: see ``engine_bench``);
- ``aue bench --machine`` prints the machine record;
- ``aue bench --schedules`` times the pipeline with every-frame detection and inference
  against its detection / inference schedule, interleaved, on the demo clip and the benchmark
  scenes, and reports how much the outputs differ (``schedules``);
- ``aue bench --soak MINUTES`` runs the ROS 2 perception node under a 30 Hz camera load and
  reports latency, answered frames, memory and frames in flight over time (``soak``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from aue_edge.benchmarks.config import BACKENDS, GROUPS, PRECISIONS, BenchConfig
from aue_edge.benchmarks.engine_bench import EngineBenchConfig
from aue_edge.core.errors import BackendUnavailableError, ConfigError

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = Path("runs") / "bench"


def _csv(item_type):
    def parse(text: str):
        try:
            values = tuple(item_type(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {item_type.__name__}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue bench",
        description="Latency benchmarks (pytest-benchmark) with a machine record, Markdown/PNG "
                    "reports and a trtexec-like TensorRT engine benchmark.",
        epilog="Examples: 'aue bench' (full CPU run), 'aue bench --smoke', "
               "'aue bench --report runs/bench/jetson.json runs/bench/cpu.json', "
               "'aue bench --engine aue_edge/edge/models/aue_crl/model.fp16.engine --batch 5 "
               "--cuda-graph'.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--report", nargs="+", metavar="JSON",
                      help="report on RUN.json, optionally against BASELINE.json")
    mode.add_argument("--engine", metavar="ENGINE",
                      help="time a TensorRT engine like trtexec (needs TensorRT)")
    mode.add_argument("--machine", action="store_true", help="print the machine record and exit")
    mode.add_argument("--soak", type=float, metavar="MINUTES",
                      help="stream 640x480 frames with 1 and 5 faces at 30 Hz through the ROS 2 "
                           "perception node for MINUTES; per-minute latency and answered "
                           "frames, node memory and frames in flight (JSON + PNG); exit 1 on a "
                           "crash (uses --model-dir, --threads, --face-image)")
    mode.add_argument("--schedules", action="store_true",
                      help="time the pipeline with detection and inference on every frame "
                           "against its detect_interval_frames / infer_interval_frames "
                           "schedule, interleaved, on the demo clip and the 1- and 5-face "
                           "scenes; per-stage means and how much the outputs differ (uses "
                           "--pipeline-config, --threads, --rounds, --face-image)")
    parser.add_argument("--pipeline-config", default=None, metavar="YAML",
                        help="--schedules: the pipeline config whose schedule is compared "
                             "(default: the built-in defaults)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (runs, engine: {DEFAULT_OUT}; report: "
                             f"<RUN>_report beside RUN.json)")
    parser.add_argument("--name", default=None,
                        help="run name: files OUT/NAME.json etc. (default bench-<UTC time>)")

    run = parser.add_argument_group("suite run (default mode)")
    run.add_argument("--config", type=Path, default=None,
                     help="benchmark config YAML (fields of BenchConfig; flags override it)")
    run.add_argument("--groups", type=_csv(str), default=None,
                     help=f"comma-separated subset of {','.join(GROUPS)}")
    run.add_argument("--model-dir", action="append", default=None, dest="model_dirs",
                     help="model folder (model.onnx, model.int8.onnx, engines, card.json); "
                          "repeat for several; default the shipped aue_edge/edge/models/aue_crl")
    run.add_argument("--au-model", default=None, dest="au_model_dir", metavar="DIR",
                     help="exported AU detector: also time the pipeline with its AU output "
                          "(end_to_end group), beside the same cases without it")
    run.add_argument("--backends", type=_csv(str), default=None,
                     help=f"comma-separated subset of {','.join(BACKENDS)}")
    run.add_argument("--precisions", type=_csv(str), default=None,
                     help=f"comma-separated subset of {','.join(PRECISIONS)}")
    run.add_argument("--batches", type=_csv(int), default=None,
                     help="faces per inference call for the infer group, e.g. 1,5,8")
    run.add_argument("--threads", type=int, default=None, dest="num_threads",
                     help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice)")
    run.add_argument("--rounds", type=int, default=None, help="timed rounds per case")
    run.add_argument("--warmup", type=int, default=None, dest="warmup_rounds",
                     help="warm-up rounds per case (not timed)")
    run.add_argument("--ros-rounds", type=int, default=None,
                     help="timed round trips per ROS 2 case")
    run.add_argument("--ros-stream-s", type=float, default=None,
                     help="seconds of 30 Hz frames for the ROS 2 stream cases")
    run.add_argument("--face-image", default=None,
                     help="photo of one face to build the frames from (default: "
                          "scikit-image's astronaut)")
    run.add_argument("--smoke", action="store_true",
                     help="smoke mode: 1 warm-up + 2 timed rounds per case (checks the suite "
                          "runs; numbers not meaningful)")
    run.add_argument("--no-report", action="store_true", help="skip the report after the run")
    run.add_argument("-k", dest="keyword", default=None,
                     help="pytest -k expression to select cases, e.g. 'pipeline and int8'")

    engine = parser.add_argument_group("engine benchmark (--engine)")
    engine.add_argument("--batch", type=int, default=1, help="faces per query (default 1)")
    engine.add_argument("--warmup-ms", type=float, default=200.0,
                        help="warm-up time in ms (trtexec --warmUp, default 200)")
    engine.add_argument("--duration-s", type=float, default=3.0,
                        help="minimum timed duration in s (trtexec --duration, default 3)")
    engine.add_argument("--iterations", type=int, default=10,
                        help="minimum timed queries (trtexec --iterations, default 10)")
    engine.add_argument("--cuda-graph", action="store_true",
                        help="launch a captured CUDA graph (trtexec --useCudaGraph)")
    engine.add_argument("--no-data-transfers", action="store_true",
                        help="GPU compute only, no copies (trtexec --noDataTransfers)")
    engine.add_argument("--device", type=int, default=0, help="CUDA device index")
    engine.add_argument("--cuda-binding", default="auto",
                        choices=("auto", "cuda-python", "pycuda"))
    return parser


def _default_name() -> str:
    return "bench-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _command_line(argv: list[str]) -> str:
    return shlex.join(["aue", "bench", *argv])


def resolve_config(config_file: str | Path | None = None, *, smoke: bool = False,
                   **fields: Any) -> BenchConfig:
    """The config file (or the defaults) with every field of ``fields`` that is not None
    applied on top (BenchConfig fields, as the ``aue bench`` flags set them), validated; paths
    made absolute. ``smoke``: 1 warm-up + 2 timed rounds per case (:meth:`BenchConfig.as_smoke`)."""
    config = BenchConfig.load(config_file) if config_file else BenchConfig()
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(BenchConfig)})
    if unknown:
        raise ConfigError(f"unknown benchmark setting(s) {unknown}: the settings are the "
                          f"fields of BenchConfig")
    overrides = {name: value for name, value in fields.items() if value is not None}
    if "model_dirs" in overrides:
        overrides["model_dirs"] = tuple(str(Path(d).resolve()) for d in overrides["model_dirs"])
    if "au_model_dir" in overrides:
        overrides["au_model_dir"] = str(Path(overrides["au_model_dir"]).resolve())
    if config.face_image or "face_image" in overrides:
        overrides["face_image"] = str(Path(overrides.get("face_image",
                                                         config.face_image)).resolve())
    config = dataclasses.replace(config, **overrides)
    return config.as_smoke() if smoke else config


def pytest_arguments(config_path: Path, json_path: Path, command: str,
                     keyword: str | None) -> list[str]:
    """The pytest command line that runs the suites (printed, so it can be rerun by hand)."""
    args = [str(BENCH_DIR), "-c", os.devnull, "--rootdir", str(BENCH_DIR),
            "--import-mode=importlib", "-p", "no:cacheprovider", "--strict-markers",
            "-o", "python_files=bench_*.py", "-o", "python_functions=bench_*",
            "--benchmark-enable", "--benchmark-json", str(json_path),
            "--benchmark-group-by=group", "--benchmark-sort=fullname",
            "--benchmark-columns=min,median,mean,max,rounds",
            "--aue-bench-config", str(config_path), "--aue-command", command, "-q", "-rs"]
    if keyword:
        args += ["-k", keyword]
    return args


def run_suites(config: BenchConfig, *, out: Path = DEFAULT_OUT, name: str | None = None,
               keyword: str | None = None, report: bool = True, command: str = "") -> int:
    """Run the suites of ``config``: ``OUT/NAME.json`` (NAME default bench-<UTC time>), the
    machine record beside it and, with ``report``, ``OUT/NAME_report/``; ``keyword`` is a
    pytest -k expression, ``command`` the command line recorded in the results. Returns
    pytest's status."""
    missing = [name for name in ("pytest", "pytest_benchmark")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailableError(
            f"aue bench runs pytest-benchmark suites and {', '.join(missing)} is not installed: "
            f"pip install 'aue_edge[test]' (pytest, pytest-benchmark, scikit-image)")
    import pytest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = name or _default_name()
    config_path = config.save_json(out / f"{name}.config.json")
    json_path = out / f"{name}.json"
    if json_path.exists():
        json_path.unlink()  # never report a stale run as this one
    pytest_args = pytest_arguments(config_path, json_path, command, keyword)
    print("running: " + shlex.join([sys.executable, "-m", "pytest", *pytest_args]), flush=True)
    status = int(pytest.main(pytest_args))
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ConfigError("no benchmark case matched (check --groups and -k)")
    if not json_path.is_file():
        print(f"aue bench: pytest exited with status {status} and wrote no results",
              file=sys.stderr)
        return status or 1
    run_doc = json.loads(json_path.read_text(encoding="utf-8"))
    machine_path = out / f"{name}.machine.json"
    machine_path.write_text(json.dumps(run_doc["machine_info"].get("aue", {}), indent=2) + "\n",
                            encoding="utf-8")
    print(f"results: {json_path}\nmachine record: {machine_path}")
    if report:
        from aue_edge.benchmarks.report import write_report

        files = write_report(json_path)
        print(f"report: {files.markdown} ({files.note or f'{len(files.plots)} plots'})")
    if status != 0:
        print(f"aue bench: some cases failed (pytest status {status}); their rows are missing "
              f"from the results, see the pytest output above", file=sys.stderr)
    return status


def run_engine(config: EngineBenchConfig, *, out: Path = DEFAULT_OUT, name: str | None = None,
               command: str = "") -> int:
    """Time the engine of ``config`` like trtexec; writes ``OUT/NAME.json`` (NAME default
    bench-<UTC time>, ``command`` recorded in it)."""
    from aue_edge.benchmarks.engine_bench import (format_summary, run_engine_benchmark,
                                                  to_benchmark_json)
    from aue_edge.benchmarks.machine import collect_machine_record

    summary = run_engine_benchmark(config)
    print(format_summary(summary))
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"same measurement with trtexec: {summary['trtexec_command']}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name or _default_name()}.json"
    doc = to_benchmark_json(config, summary, collect_machine_record(), command)
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"results: {json_path} (report: aue bench --report {json_path})")
    return 0


def bench_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.machine:
        from aue_edge.benchmarks.machine import collect_machine_record, summary_lines

        record = collect_machine_record()
        print(json.dumps(record, indent=2))
        print("\n".join(summary_lines(record)), file=sys.stderr)
        return 0
    if args.report is not None:
        if len(args.report) > 2:
            raise ConfigError(f"--report takes RUN.json and at most one BASELINE.json, got "
                              f"{len(args.report)} files")
        from aue_edge.benchmarks.report import write_report

        files = write_report(args.report[0], args.report[1] if len(args.report) == 2 else None,
                             args.out)
        print(f"report: {files.markdown}")
        for plot in files.plots:
            print(f"plot: {plot}")
        if files.note:
            print(f"note: {files.note}")
        return 0
    if args.engine is not None:
        config = EngineBenchConfig(
            engine_path=str(Path(args.engine).resolve()), batch=args.batch,
            warmup_ms=args.warmup_ms, duration_s=args.duration_s, iterations=args.iterations,
            use_cuda_graph=args.cuda_graph, no_data_transfers=args.no_data_transfers,
            device_index=args.device, cuda_binding=args.cuda_binding)
        return run_engine(config, out=args.out or DEFAULT_OUT, name=args.name,
                          command=_command_line(argv))
    if args.soak is not None:
        if not args.soak > 0:
            raise ConfigError(f"--soak takes minutes > 0, got {args.soak:g}")
        from aue_edge.benchmarks.soak import run_soak

        return run_soak(args.soak, args.out or DEFAULT_OUT,
                        args.name or _default_name().replace("bench-", "soak-"),
                        args.model_dirs[0] if args.model_dirs else None, args.num_threads,
                        args.face_image, _command_line(argv))
    if args.schedules:
        from aue_edge.benchmarks.schedules import run_schedules

        return run_schedules(args.out or DEFAULT_OUT,
                             args.name or _default_name().replace("bench-", "schedules-"),
                             args.pipeline_config, args.num_threads,
                             3 if args.rounds is None else args.rounds,
                             args.face_image, _command_line(argv))
    config = resolve_config(
        args.config, smoke=args.smoke, groups=args.groups, model_dirs=args.model_dirs,
        au_model_dir=args.au_model_dir, backends=args.backends, precisions=args.precisions,
        batches=args.batches, num_threads=args.num_threads, rounds=args.rounds,
        warmup_rounds=args.warmup_rounds, ros_rounds=args.ros_rounds,
        ros_stream_s=args.ros_stream_s, face_image=args.face_image)
    return run_suites(config, out=args.out or DEFAULT_OUT, name=args.name, keyword=args.keyword,
                      report=not args.no_report, command=_command_line(argv))

