"""``aue calibrate`` end to end on real FER+ images and real photos.

The model is a small test classifier built here (not the product's model): fixed random conv
features with a linear emotion head fitted by ridge regression on 1,200 FER+ training faces, so
its FER+ accuracy is above chance and the INT8 accuracy check means something.
"""
from __future__ import annotations

import csv
import dataclasses
import re
import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aue_edge.calibration.config import CalibrationConfig, load_config
from aue_edge.calibration.graph import activation_tensors
from aue_edge.edge.trt_cache import read_cache
from aue_edge.cli import main as aue
from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import CalibrationError, ConfigError
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.model_card import (AlignmentSpec, InputSpec, ModelCard, OutputSpec,
                                      card_from_onnx)
from aue_edge.edge.preprocess import to_model_input
from aue_edge.data import get_dataset

pytestmark = pytest.mark.slow  # end-to-end runs: seconds each, still in the default run

FERPLUS_LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                  "contempt")
AU_NAMES = tuple(f"AU{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 17, 20, 23, 24, 25, 26))
CARD = ModelCard(model_name="calibration_test_classifier",
                 input=InputSpec(size_px=(48, 48), color="gray3"),
                 alignment=AlignmentSpec(template_5pt=FERPLUS_TEMPLATE_5PT),
                 outputs=OutputSpec(emotion_labels=FERPLUS_LABELS, au_names=AU_NAMES))


def _graph(w_fc: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
           rng: np.random.Generator) -> onnx.ModelProto:
    def init(name, array):
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w_conv", "b_conv"], ["conv"], name="conv",
                         strides=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("AveragePool", ["relu"], ["pool"], name="pool", kernel_shape=[6, 6],
                         strides=[6, 6]),
        helper.make_node("Flatten", ["pool"], ["feat"], name="flatten"),
        # Standardised features (what a BatchNorm before the head would give).
        helper.make_node("Sub", ["feat", "feat_mean"], ["centred"], name="centre"),
        helper.make_node("Mul", ["centred", "feat_inv_std"], ["zfeat"], name="scale"),
        helper.make_node("Gemm", ["zfeat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["emotion_probs"], name="softmax", axis=1),
        helper.make_node("Gemm", ["zfeat", "w_au", "b_au"], ["au_logits"], name="au_fc",
                         transB=1),
        helper.make_node("Sigmoid", ["au_logits"], ["au_probs"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "calibration_test_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 48])],
        [helper.make_tensor_value_info("emotion_probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, ["N", 17])],
        [init("w_conv", rng.standard_normal((16, 3, 5, 5)) * 0.15), init("b_conv",
                                                                         np.zeros(16)),
         init("feat_mean", mean), init("feat_inv_std", inv_std),
         init("w_fc", w_fc), init("b_fc", np.zeros(8)),
         init("w_au", rng.standard_normal((17, 256)) * 0.05), init("b_au", np.zeros(17))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, ferplus_root):
    """model.onnx + card.json of the fitted test classifier."""
    out = tmp_path_factory.mktemp("fp32_model")
    train = get_dataset("ferplus", ferplus_root, "train")
    picks = np.random.default_rng(5).permutation(len(train))[:1200]
    images = [train[int(i)].image for i in picks]
    labels = np.array([train[int(i)].label for i in picks])
    x = to_model_input(images, CARD.input)
    features_only = _graph(np.zeros((8, 256)), np.zeros(256), np.ones(256),
                           np.random.default_rng(0))
    features_only.graph.output.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT,
                                                                    None))
    onnx.save(features_only, out / "features.onnx")
    with OrtBackend(out / "features.onnx", num_threads=1) as backend:
        feats = backend.infer({"image": x})["feat"].astype(np.float64)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    targets = np.eye(8)[labels] - np.eye(8)[labels].mean(0)
    w_fc = np.linalg.solve(z.T @ z + 50.0 * np.eye(256), z.T @ targets).T * 8.0  # (8, 256)
    model = _graph(w_fc, mean, 1.0 / std, np.random.default_rng(0))
    onnx.save(model, out / "model.onnx")
    CARD.save(out / "card.json")
    (out / "features.onnx").unlink()
    return out


@pytest.fixture(scope="module")
def entropy_run(model_dir, ferplus_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("entropy_run")
    code = aue(["calibrate", str(model_dir / "model.onnx"), "--dataset", "ferplus", "--root",
                str(ferplus_root), "--split", "train", "--method", "entropy", "--num-images",
                "160", "--eval-split", "valid", "--eval-images", "400", "--snr-images", "32",
                "--qdq-placement", "inputs",
                "--num-threads", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_outputs_are_consistent_with_the_model(entropy_run, model_dir):
    report = json.loads((entropy_run / "calibration_report.json").read_text())
    fp32 = onnx.load(str(model_dir / "model.onnx"))
    tensors = activation_tensors(fp32)
    # TensorRT 8.5 cache: every activation by its ONNX name, input included.
    cache = read_cache(entropy_run / "calibration.cache")
    assert cache.header == "TRT-8502-EntropyCalibration2"
    cache.check_matches(tensors, "model.onnx")
    # Every activation except the probabilities, which stay in float.
    assert set(cache.scales) == set(tensors) - {"emotion_probs", "au_probs"}
    assert "image" in cache.scales
    assert report["quantization"]["cache_left_out_model_outputs"] == ["au_probs",
                                                                      "emotion_probs"]
    clipped = report["per_tensor"]["relu"]["clipped_fraction"]
    assert 0.0 < clipped < 0.05
    # The Q/DQ model uses exactly the cache's ranges.
    int8 = onnx.load(str(entropy_run / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    q_nodes = [n for n in int8.graph.node if n.op_type == "QuantizeLinear"]
    assert {n.input[0] for n in q_nodes} == {"image", "zfeat"}
    for node in q_nodes:
        assert float(inits[node.input[1]]) == pytest.approx(cache.scales[node.input[0]],
                                                            rel=1e-6)
        assert report["per_tensor"][node.input[0]]["amax"] == pytest.approx(
            cache.amax(node.input[0]), rel=1e-6)
    assert report["outputs"]["qdq"]["opset"] == 17
    assert report["outputs"]["qdq"]["weight_dq_per_channel"] == 3
    # Card: precision and calibration facts travel with the int8 model.
    embedded = card_from_onnx(entropy_run / "model.int8.onnx")
    beside = ModelCard.load(entropy_run / "card.json")
    assert embedded == beside and beside.precision == "int8-qdq"
    assert beside.provenance["calibration"]["method"] == "entropy"
    assert beside.input == CARD.input and beside.outputs == CARD.outputs
    for png in report["outputs"]["plots"]:
        assert (entropy_run / png).stat().st_size > 1000


def test_calibration_and_held_out_images_are_recorded_and_disjoint(entropy_run):
    report = json.loads((entropy_run / "calibration_report.json").read_text())
    calib, held = report["calibration_images"], report["evaluation_images"]
    assert (calib["used"], held["used"]) == (160, 400)
    assert calib["source"]["split"] == "train" and held["source"]["split"] == "valid"
    with open(entropy_run / "calibration_images.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    by_role = {role: [r for r in rows if r["role"] == role]
               for role in ("calibration", "evaluation")}
    assert len(by_role["calibration"]) == 160 and len(by_role["evaluation"]) == 400
    assert all("FER2013Train" in r["key"] for r in by_role["calibration"])
    assert all("FER2013Valid" in r["key"] for r in by_role["evaluation"])
    calib_hashes = {r["sha256"] for r in by_role["calibration"]}
    assert not calib_hashes & {r["sha256"] for r in by_role["evaluation"]}
    import hashlib

    assert calib["set_sha256"] == hashlib.sha256(
        "\n".join(sorted(r["sha256"] for r in by_role["calibration"])).encode()).hexdigest()


def test_int8_matches_fp32_on_held_out_faces(entropy_run):
    evaluation = json.loads((entropy_run / "calibration_report.json").read_text())["evaluation"]
    accuracy = evaluation["accuracy"]
    assert accuracy["num_labelled"] == 400
    assert accuracy["fp32"] > 0.40          # the fitted test classifier beats always-neutral
    assert abs(accuracy["delta_points"]) <= 2.0
    assert evaluation["emotion_top1_agreement"] >= 0.93
    assert evaluation["outputs"]["emotion_probs"]["mean_abs_diff"] < 0.02
    assert evaluation["au_active_agreement"] >= 0.95


@pytest.fixture(scope="module")
def train_faces(ferplus_root):
    from aue_edge.calibration.sources import DatasetFaces

    return DatasetFaces("ferplus", ferplus_root, "train")


def test_minmax_and_percentile_methods_write_their_own_headers(model_dir, train_faces,
                                                               tmp_path):
    from aue_edge.calibration.calibrate import calibrate

    ranges = {}
    for method, header in (("minmax", "MinMaxCalibration"), ("percentile", "LegacyCalibration")):
        config = CalibrationConfig(method=method, percentile=99.0, num_images=64, min_images=64,
                                   num_threads=1, plot_worst_tensors=0)
        result = calibrate(model_dir / "model.onnx", CARD, train_faces, None, config,
                           tmp_path / method, progress=False)
        cache = read_cache(result.cache)
        assert cache.algorithm == header
        ranges[method] = {name: cache.amax(name) for name in cache.scales}
        assert any("NOT measured" in w for w in result.summary["warnings"])
    # Same images (same seed): the 99th percentile never exceeds the maximum.
    assert all(ranges["percentile"][n] <= ranges["minmax"][n] * (1 + 1e-6)
               for n in ranges["minmax"])
    assert ranges["percentile"]["relu"] < ranges["minmax"]["relu"]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, astronaut_bgr):
    """Real photos: 5 views of the astronaut, 2 photos without a face, 1 corrupt file."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    face = astronaut_bgr
    variants = [face, cv2.flip(face, 1), cv2.resize(face, (384, 384)),
                cv2.convertScaleAbs(face, alpha=0.8, beta=10), face[20:480, 30:500]]
    for i, image in enumerate(variants):
        cv2.imwrite(str(folder / f"astronaut_{i}.png"), image)
    cv2.imwrite(str(folder / "coins.png"), data.coins())
    cv2.imwrite(str(folder / "flat.png"), np.full((200, 200, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_photo_folder_counts_faceless_images_and_warns_about_too_few(photo_folder, model_dir,
                                                                     tmp_path, capsys):
    out = tmp_path / "photos_run"
    code = aue(["calibrate", str(model_dir / "model.onnx"), "--data", str(photo_folder),
                "--num-images", "20", "--min-images", "4", "--num-threads", "1",
                "--out", str(out), "--no-progress"])
    assert code == 0
    report = json.loads((out / "calibration_report.json").read_text())
    calib = report["calibration_images"]
    assert calib["used"] == 5
    assert calib["skipped"] == {"no face detected": 2, "unreadable image file": 1}
    warnings = " | ".join(report["warnings"])
    assert "20 calibration images requested, only 5 usable" in warnings
    assert "held-out set is empty" in warnings
    assert "warning: 20 calibration images requested" in capsys.readouterr().out
    code = aue(["calibrate", str(model_dir / "model.onnx"), "--data", str(photo_folder),
                "--num-images", "20", "--min-images", "10", "--out", str(tmp_path / "x"),
                "--no-progress"])
    assert code == 2
    assert "only 5 usable calibration images" in capsys.readouterr().err


def test_model_without_card_is_an_error_unless_one_is_given(model_dir, ferplus_root, tmp_path,
                                                            capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "model.onnx", bare / "model.onnx")
    args = ["calibrate", str(bare / "model.onnx"), "--dataset", "ferplus", "--root",
            str(ferplus_root), "--num-images", "64", "--no-eval", "--num-threads", "1",
            "--method", "minmax", "--no-progress"]
    assert aue(args + ["--out", str(tmp_path / "a")]) == 2
    assert "no model card" in capsys.readouterr().err
    assert aue(args + ["--out", str(tmp_path / "b"), "--card",
                       str(model_dir / "card.json")]) == 0
    assert ModelCard.load(tmp_path / "b" / "card.json").precision == "int8-qdq"


def test_held_out_split_must_differ_from_the_calibration_split(model_dir, ferplus_root,
                                                              tmp_path, capsys):
    code = aue(["calibrate", str(model_dir / "model.onnx"), "--dataset", "ferplus", "--root",
                str(ferplus_root), "--split", "valid", "--eval-split", "valid", "--out",
                str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "must not overlap" in capsys.readouterr().err


def test_calibrating_into_the_fp32_folder_keeps_its_card(model_dir, train_faces, tmp_path):
    from aue_edge.calibration.calibrate import calibrate

    folder = tmp_path / "shipped"
    shutil.copytree(model_dir, folder)
    config = CalibrationConfig(method="minmax", num_images=64, min_images=64, num_threads=1,
                               plot_worst_tensors=0)
    result = calibrate(folder / "model.onnx", CARD, train_faces, None, config, folder,
                       progress=False)
    assert ModelCard.load(folder / "card.json").precision == "fp32"
    assert result.card.name == "model.int8.card.json"
    assert ModelCard.load(result.card).precision == "int8-qdq"


def test_config_file_defaults_and_validation(tmp_path, repo_root, check_documented_defaults):
    path = repo_root / "config" / "calibration.yaml"
    check_documented_defaults(path, dataclasses.asdict(CalibrationConfig()),
                              loaded=dataclasses.asdict(load_config(path)))
    assert load_config() == CalibrationConfig()   # the shipped file is the default one
    bad = tmp_path / "c.yaml"
    bad.write_text("method: entropy\nnum_imagez: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: unknown field 'num_imagez' \(did you "
                                          r"mean 'num_images'\?\)"):
        load_config(bad)
    bad.write_text("num_images: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:1: field 'num_images': expected an integer, "
                                          r"found 'many'"):
        load_config(bad)
    bad.write_text("method: kl\n")
    with pytest.raises(ConfigError, match="method must be one of"):
        load_config(bad)
    with pytest.raises(ConfigError, match="entropy_start_bin"):
        CalibrationConfig(entropy_start_bin=64)
    with pytest.raises(CalibrationError):
        read_cache(tmp_path / "none.cache")


def test_quantised_input_and_overwriting_the_input_are_refused(entropy_run, train_faces,
                                                               tmp_path):
    from aue_edge.calibration.calibrate import calibrate

    config = CalibrationConfig(method="minmax", num_images=64, min_images=64)
    with pytest.raises(CalibrationError, match="already quantised"):
        calibrate(entropy_run / "model.int8.onnx", CARD, train_faces, None, config, tmp_path)
    with pytest.raises(CalibrationError, match="would overwrite the input model"):
        calibrate(entropy_run / "model.int8.onnx", CARD, train_faces, None, config,
                  entropy_run)


@pytest.mark.parametrize("trt_version", ["8.5", "10.x"])
def test_a_model_tensorrt_would_reject_is_refused_before_any_output(model_dir, train_faces,
                                                                   tmp_path, trt_version):
    """The TensorRT lint runs on the FP32 model first: an LRN of even size (TensorRT's LRN
    window must be odd) stops the run, and --out stays empty."""
    from aue_edge.calibration.calibrate import calibrate
    from aue_edge.edge.trt_lint import TrtLintError

    model = onnx.load(str(model_dir / "model.onnx"))
    for node in model.graph.node:
        node.input[:] = ["image_lrn" if name == "image" else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("LRN", ["image"], ["image_lrn"], size=4,
                                                name="even_lrn"))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    out = tmp_path / "out"
    config = CalibrationConfig(method="minmax", num_images=64, min_images=64,
                               trt_version=trt_version)
    with pytest.raises(TrtLintError, match=rf"(?s)fail on TensorRT {re.escape(trt_version)} .*"
                                           r"\[lrn-window\] even_lrn"):
        calibrate(bad, CARD, train_faces, None, config, out, progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_an_interrupted_run_never_replaces_good_outputs(entropy_run, model_dir, ferplus_root,
                                                        tmp_path):
    """Ctrl-C after the new cache is written (during the held-out evaluation): the previous
    run's files stay byte for byte, and nothing of the failed run is left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "good"
    shutil.copytree(entropy_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "aue_edge", "calibrate", str(model_dir / "model.onnx"),
         "--dataset", "ferplus", "--root", str(ferplus_root), "--split", "train", "--method",
         "minmax", "--num-images", "64", "--min-images", "64", "--eval-split", "valid",
         "--eval-images", "1000", "--num-threads", "1", "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    written = False
    while process.poll() is None and not written:
        written = any(p.stat().st_mtime >= started for p in out.rglob("calibration.cache"))
        time.sleep(0.01)
    assert written, "the run ended before it wrote a cache: " + process.communicate()[0]
    os.kill(process.pid, signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0, output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unwritable_out_fails_in_one_line_before_any_work(model_dir, tmp_path, capsys):
    """A file, an unwritable folder, an output name taken by a folder: one line, status 2,
    reported before the data set or the model is read (the --root here does not exist)."""
    args = ["calibrate", str(model_dir / "model.onnx"), "--dataset", "ferplus", "--root",
            str(tmp_path / "no_such_root"), "--no-progress", "--out"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    taken = tmp_path / "taken"
    (taken / "model.int8.onnx").mkdir(parents=True)
    for out, message in ((a_file, "is a file, not a folder"),
                         ("/sys/kernel", "[Errno 13] Permission denied"),
                         (taken, "model.int8.onnx is a folder")):
        assert aue(args + [str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_card_that_does_not_match_the_model_is_refused_not_copied(model_dir, ferplus_root,
                                                                   tmp_path, capsys):
    """The model gives 8 emotion probabilities; a card listing 7 labels must not travel into
    the INT8 outputs (the edge would refuse them later, or worse)."""
    wrong = tmp_path / "wrong_card.json"
    CARD.replace(outputs=OutputSpec(emotion_labels=FERPLUS_LABELS[:7],
                                    au_names=AU_NAMES)).save(wrong)
    out = tmp_path / "out"
    code = aue(["calibrate", str(model_dir / "model.onnx"), "--card", str(wrong), "--dataset",
                "ferplus", "--root", str(ferplus_root), "--num-images", "64", "--no-eval",
                "--num-threads", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "emotion_labels lists 7 names" in err, err
    assert not out.exists()


def test_a_tensor_zero_on_every_calibration_image_is_noted_not_a_crash(model_dir, train_faces,
                                                                       tmp_path):
    """The first release crashed here (a loop variable shadowed the output file names) after
    overwriting calibration.cache; now the run completes and notes the tensor."""
    from aue_edge.calibration.calibrate import calibrate

    model = onnx.load(str(model_dir / "model.onnx"))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.float32(0.0), "zero"))
    graph.node.insert(1, helper.make_node("Mul", ["conv", "zero"], ["dead"], name="dead"))
    graph.node.insert(2, helper.make_node("Add", ["conv", "dead"], ["conv_live"],
                                          name="live"))
    next(n for n in graph.node if n.name == "relu").input[0] = "conv_live"
    folder = tmp_path / "dead_tensor"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    config = CalibrationConfig(method="entropy", num_images=64, min_images=64, num_threads=1,
                               plot_worst_tensors=0)
    result = calibrate(folder / "model.onnx", CARD, train_faces, None, config, folder / "out",
                       progress=False)
    assert result.cache.is_file() and result.int8_model.is_file()
    assert "note" in result.summary["per_tensor"]["dead"], result.summary["per_tensor"]["dead"]
    assert any("dead" in w for w in result.summary["warnings"]), result.summary["warnings"]
