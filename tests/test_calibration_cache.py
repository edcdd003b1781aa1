"""TensorRT calibration cache: byte format, round trip, and clear errors on bad caches."""
from __future__ import annotations

import struct

import pytest

from aue_edge.edge import trt_cache
from aue_edge.edge.trt_cache import (ALGORITHM_BY_METHOD, hex_to_scale, read_cache, scale_to_hex,
                                     write_cache)
from aue_edge.core.errors import CalibrationError, ConfigError
from aue_edge.edge.trt_targets import decode_version_code, resolve_target, version_code


def test_hex_is_big_endian_float32_of_amax_over_127():
    # 1/127 = 0x3C010204 and 0.5/127 = 0x3B810204 (IEEE-754 float32, most significant byte
    # first); trt_cache.py's docstring used to say 3b810a13.
    assert scale_to_hex(1.0 / 127) == "3c010204"
    assert scale_to_hex(0.5 / 127) == "3b810204"
    assert bytes.fromhex(scale_to_hex(2.0)) == struct.pack(">f", 2.0)
    assert hex_to_scale("3c010204") == pytest.approx(1.0 / 127, rel=1e-7)
    assert f"0.5/127 -> ``{scale_to_hex(0.5 / 127)}``" in trt_cache.__doc__


def test_round_trip_keeps_names_order_and_values(tmp_path):
    ranges = {"image": 2.64, "onnx::Conv_12": 0.5, "/backbone/layer1/Relu_output_0": 7.25}
    path = write_cache(tmp_path / "c.cache", ranges, trt_version="8502",
                       algorithm="EntropyCalibration2")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    assert lines[2] == "onnx::Conv_12: 3b810204"
    cache = read_cache(path)
    assert (cache.trt_version, cache.algorithm) == ("8502", "EntropyCalibration2")
    assert list(cache.scales) == list(ranges)
    for name, amax in ranges.items():
        assert cache.amax(name) == pytest.approx(amax, rel=1e-6)
    cache.check_matches(set(ranges) | {"other"}, "this model")


def test_method_names_are_tensorrt_calibrator_names():
    assert ALGORITHM_BY_METHOD == {"entropy": "EntropyCalibration2",
                                   "minmax": "MinMaxCalibration",
                                   "percentile": "LegacyCalibration"}


def test_cache_for_another_model_is_an_error(tmp_path):
    path = write_cache(tmp_path / "c.cache", {"input_1": 1.0, "conv_out": 2.0})
    with pytest.raises(CalibrationError, match="does not belong to model.onnx.*input_1"):
        read_cache(path).check_matches({"image", "conv_out"}, "model.onnx")


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("image: 3c010204\n", "expected a header"),
    ("TRT-8502-FancyCalibration\nimage: 3c010204\n", "unknown calibrator"),
    ("TRT-8502-EntropyCalibration2\n", "no tensor lines"),
    ("TRT-8502-EntropyCalibration2\nimage: 3c010204\nconv: 3c01", r":3: expected"),
    ("TRT-8502-EntropyCalibration2\nimage 3c010204\n", r":2: expected"),
    ("TRT-8502-EntropyCalibration2\nimage: 3c010204\nimage: 3c010204\n", "twice"),
    ("TRT-8502-EntropyCalibration2\nimage: 7fc00000\n", "positive finite"),
    ("TRT-8502-EntropyCalibration2\nimage: 00000000\n", "positive finite"),
])
def test_corrupt_or_truncated_cache_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.cache"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=message):
        read_cache(path)


def test_binary_file_and_missing_file_are_clear_errors(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"ftrt\x00\x91\xff" * 10)
    with pytest.raises(CalibrationError, match="not a text cache"):
        read_cache(engine)
    with pytest.raises(CalibrationError, match="does not exist"):
        read_cache(tmp_path / "missing.cache")


def test_writer_refuses_values_tensorrt_cannot_read(tmp_path):
    with pytest.raises(CalibrationError, match="positive finite"):
        write_cache(tmp_path / "c.cache", {"image": 0.0})
    with pytest.raises(CalibrationError, match="unknown TensorRT calibrator"):
        write_cache(tmp_path / "c.cache", {"image": 1.0}, algorithm="Percentile")
    with pytest.raises(CalibrationError, match="digits"):
        write_cache(tmp_path / "c.cache", {"image": 1.0}, trt_version="8.5")


@pytest.mark.parametrize("version, code", [((8, 5, 2), 8502), ((8, 6, 2), 8602),
                                           ((10, 3, 0), 100300), ((10, 13, 2), 101302)])
def test_header_version_code_is_encoded_as_each_tensorrt_release_writes_it(version, code):
    # NV_TENSORRT_VERSION: major*1000+minor*100+patch up to 8.x, major*10000+... from 10.0.
    assert version_code(version) == code
    assert decode_version_code(code) == version


def test_trt_version_targets_name_the_jetpack_release_and_refuse_tensorrt_11():
    assert resolve_target("8.5").cache_version_code == "8502"
    assert resolve_target("8.6").cache_version_code == "8602"
    assert resolve_target("10.x").cache_version_code == "100300"
    assert resolve_target("8.5.1").cache_version_code == "8501"
    assert resolve_target("10.7.0").name == "10.x"
    with pytest.raises(ConfigError, match="TensorRT 11 removed implicit INT8"):
        resolve_target("11.0")
    with pytest.raises(ConfigError, match="older than this project supports"):
        resolve_target("8.4.1")
    with pytest.raises(ConfigError, match="not a TensorRT version"):
        resolve_target("eight")


def test_cache_replays_only_on_the_tensorrt_and_calibrator_of_its_header(tmp_path):
    cache = read_cache(write_cache(tmp_path / "c.cache", {"image": 1.0}, trt_version="8502"))
    cache.check_replayable((8, 5, 2))
    with pytest.raises(CalibrationError, match=r"for TensorRT 8.5.2, this device runs TensorRT "
                                               r"10.3.0.*--trt-version 10.3.0.*TRT-100300"):
        cache.check_replayable((10, 3, 0))
    minmax = read_cache(write_cache(tmp_path / "m.cache", {"image": 1.0},
                                    algorithm="MinMaxCalibration"))
    with pytest.raises(CalibrationError, match="MinMaxCalibration calibrator.*EntropyCalibration2"):
        minmax.check_replayable((8, 5, 2))


def test_inputs_missing_from_a_cache_are_an_error(tmp_path):
    cache = read_cache(write_cache(tmp_path / "c.cache", {"conv_out": 1.0}))
    with pytest.raises(CalibrationError, match=r"no scale for network input\(s\) \['image'\]"):
        cache.check_matches({"image", "conv_out"}, "model.onnx", required=["image"])


def test_calibration_config_takes_a_tensorrt_target_not_a_header_code():
    from aue_edge.calibration.config import CalibrationConfig

    assert CalibrationConfig().trt_version == "8.5"
    assert CalibrationConfig(trt_version="10.x").trt_version == "10.x"
    with pytest.raises(ConfigError, match="trt_version: .*'8502' is not a TensorRT version"):
        CalibrationConfig(trt_version="8502")
