"""Jetson runtime defects of issue 13, reproduced with fakes of CUDA and TensorRT (neither runs
here): CUDA binding fallback on a failed start, FP16 host buffers on cuda-python, CUDA-graph
capture errors and fallback, teardown order, the DLA core at load, and TensorRT 11."""
from __future__ import annotations

import ctypes
import gc
import weakref

import numpy as np
import pytest
from helpers.fake_trt import ClockedFakeApi

from aue_edge.benchmarks.engine_bench import EngineBenchConfig, run_engine_benchmark
from aue_edge.edge.backends import trt_api
from aue_edge.edge.backends.tensorrt_backend import SIDECAR_SCHEMA
from aue_edge.edge.backends.trt_api import CudaCallError, TrtApi
from aue_edge.core.errors import BackendUnavailableError, ConfigError, ModelFileError


class FakeCudart:
    """The few cuda.bindings.runtime calls the cuda-python path makes; host memory comes from
    ctypes buffers this object keeps alive."""

    class cudaError_t:  # noqa: N801 - cuda-python's name
        cudaSuccess = 0
        cudaErrorStreamCaptureInvalidated = 901

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeGlobal = 0

    def __init__(self) -> None:
        self.buffers: dict[int, ctypes.Array] = {}
        self.freed: list[int] = []
        self.capturing = False

    def cudaMallocHost(self, nbytes):  # noqa: N802
        buffer = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def cudaFreeHost(self, ptr):  # noqa: N802
        self.freed.append(ptr)
        return (0,)

    def cudaGetErrorString(self, err):  # noqa: N802
        return 0, b"operation not permitted when stream is capturing"

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.capturing = True
        return (0,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        self.capturing = False
        return self.cudaError_t.cudaErrorStreamCaptureInvalidated, None


def cuda_python_with(cudart) -> trt_api._CudaPython:
    cuda = object.__new__(trt_api._CudaPython)
    cuda.cudart, cuda.device_index, cuda._host_ptrs = cudart, 0, {}
    return cuda


def test_fp16_host_buffers_on_the_cuda_python_path():
    """ctypes has no float16: an FP16-I/O engine could not get its pinned buffers."""
    cudart = FakeCudart()
    cuda = cuda_python_with(cudart)
    array = cuda.malloc_host(6, np.float16)
    assert array.dtype == np.float16 and array.shape == (6,)
    array[:] = np.arange(6, dtype=np.float16) / 4
    assert bytes(cudart.buffers[array.ctypes.data])[:12] == array.tobytes()
    cuda.free_host(array)
    assert cudart.freed == [array.ctypes.data]


def test_graph_capture_reports_the_enqueue_error_not_the_end_capture_error():
    cudart = FakeCudart()
    cuda = cuda_python_with(cudart)

    def enqueue():
        raise ModelFileError("TensorRT execution failed: the first error")

    with pytest.raises(ModelFileError, match="the first error"):
        cuda.capture_graph(enqueue, stream=0)
    assert not cudart.capturing  # the capture was ended: the stream is usable again


@pytest.mark.parametrize("pycuda_result", ["missing", "works"])
def test_a_binding_that_fails_to_start_falls_back_and_both_attempts_are_named(
        monkeypatch, pycuda_result):
    def cuda_python_fails(device_index):
        raise CudaCallError("CUDA call cudaSetDevice failed: cudaErrorInsufficientDriver "
                            "(CUDA driver version is insufficient for CUDA runtime version)")

    def pycuda(device_index):
        if pycuda_result == "missing":
            raise ImportError("No module named 'pycuda'")
        return "pycuda context"

    monkeypatch.setattr(trt_api, "_CudaPython", cuda_python_fails)
    monkeypatch.setattr(trt_api, "_Pycuda", pycuda)
    if pycuda_result == "works":
        assert trt_api._open_cuda("auto", 0) == "pycuda context"
        return
    with pytest.raises(BackendUnavailableError) as info:
        trt_api._open_cuda("auto", 0)
    message = str(info.value)
    assert "cuda-python: installed but failed to start (CudaCallError: " in message
    assert "cudaErrorInsufficientDriver" in message
    assert "pycuda: not installed (No module named 'pycuda')" in message
    assert "aue_edge[jetson-jp5]" in message


def test_tensorrt_objects_are_freed_before_the_cuda_context_is_popped():
    class Runtime:
        pass

    class Cuda:
        def close(self):
            gc.collect()
            self.runtime_alive_at_close = runtime_ref() is not None

    api = object.__new__(TrtApi)
    api._runtime, api.cuda = Runtime(), Cuda()
    runtime_ref = weakref.ref(api._runtime)
    cuda = api.cuda
    api.close()
    assert cuda.runtime_alive_at_close is False
    api.close()  # twice is fine


class Context:
    pass


class TeardownFakeApi(ClockedFakeApi):
    """Checks, when CUDA is closed, that the execution context has been released."""

    def create_context(self, engine):
        context = Context()
        self.context_ref = weakref.ref(context)
        return context

    def set_input_shape(self, context, tensor, shape):
        context.batch = shape[0]

    def tensor_shape(self, context, tensor):
        return (context.batch, 8)

    def capture_graph(self, context, tensors, addresses, stream):
        raise BackendUnavailableError("CUDA graphs need the cuda-python binding; this run uses "
                                      "pycuda")

    def close(self):
        gc.collect()
        self.context_alive_at_close = self.context_ref() is not None
        super().close()


def test_engine_bench_releases_the_context_first_and_falls_back_loudly_without_graphs(
        tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake")
    api = TeardownFakeApi()
    config = EngineBenchConfig(str(engine), warmup_ms=0.0, duration_s=0.0, iterations=3,
                               use_cuda_graph=True)
    with pytest.warns(UserWarning, match="timed WITHOUT CUDA graphs"):
        summary = run_engine_benchmark(config, api=api, clock=api.clock)
    assert api.context_alive_at_close is False
    assert summary["cuda_graph"].startswith("failed: BackendUnavailableError: CUDA graphs need")
    assert api.calls["execute"] == 1 + 3 and api.calls["launch_graph"] == 0
    assert any("WITHOUT CUDA graphs" in note for note in summary["notes"])


def test_a_dla_engine_is_loaded_on_the_core_it_was_built_for(tmp_path):
    import json

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"fake")
    (tmp_path / "m.engine.json").write_text(json.dumps({
        "schema": SIDECAR_SCHEMA, "role": "face_detector", "model_card": None,
        "build_flags": {"dla_core": 1}, "tensorrt_version": "10.3.0",
        "device": {"name": "Orin", "compute_capability": "8.7"}}))
    api = ClockedFakeApi()
    run_engine_benchmark(EngineBenchConfig(str(engine), warmup_ms=0.0, duration_s=0.0,
                                           iterations=1), api=api, clock=api.clock)
    assert api.dla_core == 1


def test_tensorrt_11_is_refused_before_building():
    api = object.__new__(TrtApi)
    api.version, api.trt = "11.0.0", None
    with pytest.raises(ConfigError, match="TensorRT 11 removed implicit INT8 calibrators and "
                                          "BuilderFlag.FP16/INT8"):
        api.build_engine("m.onnx", {}, ("FP16",), 1 << 20)
