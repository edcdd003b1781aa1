"""Engine benchmark for the Jetson, after trtexec: ``aue bench --engine model.fp16.engine``.

Benchmark stage, TensorRT path. It times a serialized engine (built by ``aue build``) the way
``trtexec --loadEngine`` does, so the numbers can be put next to trtexec's: a warm-up of
``warmup_ms`` of queries, then queries until both ``iterations`` queries and ``duration_s``
seconds are done; one query = one batch of ``batch`` faces (random inputs, fixed seed: values do
not change the latency of these networks). Per query it records, in trtexec's terms:

- H2D latency: host-to-device copy of the inputs;
- GPU compute time: from enqueue to the stream being idle (CUDA graph launch when
  ``use_cuda_graph``);
- D2H latency: device-to-host copy of the outputs;
- enqueue time: host time to enqueue the inference (returns before the GPU is done);
- latency: H2D + GPU compute + D2H (``no_data_transfers`` leaves the copies out, like
  ``--noDataTransfers``);
- throughput: queries / host wall time of the timed loop (x batch: faces/s).

How this differs from trtexec, on purpose: phases are timed with the host clock around each
phase with a stream synchronisation after it (trtexec uses CUDA events and keeps one query in
flight ahead), so each phase includes a synchronisation's overhead (tens of microseconds) and
there is no overlap between queries. It is the latency one robot frame sees.

Every TensorRT and CUDA call goes through ``aue_edge.edge.backends.trt_api.TrtApi``; this module
is plain Python and is tested with a test double of that API (control flow and statistics).
NOT EXECUTED here: TensorRT cannot be installed on the development machines, so no real engine
has been timed by this code. CUDA graphs use ``TrtApi.capture_graph`` / ``launch_graph`` /
``destroy_graph`` (cuda-python only). When the capture fails (pycuda, or a CUDA error) the
benchmark falls back to plain enqueues, loudly: a warning, a note, and ``cuda_graph`` in the
summary says ``failed: <first error>``, so a result is never mistaken for a graph run.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aue_edge.core.errors import ConfigError, ModelFileError

METRICS = ("latency", "gpu_compute", "h2d", "d2h", "enqueue")
PERCENTILES = (90, 95, 99)


@dataclass(frozen=True)
class EngineBenchConfig:
    """What to time; defaults are trtexec's (``--warmUp=200 --duration=3 --iterations=10``)."""

    engine_path: str
    batch: int = 1
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    iterations: int = 10
    use_cuda_graph: bool = False
    no_data_transfers: bool = False
    device_index: int = 0
    cuda_binding: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.batch < 1:
            problems.append(f"batch must be >= 1, got {self.batch}")
        if self.warmup_ms < 0:
            problems.append(f"warmup_ms must be >= 0, got {self.warmup_ms}")
        if self.duration_s < 0:
            problems.append(f"duration_s must be >= 0, got {self.duration_s}")
        if self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if self.device_index < 0:
            problems.append(f"device_index must be >= 0, got {self.device_index}")
        if self.cuda_binding not in ("auto", "cuda-python", "pycuda"):
            problems.append(f"cuda_binding must be auto, cuda-python or pycuda, got "
                            f"{self.cuda_binding!r}")
        if problems:
            raise ConfigError("invalid engine benchmark settings: " + "; ".join(problems))

    def trtexec_command(self, shapes: str) -> str:
        """The trtexec command that measures the same thing (to cross-check on the device)."""
        parts = [f"trtexec --loadEngine={self.engine_path}", f"--shapes={shapes}",
                 f"--warmUp={self.warmup_ms:g}", f"--duration={self.duration_s:g}",
                 f"--iterations={self.iterations}", "--percentile=99"]
        if self.use_cuda_graph:
            parts.append("--useCudaGraph")
        if self.no_data_transfers:
            parts.append("--noDataTransfers")
        return " ".join(parts)


@dataclass(frozen=True)
class QueryTiming:
    """One query's phases in milliseconds (copies are 0 with no_data_transfers)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    enqueue_ms: float

    @property
    def latency_ms(self) -> float:
        return self.h2d_ms + self.compute_ms + self.d2h_ms

    def metric(self, name: str) -> float:
        return {"latency": self.latency_ms, "gpu_compute": self.compute_ms, "h2d": self.h2d_ms,
                "d2h": self.d2h_ms, "enqueue": self.enqueue_ms}[name]


def metric_stats(values_ms: list[float]) -> dict[str, float]:
    """min / max / mean / median / p90 / p95 / p99 (linear interpolation), milliseconds."""
    data = np.asarray(values_ms, dtype=np.float64)
    if data.size == 0:
        raise ConfigError("no query was timed; iterations must be >= 1")
    stats = {"min": float(data.min()), "max": float(data.max()), "mean": float(data.mean()),
             "median": float(np.median(data))}
    stats.update({f"p{q}": float(np.percentile(data, q)) for q in PERCENTILES})
    return stats


def summarize(timings: list[QueryTiming], batch: int, walltime_s: float) -> dict[str, Any]:
    """trtexec's performance summary from the timed queries."""
    if walltime_s <= 0:
        raise ConfigError(f"walltime_s must be > 0, got {walltime_s}")
    qps = len(timings) / walltime_s
    return {
        "queries": len(timings),
        "batch": batch,
        "walltime_s": walltime_s,
        "throughput_qps": qps,
        "throughput_faces_per_s": qps * batch,
        "total_gpu_compute_s": sum(t.compute_ms for t in timings) / 1000.0,
        "metrics_ms": {name: metric_stats([t.metric(name) for t in timings])
                       for name in METRICS},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human summary in trtexec's order and wording."""
    labels = {"latency": "Latency", "enqueue": "Enqueue Time", "h2d": "H2D Latency",
              "gpu_compute": "GPU Compute Time", "d2h": "D2H Latency"}
    lines = [f"Throughput: {summary['throughput_qps']:.2f} qps "
             f"({summary['throughput_faces_per_s']:.1f} faces/s at batch {summary['batch']})"]
    for name in ("latency", "enqueue", "h2d", "gpu_compute", "d2h"):
        s = summary["metrics_ms"][name]
        lines.append(f"{labels[name]}: min = {s['min']:.5f} ms, max = {s['max']:.5f} ms, "
                     f"mean = {s['mean']:.5f} ms, median = {s['median']:.5f} ms, "
                     + ", ".join(f"percentile({q}%) = {s[f'p{q}']:.5f} ms" for q in PERCENTILES))
    lines.append(f"Total Host Walltime: {summary['walltime_s']:.5f} s "
                 f"({summary['queries']} queries)")
    lines.append(f"Total GPU Compute Time: {summary['total_gpu_compute_s']:.5f} s")
    return "\n".join(lines)


class EngineSession:
    """One engine, one context, buffers for one batch size, optionally one CUDA graph.

    ``api`` is a ``trt_api.TrtApi`` (or a test double with the same methods).
    """

    def __init__(self, api, engine_path: Path, batch: int, use_cuda_graph: bool,
                 seed: int = 0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.api, self.clock = api, clock
        self._buffers: dict[str, tuple[int, np.ndarray]] = {}
        self._graph = None
        self._stream = None
        try:
            self._open(engine_path, batch, use_cuda_graph, seed)
        except BaseException:
            self.close()
            raise

    def _open(self, engine_path: Path, batch: int, use_cuda_graph: bool, seed: int) -> None:
        from aue_edge.edge.backends.tensorrt_backend import (check_engine_compatibility,
                                                             read_sidecar)

        api = self.api
        sidecar = read_sidecar(engine_path, required=False)
        self.notes = check_engine_compatibility(sidecar, api.version, api.device_info(),
                                                engine_path)
        self.cuda_graph = "off"
        data = engine_path.read_bytes()
        if not data:
            raise ModelFileError(f"TensorRT engine {engine_path} is empty (0 bytes); rebuild it")
        engine = api.deserialize(data, origin=str(engine_path),
                                 dla_core=((sidecar or {}).get("build_flags") or {}).get(
                                     "dla_core"))
        self.tensors = api.io_tensors(engine)
        self.context = api.create_context(engine)
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]
        rng = np.random.default_rng(seed)
        shapes = {}
        for t in self.inputs:
            mins, _opt, maxs = t.profile
            if not mins[0] <= batch <= maxs[0]:
                raise ConfigError(f"batch {batch} is outside the engine's profile for input "
                                  f"{t.name!r} (batch {mins[0]}..{maxs[0]}); pick a batch in "
                                  f"that range or rebuild with 'aue build --max-batch {batch}'")
            shapes[t.name] = (batch, *maxs[1:])
            api.set_input_shape(self.context, t, shapes[t.name])
        for t in self.outputs:
            shapes[t.name] = api.tensor_shape(self.context, t)
        self.shapes = shapes
        for t in self.tensors:
            count = int(math.prod(shapes[t.name]))
            host = api.malloc_host(count, t.dtype)
            if t.is_input:
                host[:] = rng.standard_normal(count).astype(t.dtype)
            self._buffers[t.name] = (api.malloc_device(count * t.dtype.itemsize), host)
        self.addresses = {name: ptr for name, (ptr, _host) in self._buffers.items()}
        self._stream = api.create_stream()
        if use_cuda_graph:
            # TensorRT: enqueue once after a shape change before capturing, so the captured
            # work is the steady-state inference.
            api.execute(self.context, self.tensors, self.addresses, self._stream)
            api.synchronize(self._stream)
            try:
                self._graph = api.capture_graph(self.context, self.tensors, self.addresses,
                                                self._stream)
                self.cuda_graph = "captured"
            except Exception as exc:  # noqa: BLE001 - any capture failure: time without graphs
                self.cuda_graph = f"failed: {type(exc).__name__}: {exc}"
                note = (f"CUDA graph capture failed ({type(exc).__name__}: {exc}); the "
                        f"queries are timed WITHOUT CUDA graphs")
                self.notes.append(note)
                warnings.warn(note, stacklevel=2)

    def shapes_flag(self) -> str:
        """The inputs' shapes in trtexec's ``--shapes`` syntax."""
        return ",".join(f"{t.name}:{'x'.join(str(d) for d in self.shapes[t.name])}"
                        for t in self.inputs)

    def run_query(self, data_transfers: bool = True) -> QueryTiming:
        api, stream, clock = self.api, self._stream, self.clock
        t0 = clock()
        if data_transfers:
            for t in self.inputs:
                ptr, host = self._buffers[t.name]
                api.htod_async(ptr, host, stream)
            api.synchronize(stream)
        t1 = clock()
        if self._graph is not None:
            api.launch_graph(self._graph, stream)
        else:
            api.execute(self.context, self.tensors, self.addresses, stream)
        t2 = clock()
        api.synchronize(stream)
        t3 = clock()
        if data_transfers:
            for t in self.outputs:
                ptr, host = self._buffers[t.name]
                api.dtoh_async(host, ptr, stream)
            api.synchronize(stream)
        t4 = clock()
        return QueryTiming(h2d_ms=(t1 - t0) * 1e3, compute_ms=(t3 - t1) * 1e3,
                           d2h_ms=(t4 - t3) * 1e3, enqueue_ms=(t2 - t1) * 1e3)

    def close(self) -> None:
        api = self.api
        if self._graph is not None:
            api.destroy_graph(self._graph)
            self._graph = None
        for ptr, host in self._buffers.values():
            api.free_device(ptr)
            api.free_host(host)
        self._buffers.clear()
        if self._stream is not None:
            api.destroy_stream(self._stream)
            self._stream = None
        # The execution context must go while the CUDA context is still current: pycuda's
        # TrtApi.close() pops it.
        self.context = None
        api.close()  # TrtApi.close() is safe to call twice

    def __enter__(self) -> "EngineSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def time_queries(session: EngineSession, config: EngineBenchConfig
                 ) -> tuple[list[QueryTiming], float]:
    """Warm up for ``warmup_ms``, then time queries until iterations AND duration are reached."""
    clock, transfers = session.clock, not config.no_data_transfers
    start = clock()
    while (clock() - start) * 1e3 < config.warmup_ms:
        session.run_query(transfers)
    timings: list[QueryTiming] = []
    start = clock()
    while len(timings) < config.iterations or clock() - start < config.duration_s:
        timings.append(session.run_query(transfers))
    return timings, clock() - start


def run_engine_benchmark(config: EngineBenchConfig, api=None,
                         clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time the engine; returns the summary plus the raw per-query timings and notes."""
    engine_path = Path(config.engine_path)
    if not engine_path.is_file():
        raise ModelFileError(f"TensorRT engine {engine_path} does not exist; build it on this "
                             f"device with 'aue build MODEL.onnx --precision fp16 --out "
                             f"{engine_path}'")
    if api is None:
        from aue_edge.edge.backends.trt_api import TrtApi

        api = TrtApi(cuda_binding=config.cuda_binding, device_index=config.device_index)
    with EngineSession(api, engine_path, config.batch, config.use_cuda_graph, config.seed,
                       clock) as session:
        timings, walltime_s = time_queries(session, config)
        summary = summarize(timings, config.batch, walltime_s)
        summary.update(
            shapes=session.shapes_flag(),
            trtexec_command=config.trtexec_command(session.shapes_flag()),
            notes=list(session.notes),
            cuda_graph=session.cuda_graph,
            tensorrt_version=api.version,
            timings=[dataclasses.asdict(t) for t in timings],
        )
    return summary


def to_benchmark_json(config: EngineBenchConfig, summary: dict[str, Any],
                      machine: dict[str, Any], command: str) -> dict[str, Any]:
    """The result in pytest-benchmark's JSON layout, one case per metric, so that
    ``aue bench --report`` tabulates it and compares it with other runs."""
    timings = [QueryTiming(**t) for t in summary["timings"]]
    tag = (f"{Path(config.engine_path).name}-b{config.batch}"
           + ("-graph" if summary.get("cuda_graph") == "captured" else "")
           + ("-nocopy" if config.no_data_transfers else ""))
    benchmarks = []
    for name in METRICS:
        if config.no_data_transfers and name in ("h2d", "d2h"):
            continue
        data_s = [t.metric(name) / 1e3 for t in timings]
        benchmarks.append({
            "group": "engine",
            "name": f"engine_{name}[{tag}]",
            "fullname": f"engine_bench::{name}[{tag}]",
            "params": None, "param": tag,
            "extra_info": {"items_per_call": config.batch, "item_unit": "faces",
                           "metric": name, "throughput_qps_walltime": summary["throughput_qps"],
                           "tensorrt_version": summary["tensorrt_version"]},
            "options": {"warmup_ms": config.warmup_ms, "duration_s": config.duration_s,
                        "iterations": config.iterations},
            "stats": {"min": min(data_s), "max": max(data_s),
                      "mean": float(np.mean(data_s)), "median": float(np.median(data_s)),
                      "rounds": len(data_s), "iterations": 1, "data": data_s},
        })
    return {
        "machine_info": {"aue": machine},
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmarks": benchmarks,
        "aue": {"config": dataclasses.asdict(config), "command": command, "skipped": [],
                "engine_summary": {k: v for k, v in summary.items() if k != "timings"}},
    }
