"""TensorRT backend: run a serialized engine (built by ``aue build``) behind :class:`Backend`.

Backend logic only; every TensorRT / CUDA call goes through ``trt_api.TrtApi`` (the one thin
module that imports them), so this file is tested without TensorRT, with a test double of
``TrtApi`` that checks our control flow.

- Before deserialising, the engine's sidecar JSON (``X.engine.json``, written by ``aue build``)
  is compared with this machine: an engine built by another TensorRT version or for a GPU of
  another compute capability is refused with an error that says how to rebuild it.
- Host (pinned) and device buffers are allocated ONCE, for the largest shape of the engine's
  optimisation profile; each call copies a batch of N <= max faces in (or, for a dynamic-size
  input such as YuNet's image, any size inside the profile), sets the input shape, runs, and
  copies the results out.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from aue_edge.edge.backends.base import Backend, TensorInfo, check_feed_names
from aue_edge.core.config_files import read_json
from aue_edge.core.errors import InputImageError, ModelFileError

SIDECAR_SUFFIX = ".json"
SIDECAR_SCHEMA = "aue_engine_sidecar/1"


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (beside the engine, never inside it)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def read_sidecar(engine_path: str | Path, required: bool = True) -> dict | None:
    """The sidecar of an engine, validated; None if absent and not ``required``."""
    path = sidecar_path(engine_path)
    if not path.is_file() and not required:
        return None
    data = read_json(path, "engine sidecar",
                     "'aue build' writes it beside every engine (it carries the model card: "
                     "labels, preprocessing). Rebuild the engine with 'aue build', or copy the "
                     "sidecar along with the .engine file.", error=ModelFileError)
    if not isinstance(data, dict) or data.get("schema") != SIDECAR_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ModelFileError(f"engine sidecar {path}: expected schema {SIDECAR_SCHEMA!r}, found "
                             f"{found!r}; was it written by 'aue build'?")
    card = data.get("model_card")
    if not isinstance(card, dict) and not (card is None and data.get("role") == "face_detector"):
        raise ModelFileError(f"engine sidecar {path} has no 'model_card' object; rebuild the "
                             f"engine with 'aue build'")
    return data


def _release(version: str) -> tuple[int, ...]:
    """'8.5.2.2' -> (8, 5, 2): engines are tied to the TensorRT major.minor.patch release."""
    return tuple(int(p) for p in str(version).split(".")[:3] if p.isdigit())


def check_engine_compatibility(sidecar: dict | None, runtime_version: str, device,
                               engine_path: str | Path) -> list[str]:
    """Refuse an engine built elsewhere; return warnings for what cannot be checked.

    ``device`` is a ``trt_api.DeviceInfo`` (name, compute_capability). Raises ModelFileError
    when the TensorRT release or the GPU compute capability differs from the build's.
    """
    notes = []
    if sidecar is None:
        notes.append(f"{engine_path} has no sidecar: TensorRT version and GPU were not checked "
                     f"before loading")
        return notes
    built_version = sidecar.get("tensorrt_version")
    built_device = sidecar.get("device") or {}
    rebuild = sidecar.get("rebuild_command") or "aue build MODEL.onnx ... --out ENGINE"
    if not built_version:
        notes.append(f"{engine_path}: the sidecar does not record a TensorRT version (engine "
                     f"not built by 'aue build' on the device); not checked before loading")
    elif _release(built_version) != _release(runtime_version):
        raise ModelFileError(
            f"{engine_path} was built with TensorRT {built_version}, this machine has TensorRT "
            f"{runtime_version}; an engine only loads with the release that built it. Rebuild "
            f"it here: {rebuild}")
    built_cc = built_device.get("compute_capability")
    if not built_cc:
        notes.append(f"{engine_path}: the sidecar does not record the build GPU; not checked")
    elif str(built_cc) != str(device.compute_capability):
        raise ModelFileError(
            f"{engine_path} was built for a GPU of compute capability {built_cc} "
            f"({built_device.get('name', '?')}), this device is {device.compute_capability} "
            f"({device.name}); engines are specific to the GPU they were built on. Rebuild "
            f"it here: {rebuild}")
    elif built_device.get("name") and built_device.get("name") != device.name:
        notes.append(f"{engine_path} was built on {built_device['name']}, running on "
                     f"{device.name} (same compute capability {built_cc}): TensorRT allows it "
                     f"but advises rebuilding for the exact GPU model")
    return notes


class TrtBackend(Backend):
    """Run a TensorRT engine. ``api`` is a ``trt_api.TrtApi`` (created here when None).

    ``max_batch_size`` / ``min_batch_size`` come from the engine's optimisation profile 0;
    callers with more faces than ``max_batch_size`` split the batch (the pipeline does).
    """

    name = "trt"

    def __init__(self, engine_path: str | Path, device_index: int = 0,
                 cuda_binding: str = "auto", api=None) -> None:
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise ModelFileError(f"TensorRT engine {engine_path} does not exist; build it with "
                                 f"'aue build MODEL.onnx --out {engine_path}'")
        sidecar = read_sidecar(engine_path, required=False)
        if api is None:
            from aue_edge.edge.backends import trt_api

            api = trt_api.TrtApi(cuda_binding=cuda_binding, device_index=device_index)
        self._api = api
        self._closed = False
        self._buffers: dict[str, tuple[int, np.ndarray]] = {}
        self._stream = None
        self._context = None
        self._engine = None
        try:
            self._open(engine_path, sidecar)
        except BaseException:
            self.close()
            raise

    def _open(self, engine_path: Path, sidecar: dict | None) -> None:
        api = self._api
        self.engine_path = self.model_path = engine_path
        self.device = api.device_info()
        self.notes = check_engine_compatibility(sidecar, api.version, self.device, engine_path)
        for note in self.notes:
            warnings.warn(note, stacklevel=3)
        data = engine_path.read_bytes()
        if not data:
            raise ModelFileError(f"TensorRT engine {engine_path} is empty (0 bytes); rebuild it")
        # A DLA engine runs on the core it was built for: the runtime must know it first.
        dla_core = ((sidecar or {}).get("build_flags") or {}).get("dla_core")
        self._engine = api.deserialize(data, origin=str(engine_path), dla_core=dla_core)
        tensors = api.io_tensors(self._engine)
        self._in = [t for t in tensors if t.is_input]
        self._out = [t for t in tensors if not t.is_input]
        if not self._in or not self._out:
            raise ModelFileError(f"{engine_path} has {len(self._in)} inputs and {len(self._out)} "
                                 f"outputs; a model needs at least one of each")
        for i, t in enumerate(self._in):
            if t.profile is None:
                if any(d < 0 for d in t.shape):
                    raise ModelFileError(f"{engine_path}: dynamic input {t.name!r} has no "
                                         f"optimisation profile")
                self._in[i] = dataclasses.replace(t, profile=(t.shape, t.shape, t.shape))
        self._tensors = self._in + self._out
        self.min_batch_size = max(t.profile[0][0] for t in self._in)
        self.max_batch_size = min(t.profile[2][0] for t in self._in)
        self._context = api.create_context(self._engine)
        self._stream = api.create_stream()
        self._allocate()

    def _allocate(self) -> None:
        """Device + pinned host buffers for the largest profile shape, once.

        Output sizes are taken at the profile's maximum input shape (outputs grow with the
        inputs: batch for the classifier, image size for YuNet)."""
        api = self._api
        for t in self._in:
            api.set_input_shape(self._context, t, t.profile[2])
        self._max_shapes = {t.name: tuple(t.profile[2]) for t in self._in}
        for t in self._out:
            shape = api.tensor_shape(self._context, t)
            if any(d < 0 for d in shape):
                raise ModelFileError(f"{self.engine_path}: output {t.name!r} has an unresolved "
                                     f"shape {shape} at the maximum input shape")
            self._max_shapes[t.name] = shape
        for t in self._tensors:
            count = int(math.prod(self._max_shapes[t.name]))
            host = api.malloc_host(count, t.dtype)
            self._buffers[t.name] = (api.malloc_device(count * t.dtype.itemsize), host)

    # ------------------------------------------------------------------ Backend interface
    @staticmethod
    def _info(t) -> TensorInfo:
        # Dynamic axes as names, as ONNX Runtime reports them ("batch" for axis 0).
        shape = tuple(d if d >= 0 else ("batch" if i == 0 else f"dim{i}")
                      for i, d in enumerate(t.shape))
        return TensorInfo(t.name, shape, t.dtype)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._info(t) for t in self._in]

    @property
    def profiles(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) shapes of the engine's optimisation profile 0."""
        return {t.name: t.profile for t in self._in}

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self._info(t) for t in self._out]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise ModelFileError("this TensorRT backend was closed; create a new one")
        expected = {t.name: t for t in self._in}
        check_feed_names(expected, feeds, "engine")
        arrays, batch = {}, None
        for name, t in expected.items():
            array = np.asarray(feeds[name])
            low, _opt, high = t.profile
            if array.ndim != len(high):
                raise InputImageError(f"input {name!r} needs {len(high)} dimensions (profile "
                                      f"min {low}, max {high}), got shape {array.shape}")
            if batch is not None and array.shape[0] != batch:
                raise InputImageError(f"all inputs need the same batch size; got {batch} and "
                                      f"{array.shape[0]} ({name!r})")
            batch = array.shape[0]
            if not low[0] <= batch <= high[0]:
                raise InputImageError(
                    f"batch of {batch} is outside the engine's profile [{low[0]}, {high[0]}]; "
                    f"split the batch (the pipeline does) or rebuild with 'aue build "
                    f"--max-batch N'")
            outside = [axis for axis in range(1, array.ndim)
                       if not low[axis] <= array.shape[axis] <= high[axis]]
            if outside:
                raise InputImageError(
                    f"input {name!r} of shape {array.shape} is outside the engine's profile "
                    f"(min {low}, max {high}) on axis {outside}; rebuild the engine for this "
                    f"size with 'aue build'")
            arrays[name] = np.ascontiguousarray(array, dtype=t.dtype)
        api, stream = self._api, self._stream
        for name, array in arrays.items():
            device_ptr, host = self._buffers[name]
            staged = host[:array.size]
            staged[:] = array.ravel()
            api.set_input_shape(self._context, expected[name], tuple(array.shape))
            api.htod_async(device_ptr, staged, stream)
        out_shapes = {t.name: api.tensor_shape(self._context, t) for t in self._out}
        api.execute(self._context, self._tensors,
                    {name: ptr for name, (ptr, _host) in self._buffers.items()}, stream)
        for t in self._out:
            device_ptr, host = self._buffers[t.name]
            api.dtoh_async(host[:int(math.prod(out_shapes[t.name]))], device_ptr, stream)
        # The copies above are asynchronous: the host buffers are valid only after this.
        api.synchronize(stream)
        results = {}
        for t in self._out:
            shape = out_shapes[t.name]
            results[t.name] = self._buffers[t.name][1][:int(math.prod(shape))].reshape(shape).copy()
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        api = self._api
        for device_ptr, host in self._buffers.values():
            api.free_device(device_ptr)
            api.free_host(host)
        self._buffers.clear()
        if self._stream is not None:
            api.destroy_stream(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
        api.close()
