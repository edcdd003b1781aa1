"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when asked for."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aue_edge.edge.backends.base import Backend, TensorInfo, check_feed_names
from aue_edge.core.errors import BackendUnavailableError, InputImageError, ModelFileError

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OrtBackend(Backend):
    """Run an ONNX file with ONNX Runtime.

    ``providers`` are short names from :data:`PROVIDERS`, in order of preference; a provider
    that this onnxruntime build lacks raises :class:`BackendUnavailableError` rather than
    silently falling back to the CPU.
    """

    name = "ort"

    def __init__(self, model_path: str | Path, providers: tuple[str, ...] = ("cpu",),
                 num_threads: int | None = None, optimize: bool = True) -> None:
        import onnxruntime as ort

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelFileError(f"ONNX model {model_path} does not exist")
        available = ort.get_available_providers()
        wanted = []
        for short in providers:
            if short not in PROVIDERS:
                raise BackendUnavailableError(
                    f"unknown ONNX Runtime provider {short!r}; choose from {sorted(PROVIDERS)}")
            full = PROVIDERS[short]
            if full not in available:
                raise BackendUnavailableError(
                    f"ONNX Runtime provider {full} is not in this onnxruntime build "
                    f"(available: {available}); install onnxruntime-gpu for CUDA/TensorRT or "
                    f"use --providers cpu")
            wanted.append(full)
        options = ort.SessionOptions()
        if num_threads is not None:
            if num_threads < 1:
                raise BackendUnavailableError(f"num_threads must be >= 1, got {num_threads}")
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        # The pipeline runs two sessions (detector, model) back to back every frame; ORT's
        # default spin-wait after a run starves the other session (2-core CPU: YuNet 9.5 ms
        # alone, 52-77 ms inside the pipeline with spinning on).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                                 providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelFileError(
                f"ONNX Runtime could not load {model_path}: {exc}. Is the file a complete ONNX "
                f"model (re-export or re-download it)?") from None
        self.model_path = model_path
        self.providers = tuple(self._session.get_providers())
        self._inputs = [TensorInfo(i.name, tuple(i.shape), np.dtype(_ORT_TYPES.get(i.type,
                                                                                   np.float32)))
                        for i in self._session.get_inputs()]
        self._outputs = [TensorInfo(o.name, tuple(o.shape), np.dtype(_ORT_TYPES.get(o.type,
                                                                                    np.float32)))
                         for o in self._session.get_outputs()]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise ModelFileError("this backend was closed; create a new one")
        expected = {t.name: t for t in self._inputs}
        check_feed_names(expected, feeds, "model")
        prepared = {}
        for name, array in feeds.items():
            info = expected[name]
            array = np.asarray(array)
            if array.ndim != len(info.shape):
                raise InputImageError(f"input {name!r} needs {len(info.shape)} dimensions "
                                      f"{info.shape}, got shape {array.shape}")
            prepared[name] = np.ascontiguousarray(array, dtype=info.dtype)
        results = self._session.run(None, prepared)
        return {info.name: value for info, value in zip(self._outputs, results)}

    def close(self) -> None:
        self._session = None
