"""The phases of ``aue calibrate`` (aue_edge/calibration/calibrate.py), each run alone on given inputs.

A tiny real ONNX model (Conv, ReLU, pooling, two Gemm heads) stands in for the product's model;
statistics and evaluation run it in ONNX Runtime on real FER+ faces, thresholds come from given
histograms, the writers from given thresholds, the report from given results. The whole run is
tested end to end in test_calibration_run.py and test_calibration_ort.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from helpers.onnx_graphs import emotion_au_head
from onnx import TensorProto, helper, numpy_helper

from aue_edge.calibration.calibrate import (Evaluation, Statistics, Thresholds, check_model,
                                            choose_thresholds, collect_statistics, evaluate,
                                            write_ort, write_report, write_tensorrt)
from aue_edge.calibration.calibrators import AMAX_FLOOR, Threshold
from aue_edge.calibration.config import CalibrationConfig
from aue_edge.calibration.sources import DatasetFaces, FaceSource, UsageLog
from aue_edge.calibration.stats import TensorHistogram
from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import CalibrationError
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.model_card import (AlignmentSpec, InputSpec, ModelCard, OutputSpec,
                                      card_from_onnx)
from aue_edge.edge.preprocess import to_model_input
from aue_edge.edge.trt_cache import read_cache

CARD = ModelCard(model_name="tiny_phase_model", input=InputSpec(size_px=(48, 48), color="gray3"),
                 alignment=AlignmentSpec(template_5pt=FERPLUS_TEMPLATE_5PT),
                 outputs=OutputSpec(emotion_labels=("neutral", "happiness", "surprise",
                                                    "sadness", "anger", "disgust", "fear",
                                                    "contempt"),
                                    au_names=tuple(f"AU{n}" for n in range(1, 18))))
CONFIG = CalibrationConfig(method="minmax", num_images=64, min_images=64, batch_size=16,
                           eval_images=96, snr_images=16, num_threads=1, plot_worst_tensors=0)


def _tiny_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w_conv", "b_conv"], ["conv"], name="conv",
                         strides=[4, 4], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
    ] + emotion_au_head("relu")
    graph = helper.make_graph(
        nodes, "tiny_phase_model",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 48])],
        [helper.make_tensor_value_info("emotion_probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, ["N", 17])],
        [init("w_conv", rng.standard_normal((8, 3, 5, 5)) * 0.2), init("b_conv", np.zeros(8)),
         init("w_fc", rng.standard_normal((8, 8))), init("b_fc", np.zeros(8)),
         init("w_au", rng.standard_normal((17, 8))), init("b_au", np.zeros(17))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


ACTIVATIONS = ["image", "conv", "relu", "pool", "feat", "logits", "emotion_probs", "au_logits",
               "au_probs"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    onnx.save(_tiny_model(), path)
    return path


@pytest.fixture(scope="module")
def valid_faces(ferplus_root):
    return DatasetFaces("ferplus", ferplus_root, "valid")


class _FirstFaces(FaceSource):
    """The first ``count`` faces of another source."""

    def __init__(self, source: FaceSource, count: int) -> None:
        self.source, self.count, self.labels = source, count, source.labels

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):
        return self.source.load(index)

    def describe(self) -> dict:
        return {"kind": "first faces", "count": self.count}


def _histograms(values: dict[str, np.ndarray]) -> dict[str, TensorHistogram]:
    out = {}
    for name, array in values.items():
        out[name] = TensorHistogram(name, 2048)
        out[name].update(array)
    return out


def _synthetic_histograms() -> dict[str, TensorHistogram]:
    """One histogram per activation of the tiny model, ReLU outputs non-negative."""
    rng = np.random.default_rng(0)
    values = {}
    for i, name in enumerate(ACTIVATIONS):
        array = rng.standard_normal(4096) * (1.0 + i)
        values[name] = np.abs(array) if name in ("relu", "pool", "feat") else array
    values["emotion_probs"] = rng.uniform(0, 1, 4096)
    values["au_probs"] = rng.uniform(0, 1, 4096)
    return _histograms(values)


def test_check_model_lists_the_activations_and_the_plan(model_path):
    checked = check_model(model_path, CARD, CONFIG.replace(keep_fp32=("au_fc",)))
    assert checked.activations == ACTIVATIONS
    assert [q.name for q in checked.plan.quantized] == ["conv", "fc"]
    assert checked.plan.kept_fp32 == ["au_fc"]
    assert checked.input_name == "image" and len(checked.sha256) == 64


def test_statistics_phase_histograms_exactly_the_faces_it_logs(model_path, valid_faces):
    checked = check_model(model_path, CARD, CONFIG)
    stats = collect_statistics(checked, CARD, valid_faces, CONFIG, progress=False)
    assert stats.log.used == 64 and len(set(stats.log.hashes)) == 64
    assert stats.warnings == ()
    assert set(stats.histograms) == set(ACTIVATIONS)
    faces = [valid_faces.load(int(i)) for i in stats.order[:64]]
    assert [face.key for face in faces] == stats.log.keys
    x = to_model_input([face.face for face in faces], CARD.input)
    image = stats.histograms["image"]
    assert image.num_values == x.size
    assert image.min == pytest.approx(float(x.min()))
    assert image.max == pytest.approx(float(x.max()))
    assert stats.histograms["relu"].min >= 0.0 and stats.histograms["conv"].min < 0.0

    with pytest.raises(CalibrationError, match=r"only 10 usable calibration images .* at least "
                                               r"64 are needed"):
        collect_statistics(checked, CARD, _FirstFaces(valid_faces, 10), CONFIG, progress=False)
    few = collect_statistics(checked, CARD, _FirstFaces(valid_faces, 40),
                             CONFIG.replace(num_images=50, min_images=20), progress=False)
    assert few.log.used == 40
    assert few.warnings == ("50 calibration images requested, only 40 usable (skipped: none)",)


def test_thresholds_phase_from_given_statistics():
    rng = np.random.default_rng(1)
    spike = np.concatenate([rng.uniform(-1, 1, 99_000), rng.uniform(-50, 50, 1000)])
    histograms = _histograms({"wide": rng.standard_normal(10_000) * 3, "spike": spike,
                              "zero": np.zeros(1000)})

    minmax = choose_thresholds(histograms, CONFIG.replace(method="minmax"), progress=False)
    assert minmax.amax["wide"] == pytest.approx(histograms["wide"].absmax)
    assert minmax.amax["spike"] == pytest.approx(np.abs(spike).max())
    assert minmax.amax["zero"] == AMAX_FLOOR
    assert minmax.per_tensor["zero"].note and not minmax.per_tensor["wide"].note
    assert minmax.warnings == (f"1 tensors: {minmax.per_tensor['zero'].note} (zero; see "
                               f"per_tensor.note)",)

    percentile = choose_thresholds(histograms, CONFIG.replace(method="percentile",
                                                              percentile=99.0), progress=False)
    bin_width = histograms["spike"].bin_width
    assert percentile.amax["spike"] == pytest.approx(np.percentile(np.abs(spike), 99.0),
                                                     abs=2 * bin_width)
    assert percentile.amax["spike"] < 0.1 * minmax.amax["spike"]


@pytest.mark.parametrize("trt_version, header", [("8.5", "TRT-8502-MinMaxCalibration"),
                                                 ("10.x", "TRT-100300-MinMaxCalibration")])
def test_tensorrt_writer_from_given_thresholds(model_path, tmp_path, trt_version, header):
    config = CONFIG.replace(keep_fp32=("au_fc",), trt_version=trt_version)
    checked = check_model(model_path, CARD, config)
    thresholds = Thresholds({name: Threshold(1.0 + i, "minmax")
                             for i, name in enumerate(ACTIVATIONS)}, ())
    card = CARD.replace(precision="int8-qdq")
    int8 = write_tensorrt(checked, thresholds, config, card, tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.cache",
                                                          "model.int8.onnx"]
    cache = read_cache(int8.cache)
    assert cache.header == int8.cache_header == header
    # model outputs and what only the kept-FP32 au_fc writes stay out of the cache
    assert set(cache.scales) == set(ACTIVATIONS) - {"emotion_probs", "au_probs",
                                                    "au_logits"}
    assert set(cache.scales) == set(int8.cache_ranges)
    for name in cache.scales:
        assert cache.amax(name) == pytest.approx(thresholds.amax[name], rel=1e-6)
        assert int8.cache_ranges[name] == thresholds.amax[name]
    assert card_from_onnx(int8.path) == card
    saved = onnx.load(str(int8.path))
    scales = {init.name: numpy_helper.to_array(init) for init in saved.graph.initializer}
    quantized = {node.input[0]: float(scales[node.input[1]]) for node in saved.graph.node
                 if node.op_type == "QuantizeLinear" and node.input[0] in ACTIVATIONS}
    assert set(quantized) == {"image", "feat"}   # inputs of conv and fc; au_fc is kept
    for name, scale in quantized.items():
        assert scale == pytest.approx(thresholds.amax[name] / 127.0, rel=1e-6)
    deprecated = [w for w in int8.warnings if "deprecates implicit INT8" in w]
    assert len(deprecated) == (trt_version == "10.x")


def test_ort_writer_from_given_thresholds(model_path, tmp_path):
    config = CONFIG.replace(target="ort-cpu")
    checked = check_model(model_path, CARD, config)
    histograms = _synthetic_histograms()
    thresholds = choose_thresholds(histograms, config, progress=False)
    card = CARD.replace(precision="int8-qdq-ort")
    int8 = write_ort(checked, histograms, thresholds, config, card, tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.ort.onnx"]
    assert int8.cache is None and int8.cache_header is None and int8.cache_ranges == {}
    assert card_from_onnx(int8.path) == card
    low, high = int8.ort_ranges["relu"]
    assert low == 0.0 and high == pytest.approx(thresholds.amax["relu"])
    low, high = int8.ort_ranges["conv"]
    assert low < 0.0 < high
    with OrtBackend(int8.path, num_threads=1) as backend:
        out = backend.infer({"image": np.zeros((2, 3, 48, 48), np.float32)})
    assert out["emotion_probs"].shape == (2, 8)
    assert np.allclose(out["emotion_probs"].sum(1), 1.0, atol=0.02)


def test_evaluation_phase_on_faces_after_the_calibration_ones(model_path, valid_faces,
                                                              tmp_path):
    checked = check_model(model_path, CARD, CONFIG)
    stats = collect_statistics(checked, CARD, valid_faces, CONFIG, progress=False)
    thresholds = choose_thresholds(stats.histograms, CONFIG, progress=False)
    int8 = write_tensorrt(checked, thresholds, CONFIG, CARD, tmp_path)

    result = evaluate(checked, int8, CARD, valid_faces, stats, CONFIG, continues_calib=True,
                      progress=False)
    assert result.log.used == 96 and result.warnings == ()
    assert not set(result.log.hashes) & set(stats.log.hashes)
    assert result.summary["num_images"] == 96
    assert 0.0 <= result.summary["emotion_top1_agreement"] <= 1.0
    assert set(result.layer_snr_db) == {"conv", "logits", "au_logits"}  # quantised layers
    assert all(snr > 10.0 for snr in result.layer_snr_db.values()), result.layer_snr_db

    nothing = evaluate(checked, int8, CARD, None, stats, CONFIG, progress=False)
    assert nothing.summary is None and nothing.log is None
    assert "NOT measured" in nothing.warnings[0]


def test_report_phase_from_given_results(model_path, tmp_path):
    config = CONFIG.replace(plot_worst_tensors=2)
    checked = check_model(model_path, CARD, config)
    histograms = _synthetic_histograms()
    calib_log = UsageLog("calibration", 2, keys=["a.png", "b.png"],
                         hashes=["1" * 64, "2" * 64])
    eval_log = UsageLog("evaluation", 1, keys=["c.png"], hashes=["3" * 64])
    stats = Statistics(histograms, calib_log, np.arange(2), ())
    chosen = {name: Threshold(h.absmax, "minmax") for name, h in histograms.items()}
    chosen["feat"] = Threshold(histograms["feat"].absmax / 4, "minmax")   # clips a lot
    thresholds = Thresholds(chosen, ())
    (tmp_path / "written").mkdir()
    int8 = write_tensorrt(checked, thresholds, config, CARD, tmp_path / "written")
    evaluation = Evaluation(eval_log, {"num_images": 1}, {"conv": 12.5, "logits": math.inf},
                            ())
    source = _FirstFaces(FaceSource(), 0)
    out = tmp_path / "report"
    out.mkdir()

    report = write_report(out, checked, CARD, source, stats, thresholds, int8, source,
                          evaluation, config, "card.json", ["an earlier phase's warning"])
    written = json.loads((out / "calibration_report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert report["warnings"][0] == "an earlier phase's warning"
    assert len(report["warnings"]) == 2 and "(worst: feat (" in report["warnings"][1]
    per_tensor = report["per_tensor"]
    assert list(per_tensor) == ACTIVATIONS
    assert per_tensor["feat"]["clipped_fraction"] > 0.1
    assert per_tensor["conv"]["clipped_fraction"] == 0.0
    assert per_tensor["feat"]["quantised_in_qdq_model"] and per_tensor["feat"]["in_cache"]
    assert not per_tensor["emotion_probs"]["in_cache"]
    assert per_tensor["feat"]["amax"] == chosen["feat"].amax
    assert report["most_hurt"] == [{"tensor": "conv", "snr_db_vs_fp32": 12.5},
                                   {"tensor": "logits", "snr_db_vs_fp32": None}]
    assert report["evaluation"] == {"num_images": 1}
    assert report["calibration_images"]["used"] == 2
    assert report["evaluation_images"]["source"] == {"kind": "first faces", "count": 0}
    assert report["outputs"]["cache"] == "calibration.cache"
    assert report["outputs"]["cache_tensors"] == len(int8.cache_ranges)
    assert report["quantization"]["cache_left_out_model_outputs"] == ["au_probs",
                                                                      "emotion_probs"]
    assert sorted(report["outputs"]["plots"]) == sorted(p.name for p in out.glob("*.png"))
    assert len(report["outputs"]["plots"]) == 2
    assert (out / "calibration_images.tsv").read_text().splitlines() == [
        "role\tsha256\tkey", f"calibration\t{'1' * 64}\ta.png",
        f"calibration\t{'2' * 64}\tb.png", f"evaluation\t{'3' * 64}\tc.png"]
