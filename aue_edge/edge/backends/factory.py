"""Pick and open an inference backend for a model file: ``create_backend(path, kind)``.

The pipeline, ``aue run`` and the benchmarks open models only through here, so the rules live
in one place: ``ort`` runs an ``.onnx`` with ONNX Runtime; ``trt`` runs a serialized TensorRT
``.engine`` (built by ``aue build``). A file that does not fit the backend is an error that says
which command makes the right file; nothing falls back silently to another backend.
"""
from __future__ import annotations

from pathlib import Path

from aue_edge.edge.backends.base import Backend
from aue_edge.core.errors import ConfigError, ModelCardError, ModelFileError
from aue_edge.edge.model_card import ModelCard, find_card

BACKEND_KINDS = ("ort", "trt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def create_backend(model_path: str | Path, kind: str = "ort", *, num_threads: int | None = None,
                   providers: tuple[str, ...] = ("cpu",), device_index: int = 0,
                   cuda_binding: str = "auto") -> Backend:
    """Open ``model_path`` with the backend ``kind`` ("ort" or "trt").

    ``num_threads`` and ``providers`` apply to ONNX Runtime; ``device_index`` and
    ``cuda_binding`` ("auto", "cuda-python", "pycuda") to TensorRT.
    """
    model_path = Path(model_path)
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"backend must be one of {BACKEND_KINDS}, got {kind!r}")
    if not model_path.is_file():
        raise ModelFileError(f"model file {model_path} does not exist; check --model / "
                             f"model_dir and model_file")
    suffix = model_path.suffix.lower()
    if kind == "ort":
        if suffix in ENGINE_SUFFIXES:
            raise ConfigError(f"{model_path} is a TensorRT engine; ONNX Runtime runs .onnx files. "
                              f"Use backend 'trt' for engines, or point at the .onnx model.")
        from aue_edge.edge.backends.onnxruntime_backend import OrtBackend

        return OrtBackend(model_path, providers=tuple(providers), num_threads=num_threads)
    if suffix == ".onnx":
        engine = model_path.with_suffix(".engine")
        raise ConfigError(f"{model_path} is an ONNX model; the 'trt' backend runs a serialized "
                          f"engine. Build one on the target device first: aue build "
                          f"{model_path} --precision fp16 --out {engine}")
    from aue_edge.edge.backends.tensorrt_backend import TrtBackend

    return TrtBackend(model_path, device_index=device_index, cuda_binding=cuda_binding)


def find_model_card(model_path: str | Path) -> ModelCard:
    """The card of one model file: an engine's from its sidecar JSON, else :func:`find_card`."""
    model_path = Path(model_path)
    if model_path.suffix.lower() in ENGINE_SUFFIXES:
        from aue_edge.edge.backends.tensorrt_backend import read_sidecar

        sidecar = read_sidecar(model_path)
        if sidecar["model_card"] is None:
            raise ModelCardError(f"{model_path} is a {sidecar.get('role', '?')} engine without a "
                                 f"model card; the pipeline runs it as detector_model, not as "
                                 f"the emotion / AU model")
        return ModelCard.from_dict(sidecar["model_card"], origin=f"{model_path} sidecar")
    return find_card(model_path)
