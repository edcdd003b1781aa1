"""Benchmark config (YAML + flags) and the case list it implies, with reasons for every skip."""
from __future__ import annotations

import json

import pytest

from aue_edge.benchmarks.cases import model_variants
from aue_edge.benchmarks.cli import build_parser, pytest_arguments, resolve_config
from aue_edge.benchmarks.config import BenchConfig
from aue_edge.core.errors import ConfigError
from aue_edge.edge.model_card import AlignmentSpec, InputSpec, ModelCard, OutputSpec


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("rounds: 30\nbatches: [1, 4]\nnum_threads: 2\ngroups: [infer]\n")
    config = resolve_config(path, rounds=7, precisions=("int8",), model_dirs=[tmp_path],
                            batches=None)
    assert (config.rounds, config.batches, config.num_threads) == (7, (1, 4), 2)
    assert config.precisions == ("int8",) and config.groups == ("infer",)
    assert config.model_dirs == (str(tmp_path.resolve()),)
    smoke = resolve_config(path, smoke=True)
    assert (smoke.rounds, smoke.warmup_rounds, smoke.smoke) == (2, 1, True)
    assert config.au_model_dir is None
    assert resolve_config(au_model_dir=tmp_path).au_model_dir == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match=r"unknown benchmark setting\(s\) \['roundz'\]"):
        resolve_config(path, roundz=3)
    # the flags of 'aue bench' are these settings, under the same names
    args = build_parser().parse_args(["--config", str(path), "--rounds", "7", "--precisions",
                                      "int8", "--model-dir", str(tmp_path)])
    assert resolve_config(args.config, rounds=args.rounds, precisions=args.precisions,
                          model_dirs=args.model_dirs) == config


@pytest.mark.parametrize("text, message", [
    ("roundz: 3\n", r"bad\.yaml:1: unknown field 'roundz' \(did you mean 'rounds'\?\)"),
    ("rounds: three\n", r"bad\.yaml:1: field 'rounds': expected an integer, found 'three'"),
    ("rounds: true\n", "field 'rounds': expected an integer, found True"),
    ("batches: [1, 0]\n", "batches must be positive"),
    ("groups: [infer, gpu]\n", "groups must be a non-empty subset"),
    ("num_threads: 0\n", "num_threads must be >= 1"),
    ("au_model_dir: 3\n", r"field 'au_model_dir': expected a string .* or null, found 3"),
    ("- 1\n", "a mapping"),
])
def test_bad_config_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        BenchConfig.load(path)
    assert "bad.yaml" in str(info.value)


def test_config_round_trips_through_json(tmp_path):
    config = BenchConfig(batches=(2,), num_threads=1, smoke=True)
    assert BenchConfig.load(config.save_json(tmp_path / "c.json")) == config


def test_variants_and_skip_reasons(tmp_path):
    model = tmp_path / "aue_crl"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    (model / "model.int8.onnx").write_bytes(b"onnx")
    (model / "model.fp16.engine").write_bytes(b"engine")
    config = BenchConfig(model_dirs=(str(model),))
    without_trt = {v.case_id: v.skip_reason for v in model_variants(config, trt_available=False)}
    # every file the pipeline knows for a precision is a case, named after the file
    assert list(without_trt) == ["aue_crl-ort-fp32", "aue_crl-ort-int8.ort", "aue_crl-ort-int8",
                                 "aue_crl-trt-fp32", "aue_crl-trt-fp16", "aue_crl-trt-int8"]
    assert without_trt["aue_crl-ort-fp32"] is None and without_trt["aue_crl-ort-int8"] is None
    assert "model.int8.ort.onnx does not exist" in without_trt["aue_crl-ort-int8.ort"]
    assert "--target ort-cpu" in without_trt["aue_crl-ort-int8.ort"]
    assert without_trt["aue_crl-trt-fp16"].startswith("TensorRT is not installed on this machine")
    with_trt = {v.case_id: v.skip_reason for v in model_variants(config, trt_available=True)}
    assert with_trt["aue_crl-trt-fp16"] is None
    assert "aue build" in with_trt["aue_crl-trt-int8"] and "model.int8.onnx" in \
        with_trt["aue_crl-trt-int8"]


def test_pytest_command_line(tmp_path):
    args = pytest_arguments(tmp_path / "c.json", tmp_path / "r.json", "aue bench", "int8")
    assert "--benchmark-enable" in args  # wins over the repository's --benchmark-disable
    assert args[args.index("--benchmark-json") + 1] == str(tmp_path / "r.json")
    assert args[-2:] == ["-k", "int8"]
    assert "python_functions=bench_*" in args


def test_model_with_unfeedable_inputs_is_skipped_with_reason(tmp_path):
    model = tmp_path / "lp_net"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    ModelCard("lp_net", InputSpec(), AlignmentSpec(),
              OutputSpec(emotion_probs=None, au_names=("AU1", "AU2")),
              extra_inputs={"landmarks": {"shape": ["N", 68, 2]},
                            "head_pose": {"shape": ["N", 3]}}).save(model)
    variants = model_variants(BenchConfig(model_dirs=(str(model),), backends=("ort",)),
                              trt_available=False)
    assert [v.case_id for v in variants] == ["lp_net-ort-fp32", "lp_net-ort-int8.ort",
                                             "lp_net-ort-int8"]
    for variant in variants:
        # landmarks the pipeline feeds; head_pose it cannot
        assert "takes inputs ['head_pose'] that the edge pipeline cannot feed" in \
            variant.skip_reason


def test_engine_build_info_from_sidecar(tmp_path):
    model = tmp_path / "aue_crl"
    model.mkdir()
    (model / "model.fp16.engine").write_bytes(b"engine")
    (model / "model.fp16.engine.json").write_text(json.dumps({
        "schema": "aue_engine_sidecar/1", "model_card": {}, "precision": "fp16",
        "int8_mode": None, "tensorrt_version": "8.5.2.2",
        "build_flags": {"dla_core": 0, "gpu_fallback": True}}))
    config = BenchConfig(model_dirs=(str(model),), backends=("trt",), precisions=("fp16",
                                                                                  "int8"))
    fp16, int8 = model_variants(config, trt_available=True)
    assert fp16.build_info() == {"engine_precision": "fp16", "int8_mode": None, "dla_core": 0,
                                 "gpu_fallback": True, "engine_tensorrt_version": "8.5.2.2"}
    assert int8.build_info() == {"engine_sidecar": "missing: build details unknown"}
