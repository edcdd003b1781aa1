"""The per-frame pipeline: BGR frame in, tracked and smoothed per-face results out.

Edge stage, the object the robot runs (``aue run``, the ROS 2 perception node and the
benchmarks all call it); no ROS, no torch:

frame -> YuNet detection -> IoU tracking (stable IDs) -> 5-point alignment to the model card's
template -> ONE batched inference for the faces due (split into chunks of the engine's max
batch) -> emotion and AU probabilities -> temporal smoothing per ID -> :class:`FrameResult`
with per-stage timings ("detect", "align", "infer", "postprocess" (tracking and smoothing),
"total", milliseconds).

Schedule (what makes a stream cheaper than its frames one by one; both 1 = the whole chain on
every frame):

- ``detect_interval_frames`` N: YuNet runs on the whole frame at least every N frames, and on
  every frame when no face was seen on the previous frame or a face seen there is not found
  again; on the other frames the tracked faces are found again in regions around their last
  boxes (``detect_region_px``; :meth:`~aue_edge.edge.face.yunet.YuNetDetector.detect_regions`),
  which gives fresh boxes and landmarks for them at a fraction of the cost; a face lost a few
  frames ago is looked for in its region too, until its track expires. A face entering the
  view appears within N frames.
- ``region_interval_frames`` R: between whole-frame detections the regions are searched on
  every R-th frame only; on the frames in between each face found on the previous frame moves
  on (box and landmarks) at the speed of its last two detections (no graph run). A face that
  leaves the view stays up to R - 1 frames longer; a face lost a few frames ago is looked for
  on the region frames only.
- ``infer_interval_frames`` K: the model runs on a new face at once and on each tracked face
  once every K frames (staggered by ID, so a group of faces spreads over the K frames); in
  between a face keeps its last model outputs (smoothing continues on them), so an expression
  change shows up to K - 1 frames later.

Configuration is a frozen :class:`PipelineConfig`, loaded and validated from YAML
(``config/pipeline.yaml`` documents every field and its default); keyword overrides (CLI flags,
ROS parameters) replace single fields and are validated the same way.

Which model file runs (``model_file: auto``; :func:`resolve_model_file`, table
:data:`MODEL_FILES`), the first that exists in ``model_dir``:

- backend ``ort``, precision ``auto`` or ``int8``: ``model.int8.ort.onnx`` (``aue calibrate
  --target ort-cpu``: uint8 activations that ONNX Runtime's CPU int8 kernels run, faster than
  FP32 on a CPU), then ``model.int8.onnx`` (``--target tensorrt``: symmetric int8 Q/DQ made for
  TensorRT, which ONNX Runtime CPU runs slower than FP32), then (``auto`` only)
  ``model.onnx``; precision ``fp32``: ``model.onnx``.
- backend ``trt``, precision ``auto``: ``model.int8.engine``, ``model.fp16.engine``,
  ``model.engine`` (build them with ``aue build``); ``int8`` / ``fp16`` / ``fp32``: that one.

A file named in ``model_file`` always wins; a missing one is an error, never a fallback.

An optional AU detector (``au_model_dir``, e.g. an exported LP-Net / GTLE-Net) replaces the
default model's AU output: it gets its own crops if its card asks for another template or size,
and its ``au_probs`` and AU names are reported instead. A model whose card declares a
``landmarks`` input (LP-Net: (N, 68, 2) fractions of the aligned crop) is fed 68 points from
``landmark_provider`` (default ``mean_shape``: the mean face placed by the 5-point alignment).
"""
from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aue_edge.edge.backends.base import Backend
from aue_edge.edge.backends.factory import BACKEND_KINDS, create_backend, find_model_card
from aue_edge.edge.backends.trt_api import CUDA_BINDINGS  # a constant; TensorRT not imported
from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import (AueError, ConfigError, InferenceError, ModelCardError,
                                  ModelFileError)
from aue_edge.edge.model_card import (ENGINE_FILENAMES, FP32_MODEL_FILENAME,
                                      INT8_ORT_MODEL_FILENAME, INT8_QDQ_MODEL_FILENAME, ModelCard)
from aue_edge.edge.results import FaceResult, FrameResult
from aue_edge.edge.smoothing import SMOOTHING_METHODS, TrackSmoother
from aue_edge.edge.tracking import ASSIGNMENT_METHODS, IouTracker

EDGE_DIR = Path(__file__).resolve().parent
SHIPPED_MODELS_DIR = EDGE_DIR / "models"
DEFAULT_MODEL_DIR = SHIPPED_MODELS_DIR / "aue_crl"
# backend -> precision -> model files in order of preference (module docstring).
MODEL_FILES = {
    "ort": {"auto": (INT8_ORT_MODEL_FILENAME, INT8_QDQ_MODEL_FILENAME, FP32_MODEL_FILENAME),
            "int8": (INT8_ORT_MODEL_FILENAME, INT8_QDQ_MODEL_FILENAME),
            "fp32": (FP32_MODEL_FILENAME,)},
    "trt": {"auto": (ENGINE_FILENAMES["int8"], ENGINE_FILENAMES["fp16"], ENGINE_FILENAMES["fp32"]),
            "int8": (ENGINE_FILENAMES["int8"],),
            "fp16": (ENGINE_FILENAMES["fp16"],),
            "fp32": (ENGINE_FILENAMES["fp32"],)},
}
STAGES = ("detect", "align", "infer", "postprocess", "total")
LANDMARKS_INPUT = "landmarks"
LANDMARK_PROVIDERS = ("mean_shape", "mediapipe", "dlib")
# Card output -> the card field naming one value per face in it.
OUTPUT_NAMES_FIELD = {"emotion_probs": "emotion_labels", "au_probs": "au_names"}
DRY_RUN_FACES = 2


def _as_tuple(value: Any) -> Any:
    """A YAML list (or a single string) as a tuple; anything else unchanged (then rejected)."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the pipeline; see ``config/pipeline.yaml`` for what each one does."""

    # model
    model_dir: str | None = None          # a folder or a shipped model's name; None: aue_crl
    model_file: str = "auto"              # file name in model_dir, or "auto" (module docstring)
    backend: str = "ort"                  # "ort" (ONNX Runtime) or "trt" (TensorRT engine)
    num_threads: int | None = None        # ONNX Runtime intra-op threads; None: ORT's default
    ort_providers: tuple[str, ...] = ("cpu",)
    trt_device_index: int = 0
    cuda_binding: str = "auto"            # TensorRT buffers: "auto", "cuda-python", "pycuda"
    # face detection
    detector_backend: str = "ort"         # "ort" (the .onnx on CPU) or "trt" (a YuNet .engine)
    detector_model: str | None = None     # None: the vendored YuNet (ort only)
    score_threshold: float = 0.6
    nms_iou_threshold: float = 0.3
    detect_max_side_px: int | None = 640
    max_faces: int | None = 20
    detect_interval_frames: int = 10      # whole-frame detection at least every N frames
    detect_region_px: int = 128           # side of a tracked face's region between them
    region_interval_frames: int = 1       # regions searched every R frames, extrapolated between
    infer_interval_frames: int = 3        # each tracked face's model runs every K frames
    # tracking
    track_iou_threshold: float = 0.3
    track_max_age_frames: int = 10
    track_assignment: str = "greedy"
    # smoothing
    smoothing: str = "ema"
    ema_alpha: float = 0.5
    one_euro_min_cutoff_hz: float = 1.0
    one_euro_beta: float = 0.5
    one_euro_d_cutoff_hz: float = 1.0
    smooth_geometry: bool = False
    # AU output
    au_model_dir: str | None = None       # an exported AU detector replacing the AU output
    au_model_file: str = "auto"
    au_threshold: float | None = None     # one threshold for every AU; None: the card's
    landmark_provider: str = "mean_shape"  # 68 points for models with a 'landmarks' input

    def __post_init__(self) -> None:
        # YAML gives lists (or one string) where the frozen dataclass keeps tuples.
        object.__setattr__(self, "ort_providers", _as_tuple(self.ort_providers))
        problems = self.problems()
        if problems:
            raise ConfigError("invalid pipeline config: " + "; ".join(
                f"{name}: {msg}" for name, msg in problems))

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every invalid field; empty when the config is valid."""
        out: list[tuple[str, str]] = []

        def check_type(name: str, kinds: tuple, optional: bool = False) -> bool:
            value = getattr(self, name)
            if value is None and optional:
                return False
            # bool is an int in Python; a YAML 'true' where a number belongs is a mistake.
            if isinstance(value, bool) and bool not in kinds:
                ok = False
            else:
                ok = isinstance(value, kinds)
            if not ok:
                wanted = " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")
                out.append((name, f"expected {wanted}, found {value!r}"))
            return ok

        def check_range(name: str, low: float | None, high: float | None, low_open=False,
                        optional: bool = False, kinds=(int, float)) -> None:
            if not check_type(name, kinds, optional):
                return
            value = getattr(self, name)
            if low is not None and (value <= low if low_open else value < low):
                out.append((name, f"expected {'>' if low_open else '>='} {low}, found {value}"))
            if high is not None and value > high:
                out.append((name, f"expected <= {high}, found {value}"))

        def check_choice(name: str, choices: tuple) -> None:
            value = getattr(self, name)
            if value not in choices:
                out.append((name, f"expected one of {list(choices)}, found {value!r}"))

        for name in ("model_dir", "detector_model", "au_model_dir"):
            check_type(name, (str,), optional=True)
        for name in ("model_file", "au_model_file"):
            if check_type(name, (str,)) and not getattr(self, name):
                out.append((name, "expected a file name or 'auto', found an empty string"))
        check_choice("backend", BACKEND_KINDS)
        check_choice("detector_backend", BACKEND_KINDS)
        if self.detector_backend == "trt" and (
                not isinstance(self.detector_model, str) or not self.detector_model):
            out.append(("detector_model", "detector_backend 'trt' needs the YuNet engine here "
                                          "(aue build face_detection_yunet.onnx --detector ...)"))
        if self.detector_backend == "trt" and self.detect_max_side_px is None:
            out.append(("detect_max_side_px", "detector_backend 'trt' needs a bound (the engine's "
                                              "profile has a largest image size)"))
        check_range("num_threads", 1, 256, optional=True, kinds=(int,))
        providers = self.ort_providers
        if not isinstance(providers, tuple) or not providers or not all(
                isinstance(p, str) for p in providers):
            out.append(("ort_providers", f"expected a list of provider names (cpu, cuda, "
                                         f"tensorrt), found {self.ort_providers!r}"))
        check_range("trt_device_index", 0, None, kinds=(int,))
        check_choice("cuda_binding", CUDA_BINDINGS)
        check_range("score_threshold", 0.0, 1.0, low_open=True)
        check_range("nms_iou_threshold", 0.0, 1.0, low_open=True)
        check_range("detect_max_side_px", 32, None, optional=True, kinds=(int,))
        check_range("max_faces", 1, None, optional=True, kinds=(int,))
        check_range("detect_interval_frames", 1, None, kinds=(int,))
        check_range("detect_region_px", 32, None, kinds=(int,))
        check_range("region_interval_frames", 1, None, kinds=(int,))
        check_range("infer_interval_frames", 1, None, kinds=(int,))
        check_range("track_iou_threshold", 0.0, 1.0, low_open=True)
        check_range("track_max_age_frames", 0, None, kinds=(int,))
        check_choice("track_assignment", ASSIGNMENT_METHODS)
        check_choice("smoothing", SMOOTHING_METHODS)
        check_range("ema_alpha", 0.0, 1.0, low_open=True)
        check_range("one_euro_min_cutoff_hz", 0.0, None, low_open=True)
        check_range("one_euro_beta", 0.0, None)
        check_range("one_euro_d_cutoff_hz", 0.0, None, low_open=True)
        check_type("smooth_geometry", (bool,))
        check_range("au_threshold", 0.0, None, low_open=True, optional=True)
        if isinstance(self.au_threshold, (int, float)) and self.au_threshold >= 1.0:
            out.append(("au_threshold", f"expected < 1, found {self.au_threshold}"))
        check_choice("landmark_provider", LANDMARK_PROVIDERS)
        return out

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>",
                  lines: dict[str, int] | None = None,
                  overridden: frozenset[str] = frozenset()) -> "PipelineConfig":
        """Build and validate; errors name ``origin``, the line (when known) and the field;
        fields in ``overridden`` came from flags / parameters, not from ``origin``."""
        return load_dataclass(cls, data, origin, lines, overridden)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "PipelineConfig":
        """Load a YAML file (flat ``field: value`` mapping); ``overrides`` win over the file."""
        data, lines = read_yaml_with_lines(path, "pipeline config")
        data = {} if data is None else data
        if isinstance(data, dict):
            data = {**data, **overrides}
        return cls.from_dict(data, origin=str(path), lines=lines,
                             overridden=frozenset(overrides))

    def replace(self, **overrides: Any) -> "PipelineConfig":
        """A copy with some fields replaced, validated (CLI flags, ROS parameters)."""
        return self.from_dict({**dataclasses.asdict(self), **overrides}, origin="config",
                              overridden=frozenset(overrides))


def model_directory(model_dir: str | Path | None) -> Path:
    """The folder ``model_dir`` names: a path; or the name of a shipped model folder in
    ``aue_edge/edge/models`` (``aue_crl``, ``aue_student``) where no folder of that name is
    in the working directory; None: the shipped ``aue_crl``."""
    if not model_dir:
        return DEFAULT_MODEL_DIR
    path = Path(model_dir)
    shipped = SHIPPED_MODELS_DIR / path.name
    if str(model_dir) == path.name and not path.exists() and shipped.is_dir():
        return shipped
    return path


def resolve_model_file(model_dir: str | Path | None, model_file: str, backend: str,
                       precision: str = "auto") -> Path:
    """The model file the pipeline will open.

    ``model_file`` other than ``"auto"``: that file (relative to ``model_dir``). Otherwise the
    first of :data:`MODEL_FILES` ``[backend][precision]`` that exists in ``model_dir``; for
    ONNX Runtime (``ort``) with ``auto`` or ``int8`` that is ``model.int8.ort.onnx`` (the CPU
    INT8 model), then ``model.int8.onnx`` (the TensorRT-style Q/DQ model), then, for ``auto``
    only, ``model.onnx``.
    """
    directory = model_directory(model_dir)
    if precision not in MODEL_FILES.get(backend, {}):
        raise ConfigError(f"precision {precision!r} is not available with backend {backend!r}; "
                          f"choose one of {sorted(MODEL_FILES.get(backend, {}))}")
    if model_file != "auto":
        path = Path(model_file)
        path = path if path.is_absolute() else directory / path
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist (model_file: {model_file!r} "
                                 f"in {directory})")
        return path
    if not directory.is_dir():
        raise ModelFileError(f"model directory {directory} does not exist; pass --model DIR "
                             f"(a folder written by 'aue export' / 'aue calibrate')")
    candidates = MODEL_FILES[backend][precision]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p.name for p in directory.iterdir())
    hint = ("export one with 'aue export' (INT8: 'aue calibrate --target ort-cpu')"
            if backend == "ort"
            else "build one with 'aue build MODEL.onnx --out DIR/model.engine'")
    raise ModelFileError(f"no {precision} model for backend {backend!r} in {directory}: "
                         f"looked for "
                         f"{', '.join(candidates)}; found {found}. {hint}, or set model_file.")


def batch_limit(backend: Backend, input_name: str) -> int | None:
    """Largest batch one inference may take: the engine profile's max, or a fixed ONNX batch."""
    limit = backend.max_batch_size
    if limit:
        return int(limit)
    for info in backend.inputs:
        if info.name == input_name and info.shape and isinstance(info.shape[0], int) \
                and info.shape[0] > 0:
            return int(info.shape[0])
    return None


def is_landmarks_input(name: str, card: ModelCard) -> bool:
    """True for the extra input the pipeline can feed: 68 points per face (an AU detector's
    export, aue_edge/train/au/export.py)."""
    spec = card.extra_inputs.get(name)
    return (name == LANDMARKS_INPUT and isinstance(spec, dict)
            and list(spec.get("shape", []))[1:] == [68, 2])


class LoadedModel:
    """One opened model (backend + card), checked against its card when opened: input name and
    size, output names, label and AU counts (a dry run on a blank batch), finite outputs. The
    pipeline runs its models through it; ``aue calibrate`` uses it to refuse a card that does
    not describe the model before copying that card into its outputs."""

    def __init__(self, path: Path, backend: Backend, card: ModelCard, role: str) -> None:
        self.path, self.backend, self.card, self.role = path, backend, card, role
        input_names = [t.name for t in backend.inputs]
        if card.input.name not in input_names:
            raise ModelCardError(f"{path}: the card's input {card.input.name!r} is not a model "
                                 f"input (model inputs: {input_names})")
        extra = [n for n in input_names if n != card.input.name]
        unsupported = [n for n in extra if not is_landmarks_input(n, card)]
        if unsupported:
            raise ModelFileError(
                f"{path} has inputs {unsupported} that the pipeline cannot feed (card "
                f"extra_inputs: {sorted(card.extra_inputs)}). It feeds the aligned face image "
                f"and, when the card declares it, '{LANDMARKS_INPUT}' of shape [batch, 68, 2] "
                f"(68 points as fractions of the aligned crop). Re-export the {role} model "
                f"with those inputs only.")
        self.needs_landmarks = bool(extra)
        image_info = next(t for t in backend.inputs if t.name == card.input.name)
        fixed_hw = tuple(image_info.shape[2:4]) if len(image_info.shape) == 4 else ()
        if all(isinstance(d, int) and d > 0 for d in fixed_hw) and fixed_hw != tuple(
                card.input.size_px):
            raise ModelCardError(f"{path}: the card's input.size_px {list(card.input.size_px)} "
                                 f"does not match the model: model input {card.input.name!r} is "
                                 f"{tuple(image_info.shape)}; fix the card or re-export the "
                                 f"model with 'aue export'")
        output_names = {t.name for t in backend.outputs}
        self.output_keys = [key for key in OUTPUT_NAMES_FIELD
                            if getattr(card.outputs, key) is not None]
        for key in self.output_keys:
            name = getattr(card.outputs, key)
            if name not in output_names:
                raise ModelCardError(f"{path}: the card's outputs.{key} {name!r} is not a model "
                                     f"output (model outputs: {sorted(output_names)})")
        self.batch_limit = batch_limit(backend, card.input.name)
        self.dry_run()

    def dry_run(self) -> None:
        """One inference on a blank batch (uniform grey faces of the card's input size): a
        card that does not describe the model (input size, label or AU count) or a model that
        gives NaN / inf fails here, when it is opened, not at the first face."""
        from aue_edge.edge.preprocess import to_model_input

        height, width = self.card.input.size_px
        blank = np.full((DRY_RUN_FACES, height, width, 3), 128, np.uint8)
        landmarks = (np.full((DRY_RUN_FACES, 68, 2), 0.5, np.float32) if self.needs_landmarks
                     else None)
        what = f"a blank batch of {DRY_RUN_FACES} faces of {height}x{width} px (the card's size)"
        try:
            outputs = self.infer(to_model_input(blank, self.card.input), landmarks)
        except AueError:
            raise
        except Exception as exc:  # ONNX Runtime and TensorRT raise their own types
            raise ModelCardError(f"{self.path}: the model does not run on {what}: {exc}. Fix "
                                 f"the card's input (name, size_px) or re-export the model "
                                 f"with 'aue export'") from None
        for key in self.output_keys:
            try:
                self.output(outputs, key, DRY_RUN_FACES)
            except InferenceError:
                raise ModelFileError(
                    f"{self.path}: the model gives non-finite values (NaN or inf) in output "
                    f"{getattr(self.card.outputs, key)!r} on {what}: its weights are corrupt or "
                    f"the export is broken; re-export it with 'aue export'") from None

    def output(self, outputs: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
        """The card's output ``key`` (emotion_probs / au_probs) for ``n`` faces, checked: one
        value per name the card lists (else ModelCardError), all finite (else InferenceError:
        no result for this frame)."""
        tensor, names_field = getattr(self.card.outputs, key), OUTPUT_NAMES_FIELD[key]
        expected = len(getattr(self.card.outputs, names_field))
        values = np.asarray(outputs[tensor], dtype=np.float32)
        if values.shape != (n, expected):
            given = values.shape[-1] if values.ndim == 2 else "a different number of"
            raise ModelCardError(
                f"{self.path}: the card's outputs.{names_field} lists {expected} names but "
                f"output {tensor!r} gives {given} values per face (shape {values.shape} for "
                f"{n} faces); make the card list the model's outputs (re-export the model "
                f"with 'aue export')")
        if not np.isfinite(values).all():
            raise InferenceError(f"{self.path}: output {tensor!r} has non-finite values (NaN "
                                 f"or inf) for this frame ({n} faces): no result for it. If "
                                 f"every frame fails, the model is broken: re-export it")
        return values

    def infer(self, batch: np.ndarray, landmarks: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
        """One inference per chunk of at most ``batch_limit`` faces, outputs concatenated."""
        limit = self.batch_limit or len(batch)
        chunks = []
        for i in range(0, len(batch), limit):
            feeds = {self.card.input.name: batch[i:i + limit]}
            if self.needs_landmarks:
                feeds[LANDMARKS_INPUT] = landmarks[i:i + limit]
            chunks.append(self.backend.infer(feeds))
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


class Pipeline:
    """``with Pipeline(config) as p: result = p.process(frame_bgr, timestamp_s)``.

    ``detector`` / ``backend`` may be passed in (tests, benchmarks, a TensorRT-hosted YuNet);
    the pipeline then owns and closes them. ``card`` must come with ``backend``.
    """

    def __init__(self, config: PipelineConfig | None = None, *, detector=None,
                 backend: Backend | None = None, card: ModelCard | None = None) -> None:
        self.config = config or PipelineConfig()
        cfg = self.config
        self._closables: list = []
        try:
            self._open(cfg, detector, backend, card)
        except BaseException:
            self.close()
            raise

    def _open(self, cfg: PipelineConfig, detector, backend, card) -> None:
        from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT

        self._default_template = FERPLUS_TEMPLATE_5PT
        if backend is None:
            model_path = resolve_model_file(cfg.model_dir, cfg.model_file, cfg.backend)
            card = find_model_card(model_path)
            backend = self._create_backend(model_path)
        elif card is None:
            raise ConfigError("Pipeline(backend=...) needs the model's card too (card=...)")
        else:
            model_path = Path(getattr(backend, "model_path", "<backend>"))
        self._closables.append(backend)
        self.model = LoadedModel(model_path, backend, card, "emotion")
        if not card.alignment.template_5pt:
            warnings.warn(f"{model_path}: the model card has no alignment.template_5pt; "
                          f"aligning faces to the FER+ template instead. Re-export the model "
                          f"so its card records the template it was trained with.",
                          stacklevel=3)
        self.au_model = None
        if cfg.au_model_dir is not None:
            au_path = resolve_model_file(cfg.au_model_dir, cfg.au_model_file, cfg.backend)
            au_card = find_model_card(au_path)
            au_backend = self._create_backend(au_path)
            self._closables.append(au_backend)
            self.au_model = LoadedModel(au_path, au_backend, au_card, "AU")
            if au_card.outputs.au_probs is None:
                raise ModelCardError(f"{au_path}: au_model_dir must hold an AU detector, but "
                                     f"its card has no outputs.au_probs")
        self.landmark_provider = None
        if self.model.needs_landmarks or (self.au_model and self.au_model.needs_landmarks):
            self.landmark_provider = self._create_landmark_provider()
            self._closables.append(self.landmark_provider)
        if detector is None:
            detector = self._create_detector()
        self._closables.append(detector)
        self.detector = detector
        self.tracker = IouTracker(cfg.track_iou_threshold, cfg.track_max_age_frames,
                                  cfg.track_assignment)
        self.smoother = TrackSmoother(cfg.smoothing, cfg.ema_alpha, cfg.one_euro_min_cutoff_hz,
                                      cfg.one_euro_beta, cfg.one_euro_d_cutoff_hz,
                                      cfg.smooth_geometry)
        self._frame_index = 0
        self._frames_since_full_detect = 0
        self._frames_since_found = 0   # frames in a row whose faces were extrapolated
        # track ID -> its last two detections (frame index, box, landmarks, score), oldest first:
        # the motion region_interval_frames extrapolates
        self._motion: dict[int, list[tuple[int, np.ndarray, np.ndarray, float]]] = {}
        # track ID -> (frame index of its last inference, emotion probs, AU probs) as the model
        # gave them (unsmoothed); held between inferences (infer_interval_frames).
        self._held: dict[int, tuple[int, np.ndarray | None, np.ndarray | None]] = {}

    def _create_detector(self):
        from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH, YuNetDetector

        cfg = self.config
        det_path = Path(cfg.detector_model) if cfg.detector_model else DEFAULT_MODEL_PATH
        backend = create_backend(det_path, cfg.detector_backend, num_threads=cfg.num_threads,
                                 device_index=cfg.trt_device_index,
                                 cuda_binding=cfg.cuda_binding)
        try:
            detector = YuNetDetector(
                backend=backend, score_threshold=cfg.score_threshold,
                nms_iou_threshold=cfg.nms_iou_threshold, max_faces=cfg.max_faces,
                detect_max_side_px=cfg.detect_max_side_px, region_side_px=cfg.detect_region_px)
            profiles = getattr(backend, "profiles", None)
            if profiles:
                # Every frame must fit the engine's largest image: check it now, not mid-stream.
                needed = detector.input_shape(cfg.detect_max_side_px, cfg.detect_max_side_px)
                largest = next(iter(profiles.values()))[2]
                if any(n > m for n, m in zip(needed, largest)):
                    raise ConfigError(
                        f"the detector engine {det_path} accepts images up to {largest}, "
                        f"detect_max_side_px {cfg.detect_max_side_px} needs {needed}; lower "
                        f"detect_max_side_px or rebuild with 'aue build ... --detector "
                        f"--detect-max-side-px {cfg.detect_max_side_px}'")
        except BaseException:
            backend.close()
            raise
        return detector

    def _create_landmark_provider(self):
        from aue_edge.edge.face import landmarks

        name = self.config.landmark_provider
        # Placed with the template of the model that takes the points, so the mean shape lands
        # on the mean face in exactly that model's crops.
        needing = self.au_model if self.au_model and self.au_model.needs_landmarks else self.model
        template = self._template(needing.card)
        if name == "mean_shape":
            return landmarks.MeanShapeProvider(template)
        if name == "mediapipe":
            return landmarks.MediapipeProvider(template_5pt=template)
        return landmarks.DlibProvider()

    def _create_backend(self, path: Path) -> Backend:
        cfg = self.config
        return create_backend(path, cfg.backend, num_threads=cfg.num_threads,
                              providers=cfg.ort_providers, device_index=cfg.trt_device_index,
                              cuda_binding=cfg.cuda_binding)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_model_dir(cls, model_dir: str | Path | None = None, **overrides: Any) -> "Pipeline":
        """The default configuration with ``model_dir`` and any field overridden."""
        fields = dict(overrides)
        if model_dir is not None:
            fields["model_dir"] = str(model_dir)
        return cls(PipelineConfig().replace(**fields))

    # ------------------------------------------------------------------ what the model says
    @property
    def card(self) -> ModelCard:
        return self.model.card

    @property
    def emotion_labels(self) -> tuple[str, ...]:
        if self.card.outputs.emotion_probs is None:
            return ()
        return self.card.outputs.emotion_labels

    @property
    def au_card(self) -> ModelCard:
        """The card whose AU names and threshold apply (the AU model's when one is set)."""
        return self.au_model.card if self.au_model is not None else self.card

    @property
    def au_names(self) -> tuple[str, ...]:
        if self.au_card.outputs.au_probs is None:
            return ()
        return self.au_card.outputs.au_names

    @functools.cached_property
    def au_thresholds(self) -> np.ndarray:
        """One decision threshold per AU: the ``au_threshold`` setting for all AUs when set,
        else the card's (per-AU thresholds fitted in training, or its single threshold).
        Config and cards are fixed once the pipeline is built, so this is computed once
        (read-only), not on every frame."""
        if self.config.au_threshold is not None:
            thresholds = np.full(len(self.au_names), float(self.config.au_threshold), np.float32)
        else:
            thresholds = np.asarray(self.au_card.outputs.thresholds(), dtype=np.float32)
        thresholds.setflags(write=False)
        return thresholds

    # ------------------------------------------------------------------ per frame
    def reset(self) -> None:
        """Forget tracks and smoothing state (e.g. before an unrelated image or a new video)."""
        self.tracker.reset()
        self.smoother.reset()
        self._held.clear()
        self._motion.clear()
        self._frames_since_full_detect = 0
        self._frames_since_found = 0

    def _template(self, card: ModelCard):
        return card.alignment.template_5pt or self._default_template

    def _crops(self, frame: np.ndarray, landmarks5: np.ndarray, card: ModelCard) -> np.ndarray:
        from aue_edge.edge.face.alignment import align_faces
        from aue_edge.edge.preprocess import to_model_input

        crops = align_faces(frame, landmarks5, self._template(card), card.input.size_px)
        return to_model_input(crops, card.input)

    def _crop_landmarks(self, lm68: np.ndarray | None, landmarks5: np.ndarray,
                        model: LoadedModel) -> np.ndarray | None:
        """68 frame points -> fractions of the model's aligned crop (its ``landmarks`` input)."""
        if not model.needs_landmarks:
            return None
        from aue_edge.edge.face.alignment import similarity_transform, transform_points
        from aue_edge.edge.face.templates import template_array

        # The similarity onto the template in fractions maps frame pixels to crop fractions.
        to_fractions = similarity_transform(landmarks5, template_array(self._template(model.card)))
        return transform_points(lm68, to_fractions).astype(np.float32)

    def process(self, frame_bgr: np.ndarray, timestamp_s: float | None = None) -> FrameResult:
        """Run the whole chain on one frame; see the module docstring."""
        from aue_edge.edge.frames import validate_frame

        t_start = time.perf_counter()
        if timestamp_s is None:
            timestamp_s = time.monotonic()
        frame = validate_frame(frame_bgr)
        detections = self._detect(frame)
        t_detect = time.perf_counter()
        update = self.tracker.update(detections.boxes_xyxy)
        # New IDs start fresh; expired IDs free their state.
        self.smoother.drop(update.new_ids + update.expired_ids)
        for track_id in update.new_ids + update.expired_ids:
            self._held.pop(track_id, None)
            self._motion.pop(track_id, None)
        if self.config.region_interval_frames > 1 and self._frames_since_found == 0:
            # this frame's faces were detected, not extrapolated; only a pipeline that
            # extrapolates needs the last two detections of each face
            for i, track_id in enumerate(update.track_ids):
                seen = self._motion.setdefault(int(track_id), [])
                seen[:] = seen[-1:] + [(self._frame_index, detections.boxes_xyxy[i],
                                        detections.landmarks5[i], float(detections.scores[i]))]
        due = self._due(update.track_ids)
        t_track = time.perf_counter()
        emotion = au = None
        if due.any():
            boxes, landmarks5 = detections.boxes_xyxy[due], detections.landmarks5[due]
            n = len(landmarks5)
            lm68 = None
            if self.landmark_provider is not None:
                lm68 = self.landmark_provider.landmarks68(frame, boxes, landmarks5)
            batch = self._crops(frame, landmarks5, self.card)
            points = self._crop_landmarks(lm68, landmarks5, self.model)
            au_batch = au_points = None
            if self.au_model is not None:
                au_card = self.au_model.card
                same_input = (au_card.input == self.card.input
                              and self._template(au_card) == self._template(self.card))
                au_batch = batch if same_input else self._crops(frame, landmarks5, au_card)
                au_points = self._crop_landmarks(lm68, landmarks5, self.au_model)
            t_align = time.perf_counter()
            outputs = self.model.infer(batch, points)
            au_outputs = (self.au_model.infer(au_batch, au_points) if self.au_model is not None
                          else None)
            t_infer = time.perf_counter()
            if self.emotion_labels:
                emotion = self.model.output(outputs, "emotion_probs", n)
            if self.au_names:
                au = (self.au_model.output(au_outputs, "au_probs", n) if au_outputs is not None
                      else self.model.output(outputs, "au_probs", n))
        else:
            t_align = t_infer = time.perf_counter()
        for row, track_id in enumerate(update.track_ids[due]):
            self._held[int(track_id)] = (self._frame_index,
                                         None if emotion is None else emotion[row],
                                         None if au is None else au[row])
        faces = self._postprocess(detections, update.track_ids, float(timestamp_s))
        t_end = time.perf_counter()
        height, width = frame.shape[:2]
        result = FrameResult(
            frame_index=self._frame_index, timestamp_s=float(timestamp_s), width=width,
            height=height, faces=faces,
            timings_ms={"detect": (t_detect - t_start) * 1e3, "align": (t_align - t_track) * 1e3,
                        "infer": (t_infer - t_align) * 1e3,
                        "postprocess": (t_end - t_infer + t_track - t_detect) * 1e3,
                        "total": (t_end - t_start) * 1e3})
        self._frame_index += 1
        return result

    def _detect(self, frame: np.ndarray):
        """This frame's faces: the whole frame every ``detect_interval_frames`` frames, when
        no face was seen on the previous frame, and when a face seen there is not found again
        in its region; otherwise the faces of the live tracks in small regions around their
        last boxes (a face lost a few frames ago is looked for there too, until it expires),
        or, on the frames ``region_interval_frames`` skips, each face seen on the previous
        frame moved on from its last two detections."""
        tracks = self.tracker.tracks
        seen = np.array([t.frames_since_seen == 0 for t in tracks], bool)
        between = self._frames_since_full_detect + 1 < self.config.detect_interval_frames
        if (between and seen.any()
                and self._frames_since_found + 1 < self.config.region_interval_frames):
            self._frames_since_full_detect += 1
            self._frames_since_found += 1
            return self._extrapolate(frame.shape[:2],
                                     [t.track_id for t, now in zip(tracks, seen) if now])
        self._frames_since_found = 0
        if seen.any() and between:
            found, hit = self.detector.detect_regions(
                frame, np.stack([t.box_xyxy for t in tracks]))
            if hit[seen].all():
                self._frames_since_full_detect += 1
                return found
        self._frames_since_full_detect = 0
        return self.detector.detect(frame)

    def _extrapolate(self, frame_hw: tuple[int, int], track_ids: list[int]):
        """The faces of ``track_ids`` on this frame without a graph run: each box and its
        landmarks shifted from its last detection at the speed its landmarks' centre moved
        between its last two (held after the first; sizes are not extrapolated: a region and
        the whole frame see a face at different scales, and the boxes they give differ by more
        than a frame's change in size), the box clipped to the frame, the last score kept."""
        from aue_edge.edge.face.yunet import detections_in_frame

        boxes, landmarks, scores = [], [], []
        for track_id in track_ids:
            seen = self._motion[track_id]
            index, box, points, score = seen[-1]
            if len(seen) == 2:
                speed = (points.mean(0) - seen[0][2].mean(0)) / (index - seen[0][0])
                shift = speed * (self._frame_index - index)
                box, points = box + np.tile(shift, 2), points + shift
            boxes.append(box)
            landmarks.append(points)
            scores.append(score)
        return detections_in_frame(np.stack(boxes), np.asarray(scores), np.stack(landmarks),
                                   *frame_hw)

    def _due(self, track_ids: np.ndarray) -> np.ndarray:
        """Which faces the model runs on this frame: new faces, and every face once per
        ``infer_interval_frames`` frames, staggered by ID so that the faces of a group do not
        all run on the same frame; the others keep their last outputs."""
        interval, index = self.config.infer_interval_frames, self._frame_index
        due = np.ones(len(track_ids), bool)
        for i, track_id in enumerate(track_ids):
            held = self._held.get(int(track_id))
            due[i] = (held is None or index - held[0] >= interval
                      or (index + int(track_id)) % interval == 0)
        return due

    def _postprocess(self, detections, track_ids: np.ndarray, timestamp_s: float
                     ) -> list[FaceResult]:
        thresholds = self.au_thresholds
        faces = []
        for i, track_id in enumerate(track_ids):
            track_id = int(track_id)
            box = self.smoother.smooth(track_id, "box", detections.boxes_xyxy[i], timestamp_s)
            landmarks = self.smoother.smooth(track_id, "landmarks",
                                             detections.landmarks5[i].reshape(-1),
                                             timestamp_s).reshape(5, 2)
            face = FaceResult(track_id=track_id, box_xyxy=np.asarray(box, np.float32),
                              score=float(detections.scores[i]),
                              landmarks5=np.asarray(landmarks, np.float32))
            _inferred_at, emotion, au = self._held[track_id]
            if emotion is not None:
                probs = self.smoother.smooth(track_id, "emotion", emotion, timestamp_s)
                # The 1-euro filter works per component: renormalise so probabilities sum to 1.
                probs = np.clip(probs, 0.0, None)
                total = float(probs.sum())
                probs = probs / total if total > 0 else np.asarray(emotion, np.float32)
                best = int(np.argmax(probs))
                face.emotion_probs = probs.astype(np.float32)
                face.emotion_label = self.emotion_labels[best]
                face.emotion_confidence = float(probs[best])
            if au is not None:
                probs = np.clip(self.smoother.smooth(track_id, "au", au, timestamp_s), 0, 1)
                face.au_probs = probs.astype(np.float32)
                face.au_active = face.au_probs >= thresholds
            faces.append(face)
        return faces

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the backends and the detector. Safe to call twice."""
        while self._closables:
            self._closables.pop().close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
