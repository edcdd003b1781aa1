"""``aue build`` decisions, all made without TensorRT: precision vs Q/DQ vs calibration cache,
DLA rules, batch profiles, static models, the trtexec command, the sidecar, and the failure
without TensorRT (which must still print the trtexec command and leave the sidecar)."""
from __future__ import annotations

import importlib.util
import json
import shlex
import struct

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from helpers.onnx_graphs import qdq_conv
from helpers.standin_model import build_standin_model

from aue_edge.edge.backends.tensorrt_backend import read_sidecar
from aue_edge.edge.build import build_main, build_parser, plan_build
from aue_edge.core.errors import (BackendUnavailableError, CalibrationError, ConfigError,
                                  ModelFileError)


def plan_from_command_line(argv):
    """What ``aue build ARGV`` plans (the parser's flags are plan_build's options)."""
    return plan_build(**vars(build_parser().parse_args([str(a) for a in argv])))


def qdq_variant(src, dst, int32_bias: bool = False):
    """The stand-in with its input quantized (Q/DQ), optionally with an int32 bias DQ."""
    model = onnx.load(str(src))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                              numpy_helper.from_array(np.array(0, np.int8), "zp")])
    q = helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["image_q"], name="q_in")
    dq = helper.make_node("DequantizeLinear", ["image_q", "s", "zp"], ["image_dq"], name="dq_in")
    for node in graph.node:
        node.input[:] = ["image_dq" if i == "image" else i for i in node.input]
    new_nodes = [q, dq]
    if int32_bias:
        graph.initializer.extend([
            numpy_helper.from_array(np.zeros(17, np.int32), "b2_q"),
            numpy_helper.from_array(np.array(0.001, np.float32), "s_b")])
        new_nodes.append(helper.make_node("DequantizeLinear", ["b2_q", "s_b"], ["b2_dq"],
                                          name="dq_bias"))
        for node in graph.node:
            node.input[:] = ["b2_dq" if i == "b2" else i for i in node.input]
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def float_hex(value: float) -> str:
    return struct.pack(">f", value).hex()


def test_fp16_plan_profile_trtexec_and_rebuild_command(standin_model, tmp_path):
    p = plan_build(standin_model, out=tmp_path / "m.engine", precision="fp16", min_batch=1,
                   opt_batch=2, max_batch=8, workspace_mib=256)
    assert p.builder_flags == ("FP16",) and p.int8_mode is None and not p.static_shapes
    assert p.profiles == {"image": ((1, 3, 112, 112), (2, 3, 112, 112), (8, 3, 112, 112))}
    cmd = p.trtexec_command()
    assert cmd[0] == "trtexec" and f"--onnx={standin_model}" in cmd
    assert "--minShapes=image:1x3x112x112" in cmd and "--maxShapes=image:8x3x112x112" in cmd
    assert "--memPoolSize=workspace:256" in cmd and "--fp16" in cmd and "--int8" not in cmd
    rebuilt = plan_from_command_line(shlex.split(shlex.join(p.rebuild_command()))[2:])
    assert rebuilt.profiles == p.profiles and rebuilt.builder_flags == p.builder_flags


def test_int8_needs_scales_and_never_mixes_them(standin_model, tmp_path):
    out = tmp_path / "m.engine"
    with pytest.raises(ConfigError, match="--precision must be one of fp32, fp16, int8, got "
                                          "'int4'"):
        plan_build(standin_model, out=out, precision="int4")
    with pytest.raises(ConfigError, match="no Q/DQ nodes and no --calibration-cache"):
        plan_build(standin_model, out=out, precision="int8")
    qdq = qdq_variant(standin_model, tmp_path / "model.int8.onnx")
    p = plan_build(qdq, out=out, precision="int8", fp16_fallback=True)
    assert p.int8_mode == "explicit-qdq" and p.builder_flags == ("FP16", "INT8")
    assert "--int8" in p.trtexec_command() and not any(
        c.startswith("--calib") for c in p.trtexec_command())
    cache = tmp_path / "calibration.cache"
    cache.write_text(f"TRT-8502-EntropyCalibration2\nimage: {float_hex(2.5 / 127)}\n"
                     f"pooled: {float_hex(0.9 / 127)}\n")
    with pytest.raises(ConfigError, match="second, conflicting set of scales"):
        plan_build(qdq, out=out, precision="int8", calibration_cache=cache)
    with pytest.raises(ConfigError, match="--precision int8"):
        plan_build(qdq, out=out, precision="fp16")
    with pytest.raises(ConfigError, match="only applies to --precision int8"):
        plan_build(standin_model, out=out, precision="fp16", calibration_cache=cache)
    with pytest.raises(ConfigError, match="--fp16-fallback"):
        plan_build(standin_model, out=out, precision="fp32", fp16_fallback=True)
    implicit = plan_build(standin_model, out=out, precision="int8", calibration_cache=cache)
    assert implicit.int8_mode == "implicit-calibration-cache"
    assert implicit.calibration_cache.cache.version == (8, 5, 2)
    assert implicit.calibration_cache.num_tensors == 2
    assert f"--calib={cache}" in implicit.trtexec_command()
    assert any("deprecated since TensorRT 10.1" in w for w in implicit.warnings)
    bias = qdq_variant(standin_model, tmp_path / "bias.onnx", int32_bias=True)
    with pytest.raises(ModelFileError, match=r"(?s)\[int32-bias-dq\] dq_bias.*QuantizeBias"):
        plan_build(bias, out=out, precision="int8")


def test_calibration_cache_format_errors_name_the_line(standin_model, tmp_path):
    out, cache = tmp_path / "m.engine", tmp_path / "c.cache"
    for text, message in (("TRT-8502\nimage: 3c23d70a\n", ":1: expected a header"),
                          ("TRT-8502-EntropyCalibration2\nimage: 3c23d70a\npooled 3c23\n",
                           ":3: expected"),
                          ("TRT-8502-EntropyCalibration2\npooled: 3c23d70a\n",
                           r"no scale for network input\(s\) \['image'\]")):
        cache.write_text(text)
        with pytest.raises(CalibrationError, match=message):
            plan_build(standin_model, out=out, precision="int8", calibration_cache=cache)


@pytest.mark.parametrize("text, message", [
    ("TRT-8502-EntropyCalibration2\nimage: 7fc00000\n", "positive finite"),      # NaN
    ("TRT-8502-EntropyCalibration2\nimage: 7f800000\n", "positive finite"),      # inf
    ("TRT-8502-EntropyCalibration2\nimage: 00000000\n", "positive finite"),      # zero
    ("TRT-8502-EntropyCalibration2\nimage: bc23d70a\n", "positive finite"),      # negative
    ("TRT-8502-EntropyCalibration2\nimage: 3c23d70a\nimage: 3c23d70a\n", "appears twice"),
    ("TRT-8502-FancyCalibration\nimage: 3c23d70a\n", "unknown calibrator"),
    ("TRT-8502-EntropyCalibration2\nimage: 3c23d70a\n/other/Conv_output_0: 3c23d70a\n",
     "does not belong to"),
])
def test_build_validates_caches_with_the_projects_full_validator(standin_model, tmp_path, text,
                                                                  message):
    """Issue 14 item 6: caches 'aue build' used to accept and read_cache rejects."""
    cache = tmp_path / "c.cache"
    cache.write_text(text)
    with pytest.raises(CalibrationError, match=message):
        plan_build(standin_model, out=tmp_path / "m.engine", precision="int8",
                   calibration_cache=cache)


def test_cache_header_is_checked_against_the_tensorrt_that_builds(standin_model, tmp_path):
    out, cache = tmp_path / "m.engine", tmp_path / "c.cache"
    cache.write_text(f"TRT-8502-EntropyCalibration2\nimage: {float_hex(2.5 / 127)}\n")
    int8 = dict(out=out, precision="int8", calibration_cache=cache)
    assert plan_build(standin_model, **int8, installed_trt="8.5.2.2").trt_target.name == "8.5"
    with pytest.raises(CalibrationError, match="is for TensorRT 8.5.2, this device runs "
                                               "TensorRT 10.3.0"):
        plan_build(standin_model, **int8, installed_trt="10.3.0.26")
    with pytest.raises(CalibrationError, match="TRT-8602-EntropyCalibration2"):
        plan_build(standin_model, **int8, trt_version="8.6")
    cache.write_text(f"TRT-8502-MinMaxCalibration\nimage: {float_hex(2.5 / 127)}\n")
    with pytest.raises(CalibrationError, match="MinMaxCalibration calibrator"):
        plan_build(standin_model, **int8, installed_trt="8.5.2.2")
    with pytest.raises(ConfigError, match="TensorRT 11 removed implicit INT8"):
        plan_build(standin_model, out=out, installed_trt="11.0.0")
    with pytest.raises(ConfigError, match="--trt-version 8.5 but this machine runs TensorRT "
                                          "10.3.0"):
        plan_build(standin_model, out=out, trt_version="8.5", installed_trt="10.3.0")


def test_build_stops_on_what_the_target_tensorrt_rejects(standin_model, tmp_path):
    """The lint runs before TensorRT: a ConvTranspose quantized on axis 1 stops an 8.x build
    and is a recorded warning for 10.x; opset 18 stops 8.5 only."""
    deconv = tmp_path / "deconv.onnx"
    onnx.save(qdq_conv(weight_axis=1, op="ConvTranspose", channels=3), str(deconv))
    options = dict(out=tmp_path / "d.engine", precision="int8", detector=True)
    with pytest.raises(ModelFileError, match=r"(?s)fail on TensorRT 8.6.*deconv-weight-axis"):
        plan_build(deconv, **options, trt_version="8.6")
    p = plan_build(deconv, **options, trt_version="10.x")
    assert any("[deconv-weight-axis]" in w and "advice" in w for w in p.warnings)
    assert p.sidecar("pending")["tensorrt_target"] == "10.x"
    assert "--trt-version" in p.rebuild_command()
    unknown = plan_build(deconv, **options)  # no TensorRT here, no --trt-version: 8.x only
    assert any("breaks TensorRT 8.5, 8.6" in w for w in unknown.warnings)


def test_dla_rules(standin_model, tmp_path):
    out = tmp_path / "m.engine"
    with pytest.raises(ConfigError, match="DLA runs FP16 and INT8 only"):
        plan_build(standin_model, out=out, precision="fp32", dla_core=0)
    with pytest.raises(ConfigError, match="DLA does not support dynamic shapes"):
        plan_build(standin_model, out=out, precision="fp16", dla_core=0, max_batch=4)
    with pytest.raises(ConfigError, match="only applies with --dla-core"):
        plan_build(standin_model, out=out, gpu_fallback=False)
    p = plan_build(standin_model, out=out, precision="fp16", dla_core=1, min_batch=2,
                   opt_batch=2, max_batch=2)
    assert p.builder_flags == ("FP16", "GPU_FALLBACK")
    assert {"--useDLACore=1", "--allowGPUFallback"} <= set(p.trtexec_command())
    assert any("GPU fallback is on" in w for w in p.warnings)
    assert any("[dla-unsupported-op] pooled: GlobalAveragePool does not run on the DLA: it "
               "falls back to the GPU" in w for w in p.warnings)
    with pytest.raises(ModelFileError, match="(?s)GlobalAveragePool does not run on the DLA "
                                             "and --no-gpu-fallback is set"):
        plan_build(standin_model, out=out, precision="fp16", dla_core=0, max_batch=1,
                   gpu_fallback=False)


def test_batch_profile_static_models_and_paths(standin_model, tmp_path):
    out = tmp_path / "m.engine"
    with pytest.raises(ConfigError, match="1 <= --min-batch <= --opt-batch <= --max-batch"):
        plan_build(standin_model, out=out, min_batch=4, opt_batch=2)
    fixed = build_standin_model(tmp_path / "fixed", batch=1)
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        plan_build(fixed, out=out, max_batch=8)
    static = plan_build(fixed, out=out, max_batch=1)
    assert static.static_shapes and not any("Shapes=" in c for c in static.trtexec_command())
    with pytest.raises(ConfigError, match="ends with one of"):
        plan_build(standin_model, out=tmp_path / "m.bin")
    out.write_bytes(b"old engine")
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        plan_build(standin_model, out=out)
    assert plan_build(standin_model, out=out, overwrite=True).engine_path == out
    out.unlink()
    with pytest.raises(ConfigError, match="--workspace-mib"):
        plan_build(standin_model, out=out, workspace_mib=0)
    with pytest.raises(ConfigError, match="does not exist"):
        plan_build(standin_model, out=out, timing_cache=tmp_path / "no" / "t.cache")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        plan_build(tmp_path / "junk.onnx", out=out)
    model = onnx.load(str(standin_model))
    model.opset_import[0].version = 18
    onnx.save(model, str(tmp_path / "opset18.onnx"))
    assert any("opset 18" in w for w in plan_build(tmp_path / "opset18.onnx", out=out).warnings)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here: the no-TensorRT path is not reachable")
def test_without_tensorrt_prints_trtexec_writes_sidecar_and_fails_clearly(standin_model, tmp_path,
                                                                          capsys):
    out = tmp_path / "engines" / "model.int8.engine"
    cache = tmp_path / "calibration.cache"
    cache.write_text(f"TRT-8502-EntropyCalibration2\nimage: {float_hex(2.5 / 127)}\n")
    with pytest.raises(BackendUnavailableError, match="NOT built; run the trtexec command"):
        build_main([str(standin_model), "--precision", "int8", "--calibration-cache", str(cache),
                    "--timing-cache", str(tmp_path / "timing.cache"), "--out", str(out)])
    stdout = capsys.readouterr().out
    assert "trtexec --onnx=" in stdout and f"--calib={cache}" in stdout
    assert f"--timingCacheFile={tmp_path / 'timing.cache'}" in stdout
    assert not out.exists()
    sidecar = read_sidecar(out)
    assert sidecar["build_status"] == "not_built" and "TensorRT" in sidecar["not_built_reason"]
    assert sidecar["model_card"]["outputs"]["au_names"][0] == "AU1"
    assert len(sidecar["onnx"]["sha256"]) == 64 and sidecar["int8_mode"] == (
        "implicit-calibration-cache")
    assert sidecar["build_flags"]["batch"] == {"min": 1, "opt": 1, "max": 8}
    assert sidecar["trtexec_command"].split()[0] == "trtexec"
    assert json.loads(json.dumps(sidecar)) == sidecar


def test_detector_engine_plan(tmp_path):
    """`aue build --detector` for YuNet: no card, one frame, dynamic H/W up to the pipeline's
    detect_max_side_px (padded to /32), tuned for a 4:3 frame; DLA refused (dynamic shapes)."""
    from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH

    out = tmp_path / "yunet.engine"
    p = plan_build(DEFAULT_MODEL_PATH, out=out, detector=True, detect_max_side_px=500)
    assert p.card is None and p.detect_max_side_px == 500
    assert p.profiles == {"input": ((1, 3, 32, 32), (1, 3, 384, 512), (1, 3, 512, 512))}
    cmd = p.trtexec_command()
    assert "--optShapes=input:1x3x384x512" in cmd and "--maxShapes=input:1x3x512x512" in cmd
    side = p.sidecar("pending")
    assert side["role"] == "face_detector" and side["model_card"] is None
    again = plan_from_command_line(p.rebuild_command()[2:])
    assert again.profiles == p.profiles
    with pytest.raises(ConfigError, match="one frame at a time"):
        plan_build(DEFAULT_MODEL_PATH, out=out, detector=True, max_batch=4)
    with pytest.raises(ConfigError, match="DLA does not support dynamic shapes"):
        plan_build(DEFAULT_MODEL_PATH, out=out, detector=True, dla_core=0)
    with pytest.raises(ConfigError, match="only applies with --detector"):
        plan_build(build_standin_model(tmp_path / "c"), out=out, detect_max_side_px=320)
    two_inputs = build_standin_model(tmp_path / "two", extra_input="pose")
    with pytest.raises(ModelFileError, match="a face detector has one input"):
        plan_build(two_inputs, out=out, detector=True)


def test_lint_reads_scales_kept_in_external_data(tmp_path):
    """Q/DQ scales and zero points saved in a .onnx.data file are read for the lint."""
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save(qdq_conv(channels=3), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    assert (path.parent / "m.onnx.data").is_file()
    p = plan_build(path, out=tmp_path / "m.engine", precision="int8", detector=True,
                   trt_version="8.5")
    assert p.int8_mode == "explicit-qdq" and not any("[qdq-" in w for w in p.warnings)
