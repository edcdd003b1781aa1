"""The pure parts of the `fer` comparison harness (tools/compare_fer/compare.py): label mapping,
scoring protocols and report writing. The fer venv itself is not needed (nor built) here;
``make compare`` runs the whole harness."""
from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np
import pytest

from aue_edge.data import CkPlus, FerPlus
from aue_edge.data.knowledge import FER2013_LABELS, FERPLUS_LABELS

# fer 25.10.3's FER._get_labels(), index order.
FER_PACKAGE_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture(scope="module")
def compare(repo_root):
    path = repo_root / "tools" / "compare_fer" / "compare.py"
    spec = importlib.util.spec_from_file_location("compare_fer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fer_classes_map_to_ferplus_names_without_contempt(compare):
    names = compare.fer_canonical_labels(FER_PACKAGE_LABELS)
    assert names == FER2013_LABELS  # FER2013's order, the package's canonical names
    assert set(names) == set(FERPLUS_LABELS) - {"contempt"}


def test_unknown_fer_class_is_refused(compare):
    with pytest.raises(compare.CompareError, match="contemptuous"):
        compare.fer_canonical_labels(FER_PACKAGE_LABELS[:6] + ("contemptuous",))
    with pytest.raises(compare.CompareError, match="FER_TO_CANONICAL"):
        compare.fer_canonical_labels(("angry",) * 7)


def test_predict_maps_columns_and_restricts_classes(compare):
    # Our 8 FER+ columns: contempt is the top score, sadness the second.
    probs = np.array([[0.05, 0.05, 0.05, 0.30, 0.05, 0.05, 0.05, 0.40]])
    assert compare.predict(probs, FERPLUS_LABELS, FERPLUS_LABELS).tolist() == [7]
    restricted = compare.predict(probs, FERPLUS_LABELS, FERPLUS_LABELS, FER2013_LABELS)
    assert restricted.tolist() == [FERPLUS_LABELS.index("sadness")]
    # fer's columns: 'happy' (index 3 in fer's order) is FER+ 'happiness' (index 1).
    fer_probs = np.eye(7)[[3, 6, 0]]
    fer_names = compare.fer_canonical_labels(FER_PACKAGE_LABELS)
    assert compare.predict(fer_probs, fer_names, FERPLUS_LABELS).tolist() == [
        FERPLUS_LABELS.index(n) for n in ("happiness", "neutral", "anger")]
    with pytest.raises(compare.CompareError, match="shape"):
        compare.predict(fer_probs, FERPLUS_LABELS, FERPLUS_LABELS)


def _ferplus_truth(ferplus_root) -> list[str]:
    return [FERPLUS_LABELS[i] for i in FerPlus(ferplus_root, "test").targets]


def test_protocols_on_real_ferplus_test_labels(compare, ferplus_root):
    truth = _ferplus_truth(ferplus_root)
    n, contempt = len(truth), truth.count("contempt")
    assert contempt > 0
    fer_names = compare.fer_canonical_labels(FER_PACKAGE_LABELS)
    # A perfect 8-class model; a perfect fer-style model (contempt cannot be answered: it
    # answers neutral there); a constant 'neutral' model.
    perfect = np.eye(8)[[FERPLUS_LABELS.index(t) for t in truth]]
    fer_like = np.eye(7)[[fer_names.index(t if t != "contempt" else "neutral") for t in truth]]
    constant = np.tile(np.eye(7)[fer_names.index("neutral")], (n, 1))
    scores = compare.score_protocols(
        truth, {"ours": (perfect, FERPLUS_LABELS), "fer": (fer_like, fer_names),
                "constant": (constant, fer_names)}, FERPLUS_LABELS, FER2013_LABELS)
    everything, no_contempt = scores["all"], scores["without_contempt"]
    assert everything["ours"]["accuracy"] == 1.0
    assert everything["fer"]["accuracy"] == pytest.approx((n - contempt) / n)
    assert everything["fer"]["per_class"]["contempt"]["accuracy"] == 0.0
    assert no_contempt["fer"]["accuracy"] == no_contempt["ours"]["accuracy"] == 1.0
    assert no_contempt["ours"]["num_images"] == n - contempt
    # A constant answer scores the class's share, and 1/classes in mean-class accuracy.
    assert everything["constant"]["accuracy"] == pytest.approx(truth.count("neutral") / n)
    assert everything["constant"]["mean_class_accuracy"] == pytest.approx(1 / 8)
    assert no_contempt["constant"]["mean_class_accuracy"] == pytest.approx(1 / 7)


def test_ckplus_neutral_answers_count_as_wrong(compare, ckplus_root):
    dataset = CkPlus(ckplus_root, "all")
    truth = [dataset.labels[i] for i in dataset.targets]
    neutral = np.tile(np.eye(8)[FERPLUS_LABELS.index("neutral")], (len(truth), 1))
    scores = compare.score_protocols(truth, {"neutral": (neutral, FERPLUS_LABELS)},
                                     FERPLUS_LABELS, FER2013_LABELS)
    assert scores["all"]["neutral"]["accuracy"] == 0.0
    assert scores["without_contempt"]["neutral"]["num_images"] == len(truth) - truth.count(
        "contempt")


def _report(compare, ferplus_root) -> dict:
    truth = _ferplus_truth(ferplus_root)[:200]
    fer_names = compare.fer_canonical_labels(FER_PACKAGE_LABELS)
    rng = np.random.default_rng(0)
    accuracy = {"FER+ test": compare.score_protocols(
        truth, {compare.OURS: (rng.random((len(truth), 8)), FERPLUS_LABELS),
                compare.FER_VARIANTS["tflite"]: (rng.random((len(truth), 7)), fer_names)},
        FERPLUS_LABELS, FER2013_LABELS)}
    times = {key: {mode: {"ours": ([0.020, 0.030, 0.025], [0.02, 0.03, 0.02], [1, 1, 1], [0.09]),
                          "fer": ([0.010, 0.012, 0.011], [0.02, 0.02, 0.02], [1, 2, 1], [0.06])}
                   for mode in compare.FRAME_ROWS} for key in compare.FRAME_SETS}
    classifier = {mode: {compare.OURS: [0.006, 0.007], compare.FER_VARIANTS["tflite"]: [0.001]}
                  for mode in compare.THREAD_MODES}
    info = {"fer": "25.10.3", "labels": list(FER_PACKAGE_LABELS)}
    return compare.build_report(
        ["--rounds", "1"], info, compare.REPO / "aue_edge/edge/models/aue_crl/model.int8.ort.onnx",
        FERPLUS_LABELS, {"detect_interval_frames": 10, "infer_interval_frames": 3,
                         "num_threads": None, "detect_max_side_px": 640,
                         "detect_region_px": 96, "region_interval_frames": 2}, accuracy,
        {"FER+ test": 0.99},
        compare.frame_table(times), classifier,
        {"rounds": 1, "scene_repeats": 1, "classifier_faces": 2, "paced_fps": 30.0})


def test_frame_table_ratio_and_faces(compare):
    # a scheduled pipeline: one expensive frame, two cheap ones; the ratio is of the means.
    # fer's CPU time exceeds its wall clock (two threads), ours does not
    table = compare.frame_table({"clip": {"1": {
        "ours": ([0.005, 0.002, 0.002], [0.004, 0.002, 0.003], [1, 1, 3], [0.09, 0.03]),
        "fer": ([0.01, 0.012, 0.005], [0.02, 0.02, 0.014], [2, 1, 1], [0.06])}}})
    cell = table["clip"]["1"]
    assert cell["ours"]["median_ms"] == pytest.approx(2.0)
    assert cell["ours"]["mean_ms"] == pytest.approx(3.0)
    assert cell["fer"]["mean_ms"] == pytest.approx(9.0)
    assert cell["fer_over_ours"] == pytest.approx(3.0)
    assert cell["ours"]["cpu_mean_ms"] == pytest.approx(3.0)
    assert cell["fer"]["cpu_mean_ms"] == pytest.approx(18.0)
    assert cell["fer_over_ours_cpu"] == pytest.approx(6.0)
    assert cell["ours"]["faces"] == {"1": 2, "3": 1} and cell["fer"]["faces"] == {"1": 2, "2": 1}
    # the wake-up calls before each pass are reported apart, never in the per-frame figures
    assert cell["ours"]["wake_up_median_ms"] == pytest.approx(60.0)
    assert cell["fer"]["wake_up_median_ms"] == pytest.approx(60.0)
    with pytest.raises(compare.CompareError, match="no timing"):
        compare.summarise_seconds([])


def test_report_written_as_json_and_markdown(compare, ferplus_root, tmp_path):
    report = _report(compare, ferplus_root)
    paths = compare.write_report(tmp_path / "out", report)
    assert [p.name for p in paths] == [compare.REPORT_JSON, compare.REPORT_MD]
    saved = json.loads(paths[0].read_text())
    assert saved["accuracy"] == json.loads(json.dumps(report["accuracy"]))
    assert saved["ours"]["model_file"] == "aue_edge/edge/models/aue_crl/model.int8.ort.onnx"
    markdown = paths[1].read_text()
    ours = report["accuracy"]["FER+ test"]["all"][compare.OURS]["accuracy"]
    assert f"| FER+ test, all classes | 200 | {100 * ours:.2f} %" in markdown
    assert ("| bundled clip (480x360, 1-3 faces) | 1 | 25.0 (25.0) | 11.0 (11.0) | 0.4x "
            "| 23.3 / 20.0 (0.9x) | 1: 3 / 1: 2, 2: 1 | 90.0 / 60.0 |") in markdown
    assert "| bundled clip (480x360, 1-3 faces) | default, frames at 30 fps | 25.0 (25.0) |" in (
        markdown)
    assert "| default | 6.50 | 1.00 |" in markdown
    assert ("Our model: `aue_edge/edge/models/aue_crl/model.int8.ort.onnx`. Our pipeline: "
            "detect_interval_frames: 10, infer_interval_frames: 3, num_threads: null, "
            "detect_max_side_px: 640, detect_region_px: 96, region_interval_frames: 2"
            in markdown)


def test_failed_report_keeps_the_previous_one(compare, ferplus_root, tmp_path):
    report = _report(compare, ferplus_root)
    out = tmp_path / "out"
    compare.write_report(out, report)
    before = {p.name: p.read_text() for p in out.iterdir()}
    broken = {k: v for k, v in report.items() if k != "speed"}  # JSON written, markdown fails
    with pytest.raises(KeyError, match="speed"):
        compare.write_report(out, broken)
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_our_side_wakes_up_untimed_and_times_from_no_tracks(compare):
    # the real pipeline on the bundled clip: the wake-up call on the first frame is timed apart
    # and forgotten (reset), so every timed pass starts from no tracks, as fer's does
    from aue_edge.core.paths import DEMO_CLIP
    from aue_edge.edge.frames import read_video
    from aue_edge import PipelineConfig

    frames = np.stack(read_video(DEMO_CLIP)[0][:4])
    ours = compare.OurSide(PipelineConfig())
    try:
        seconds, cpu_seconds, faces, wake = ours.time_frames(frames, 2, 10.0, "default")
        pipeline = ours.pipelines["default"]
        assert len(seconds) == len(cpu_seconds) == len(faces) == 2 * len(frames)
        assert len(wake) == 1 and wake[0] > 0
        assert faces == [1] * 8
        # IDs are never reused: the wake-up made track 1, each timed pass began from no
        # tracks and made its own (2, then 3); without the reset the first pass would go on
        # with track 1
        assert [t.track_id for t in pipeline.tracker.tracks] == [3]
        # paced as a 4 fps camera: the pass waits for each frame's time (3 x 0.25 s), the
        # calls alone are timed
        start = time.perf_counter()
        seconds, _, faces, _ = ours.time_frames(frames, 1, 4.0, "default", paced=True)
        assert time.perf_counter() - start >= 0.75 and faces == [1] * 4
        assert sum(seconds) < 0.5   # the waits (0.75 s in all) are not in them
    finally:
        ours.close()


def test_paced_fps_must_be_a_rate_or_zero(compare, tmp_path, capsys):
    assert compare.main(["--fer-python", sys.executable, "--out", str(tmp_path / "out"),
                         "--paced-fps", "-30"]) == 2
    assert "--paced-fps must be 0 (no paced rows) or a rate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
