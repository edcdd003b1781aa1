"""The ``aue`` command: one entry point, one sub-command per stage.

Each sub-command lives in the module of its stage and is imported only when used, so
``aue run`` on a robot never imports torch and ``aue --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from aue_edge import __version__
from aue_edge.core.errors import AueError

# name -> (module, function taking argv, one-line help). The function parses its own flags.
SUBCOMMANDS = {
    "data": ("aue_edge.data.cli", "data_main",
             "check a data set copy: samples kept/dropped and why, optional plot"),
    "train": ("aue_edge.train.cli", "train_main", "train a model from a YAML config (host, torch)"),
    "export": ("aue_edge.train.cli", "export_main", "export a checkpoint to ONNX + model card"),
    "import-onnx": ("aue_edge.train.cli", "import_onnx_main",
                    "rebuild a training checkpoint from an AUE-CRL ONNX export"),
    "evaluate": ("aue_edge.train.cli", "evaluate_main",
                 "evaluate a checkpoint or ONNX model on a data set split"),
    "calibrate": ("aue_edge.calibration.cli", "calibrate_main",
                  "INT8 calibration: TensorRT cache, Q/DQ ONNX, accuracy report"),
    "build": ("aue_edge.edge.build", "build_main",
              "build a TensorRT engine for a Jetson from ONNX (needs TensorRT)"),
    "run": ("aue_edge.edge.run", "run_main",
            "run the per-frame pipeline on images, a video, a ROS 2 bag or a webcam"),
    "bench": ("aue_edge.benchmarks.cli", "bench_main",
              "latency benchmarks and reports"),
    "doctor": ("aue_edge.edge.doctor", "doctor_main",
               "on a Jetson: lint, trtexec, aue build, parity and a short benchmark of the "
               "shipped models in one report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue",
        description="Facial emotion and action-unit recognition: train -> calibrate -> "
                    "build/run on the edge.",
        epilog="Run 'aue COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"aue_edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, _func, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        parser.parse_args(argv)
    name = argv[0]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose one of: {', '.join(SUBCOMMANDS)}")
    module_name, func_name, _help = SUBCOMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(argv[1:]) or 0)
    except AueError as exc:
        print(f"aue {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aue {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
