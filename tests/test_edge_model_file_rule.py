"""The model-file rule of the edge pipeline (``resolve_model_file``, ``MODEL_FILES``).

ONNX Runtime with precision auto or int8 prefers the CPU INT8 model (``model.int8.ort.onnx``),
then the TensorRT-style Q/DQ model (``model.int8.onnx``), then (auto only) ``model.onnx``.
"""
from __future__ import annotations

import pytest

from aue_edge.edge.backends.factory import find_model_card
from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.edge.pipeline import DEFAULT_MODEL_DIR, resolve_model_file


def _names(directory, backend: str = "ort") -> dict[str, str]:
    return {precision: resolve_model_file(directory, "auto", backend, precision).name
            for precision in ("auto", "int8", "fp32")}


def test_ort_prefers_the_cpu_int8_model_then_the_tensorrt_one_then_fp32(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    assert resolve_model_file(tmp_path, "auto", "ort").name == "model.onnx"
    with pytest.raises(ModelFileError, match="looked for model.int8.ort.onnx, model.int8.onnx"):
        resolve_model_file(tmp_path, "auto", "ort", "int8")     # never a silent FP32 fallback
    (tmp_path / "model.int8.onnx").write_bytes(b"")
    assert _names(tmp_path) == {"auto": "model.int8.onnx", "int8": "model.int8.onnx",
                                "fp32": "model.onnx"}
    (tmp_path / "model.int8.ort.onnx").write_bytes(b"")
    assert _names(tmp_path) == {"auto": "model.int8.ort.onnx", "int8": "model.int8.ort.onnx",
                                "fp32": "model.onnx"}
    # A named file always wins over the rule.
    assert resolve_model_file(tmp_path, "model.int8.onnx", "ort", "int8").name == \
        "model.int8.onnx"


def test_precision_must_exist_for_the_backend(tmp_path):
    (tmp_path / "model.fp16.engine").write_bytes(b"")
    assert resolve_model_file(tmp_path, "auto", "trt", "fp16").name == "model.fp16.engine"
    with pytest.raises(ModelFileError, match="looked for model.int8.engine$|model.int8.engine;"):
        resolve_model_file(tmp_path, "auto", "trt", "int8")
    with pytest.raises(ConfigError, match="precision 'fp16' is not available with backend 'ort'"):
        resolve_model_file(tmp_path, "auto", "ort", "fp16")


def test_shipped_folder_runs_the_cpu_int8_model_on_onnx_runtime():
    path = resolve_model_file(None, "auto", "ort")
    assert path == DEFAULT_MODEL_DIR / "model.int8.ort.onnx"
    card = find_model_card(path)
    assert card.precision == "int8-qdq-ort"
    assert card.provenance["calibration"]["target"] == "ort-cpu"
    # The TensorRT-style model and FP32 stay reachable by precision / file name.
    assert find_model_card(DEFAULT_MODEL_DIR / "model.int8.onnx").precision == "int8-qdq"
    assert resolve_model_file(None, "auto", "ort", "fp32").name == "model.onnx"
