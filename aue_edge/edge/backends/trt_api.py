"""The ONE module that imports TensorRT and a CUDA binding (cuda-python or pycuda).

Everything above it (``tensorrt_backend.py``: buffers, shapes, version and device checks;
``aue_edge/edge/build.py``: flags, profiles, sidecar) is plain Python that is tested without
TensorRT. This module only translates those decisions into TensorRT / CUDA calls, written against
NVIDIA's documented Python API:

- TensorRT >= 8.5: tensors by name (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``).
- TensorRT < 8.5 (JetPack 4.6 / 5.0): the bindings API (``num_bindings``,
  ``set_binding_shape``, ``execute_async_v2``).
- Device memory through cuda-python (``cudart``, what NVIDIA's current samples use) or pycuda
  (what many JetPack images have); every CUDA error becomes an exception naming the call.

NOT EXECUTED in this project: TensorRT cannot be installed on the development machines and the
lent GPU machines do not have it either, so no line below has run. It was checked by review
against NVIDIA's API documentation; see docs/edge.md ("What was not executed").
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aue_edge.core.errors import BackendUnavailableError, ModelFileError
from aue_edge.edge.trt_targets import parse_version, target_of_version

CUDA_BINDINGS = ("auto", "cuda-python", "pycuda")


class CudaCallError(BackendUnavailableError):
    """A CUDA runtime / driver call that failed; the message names the call and the error."""


@dataclass(frozen=True)
class DeviceInfo:
    """The CUDA device an engine runs on; compute capability as "major.minor" (Orin: "8.7")."""

    name: str
    compute_capability: str
    total_memory_mib: int


@dataclass(frozen=True)
class IoTensor:
    """One engine input or output. ``shape`` has -1 for dynamic axes; ``profile`` is
    (min, opt, max) of optimisation profile 0 for inputs, None for outputs."""

    name: str
    index: int
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


@dataclass
class BuildOutput:
    engine_bytes: bytes
    timing_cache_bytes: bytes | None
    log: list[str] = field(default_factory=list)
    platform: dict = field(default_factory=dict)


def import_tensorrt():
    """``import tensorrt`` or a BackendUnavailableError that says what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed here ({exc}). On a Jetson it ships with JetPack "
            f"(python3-libnvinfer); on x86 install NVIDIA's 'tensorrt' wheel. Use the ONNX "
            f"Runtime backend ('--backend ort') where TensorRT is not available.") from None
    return trt


def installed_tensorrt_version() -> str | None:
    """``tensorrt.__version__`` of the installed TensorRT, or None when it cannot be imported
    (what ``aue build`` plans for before building)."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailableError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


# ---------------------------------------------------------------------------------- CUDA
class _CudaPython:
    """cuda-python (``cuda.bindings.runtime``, older releases ``cuda.cudart``)."""

    name = "cuda-python"

    def __init__(self, device_index: int) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6 layout
        self.cudart = cudart
        self._call("cudaSetDevice", cudart.cudaSetDevice(device_index))
        self.device_index = device_index
        self._host_ptrs: dict[int, int] = {}

    def _call(self, what: str, result):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(err)
            detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            raise CudaCallError(f"CUDA call {what} failed: {getattr(err, 'name', err)} "
                                f"({detail})")
        return rest[0] if len(rest) == 1 else rest

    def device_info(self) -> DeviceInfo:
        props = self._call("cudaGetDeviceProperties",
                           self.cudart.cudaGetDeviceProperties(self.device_index))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(
            props.name)
        return DeviceInfo(name.split("\x00")[0], f"{props.major}.{props.minor}",
                          int(props.totalGlobalMem) // (1 << 20))

    def malloc_device(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.cudart.cudaMalloc(nbytes)))

    def free_device(self, ptr: int) -> None:
        self._call("cudaFree", self.cudart.cudaFree(ptr))

    def malloc_host(self, count: int, dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        ptr = int(self._call("cudaMallocHost", self.cudart.cudaMallocHost(nbytes)))
        # Viewed through bytes: ctypes has no float16, and FP16 engine I/O needs one.
        raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        array = raw.view(dtype)
        self._host_ptrs[array.ctypes.data] = ptr
        return array

    def free_host(self, array: np.ndarray) -> None:
        ptr = self._host_ptrs.pop(array.ctypes.data, None)
        if ptr is not None:
            self._call("cudaFreeHost", self.cudart.cudaFreeHost(ptr))

    def create_stream(self):
        return self._call("cudaStreamCreate", self.cudart.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def destroy_stream(self, stream) -> None:
        self._call("cudaStreamDestroy", self.cudart.cudaStreamDestroy(stream))

    def htod_async(self, device_ptr: int, host: np.ndarray, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync(HtoD)", self.cudart.cudaMemcpyAsync(
            device_ptr, host.ctypes.data, host.nbytes, kind, stream))

    def dtoh_async(self, host: np.ndarray, device_ptr: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync(DtoH)", self.cudart.cudaMemcpyAsync(
            host.ctypes.data, device_ptr, host.nbytes, kind, stream))

    def synchronize(self, stream) -> None:
        self._call("cudaStreamSynchronize", self.cudart.cudaStreamSynchronize(stream))

    def capture_graph(self, enqueue, stream):
        """Record what ``enqueue()`` puts on ``stream`` into an instantiated CUDA graph."""
        cudart = self.cudart
        self._call("cudaStreamBeginCapture", cudart.cudaStreamBeginCapture(
            stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        try:
            enqueue()
        except BaseException:
            # End the capture so the stream is usable again, but report the enqueue error:
            # EndCapture then fails too (capture invalidated) and must not mask it.
            cudart.cudaStreamEndCapture(stream)
            raise
        graph = self._call("cudaStreamEndCapture", cudart.cudaStreamEndCapture(stream))
        try:
            return self._call("cudaGraphInstantiateWithFlags",
                              cudart.cudaGraphInstantiateWithFlags(graph, 0))
        finally:
            self._call("cudaGraphDestroy", cudart.cudaGraphDestroy(graph))

    def launch_graph(self, graph_exec, stream) -> None:
        self._call("cudaGraphLaunch", self.cudart.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph_exec) -> None:
        self._call("cudaGraphExecDestroy", self.cudart.cudaGraphExecDestroy(graph_exec))

    def close(self) -> None:
        pass


class _Pycuda:
    """pycuda with an explicit context (not ``pycuda.autoinit``), popped on close.

    A pycuda context is current only in the thread that created it: create and use the
    backend in one thread (cuda-python uses the primary context and has no such limit).
    """

    name = "pycuda"

    def __init__(self, device_index: int) -> None:
        import pycuda.driver as cuda

        self.cuda = cuda
        cuda.init()
        self.device = cuda.Device(device_index)
        self.context = self.device.make_context()
        self._allocations: dict[int, object] = {}

    def device_info(self) -> DeviceInfo:
        major, minor = self.device.compute_capability()
        return DeviceInfo(self.device.name(), f"{major}.{minor}",
                          int(self.device.total_memory()) // (1 << 20))

    def malloc_device(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free_device(self, ptr: int) -> None:
        allocation = self._allocations.pop(ptr, None)
        if allocation is not None:
            allocation.free()

    def malloc_host(self, count: int, dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(count, np.dtype(dtype))

    def free_host(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)
        if hasattr(base, "free"):
            base.free()

    def create_stream(self):
        return self.cuda.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream) -> None:
        pass  # pycuda frees the stream with its Python object

    def htod_async(self, device_ptr: int, host: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(device_ptr, host, stream)

    def dtoh_async(self, host: np.ndarray, device_ptr: int, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, device_ptr, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def close(self) -> None:
        if self.context is not None:
            self.context.pop()
            self.context = None


def _open_cuda(binding: str, device_index: int):
    if binding not in CUDA_BINDINGS:
        raise BackendUnavailableError(f"cuda_binding must be one of {CUDA_BINDINGS}, got "
                                      f"{binding!r}")
    tried = []
    for name, cls in (("cuda-python", _CudaPython), ("pycuda", _Pycuda)):
        if binding not in ("auto", name):
            continue
        try:
            return cls(device_index)
        except ImportError as exc:
            tried.append(f"{name}: not installed ({exc})")
        except Exception as exc:  # noqa: BLE001 - any failed init: try the other binding
            # e.g. cuda-python 13 on a JetPack 5/6 driver: cudaErrorInsufficientDriver.
            tried.append(f"{name}: installed but failed to start ({type(exc).__name__}: {exc})")
    raise BackendUnavailableError(
        "no CUDA Python binding could be used (" + "; ".join(tried) + "). Install the one for "
        "your JetPack: pip install 'aue_edge[jetson-jp5]' (JetPack 5, cuda-python 11.8) or "
        "'aue_edge[jetson]' (JetPack 6, cuda-python 12.x; 13.x needs a newer driver), or "
        "pycuda ('aue_edge[jetson-pycuda]').")


# ---------------------------------------------------------------------------------- TensorRT
class TrtApi:
    """TensorRT runtime + one CUDA binding on one device; what TrtBackend and ``aue build`` use.

    ``TrtApi(cuda_binding, device_index)`` raises BackendUnavailableError when TensorRT or the
    CUDA binding is missing. ``TrtApi(..., need_cuda=False)`` opens TensorRT only (version
    queries).
    """

    def __init__(self, cuda_binding: str = "auto", device_index: int = 0,
                 need_cuda: bool = True) -> None:
        self.trt = import_tensorrt()
        self.version = str(self.trt.__version__)
        self.cuda = _open_cuda(cuda_binding, device_index) if need_cuda else None
        self.log_messages: list[str] = []
        self.logger = self._make_logger()
        self._runtime = None

    # ------------------------------------------------------------------ logging
    def _make_logger(self):
        trt = self.trt
        messages = self.log_messages

        class _Logger(trt.ILogger):
            """Keeps every message (for error reports) and prints warnings and errors."""

            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg) -> None:
                messages.append(f"[{severity.name}] {msg}")
                # Lower value = more severe (INTERNAL_ERROR 0 ... VERBOSE 4).
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    print(f"TensorRT {severity.name}: {msg}", file=sys.stderr)

        return _Logger()

    def _recent_errors(self) -> str:
        errors = [m for m in self.log_messages if m.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        return " | ".join(errors[-5:]) or "(TensorRT logged no error message)"

    # ------------------------------------------------------------------ device and engine
    def device_info(self) -> DeviceInfo:
        if self.cuda is None:
            raise BackendUnavailableError("this TrtApi was opened without CUDA")
        return self.cuda.device_info()

    @property
    def uses_name_api(self) -> bool:
        return _version_tuple(self.version) >= (8, 5)

    def deserialize(self, engine_bytes: bytes, origin: str, dla_core: int | None = None):
        """``dla_core``: the DLA core a DLA engine was built for (from its sidecar); TensorRT
        runs a DLA engine on the runtime's ``DLA_core``, which must be set before loading."""
        if self._runtime is None:
            self._runtime = self.trt.Runtime(self.logger)
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise ModelFileError(
                f"TensorRT {self.version} could not deserialize {origin}: {self._recent_errors()}. "
                f"An engine only loads with the TensorRT version and GPU it was built for; "
                f"rebuild it on this device with 'aue build'.")
        return engine

    def io_tensors(self, engine) -> list[IoTensor]:
        trt = self.trt
        tensors = []
        if self.uses_name_api:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                profile = None
                if is_input:
                    if hasattr(engine, "get_tensor_profile_shape"):
                        shapes = engine.get_tensor_profile_shape(name, 0)
                    else:
                        shapes = engine.get_profile_shape(0, name)
                    profile = tuple(tuple(int(d) for d in s) for s in shapes)
                tensors.append(IoTensor(
                    name, i, is_input, np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                    tuple(int(d) for d in engine.get_tensor_shape(name)), profile))
        else:
            for i in range(engine.num_bindings):
                is_input = bool(engine.binding_is_input(i))
                profile = (tuple(tuple(int(d) for d in s) for s in engine.get_profile_shape(0, i))
                           if is_input else None)
                tensors.append(IoTensor(
                    engine.get_binding_name(i), i, is_input,
                    np.dtype(trt.nptype(engine.get_binding_dtype(i))),
                    tuple(int(d) for d in engine.get_binding_shape(i)), profile))
        return tensors

    def create_context(self, engine):
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context "
                                          f"(out of GPU memory?): {self._recent_errors()}")
        return context

    def set_input_shape(self, context, tensor: IoTensor, shape: tuple[int, ...]) -> None:
        if self.uses_name_api:
            ok = context.set_input_shape(tensor.name, tuple(shape))
        else:
            ok = context.set_binding_shape(tensor.index, tuple(shape))
        if ok is False:
            raise ModelFileError(f"TensorRT rejected shape {tuple(shape)} for input "
                                 f"{tensor.name!r} (profile {tensor.profile}): "
                                 f"{self._recent_errors()}")

    def tensor_shape(self, context, tensor: IoTensor) -> tuple[int, ...]:
        if self.uses_name_api:
            return tuple(int(d) for d in context.get_tensor_shape(tensor.name))
        return tuple(int(d) for d in context.get_binding_shape(tensor.index))

    def execute(self, context, tensors: list[IoTensor], addresses: dict[str, int], stream) -> None:
        handle = self.cuda.stream_handle(stream)
        if self.uses_name_api:
            for tensor in tensors:
                context.set_tensor_address(tensor.name, addresses[tensor.name])
            ok = context.execute_async_v3(handle)
        else:
            bindings = [0] * len(tensors)
            for tensor in tensors:
                bindings[tensor.index] = addresses[tensor.name]
            ok = context.execute_async_v2(bindings=bindings, stream_handle=handle)
        if not ok:
            raise ModelFileError(f"TensorRT execution failed: {self._recent_errors()}")

    # ------------------------------------------------------------------ CUDA graphs
    def capture_graph(self, context, tensors: list[IoTensor], addresses: dict[str, int], stream):
        """One inference captured as a CUDA graph (TensorRT asks for one plain ``execute`` on
        the context first, so that shape-dependent set-up is not captured)."""
        capture = getattr(self.cuda, "capture_graph", None)
        if capture is None:
            raise BackendUnavailableError(f"CUDA graphs need the cuda-python binding; this run "
                                          f"uses {self.cuda.name} (--cuda-binding cuda-python)")
        return capture(lambda: self.execute(context, tensors, addresses, stream), stream)

    def launch_graph(self, graph, stream) -> None:
        self.cuda.launch_graph(graph, stream)

    def destroy_graph(self, graph) -> None:
        self.cuda.destroy_graph(graph)

    # ------------------------------------------------------------------ memory (delegated)
    def malloc_device(self, nbytes: int) -> int:
        return self.cuda.malloc_device(nbytes)

    def free_device(self, ptr: int) -> None:
        self.cuda.free_device(ptr)

    def malloc_host(self, count: int, dtype: np.dtype) -> np.ndarray:
        return self.cuda.malloc_host(count, dtype)

    def free_host(self, array: np.ndarray) -> None:
        self.cuda.free_host(array)

    def create_stream(self):
        return self.cuda.create_stream()

    def destroy_stream(self, stream) -> None:
        self.cuda.destroy_stream(stream)

    def htod_async(self, device_ptr: int, host: np.ndarray, stream) -> None:
        self.cuda.htod_async(device_ptr, host, stream)

    def dtoh_async(self, host: np.ndarray, device_ptr: int, stream) -> None:
        self.cuda.dtoh_async(host, device_ptr, stream)

    def synchronize(self, stream) -> None:
        self.cuda.synchronize(stream)

    def close(self) -> None:
        # TensorRT objects first: they must be freed while the CUDA context is still current
        # (pycuda pops it on close).
        self._runtime = None
        if self.cuda is not None:
            self.cuda.close()
            self.cuda = None

    # ------------------------------------------------------------------ building
    def platform(self, builder) -> dict:
        # platform_has_fast_* are deprecated in TensorRT 10 but still answer; None if absent.
        return {
            "fast_fp16": getattr(builder, "platform_has_fast_fp16", None),
            "fast_int8": getattr(builder, "platform_has_fast_int8", None),
            "num_dla_cores": int(getattr(builder, "num_DLA_cores", 0)),
        }

    def build_engine(self, onnx_path: Path,
                     profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
                     builder_flags: tuple[str, ...], workspace_bytes: int,
                     calibration_cache: bytes | None = None, dla_core: int | None = None,
                     timing_cache: bytes | None = None, check_platform=None) -> BuildOutput:
        """Parse ONNX, configure, build. ``profiles``: input name -> (min, opt, max) shapes
        (empty for a model with static shapes). ``builder_flags`` are ``trt.BuilderFlag`` names
        (FP16, INT8, GPU_FALLBACK). ``check_platform(platform_dict)`` may raise before the
        (slow) build starts; the caller decides what a missing capability means."""
        trt = self.trt
        # TensorRT 11 removed BuilderFlag.FP16/INT8 and implicit calibrators: a clear error
        # here, not an AttributeError halfway through the configuration.
        target_of_version(parse_version(self.version))
        builder = trt.Builder(self.logger)
        platform = self.platform(builder)
        if check_platform is not None:
            check_platform(platform)
        flags = 0
        if _version_tuple(self.version) < (10, 0):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            for err in errors:
                print(f"ONNX parser error: {err}", file=sys.stderr)
            raise ModelFileError(f"TensorRT's ONNX parser rejected {onnx_path} with "
                                 f"{len(errors)} error(s): " + " | ".join(errors))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        for flag in builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        profile = None
        if profiles:
            profile = builder.create_optimization_profile()
            for name, shapes in profiles.items():
                profile.set_shape(name, *shapes)
            config.add_optimization_profile(profile)
        if calibration_cache is not None:
            config.int8_calibrator = self._cache_calibrator(calibration_cache)
            if profile is not None:
                # Implicit INT8 with dynamic shapes needs a calibration profile even when the
                # calibrator only replays a cache.
                config.set_calibration_profile(profile)
        if dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(dla_core)
        cache = None
        if timing_cache is not None:
            cache = config.create_timing_cache(timing_cache)
            config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelFileError(f"TensorRT could not build an engine from {onnx_path}: "
                                 f"{self._recent_errors()}")
        new_cache = None
        if cache is not None:
            new_cache = bytes(config.get_timing_cache().serialize())
        return BuildOutput(bytes(serialized), new_cache, list(self.log_messages), platform)

    def _cache_calibrator(self, cache: bytes):
        trt = self.trt

        class _CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):
            """Replays a calibration cache written by 'aue calibrate'; it has no images.

            TensorRT asks for batches only when it does NOT use the cache: a header naming
            another TensorRT version or calibrator makes it ignore the whole cache and
            calibrate from scratch ('aue build' checks the header against the installed
            TensorRT first, so this should not happen). Tensors merely missing from an
            accepted cache are not calibrated either: TensorRT warns 'Missing scale and
            zero-point for tensor ...' and runs their layers in higher precision
            (NVIDIA/TensorRT#3131)."""

            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names):
                # TensorRT ignored the cache and wants images: returning None ends
                # calibration with no data, so the build fails; this line says why.
                print("TensorRT ignored the calibration cache and asked for calibration "
                      "images: its header does not match this TensorRT; regenerate it with "
                      "'aue calibrate --trt-version <this TensorRT version>'",
                      file=sys.stderr)
                return None

            def read_calibration_cache(self) -> bytes:
                return cache

            def write_calibration_cache(self, data) -> None:
                pass

        return _CacheOnlyCalibrator()
