"""A small per-face network distilled from AUE-CRL: the edge pipeline's cheap path. Train stage.

Not one of the four papers' models. AUE-CRL's own outputs are its teacher (``aue train`` with
a ``distill`` section, :mod:`aue_edge.train.distill`): the student learns the teacher's emotion
distribution and AU probabilities on FER+ faces, the FER+ labels, and the real FACS codes of the
CK+ training subjects. It keeps the teacher's input framing (FER+ 5-point alignment, grey),
labels, AU list and export outputs (``emotion_probs``, ``au_probs``), so the edge runs it like
any model folder; only its input is smaller (48 px: FER+'s own resolution).

The network is a plain VGG-like stack of 3x3 convolutions (stride-2 stem, then four stages of
a stride-2 convolution and a residual convolution), global average pooling and two linear heads.
Plain 3x3 convolutions quantise well with ONNX Runtime's INT8 kernels and TensorRT, unlike
depthwise ones. At 48 px it costs about 35 M multiply-adds per face, AUE-CRL about 420 M (both
counted over their convolutions and linear layers).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aue_edge.core.errors import ConfigError


@dataclass(frozen=True)
class StudentConfig:
    """Every size of the network; a checkpoint stores this (``model.config``) to rebuild it."""

    emotion_labels: tuple[str, ...] = ()
    au_names: tuple[str, ...] = ()
    input_size_px: int = 48
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels after the stem and each stage
    dropout: float = 0.2
    branches: str = "full"        # full (emotion + AU heads) | expression (emotion only)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("emotion_labels", "au_names", "widths"):
            out[key] = list(out[key])
        return out


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv(x))


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.config = cfg.to_dict()
        layers: list[nn.Module] = [_conv_bn(3, cfg.widths[0], 2)]
        for c_in, c_out in zip(cfg.widths[:1] + cfg.widths[:-1], cfg.widths):
            layers += [_conv_bn(c_in, c_out, 1 if len(layers) == 1 else 2), _Residual(c_out)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Dropout(cfg.dropout))
        self.emotion_head = nn.Linear(cfg.widths[-1], len(cfg.emotion_labels))
        self.au_head = (nn.Linear(cfg.widths[-1], len(cfg.au_names))
                        if cfg.branches == "full" else None)

    def forward(self, x: torch.Tensor, stage: int | None = None) -> dict[str, torch.Tensor]:
        """``emotion_logits`` and ``au_logits`` (``stage`` is accepted for the shared
        prediction helpers and ignored: the student has one stage)."""
        h = self.features(x)
        out = {"emotion_logits": self.emotion_head(h)}
        if self.au_head is not None:
            out["au_logits"] = self.au_head(h)
        return out

    def export_module(self, emotion_from: str = "emotion_logits") -> "ExportWrapper":
        """The inference graph ``aue export`` writes to ONNX."""
        return ExportWrapper(self)


class ExportWrapper(nn.Module):
    """Inference graph for ONNX: image -> (emotion_probs, au_probs) (or emotion only)."""

    def __init__(self, model: Student) -> None:
        super().__init__()
        self.model = model

    @property
    def output_names(self) -> tuple[str, ...]:
        return (("emotion_probs", "au_probs") if self.model.au_head is not None
                else ("emotion_probs",))

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        emotion = torch.softmax(out["emotion_logits"], dim=1)
        if self.model.au_head is None:
            return emotion
        return emotion, torch.sigmoid(out["au_logits"])


VARIANTS: dict[str, dict[str, Any]] = {
    "student_s48": {},
}


def build(**config: Any) -> Student:
    """A student network from keyword options (``create_model`` passes a variant's)."""
    known = {f.name for f in dataclasses.fields(StudentConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown student model option(s) {unknown}; known: {sorted(known)}")
    cfg = StudentConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in config.items()})
    problems = []
    if not cfg.emotion_labels:
        problems.append("emotion_labels is empty")
    if cfg.branches not in ("full", "expression"):
        problems.append(f"branches must be full or expression, got {cfg.branches!r}")
    if cfg.branches == "full" and not cfg.au_names:
        problems.append("au_names is empty for a model with the AU head (branches: full)")
    if len(cfg.widths) < 2 or min(cfg.widths) < 1:
        problems.append(f"widths must be two or more positive channel counts, got "
                        f"{list(cfg.widths)}")
    if cfg.input_size_px < 2 ** len(cfg.widths):
        problems.append(f"input_size_px {cfg.input_size_px} is too small for "
                        f"{len(cfg.widths)} stride-2 stages")
    if not 0 <= cfg.dropout < 1:
        problems.append(f"dropout must be in [0, 1), got {cfg.dropout}")
    if problems:
        raise ConfigError("student model: " + "; ".join(problems))
    return Student(cfg)
