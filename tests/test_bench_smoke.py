"""The whole benchmark suite, once, in smoke mode: so it cannot rot.

Runs ``aue bench --smoke`` (1 warm-up + 2 timed rounds per case) in a subprocess on the shipped
default model with real face frames, then checks the pytest-benchmark JSON, the machine record
and the report. It asserts that every group ran and that the only cases skipped are the ones
this machine cannot run (TensorRT); it asserts nothing about how long anything took.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from aue_edge.benchmarks.report import load_run
from aue_edge.edge.pipeline import DEFAULT_MODEL_DIR

EXPECTED_CASES = {
    "preprocess": {"bench_decode_jpeg", "bench_decode_ros_image", "bench_detect[1face]",
                   "bench_detect[5faces]", "bench_align[5faces]", "bench_to_model_input[5faces]"},
    "postprocess": {"bench_tracking[5faces]", "bench_smoothing[5faces-one_euro]",
                    "bench_message_json[5faces]", "bench_message_ros[5faces]"},
    "infer": {"bench_infer[aue_crl-ort-fp32-b5]", "bench_infer[aue_crl-ort-int8.ort-b5]",
              "bench_infer[aue_crl-ort-int8-b5]"},
    "end_to_end": {"bench_pipeline[aue_crl-ort-int8.ort-1face]",
                   "bench_pipeline[aue_crl-ort-int8.ort-5faces]"},
    "ros": {"bench_ros_round_trip[1face]", "bench_ros_round_trip[5faces]",
            "bench_ros_stream_30hz[1face]", "bench_ros_stream_30hz[5faces]",
            "bench_ros_stream_30hz_annotated[1face]",
            "bench_ros_stream_30hz_annotated[5faces]"},
}


@pytest.mark.bench
@pytest.mark.ros
def test_benchmark_suite_smoke(tmp_path, repo_root):
    if not (DEFAULT_MODEL_DIR / "card.json").is_file():
        pytest.fail(f"the shipped model is missing from {DEFAULT_MODEL_DIR}; the benchmark smoke "
                    f"run times the product's model", pytrace=False)
    command = [sys.executable, "-m", "aue_edge", "bench", "--smoke", "--batches", "1,5",
               "--threads", "2", "--out", str(tmp_path), "--name", "smoke"]
    proc = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"aue bench --smoke failed:\n{proc.stdout[-6000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    run = load_run(tmp_path / "smoke.json")
    names = {group: {c.name for c in run.cases if c.group == group} for group in EXPECTED_CASES}
    for group, expected in EXPECTED_CASES.items():
        assert expected <= names[group], (f"group {group}: missing {expected - names[group]}; "
                                          f"skipped: {run.skipped}")
    # 2 timed rounds per case; the 30 Hz stream cases count the frames that were answered.
    assert all(c.rounds == 2 for c in run.cases if "stream" not in c.name)
    assert run.config["smoke"] is True
    # The pipeline's own stage timings travel with the end-to-end cases (for the breakdown).
    e2e = run.by_key()["end_to_end/bench_pipeline[aue_crl-ort-int8.ort-5faces]"]
    assert set(e2e.stage_median_ms) == {"detect", "align", "infer", "postprocess", "total"}
    # Only what this machine lacks may be skipped, each with its reason.
    for item in run.skipped:
        assert item["reason"].startswith("TensorRT is not installed on this machine"), item
    if importlib.util.find_spec("tensorrt") is None:  # recorded as skipped, not dropped
        assert any("TensorRT" in item["reason"] for item in run.skipped)
    machine = json.loads((tmp_path / "smoke.machine.json").read_text())
    assert machine["cpu"]["logical_cores"] >= 1 and machine["packages"]["onnxruntime"]
    report = tmp_path / "smoke_report" / "report.md"
    text = report.read_text(encoding="utf-8")
    assert "SMOKE MODE" in text and "## end_to_end" in text
    assert (tmp_path / "smoke_report" / "end_to_end_breakdown.png").stat().st_size > 0
