"""Benchmark report maths and output on synthetic pytest-benchmark JSON (no timing involved)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from aue_edge.benchmarks.cli import bench_main
from aue_edge.benchmarks.report import BenchReportError, load_run, write_report
from aue_edge.core.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def entry(group: str, name: str, data_ms, items: int = 1, unit: str = "calls", **extra):
    data_s = [v / 1000.0 for v in data_ms]
    return {"group": group, "name": name, "fullname": f"bench_x.py::{name}",
            "extra_info": {"items_per_call": items, "item_unit": unit, **extra},
            "stats": {"min": min(data_s), "max": max(data_s), "mean": float(np.mean(data_s)),
                      "median": float(np.median(data_s)), "rounds": len(data_s),
                      "iterations": 1, "data": data_s}}


def write_run(path, benchmarks, skipped=(), machine=None, config=None):
    doc = {"machine_info": {"aue": machine or {"cpu": {"model": "Test CPU", "logical_cores": 2}}},
           "datetime": "2026-01-01T00:00:00", "benchmarks": benchmarks,
           "aue": {"config": config or {"rounds": 100, "warmup_rounds": 10, "ros_rounds": 50},
                   "command": "aue bench --rounds 100", "skipped": list(skipped)}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


STAGES_1FACE = {"detect": [10.0, 12.0, 11.0], "align": [1.0, 1.0, 1.0],
                "infer": [5.0, 6.0, 5.5], "postprocess": [0.5, 0.5, 0.5],
                "total": [17.0, 20.0, 18.5]}


@pytest.fixture
def run_and_baseline(tmp_path):
    ramp = np.arange(1, 101, dtype=float)  # 1..100 ms
    run = write_run(tmp_path / "run.json", [
        entry("infer", "bench_infer[m-ort-int8-b5]", ramp, items=5, unit="faces"),
        entry("end_to_end", "bench_pipeline[m-ort-int8-1face]", [17.0, 20.0, 18.5],
              unit="frames", stage_ms=STAGES_1FACE),
    ], skipped=[{"case": "bench_infer[m-trt-fp16-b1]", "reason": "TensorRT is not installed"},
                {"case": "bench_infer[m-trt-fp16-b5]", "reason": "TensorRT is not installed"}],
        machine={"cpu": {"model": "Test CPU", "logical_cores": 2, "usable_cores": 2},
                 "load_average_1_5_15min": [3.5, 2.5, 1.0]})
    base = write_run(tmp_path / "base.json", [
        entry("infer", "bench_infer[m-ort-int8-b5]", ramp * 2, items=5, unit="faces"),
        entry("infer", "bench_infer[m-trt-int8-b5]", ramp / 4, items=5, unit="faces"),
    ], machine={"cpu": {"model": "ARM Cortex-A78AE"},
                "jetson": {"model": "NVIDIA Jetson AGX Orin", "jetpack": "5.1.2"}})
    return run, base


def test_statistics_from_raw_rounds(run_and_baseline):
    run, _ = run_and_baseline
    case = load_run(run).by_key()["infer/bench_infer[m-ort-int8-b5]"]
    assert case.rounds == 100
    assert case.min_ms == pytest.approx(1.0)
    assert case.median_ms == pytest.approx(50.5)
    assert case.mean_ms == pytest.approx(50.5)
    # linear interpolation between closest ranks over 1..100: 1 + q/100 * 99
    assert case.p90_ms == pytest.approx(90.1)
    assert case.p95_ms == pytest.approx(95.05)
    assert case.p99_ms == pytest.approx(99.01)
    assert case.items_per_s == pytest.approx(5 / 0.0505)


def test_markdown_table_ratios_breakdown_and_skips(run_and_baseline, tmp_path):
    run, base = run_and_baseline
    files = write_report(run, base, tmp_path / "report")
    text = files.markdown.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `infer[m-ort-int8-b5]`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:9] == ["100", "1.00", "50.50", "50.50", "90.10", "95.05", "99.01",
                          "99.0 faces/s"]
    assert cells[9:] == ["101", "0.50x", "0.50x"]  # baseline twice as slow
    assert "Cases only in the baseline: `infer/bench_infer[m-trt-int8-b5]`" in text
    assert "Jetson: NVIDIA Jetson AGX Orin; JetPack 5.1.2" in text
    assert "aue bench --rounds 100" in text
    assert "5-minute load average was 2.5 on 2 cores" in text
    summary = text.split("## Summary: per-frame latency")[1].split("##")[0]
    assert "| `pipeline[m-ort-int8-1face]` | 18.50 | 19.70 | 19.97* | 54.1 frames/s |" in summary
    assert "infer[" not in summary
    # per-stage medians of the end-to-end case: detect 11, align 1, infer 5.5, post 0.5,
    # other = 18.5 - 18.0
    row = next(line for line in text.splitlines()
               if line.startswith("| `pipeline[m-ort-int8-1face]` | 11.00"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == [
        "11.00", "1.00", "5.50", "0.500", "0.500", "18.50", "18.50"]
    assert ("- TensorRT is not installed: `infer[m-trt-fp16-b1]`, `infer[m-trt-fp16-b5]`"
            in text)
    assert "3 *" not in text and "99.01*" not in text  # 100 rounds: no small-sample mark


def test_plots_are_written(run_and_baseline, tmp_path):
    run, base = run_and_baseline
    files = write_report(run, base, tmp_path / "report")
    names = sorted(p.name for p in files.plots)
    assert names == ["end_to_end_breakdown.png", "end_to_end_stages.png", "latency_end_to_end.png",
                     "latency_infer.png"]
    for plot in files.plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
        assert f"]({plot.name})" in files.markdown.read_text(encoding="utf-8")


def test_without_matplotlib_the_report_has_tables_and_says_why_no_plots(run_and_baseline,
                                                                       tmp_path, monkeypatch):
    run, base = run_and_baseline
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # `import matplotlib` now fails
    files = write_report(run, base, tmp_path / "report")
    assert files.plots == () and not list((tmp_path / "report").glob("*.png"))
    assert files.note.startswith("plots not drawn: plots need matplotlib")
    text = files.markdown.read_text(encoding="utf-8")
    assert f"Note: {files.note}" in text and "aue_edge[plots]" in text
    assert "| `infer[m-ort-int8-b5]`" in text and "](" not in text   # tables, no images


def test_summary_only_json_reports_na_percentiles(tmp_path):
    item = entry("infer", "bench_infer[x]", [2.0, 4.0, 6.0])
    del item["stats"]["data"]
    case = load_run(write_run(tmp_path / "r.json", [item])).cases[0]
    assert (case.min_ms, case.median_ms, case.mean_ms) == pytest.approx((2.0, 4.0, 4.0))
    assert case.p90_ms is None and case.p99_ms is None
    text = write_report(tmp_path / "r.json", None, tmp_path / "o").markdown.read_text()
    assert "| n/a | n/a | n/a |" in text


def test_few_rounds_are_marked(tmp_path):
    path = write_run(tmp_path / "r.json", [entry("infer", "bench_infer[x]", [1.0, 2.0, 3.0])])
    text = write_report(path, None, tmp_path / "o").markdown.read_text()
    assert "2.98*" in text
    assert "Warning: the 5-minute load" not in text  # no load recorded: no warning


@pytest.mark.parametrize("mutate, message", [
    (lambda doc: doc.pop("benchmarks"), "'benchmarks' list"),
    (lambda doc: doc["benchmarks"][0].pop("stats"), r"benchmarks\[0\]: missing field 'stats'"),
    (lambda doc: doc["benchmarks"][0]["stats"].update(data=[0.1, -1.0]), "non-negative"),
    (lambda doc: doc["benchmarks"][0]["extra_info"].update(items_per_call=0), "items_per_call"),
    (lambda doc: doc["benchmarks"].append(doc["benchmarks"][0]), "repeat"),
])
def test_bad_json_names_file_and_field(tmp_path, mutate, message):
    path = write_run(tmp_path / "bad.json", [entry("infer", "bench_infer[x]", [1.0, 2.0])])
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(BenchReportError, match=message) as info:
        load_run(path)
    assert "bad.json" in str(info.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(BenchReportError,
                       match=r"x\.json is not valid JSON \(UTF-8 text expected\)"):
        load_run(tmp_path / "x.json")
    with pytest.raises(BenchReportError, match="does not exist"):
        load_run(tmp_path / "missing.json")


def test_cli_report(run_and_baseline, tmp_path, capsys):
    run, base = run_and_baseline
    assert bench_main(["--report", str(run), str(base), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.md").is_file()
    assert "report:" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="at most one BASELINE"):
        bench_main(["--report", str(run), str(base), str(base)])


def test_stream_case_uses_its_measured_rate(tmp_path):
    stream = entry("ros", "bench_ros_stream_30hz[1face]", [40.0, 50.0, 60.0], unit="frames",
                   frames_sent=30, frames_answered=3, frames_dropped=27, camera_rate_hz=30.0,
                   throughput_per_s=2.5)
    text = write_report(write_run(tmp_path / "r.json", [stream]), None,
                        tmp_path / "o").markdown.read_text()
    row = next(line for line in text.splitlines()
               if line.startswith("| `ros_stream_30hz[1face]` | 3 |"))
    assert row.endswith("| 2.5 frames/s |")  # the answered rate, not 1 / mean latency
    assert ("3 of 30 frames sent at 30.0 Hz were answered (27 dropped by the node's depth-1 "
            "queue while it was busy)") in text
