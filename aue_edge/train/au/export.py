"""Export a trained AU detector to ONNX with its model card (train stage -> edge).

The exported graph is what the edge pipeline loads in place of the default AU output:

- input ``image``: (N, 3, H, W) float32, the card's preprocessing (gray3, ImageNet mean/std,
  FER+ 5-point alignment template; ``aue_edge.edge.preprocess.to_model_input``);
- LP-Net only, input ``landmarks``: (N, 68, 2) float32 iBUG-68 points as fractions of the
  aligned crop (the convention of ``aue_edge.edge.face.landmarks.mean_shape_68()``); the
  eye alignment and IPD normalisation of P-Net happen inside the graph. Described in the card's
  ``extra_inputs["landmarks"]``; feed ``mean_shape_68()`` when no landmark detector runs;
- output ``au_probs``: (N, num_aus) sigmoid probabilities in the card's ``au_names`` order.

Uses the shared :func:`aue_edge.train.export.export_onnx` (opset 17 legacy exporter by default,
18+ dynamo; batch-2 example inputs, so LSTM graphs keep a dynamic batch).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aue_edge.core.errors import ModelFileError
from aue_edge.edge.model_card import AlignmentSpec, InputSpec, ModelCard, OutputSpec
from aue_edge.core.checksums import sha256_of_files
from aue_edge.train.export import DEFAULT_OPSET, export_onnx

LANDMARKS_INPUT = {
    "name": "landmarks",
    "shape": ["batch", 68, 2],
    "dtype": "float32",
    "points": "iBUG 68-point scheme (0-based; eyes 36-41 and 42-47)",
    "units": "fractions of the aligned face crop: x / width, y / height (0 = left/top edge)",
    "source": "a LandmarkProvider on the aligned crop; without one, "
              "aue_edge.edge.face.landmarks.mean_shape_68() (the shape term becomes a constant)",
    "normalisation": "inside the graph: centred on the eye midpoint, rotated so the eye line is "
                     "horizontal, divided by the inter-pupil distance (LP-Net's P-Net input)",
}


class AuDetectorGraph(nn.Module):
    """The deployable graph: ``image`` (+ ``landmarks`` for LP-Net stage 3) -> ``au_probs``.

    ``stage``: the LP-Net stage to run (a checkpoint's ``model_stage``; None: its last one)."""

    def __init__(self, model: nn.Module, stage: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.stage_kwargs = {} if stage is None else {"stage": stage}
        self.takes_landmarks = (hasattr(model, "needs_landmarks")
                                and model.needs_landmarks(stage))
        self.input_names = ("image", "landmarks") if self.takes_landmarks else ("image",)
        self.output_names = ("au_probs",)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        if self.takes_landmarks:
            out = self.model(image, landmarks, **self.stage_kwargs)
        else:
            out = self.model(image, **self.stage_kwargs)
        return torch.sigmoid(out["au_logits"])

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Batch 2 by default: a batch-1 example can fix an LSTM graph's batch to 1."""
        from aue_edge.edge.face.landmarks import mean_shape_68

        h, w = self.model.input_size_px
        image = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
        if not self.takes_landmarks:
            return (image,)
        shape = torch.as_tensor(mean_shape_68(), dtype=torch.float32)
        jitter = 0.01 * torch.randn(batch, 68, 2, generator=torch.Generator().manual_seed(1))
        return image, shape[None] + jitter


def au_model_card(model: nn.Module, model_name: str, payload: dict[str, Any] | None = None,
                  checkpoint: Path | None = None, opset: int = DEFAULT_OPSET) -> ModelCard:
    """The card of an AU detector: input spec, FER+ alignment, AU names, extra inputs."""
    from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
    from aue_edge.train.au.trainers import INPUT_COLOR, INPUT_MEAN, INPUT_STD

    payload = payload or {}
    graph = AuDetectorGraph(model, payload.get("model_stage"))
    inp = payload.get("input", {})
    arch = {"name": model_name, "parameters": int(sum(p.numel() for p in model.parameters())),
            "config": dict(getattr(model, "config", {}))}
    if hasattr(model, "groups"):
        arch["au_groups"] = [{"areas": list(a), "aus": list(u)} for a, u in model.groups]
    return ModelCard(
        model_name=model_name,
        input=InputSpec(name="image", size_px=tuple(model.input_size_px),
                        color=inp.get("color", INPUT_COLOR),
                        mean=tuple(inp.get("mean", INPUT_MEAN)),
                        std=tuple(inp.get("std", INPUT_STD))),
        alignment=AlignmentSpec(
            method="similarity_5pt", template_5pt=tuple(map(tuple, FERPLUS_TEMPLATE_5PT)),
            source="FER+ framing (aue_edge.edge.face.templates.FERPLUS_TEMPLATE_5PT)"),
        outputs=OutputSpec(emotion_probs=None, au_probs="au_probs", emotion_labels=(),
                           au_names=tuple(model.au_names),
                           au_thresholds=dict(payload.get("au_thresholds") or {})),
        architecture=arch,
        training={"source": payload.get("train_source"),
                  "pseudo_labels": payload.get("pseudo_labels"),
                  "config": payload.get("config", {}),
                  **({"ckplus": payload["ckplus"]} if payload.get("ckplus") else {})},
        metrics=dict(payload.get("metrics", {})),
        extra_inputs={"landmarks": LANDMARKS_INPUT} if graph.takes_landmarks else {},
        provenance={"exported_by": "aue export (aue_edge.train.au.export)",
                    "torch": torch.__version__, "opset": opset,
                    "checkpoint": checkpoint.name if checkpoint else None,
                    "checkpoint_sha256": sha256_of_files(checkpoint) if checkpoint else None},
    )


def export_au_detector(model: nn.Module, out_dir: str | Path, model_name: str | None = None,
                       opset: int = DEFAULT_OPSET, payload: dict[str, Any] | None = None,
                       checkpoint: Path | None = None) -> Path:
    """``out_dir/model.onnx`` + ``card.json`` for an in-memory AU detector (an LP-Net runs the
    stage ``payload["model_stage"]`` names; none: its last)."""
    model = model.eval()
    graph = AuDetectorGraph(model, (payload or {}).get("model_stage")).eval()
    name = model_name or (payload or {}).get("model_name") or type(model).__name__.lower()
    card = au_model_card(model, name, payload, checkpoint, opset)
    with warnings.catch_warnings():
        # torch warns that an LSTM traced at batch 2 may not run at other batch sizes; the
        # zero initial states make the graph batch-independent (tests check batch 3 in ORT)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                module="torch.nn.modules.rnn")
        return export_onnx(graph, card, out_dir, opset, example_inputs=graph.example_inputs(2),
                           input_names=graph.input_names, output_names=graph.output_names)


def export_au_checkpoint(checkpoint: str | Path, out_dir: str | Path,
                         opset: int = DEFAULT_OPSET, metrics: dict[str, Any] | None = None
                         ) -> Path:
    """``aue export`` for an AU-detector checkpoint written by ``aue train``."""
    from aue_edge.train.runtime import load_checkpoint

    checkpoint = Path(checkpoint)
    model, payload = load_checkpoint(checkpoint)
    if "au_names" not in payload:
        raise ModelFileError(f"checkpoint {checkpoint} is not an AU-detector run (no au_names); "
                             f"was it written by 'aue train' with an lp_net/gtle_net/kdsrl "
                             f"config?")
    if metrics:
        payload = {**payload, "metrics": {**payload.get("metrics", {}), **metrics}}
    return export_au_detector(model, out_dir, payload["model_name"], opset, payload, checkpoint)
