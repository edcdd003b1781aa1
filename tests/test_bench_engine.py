"""Engine benchmark (trtexec-like) up to the TensorRT boundary.

TensorRT is not installed on this machine. :class:`ClockedFakeApi` (tests/helpers/fake_trt.py)
is a test double of ``trt_api.TrtApi`` whose calls advance a fake clock by fixed amounts: these
tests check OUR control flow (warm-up, iteration/duration loop, phases, CUDA graph use, clean-up,
errors) and statistics, NOT TensorRT or CUDA, whose calls were never executed here.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.fake_trt import D2H_S, ENQUEUE_S, GPU_S, GRAPH_LAUNCH_S, H2D_S, ClockedFakeApi

from aue_edge.benchmarks.engine_bench import (EngineBenchConfig, EngineSession, QueryTiming,
                                              format_summary, run_engine_benchmark,
                                              summarize, to_benchmark_json)
from aue_edge.benchmarks.report import load_run, write_report
from aue_edge.core.errors import BackendUnavailableError, ConfigError


@pytest.fixture
def engine_file(tmp_path) -> Path:
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"FAKE ENGINE (test double, not a TensorRT plan)")
    return path


def test_phases_loop_and_statistics(engine_file):
    api = ClockedFakeApi()
    config = EngineBenchConfig(str(engine_file), batch=5, warmup_ms=3.0, duration_s=0.0,
                               iterations=7)
    summary = run_engine_benchmark(config, api=api, clock=api.clock)
    assert summary["queries"] == 7  # duration 0: the iteration minimum decides
    metrics = summary["metrics_ms"]
    assert metrics["h2d"]["median"] == pytest.approx(H2D_S * 1e3)
    assert metrics["enqueue"]["median"] == pytest.approx(ENQUEUE_S * 1e3)
    assert metrics["gpu_compute"]["median"] == pytest.approx((ENQUEUE_S + GPU_S) * 1e3)
    assert metrics["d2h"]["median"] == pytest.approx(D2H_S * 1e3)
    latency_ms = (H2D_S + ENQUEUE_S + GPU_S + D2H_S) * 1e3
    assert metrics["latency"]["p99"] == pytest.approx(latency_ms)
    assert summary["throughput_qps"] == pytest.approx(1e3 / latency_ms)
    assert summary["throughput_faces_per_s"] == pytest.approx(5e3 / latency_ms)
    # warm-up: 3 ms at 1.35 ms per query = 3 queries before the 7 timed ones
    assert api.calls["execute"] == 10
    assert api.calls["set_input_shape"] == 1
    assert not api.live_device and api.closed and api.calls["destroy_stream"] == 1
    assert summary["shapes"] == "image:5x3x112x112"
    assert summary["trtexec_command"].endswith(
        "--shapes=image:5x3x112x112 --warmUp=3 --duration=0 --iterations=7 --percentile=99")
    text = format_summary(summary)
    assert text.startswith("Throughput: ")
    assert "GPU Compute Time: min = 1.05000 ms" in text


def test_duration_extends_the_loop(engine_file):
    api = ClockedFakeApi()
    config = EngineBenchConfig(str(engine_file), warmup_ms=0.0, duration_s=0.1, iterations=1)
    summary = run_engine_benchmark(config, api=api, clock=api.clock)
    assert summary["queries"] == int(np.ceil(0.1 / (H2D_S + ENQUEUE_S + GPU_S + D2H_S)))


def test_cuda_graph_and_no_data_transfers(engine_file):
    api = ClockedFakeApi()
    config = EngineBenchConfig(str(engine_file), warmup_ms=0.0, duration_s=0.0, iterations=4,
                               use_cuda_graph=True, no_data_transfers=True)
    summary = run_engine_benchmark(config, api=api, clock=api.clock)
    assert api.calls["capture_graph"] == 1 and api.calls["destroy_graph"] == 1
    assert api.calls["execute"] == 1  # the one enqueue TensorRT needs before capture
    assert api.calls["launch_graph"] == 4
    assert api.calls["htod"] == api.calls["dtoh"] == 0
    assert summary["metrics_ms"]["h2d"]["max"] == 0.0
    assert summary["metrics_ms"]["latency"]["median"] == pytest.approx(
        (GRAPH_LAUNCH_S + GPU_S) * 1e3)
    assert "--useCudaGraph --noDataTransfers" in summary["trtexec_command"]


def test_batch_outside_profile_frees_everything(engine_file):
    api = ClockedFakeApi(max_batch=4)
    with pytest.raises(ConfigError, match=r"batch 5 is outside the engine's profile .*1\.\.4"):
        EngineSession(api, engine_file, batch=5, use_cuda_graph=False, clock=api.clock)
    assert not api.live_device and api.closed


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="batch must be >= 1.*iterations must be >= 1"):
        EngineBenchConfig("x.engine", batch=0, iterations=0)


def test_result_goes_through_the_report(engine_file, tmp_path):
    api = ClockedFakeApi()
    config = EngineBenchConfig(str(engine_file), batch=2, warmup_ms=0.0, duration_s=0.0,
                               iterations=5)
    summary = run_engine_benchmark(config, api=api, clock=api.clock)
    doc = to_benchmark_json(config, summary, {"cpu": {"model": "ARM Cortex-A78AE"}}, "aue bench")
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(doc))
    run = load_run(path)
    assert sorted(c.name for c in run.cases) == sorted(
        f"engine_{m}[model.fp16.engine-b2]" for m in
        ("latency", "gpu_compute", "h2d", "d2h", "enqueue"))
    latency = run.by_key()["engine/engine_latency[model.fp16.engine-b2]"]
    assert latency.items_per_call == 2 and latency.rounds == 5
    text = write_report(path, None, tmp_path / "rep").markdown.read_text()
    assert "trtexec --loadEngine=" in text and "## engine" in text


def test_summarize_rejects_zero_walltime():
    with pytest.raises(ConfigError, match="walltime_s must be > 0"):
        summarize([QueryTiming(0.1, 1.0, 0.1, 0.01)], 1, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed: the next test times a real engine instead")
def test_without_tensorrt_the_real_path_fails_clearly(engine_file):
    """Executed here: the real TrtApi is reached and reports that TensorRT is missing."""
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        run_engine_benchmark(EngineBenchConfig(str(engine_file)))


@pytest.mark.tensorrt
def test_real_engine_benchmark():
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed on this machine: the engine benchmark was NOT "
                    "executed against a real engine (run on a Jetson with AUE_BENCH_ENGINE set)")
    engine = os.environ.get("AUE_BENCH_ENGINE")
    if not engine:
        pytest.skip("set AUE_BENCH_ENGINE to an engine built by 'aue build' to time it")
    summary = run_engine_benchmark(EngineBenchConfig(engine, duration_s=0.5, iterations=20))
    assert summary["queries"] >= 20
    assert summary["metrics_ms"]["gpu_compute"]["min"] > 0
