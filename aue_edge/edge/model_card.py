"""The model card: the preprocessing, labels and AU names that travel with every model.

Written by ``aue export`` (train stage) beside the ``.onnx`` as ``card.json`` and into the ONNX
``metadata_props`` under :data:`METADATA_KEY`; copied by ``aue calibrate`` next to the INT8
model and by ``aue build`` into the engine's sidecar JSON. Every downstream stage reads the card
instead of guessing: input size, colour, mean/std, the 5-point alignment template the training
images were framed with, emotion labels and AU names.

No torch here: the card is plain data.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aue_edge.core.config_files import read_json
from aue_edge.core.errors import ModelCardError

SCHEMA_VERSION = 1
METADATA_KEY = "aue_model_card"
CARD_FILENAME = "card.json"
# The files of a model folder (e.g. aue_edge/edge/models/aue_crl), one name each, for every stage:
FP32_MODEL_FILENAME = "model.onnx"                 # aue export
INT8_QDQ_MODEL_FILENAME = "model.int8.onnx"        # aue calibrate --target tensorrt (Q/DQ)
INT8_ORT_MODEL_FILENAME = "model.int8.ort.onnx"    # aue calibrate --target ort-cpu
CALIBRATION_CACHE_FILENAME = "calibration.cache"   # aue calibrate, TensorRT implicit INT8
ENGINE_FILENAMES = {"int8": "model.int8.engine", "fp16": "model.fp16.engine",
                    "fp32": "model.engine"}      # aue build, per precision
COLOR_MODES = ("rgb", "bgr", "gray3")


# Template points closer than this (fractions of the crop), or a spread across their best
# line below it, cannot fix a similarity transform.
MIN_TEMPLATE_SPREAD = 0.01


def _degenerate(points: tuple[tuple[float, float], ...]) -> bool:
    """True when 5 template points are not a usable alignment target: two (nearly) coincide,
    or all lie (nearly) on one line."""
    import numpy as np

    array = np.asarray(points, dtype=np.float64)
    gaps = np.linalg.norm(array[:, None] - array[None], axis=-1)[np.triu_indices(len(array), 1)]
    spread = np.linalg.svd(array - array.mean(axis=0), compute_uv=False)[-1]
    return bool(gaps.min() < MIN_TEMPLATE_SPREAD or spread < MIN_TEMPLATE_SPREAD)


@dataclass(frozen=True)
class InputSpec:
    """How an aligned face becomes the model's input tensor (NCHW float32).

    ``pixels = (image_uint8 / 255 - mean) / std`` per channel after colour conversion;
    ``gray3`` means grayscale replicated to three channels (what FER+ training used).
    """

    name: str = "image"
    size_px: tuple[int, int] = (112, 112)  # (height, width)
    color: str = "gray3"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AlignmentSpec:
    """Similarity alignment of 5 detected points to a template, in fractions of the crop.

    ``template_5pt`` is (right eye, left eye, nose tip, right mouth corner, left mouth corner)
    in the order YuNet gives them, each (x, y) as a fraction of the crop's width and height, so
    the same template serves any input size. ``source`` says how the template was derived.
    """

    method: str = "similarity_5pt"
    template_5pt: tuple[tuple[float, float], ...] = ()
    source: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """Names and meaning of the output tensors.

    An AU is active when its probability is >= its threshold: ``au_thresholds[name]`` where the
    card gives one per AU (fitted on training data by ``aue train``), else ``au_threshold``.
    """

    emotion_probs: str | None = "emotion_probs"
    au_probs: str | None = "au_probs"
    emotion_labels: tuple[str, ...] = ()
    au_names: tuple[str, ...] = ()
    au_threshold: float = 0.5
    au_thresholds: dict[str, float] = field(default_factory=dict)

    def thresholds(self) -> tuple[float, ...]:
        """One decision threshold per AU of ``au_names``."""
        return tuple(float(self.au_thresholds.get(a, self.au_threshold)) for a in self.au_names)


@dataclass(frozen=True)
class ModelCard:
    model_name: str
    input: InputSpec
    alignment: AlignmentSpec
    outputs: OutputSpec
    precision: str = "fp32"
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_inputs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        problems = []
        if self.schema_version != SCHEMA_VERSION:
            problems.append(f"schema_version is {self.schema_version}, this package reads "
                            f"{SCHEMA_VERSION}")
        if not self.model_name:
            problems.append("model_name is empty")
        h, w = self.input.size_px
        if h <= 0 or w <= 0:
            problems.append(f"input.size_px must be positive, got {self.input.size_px}")
        if self.input.color not in COLOR_MODES:
            problems.append(f"input.color must be one of {COLOR_MODES}, got {self.input.color!r}")
        if len(self.input.mean) != 3 or len(self.input.std) != 3:
            problems.append("input.mean and input.std need 3 values each")
        if any(s <= 0 for s in self.input.std):
            problems.append(f"input.std must be positive, got {self.input.std}")
        if self.alignment.template_5pt and len(self.alignment.template_5pt) != 5:
            problems.append(f"alignment.template_5pt needs 5 points, got "
                            f"{len(self.alignment.template_5pt)}")
        elif self.alignment.template_5pt and _degenerate(self.alignment.template_5pt):
            problems.append(f"alignment.template_5pt is degenerate (points repeated or on one "
                            f"line: {[list(p) for p in self.alignment.template_5pt]}); no face "
                            f"can be aligned to it. Use the template the model was trained with")
        for field_name in ("emotion_labels", "au_names"):
            names = getattr(self.outputs, field_name)
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                problems.append(f"outputs.{field_name} has duplicates: {duplicates}; every "
                                f"output needs its own name")
        if self.outputs.emotion_probs is None and self.outputs.au_probs is None:
            problems.append("the model has neither an emotion nor an AU output")
        if self.outputs.emotion_probs is not None and not self.outputs.emotion_labels:
            problems.append("outputs.emotion_labels is empty but the model has an emotion output")
        if self.outputs.au_probs is not None and not self.outputs.au_names:
            problems.append("outputs.au_names is empty but the model has an AU output")
        if not 0.0 < self.outputs.au_threshold < 1.0:
            problems.append(f"outputs.au_threshold must be in (0, 1), got "
                            f"{self.outputs.au_threshold}")
        unknown = sorted(set(self.outputs.au_thresholds) - set(self.outputs.au_names))
        if unknown:
            problems.append(f"outputs.au_thresholds names AUs the model does not output: "
                            f"{unknown}")
        bad = {a: t for a, t in self.outputs.au_thresholds.items()
               if not (isinstance(t, (int, float)) and 0.0 < t < 1.0)}
        if bad:
            problems.append(f"outputs.au_thresholds must lie in (0, 1), got {bad}")
        if problems:
            raise ModelCardError("invalid model card: " + "; ".join(problems))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>") -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelCardError(f"{origin}: a model card is a JSON object, got "
                                 f"{type(data).__name__}")
        try:
            inp = data["input"]
            out = data["outputs"]
            align = data.get("alignment", {})
            return cls(
                model_name=data["model_name"],
                input=InputSpec(
                    name=inp.get("name", "image"),
                    size_px=tuple(int(v) for v in inp["size_px"]),
                    color=inp["color"],
                    mean=tuple(float(v) for v in inp["mean"]),
                    std=tuple(float(v) for v in inp["std"]),
                ),
                alignment=AlignmentSpec(
                    method=align.get("method", "similarity_5pt"),
                    template_5pt=tuple(tuple(float(c) for c in p)
                                       for p in align.get("template_5pt", ())),
                    source=align.get("source", ""),
                ),
                outputs=OutputSpec(
                    emotion_probs=out.get("emotion_probs"),
                    au_probs=out.get("au_probs"),
                    emotion_labels=tuple(out.get("emotion_labels", ())),
                    au_names=tuple(out.get("au_names", ())),
                    au_threshold=float(out.get("au_threshold", 0.5)),
                    au_thresholds={str(k): float(v)
                                   for k, v in (out.get("au_thresholds") or {}).items()},
                ),
                precision=data.get("precision", "fp32"),
                architecture=dict(data.get("architecture", {})),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                extra_inputs=dict(data.get("extra_inputs", {})),
                provenance=dict(data.get("provenance", {})),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
            )
        except ModelCardError as exc:
            raise ModelCardError(f"{origin}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(
                f"{origin}: malformed model card ({type(exc).__name__}: {exc}); expected the "
                f"fields written by 'aue export' (model_name, input, outputs, alignment)"
            ) from None

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILENAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        data = read_json(path, "model card", "every model needs the card.json that "
                         "'aue export' writes beside it", error=ModelCardError)
        return cls.from_dict(data, origin=str(path))


def card_from_onnx(onnx_path: str | Path) -> ModelCard | None:
    """The card embedded in an ONNX file's metadata_props, or None if it has none."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                data = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise ModelCardError(f"{onnx_path}: metadata '{METADATA_KEY}' is not JSON: "
                                     f"{exc}") from None
            return ModelCard.from_dict(data, origin=f"{onnx_path}:{METADATA_KEY}")
    return None


def embed_card_in_onnx(model: Any, card: ModelCard) -> None:
    """Set (or replace) the card in an ``onnx.ModelProto``'s metadata_props, in place."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(card.to_dict())


def find_card(model_path: str | Path) -> ModelCard:
    """The card for a model file.

    In order: the card embedded in an ``.onnx`` file's metadata (one folder often holds
    ``model.onnx`` and ``model.int8.onnx`` beside a single ``card.json`` written for the FP32
    export, so the file's own card is the one that is right about its precision); then
    ``<file name>.card.json`` beside it (e.g. ``model.int8.card.json``); then ``card.json``.
    Raises :class:`ModelCardError` naming every place looked at when none has one.
    """
    from google.protobuf.message import DecodeError

    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx" and model_path.is_file():
        try:
            embedded = card_from_onnx(model_path)
        except (DecodeError, ValueError, OSError):
            embedded = None  # not a readable ONNX file: opening the backend reports that clearly
        if embedded is not None:
            return embedded
    own = model_path.with_name(model_path.stem + ".card.json")
    beside = model_path.parent / CARD_FILENAME
    for candidate in (own, beside):
        if candidate.is_file():
            return ModelCard.load(candidate)
    raise ModelCardError(
        f"no model card for {model_path}: looked for ONNX metadata '{METADATA_KEY}', {own} and "
        f"{beside}. Export the model with 'aue export' (it writes both), or write a card.json "
        f"beside it."
    )
