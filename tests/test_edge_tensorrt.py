"""TensorRT backend: engine/version/device checks, buffer management and the pipeline on the
``trt`` backend, plus the real TRT-vs-ORT parity test.

TensorRT is not installed on this machine. Everything except the last test uses
:class:`FakeTrtApi`, a test double of ``trt_api.TrtApi`` whose "device memory" is numpy and
whose "engine" runs the ONNX model (the stand-in classifier, or the real YuNet) in ONNX
Runtime. These tests check OUR control flow
(what is allocated when, what is copied where, which shapes are set, what is refused and why);
they do NOT check TensorRT, cuda-python or pycuda, whose calls in trt_api.py were never run.
"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.standin_model import build_standin_model

from aue_edge.edge.backends import trt_api
from aue_edge.edge.backends.factory import create_backend, find_model_card
from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.edge.backends.tensorrt_backend import TrtBackend, read_sidecar, sidecar_path
from aue_edge.edge.backends.trt_api import BuildOutput, DeviceInfo, IoTensor
from aue_edge.edge.build import build_main
from aue_edge.core.errors import (BackendUnavailableError, ConfigError, InputImageError,
                                  ModelFileError)

FAKE_ENGINE = b"FAKE-TRT-ENGINE (test double, not a TensorRT plan)"
ORIN = DeviceInfo("Orin", "8.7", 30000)


class FakeTrtApi:
    """Test double of trt_api.TrtApi: checks our control flow, not TensorRT."""

    def __init__(self, onnx_path: Path, version: str = "10.3.0", device: DeviceInfo = ORIN,
                 max_batch: int = 4, profiles: dict | None = None) -> None:
        self.version, self._device = version, device
        self.ort = OrtBackend(onnx_path, num_threads=1)
        self.profiles = profiles or {
            "image": ((1, 3, 112, 112), (1, 3, 112, 112), (max_batch, 3, 112, 112))}
        self.memory: dict[int, np.ndarray] = {}
        self._next_ptr = 0x1000
        self._output_shapes: dict[tuple, dict[str, tuple]] = {}
        self.calls: Counter = Counter()
        self.closed = False

    # device and engine
    def device_info(self) -> DeviceInfo:
        return self._device

    def deserialize(self, data: bytes, origin: str, dla_core=None):
        self.dla_core = dla_core
        self.calls["deserialize"] += 1
        if data != FAKE_ENGINE:
            raise ModelFileError(f"fake: {origin} is not a fake engine")
        return "engine"

    def io_tensors(self, engine) -> list[IoTensor]:
        def dims(info):
            return tuple(d if isinstance(d, int) and d > 0 else -1 for d in info.shape)

        inputs = [IoTensor(t.name, i, True, t.dtype, dims(t), self.profiles[t.name])
                  for i, t in enumerate(self.ort.inputs)]
        return inputs + [IoTensor(t.name, len(inputs) + i, False, t.dtype, dims(t))
                         for i, t in enumerate(self.ort.outputs)]

    def create_context(self, engine) -> dict:
        return {"shapes": {}}

    def set_input_shape(self, context, tensor, shape) -> None:
        self.calls["set_input_shape"] += 1
        low, _opt, high = tensor.profile
        if not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
            raise AssertionError(f"backend set shape {shape} outside the profile")
        context["shapes"][tensor.name] = tuple(shape)

    def tensor_shape(self, context, tensor) -> tuple[int, ...]:
        if tensor.is_input:
            return context["shapes"][tensor.name]
        key = tuple(sorted(context["shapes"].items()))
        if key not in self._output_shapes:  # what TensorRT's shape inference would say
            zeros = {name: np.zeros(shape, np.float32) for name, shape in key}
            self._output_shapes[key] = {n: v.shape for n, v in self.ort.infer(zeros).items()}
        return self._output_shapes[key][tensor.name]

    def execute(self, context, tensors, addresses, stream) -> None:
        self.calls["execute"] += 1
        feeds = {name: self.memory[addresses[name]].view(np.float32)[:int(np.prod(shape))]
                 .reshape(shape) for name, shape in context["shapes"].items()}
        for name, value in self.ort.infer(feeds).items():
            self.memory[addresses[name]].view(np.float32)[:value.size] = value.ravel()

    # memory
    def malloc_device(self, nbytes: int) -> int:
        self.calls["malloc_device"] += 1
        ptr, self._next_ptr = self._next_ptr, self._next_ptr + nbytes + 256
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def free_device(self, ptr: int) -> None:
        del self.memory[ptr]

    def malloc_host(self, count: int, dtype) -> np.ndarray:
        self.calls["malloc_host"] += 1
        return np.zeros(count, dtype)

    def free_host(self, array) -> None:
        self.calls["free_host"] += 1

    def create_stream(self):
        return "stream"

    def destroy_stream(self, stream) -> None:
        self.calls["destroy_stream"] += 1

    def htod_async(self, ptr: int, host: np.ndarray, stream) -> None:
        self.memory[ptr][:host.nbytes] = host.view(np.uint8)

    def dtoh_async(self, host: np.ndarray, ptr: int, stream) -> None:
        host.view(np.uint8)[:] = self.memory[ptr][:host.nbytes]

    def synchronize(self, stream) -> None:
        self.calls["synchronize"] += 1

    def close(self) -> None:
        self.closed = True

    # building (used by aue build through the monkeypatched TrtApi)
    def build_engine(self, onnx_path, profiles, builder_flags, workspace_bytes, **kwargs):
        self.calls["build_engine"] += 1
        self.last_build = {"profiles": profiles, "flags": builder_flags,
                           "workspace_bytes": workspace_bytes, **kwargs}
        if kwargs.get("check_platform"):
            kwargs["check_platform"]({"fast_fp16": True, "fast_int8": True, "num_dla_cores": 2})
        return BuildOutput(FAKE_ENGINE, b"fake timing cache", [], {"num_dla_cores": 2})


@pytest.fixture()
def engine_dir(tmp_path, monkeypatch):
    """A model folder with model.onnx and a 'model.engine' + sidecar made by `aue build` with
    the fake TrtApi standing in for TensorRT."""
    onnx_path = build_standin_model(tmp_path)
    fakes = []

    def make_fake(*args, **kwargs):
        fakes.append(FakeTrtApi(onnx_path))
        return fakes[-1]

    monkeypatch.setattr(trt_api, "TrtApi", make_fake)
    assert build_main([str(onnx_path), "--precision", "fp16", "--max-batch", "4",
                       "--out", str(tmp_path / "model.engine")]) == 0
    return tmp_path, fakes


def test_build_with_fake_trt_writes_engine_and_completes_sidecar(engine_dir):
    model_dir, fakes = engine_dir
    sidecar = read_sidecar(model_dir / "model.engine")
    assert sidecar["build_status"] == "built" and sidecar["tensorrt_version"] == "10.3.0"
    assert sidecar["device"]["compute_capability"] == "8.7"
    assert sidecar["build_flags"]["builder_flags"] == ["FP16"]
    assert fakes[0].last_build["profiles"]["image"] == ((1, 3, 112, 112), (1, 3, 112, 112),
                                                        (4, 3, 112, 112))
    assert fakes[0].last_build["workspace_bytes"] == 1024 << 20
    assert (model_dir / "model.engine").read_bytes() == FAKE_ENGINE
    assert find_model_card(model_dir / "model.engine").outputs.au_names[0] == "AU1"


def test_buffers_allocated_once_and_outputs_match_ort(engine_dir, astronaut_bgr):
    model_dir, _ = engine_dir
    fake = FakeTrtApi(model_dir / "model.onnx")
    backend = TrtBackend(model_dir / "model.engine", api=fake)
    assert (backend.min_batch_size, backend.max_batch_size) == (1, 4)
    assert fake.calls["malloc_device"] == 3 and fake.calls["malloc_host"] == 3
    assert [t.shape for t in backend.inputs] == [("batch", 3, 112, 112)]
    rng = np.random.default_rng(0)
    ort = OrtBackend(model_dir / "model.onnx", num_threads=1)
    for n in (1, 4, 2):   # varying batch sizes reuse the same buffers
        batch = rng.normal(0, 1, (n, 3, 112, 112)).astype(np.float32)
        got, want = backend.infer({"image": batch}), ort.infer({"image": batch})
        assert got["emotion_probs"].shape == (n, 8) and got["au_probs"].shape == (n, 17)
        np.testing.assert_allclose(got["emotion_probs"], want["emotion_probs"], rtol=1e-6)
        np.testing.assert_allclose(got["au_probs"], want["au_probs"], rtol=1e-6)
    assert fake.calls["malloc_device"] == 3 and fake.calls["execute"] == 3
    with pytest.raises(InputImageError, match=r"outside the engine's profile \[1, 4\]"):
        backend.infer({"image": np.zeros((5, 3, 112, 112), np.float32)})
    with pytest.raises(InputImageError, match=r"outside the engine's profile .* on axis \[2, 3\]"):
        backend.infer({"image": np.zeros((1, 3, 96, 96), np.float32)})
    with pytest.raises(InputImageError, match="missing"):
        backend.infer({"img": np.zeros((1, 3, 112, 112), np.float32)})
    backend.close()
    backend.close()
    assert fake.memory == {} and fake.calls["free_host"] == 3 and fake.closed
    with pytest.raises(ModelFileError, match="closed"):
        backend.infer({"image": np.zeros((1, 3, 112, 112), np.float32)})


def test_engine_from_another_tensorrt_or_gpu_is_refused_before_loading(engine_dir):
    model_dir, _ = engine_dir
    engine = model_dir / "model.engine"
    other_version = FakeTrtApi(model_dir / "model.onnx", version="8.5.2.2")
    with pytest.raises(ModelFileError, match=r"built with TensorRT 10\.3\.0.*has TensorRT "
                                             r"8\.5\.2\.2.*aue build"):
        TrtBackend(engine, api=other_version)
    assert other_version.calls["deserialize"] == 0 and other_version.closed
    other_gpu = FakeTrtApi(model_dir / "model.onnx", device=DeviceInfo("Xavier", "7.2", 15000))
    with pytest.raises(ModelFileError, match=r"compute capability 8\.7.*this device is 7\.2"):
        TrtBackend(engine, api=other_gpu)
    same_cc = FakeTrtApi(model_dir / "model.onnx", version="10.3.0.26",
                         device=DeviceInfo("Orin NX", "8.7", 15000))
    with pytest.warns(UserWarning, match="built on Orin, running on Orin NX"):
        TrtBackend(engine, api=same_cc).close()
    engine.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        TrtBackend(engine, api=FakeTrtApi(model_dir / "model.onnx"))
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ModelFileError, match="expected schema"):
        read_sidecar(engine)


def test_pipeline_on_trt_backend_chunks_faces_by_engine_max_batch(engine_dir, monkeypatch,
                                                                  astronaut_bgr):
    """5 faces through an engine whose profile allows 2: three executions (after the one of
    the dry run at load), same results as ONNX Runtime (our chunking and buffer reuse;
    TensorRT itself is faked)."""
    from aue_edge.edge.pipeline import Pipeline

    model_dir, _ = engine_dir
    fakes = []

    def make_fake(*args, **kwargs):
        fakes.append(FakeTrtApi(model_dir / "model.onnx", max_batch=2))
        return fakes[-1]

    monkeypatch.setattr(trt_api, "TrtApi", make_fake)
    head = cv2.resize(astronaut_bgr[20:240, 135:315], (90, 110))
    frame = np.full((130, 5 * 100, 3), 128, np.uint8)
    for c in range(5):
        frame[10:120, c * 100 + 5:c * 100 + 95] = head
    with Pipeline.from_model_dir(model_dir, backend="trt", smoothing="none",
                                 num_threads=1) as trt_pipe, \
            Pipeline.from_model_dir(model_dir, smoothing="none", num_threads=1) as ort_pipe:
        assert trt_pipe.model.path.name == "model.engine" and trt_pipe.model.batch_limit == 2
        got, want = trt_pipe.process(frame, 0.0), ort_pipe.process(frame, 0.0)
    assert len(got.faces) == 5 and fakes[0].calls["execute"] == 1 + 3
    for a, b in zip(got.faces, want.faces):
        np.testing.assert_allclose(a.emotion_probs, b.emotion_probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.au_probs, b.au_probs, rtol=1e-5, atol=1e-6)
    assert fakes[0].memory == {}  # the pipeline closed the backend


@pytest.fixture()
def yunet_engine(tmp_path, monkeypatch):
    """'yunet.engine' + sidecar made by `aue build --detector` with the fake TrtApi; returns
    the engine path and a factory of fakes that run the real YuNet graph with the built
    profile."""
    from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH

    built = []

    def make_fake(*args, **kwargs):
        profiles = ({name: tuple(tuple(s[k]) for k in ("min", "opt", "max"))
                     for name, s in read_sidecar(engine)["build_flags"]["profiles"].items()}
                    if built else None)
        built.append(FakeTrtApi(DEFAULT_MODEL_PATH, profiles=profiles))
        return built[-1]

    engine = tmp_path / "yunet.engine"
    monkeypatch.setattr(trt_api, "TrtApi", make_fake)
    assert build_main([str(DEFAULT_MODEL_PATH), "--detector", "--precision", "fp16",
                       "--detect-max-side-px", "640", "--out", str(engine)]) == 0
    return engine, built


def test_yunet_engine_runs_the_detector_with_a_dynamic_image_size(yunet_engine, astronaut_bgr,
                                                                   tmp_path):
    """Detector on the 'trt' backend (fake TensorRT, real YuNet graph): the dynamic H/W profile
    from `aue build --detector`, buffers sized once for 640x640, same faces as ONNX Runtime,
    4K frames downscaled into the profile, a too-large detect_max_side_px refused at start."""
    from aue_edge.edge.face.yunet import YuNetDetector
    from aue_edge.edge.pipeline import Pipeline

    engine, fakes = yunet_engine
    sidecar = read_sidecar(engine)
    assert sidecar["role"] == "face_detector" and sidecar["model_card"] is None
    assert sidecar["build_flags"]["profiles"]["input"] == {
        "min": [1, 3, 32, 32], "opt": [1, 3, 480, 640], "max": [1, 3, 640, 640]}
    with pytest.raises(Exception, match="without a model card"):
        find_model_card(engine)
    model_dir = tmp_path / "m"
    build_standin_model(model_dir)
    frame_4k = np.zeros((2160, 3840, 3), np.uint8)
    frame_4k[800:1312, 1600:2112] = astronaut_bgr
    with Pipeline.from_model_dir(model_dir, detector_backend="trt", detector_model=str(engine),
                                 smoothing="none", num_threads=1) as trt_pipe, \
            YuNetDetector() as reference:
        fake = fakes[-1]
        allocated = fake.calls["malloc_device"]
        for frame in (astronaut_bgr, frame_4k, astronaut_bgr[:300, :420]):
            got = trt_pipe.process(frame, 0.0).faces
            want = reference.detect(frame)
            assert len(got) == len(want) == 1
            np.testing.assert_allclose(got[0].box_xyxy, want.boxes_xyxy[0], atol=1e-3)
        assert fake.calls["malloc_device"] == allocated  # no reallocation for new sizes
    with pytest.raises(ConfigError, match="accepts images up to"):
        Pipeline.from_model_dir(model_dir, detector_backend="trt", detector_model=str(engine),
                                detect_max_side_px=960)
    assert fakes[-1].memory == {}  # the refused detector's buffers were freed
    with pytest.raises(ConfigError, match="detector_backend 'trt' needs the YuNet engine"):
        Pipeline.from_model_dir(model_dir, detector_backend="trt")


def test_factory_matches_files_to_backends(tmp_path):
    onnx_path = build_standin_model(tmp_path)
    assert isinstance(create_backend(onnx_path, "ort", num_threads=1), OrtBackend)
    engine = tmp_path / "model.engine"
    engine.write_bytes(FAKE_ENGINE)
    with pytest.raises(ConfigError, match="is a TensorRT engine"):
        create_backend(engine, "ort")
    with pytest.raises(ConfigError, match="aue build"):
        create_backend(onnx_path, "trt")
    with pytest.raises(ConfigError, match="backend must be one of"):
        create_backend(onnx_path, "openvino")
    with pytest.raises(ModelFileError, match="does not exist"):
        create_backend(tmp_path / "missing.onnx", "ort")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
            create_backend(engine, "trt")


TRT_SKIP_REASON = ("TensorRT is not installed on this machine: engine build and TRT-vs-ORT "
                   "parity were NOT executed")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason=TRT_SKIP_REASON)
def test_tensorrt_engine_matches_onnxruntime(tmp_path, astronaut_bgr):
    """Real TensorRT: build an FP32 engine of the stand-in model with `aue build` and compare
    it with ONNX Runtime on aligned real faces (FP32 tolerance rtol 1e-3, atol 1e-4)."""
    from aue_edge.edge.face.alignment import align_faces
    from aue_edge.edge.face.yunet import YuNetDetector
    from aue_edge.edge.model_card import find_card
    from aue_edge.edge.preprocess import to_model_input

    onnx_path = build_standin_model(tmp_path)
    engine = tmp_path / "model.engine"
    assert build_main([str(onnx_path), "--precision", "fp32", "--max-batch", "4",
                       "--out", str(engine)]) == 0
    card = find_card(onnx_path)
    with YuNetDetector() as detector:
        landmarks = detector.detect(astronaut_bgr).landmarks5
    crops = align_faces(astronaut_bgr, np.repeat(landmarks, 3, axis=0),
                        card.alignment.template_5pt, card.input.size_px)
    batch = to_model_input(crops, card.input)
    batch[1] *= 0.5
    with TrtBackend(engine) as trt_backend, OrtBackend(onnx_path) as ort_backend:
        got, want = trt_backend.infer({"image": batch}), ort_backend.infer({"image": batch})
    for name in ("emotion_probs", "au_probs"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-4)


def test_a_dla_engine_is_deserialized_on_its_dla_core(engine_dir):
    """TensorRT runs a DLA engine on the runtime's DLA_core: TrtBackend passes the core the
    sidecar records (issue 13: the runtime never set it)."""
    model_dir, _ = engine_dir
    side = json.loads((model_dir / "model.engine.json").read_text())
    assert side["build_flags"]["dla_core"] is None
    fake = FakeTrtApi(model_dir / "model.onnx")
    TrtBackend(model_dir / "model.engine", api=fake).close()
    assert fake.dla_core is None
    side["build_flags"]["dla_core"] = 1
    (model_dir / "model.engine.json").write_text(json.dumps(side))
    fake = FakeTrtApi(model_dir / "model.onnx")
    TrtBackend(model_dir / "model.engine", api=fake).close()
    assert fake.dla_core == 1
