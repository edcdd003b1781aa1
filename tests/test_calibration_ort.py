"""``aue calibrate --target ort-cpu``: the INT8 model for ONNX Runtime's CPU int8 kernels.

Checked on the shipped AUE-CRL model (real weights) with ranges calibrated on real FER+
training faces and compared on FER+ test faces, and end to end through the CLI on a small
graph built here. Latency is not asserted (see docs/calibration.md for the measurements).
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from helpers.onnx_graphs import emotion_au_head
from onnx import TensorProto, helper, numpy_helper

from aue_edge.calibration.calibrators import compute_thresholds
from aue_edge.calibration.config import load_config
from aue_edge.calibration.graph import activation_tensors, load_model, with_extra_outputs
from aue_edge.calibration.ort_qdq import (ORT_PRECISION, asymmetric_ranges, inspect_ort_qdq,
                                          quantize_for_ort)
from aue_edge.calibration.stats import StatsCollector, TensorHistogram
from aue_edge.cli import main as aue
from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import ConfigError
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.model_card import (AlignmentSpec, InputSpec, ModelCard, OutputSpec,
                                      card_from_onnx, find_card)
from aue_edge.edge.preprocess import to_model_input
from aue_edge.data import get_dataset

OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Shipped model, 64 calibration faces (percentile 99.99: the entropy search over the model's 162
# tensors takes ~20 s, too long for a test; the shipped file uses entropy), 160 FER+ test
# faces: top-1 agreement with FP32 of at least 95 % (the shipped ort-cpu model: 99.1 % on
# 3,132 test images) and emotion probabilities within 0.25 of FP32 on every image.
MIN_TOP1_AGREEMENT = 0.95
MAX_PROB_DIFF = 0.25


def _faces(root, split: str, count: int, seed: int, card: ModelCard) -> np.ndarray:
    data = get_dataset("ferplus", root, split)
    picks = np.random.default_rng(seed).permutation(len(data))[:count]
    return to_model_input([data[int(i)].image for i in picks], card.input)


@pytest.fixture(scope="module")
def shipped(repo_root, ferplus_root, tmp_path_factory):
    """The shipped FP32 model quantised for ORT CPU from 64 FER+ train faces."""
    path = repo_root / "aue_edge" / "edge" / "models" / "aue_crl" / "model.onnx"
    card = find_card(path)
    model = load_model(path)
    names = activation_tensors(model)
    collector = StatsCollector(names, 2048)
    calib = _faces(ferplus_root, "train", 64, 0, card)
    out = tmp_path_factory.mktemp("ort_qdq")
    onnx.save(with_extra_outputs(model, names), out / "measure.onnx")
    with OrtBackend(out / "measure.onnx", num_threads=1) as backend:
        for start in range(0, len(calib), 32):
            collector.update(backend.infer({card.input.name: calib[start:start + 32]}), 32)
    thresholds = compute_thresholds(collector.histograms, "percentile", 99.99, progress=False)
    ranges = asymmetric_ranges(collector.histograms, {n: t.amax for n, t in thresholds.items()})
    quantized = quantize_for_ort(model, ranges, OPS, reduce_range=True)
    onnx.save(quantized, out / "model.int8.ort.onnx")
    return path, out / "model.int8.ort.onnx", quantized, card, ranges


def test_ranges_are_signed_min_max_clipped_by_the_calibrator():
    relu = TensorHistogram("relu")
    relu.update(np.array([0.0, 0.5, 3.0, 9.0], np.float32))
    signed = TensorHistogram("signed")
    signed.update(np.array([-6.0, -1.0, 2.0, 4.0], np.float32))
    negative = TensorHistogram("negative")
    negative.update(np.array([-3.0, -1.0], np.float32))
    ranges = asymmetric_ranges({"relu": relu, "signed": signed, "negative": negative},
                               {"relu": 4.0, "signed": 5.0, "negative": 3.0})
    assert ranges["relu"] == (0.0, 4.0)          # one-sided: all 256 levels on [0, amax]
    assert ranges["signed"] == (-5.0, 4.0)       # min clipped at -amax, max below amax kept
    assert ranges["negative"] == (-3.0, 0.0)     # zero always representable


def test_ort_graph_has_uint8_activations_and_per_channel_int8_weights(shipped):
    _fp32_path, _path, model, _card, ranges = shipped
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    facts = inspect_ort_qdq(model, reduce_range=True)
    assert facts["problems"] == []
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)   # standard ops only
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and facts["activation_qdq_uint8"] == len(quantize)
    for node in quantize:
        zero = initializers[node.input[2]]
        scale = float(initializers[node.input[1]])
        assert zero.dtype == np.uint8
        # The zero point is where 0.0 lands in the tensor's calibrated range.
        low, high = ranges[node.input[0]]
        assert abs(int(zero) - round(-low / scale)) <= 1
        assert scale == pytest.approx((high - low) / 255, rel=1e-3)
    # Batched MatMuls keep their float weight: ONNX Runtime 1.19 (Python 3.8) cannot run them
    # as QLinearMatMul with per-channel rank-3 weights.
    batched = [n for n in model.graph.node if n.op_type == "MatMul"
               and n.input[1] in initializers and initializers[n.input[1]].ndim == 3]
    assert len(batched) == 3
    assert all(initializers[n.input[1]].dtype == np.float32 for n in batched)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    for conv in convs:
        weight_dq = producers[conv.input[1]]
        weight = initializers[weight_dq.input[0]]
        scale = initializers[weight_dq.input[1]]
        assert weight.dtype == np.int8 and weight.min() >= -64 and weight.max() <= 64
        assert scale.shape == (weight.shape[0],)                  # one scale per out channel
    assert facts["output_quantized_nodes"] == facts["quantized_nodes"] >= len(convs)
    assert not any(p.key == "onnx.infer" for p in model.metadata_props)


def test_onnx_runtime_fuses_the_graph_into_int8_kernels(shipped, tmp_path):
    import onnxruntime as ort

    _fp32_path, path, model, _card, _ranges = shipped
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    # Written to tmp only to see what ONNX Runtime makes of the file; never shipped.
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node)
    # Every convolution runs as an int8 kernel, none in float; the Gemms too.
    assert ops["QLinearConv"] == sum(n.op_type == "Conv" for n in model.graph.node) > 0
    assert ops["Conv"] == 0
    assert ops["QGemm"] == sum(n.op_type == "Gemm" for n in model.graph.node)


def test_ort_model_agrees_with_fp32_on_real_test_faces(shipped, ferplus_root):
    fp32_path, path, _model, card, _ranges = shipped
    faces = _faces(ferplus_root, "test", 160, 1, card)
    with OrtBackend(fp32_path, num_threads=1) as fp32, OrtBackend(path, num_threads=1) as int8:
        ref = fp32.infer({card.input.name: faces})
        out = int8.infer({card.input.name: faces})
    agreement = float(np.mean(ref["emotion_probs"].argmax(1) == out["emotion_probs"].argmax(1)))
    assert agreement >= MIN_TOP1_AGREEMENT
    assert np.abs(ref["emotion_probs"] - out["emotion_probs"]).max() <= MAX_PROB_DIFF
    assert np.isfinite(out["au_probs"]).all()


# ---------------------------------------------------------------- CLI end to end (small graph)
def _small_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    ] + emotion_au_head("r2")
    graph = helper.make_graph(
        nodes, "ort_target_test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 48])],
        [helper.make_tensor_value_info("emotion_probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, ["N", 3])],
        [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 16, 8, 3, 3), init("b2", 16),
         init("w_fc", 8, 16), init("b_fc", 8), init("w_au", 3, 16), init("b_au", 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_fp32")
    onnx.save(_small_model(), out / "model.onnx")
    ModelCard(model_name="ort_target_test", input=InputSpec(size_px=(48, 48), color="gray3"),
              alignment=AlignmentSpec(template_5pt=FERPLUS_TEMPLATE_5PT),
              outputs=OutputSpec(emotion_labels=("neutral", "happiness", "surprise", "sadness",
                                                 "anger", "disgust", "fear", "contempt"),
                                 au_names=("AU6", "AU12", "AU25"))).save(out / "card.json")
    return out


def _calibrate(model_dir, ferplus_root, out, *extra) -> int:
    return aue(["calibrate", str(model_dir / "model.onnx"), "--dataset", "ferplus", "--root",
                str(ferplus_root), "--split", "train", "--num-images", "64", "--eval-split",
                "valid", "--eval-images", "48", "--snr-images", "16", "--num-threads", "1",
                "--out", str(out), "--no-progress", *extra])


def test_cli_target_ort_cpu_writes_its_own_files_next_to_the_tensorrt_ones(small_model_dir,
                                                                          ferplus_root):
    out = small_model_dir   # the FP32 folder, as for the shipped model
    assert _calibrate(small_model_dir, ferplus_root, out, "--target", "ort-cpu") == 0
    written = {p.name for p in out.iterdir()}
    assert {"model.int8.ort.onnx", "model.int8.ort.card.json", "calibration_report.ort.json",
            "calibration_images.ort.tsv"} <= written
    # Nothing of the TensorRT target is written or overwritten.
    assert not {"model.int8.onnx", "calibration.cache", "calibration_report.json"} & written
    assert ModelCard.load(out / "card.json").precision == "fp32"
    embedded = card_from_onnx(out / "model.int8.ort.onnx")
    assert embedded.precision == ORT_PRECISION == "int8-qdq-ort"
    assert ModelCard.load(out / "model.int8.ort.card.json").precision == ORT_PRECISION
    assert find_card(out / "model.int8.ort.onnx").precision == ORT_PRECISION
    report = json.loads((out / "calibration_report.ort.json").read_text())
    assert report["target"] == "ort-cpu" and report["outputs"]["cache"] is None
    assert report["outputs"]["qdq"]["output_quantized_nodes"] >= 2
    assert report["evaluation"]["num_images"] == 48
    assert report["evaluation"]["emotion_top1_agreement"] >= 0.9
    assert set(report["layer_snr_db"]) >= {"r1", "r2"}     # Relu folded into each Conv
    assert all(v is None or v > 10 for v in report["layer_snr_db"].values())
    assert report["per_tensor"]["r1"]["uint8_range"][0] == 0.0

    # Then the TensorRT target in the same folder leaves the ort-cpu files alone.
    before = (out / "model.int8.ort.onnx").read_bytes()
    assert _calibrate(small_model_dir, ferplus_root, out, "--snr-images", "0") == 0
    assert (out / "model.int8.onnx").is_file() and (out / "calibration.cache").is_file()
    assert (out / "model.int8.ort.onnx").read_bytes() == before
    assert json.loads((out / "calibration_report.json").read_text())["target"] == "tensorrt"


def test_flags_of_the_other_target_are_refused(small_model_dir, ferplus_root, tmp_path,
                                               capsys):
    assert _calibrate(small_model_dir, ferplus_root, tmp_path, "--target", "ort-cpu",
                      "--qdq-placement", "inputs_outputs") == 2
    assert "--qdq-placement applies to --target tensorrt" in capsys.readouterr().err
    assert _calibrate(small_model_dir, ferplus_root, tmp_path, "--no-ort-reduce-range") == 2
    assert "--ort-reduce-range applies to --target ort-cpu" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: onnxruntime\n")
    with pytest.raises(ConfigError, match="target must be one of"):
        load_config(bad)
    assert not any(tmp_path.glob("model.int8*"))
