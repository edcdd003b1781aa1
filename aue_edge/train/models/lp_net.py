"""LP-Net: local relationship learning with person-specific shape regularisation (Niu et al.,
CVPR 2019), an AU detector of the train stage.

Architecture (paper facts; ``../shared/SEED_FACTS.md`` §2):

- **Stem**: ResNet-34 without its global pooling; at 224 px its last stage is 512x7x7, i.e.
  k = 49 local 512-d features ``f_1..f_k``.
- **L-Net**: one LSTM per AU. Every LSTM reads all k local features as a sequence; each step's
  output is mapped to a scalar and ``p_j = sigmoid((1/k) sum_i LSTM_j(f_i) + m_j)``.
- **P-Net**: the 68 landmarks, eye-aligned and normalised by the inter-pupil distance (IPD),
  flattened to 136-d -> 256 -> 512 (= ``f_s``) -> C per-AU shape terms ``m_j`` added before the
  sigmoid. ``L_r = |f_au . f_s|`` with ``f_au`` the mean of the k local features keeps the shape
  information out of the appearance features (orthogonality).
- **Training stages** (trainer ``aue_edge.train.au.trainers``): (1) stem with a linear head,
  (2) + L-Net, (3) + P-Net; the ``stage`` argument of ``forward``/``forward_head`` selects the
  head (default: the last stage the model was built with; a checkpoint records the stage it
  was trained to as ``model_stage``).

Choices the paper leaves open (all configurable, defaults here):

- LSTM hidden size 64, 1 layer, scan order ``raster`` (row by row over the 7x7 grid; ``snake``
  reverses every other row so consecutive steps stay neighbours).
- P-Net layer order 136 -> 256 -> 512 -> C (the only order in which ``f_s`` matches ``f_au``'s
  512-d width); ReLU after the 256-d layer only: ``f_s`` is linear, since a ReLU output is
  non-negative like ``f_au`` and could meet ``L_r`` by switching off. ``L_r`` is taken on unit
  vectors (``|cos|``) so that shrinking a feature cannot meet it either. The width follows the
  stem's width multiplier.
- Landmark normalisation happens *inside* the network (so the exported ONNX takes raw landmarks
  and the edge needs no extra code): the ``landmarks`` input is (N, 68, 2) iBUG-68 points as
  fractions (x / width, y / height) of the aligned face crop, the same convention as
  ``aue_edge.edge.face.landmarks.mean_shape_68()``. Points are scaled to pixels, centred on the
  midpoint of the eye centres (means of points 36-41 and 42-47), rotated so the eye line is
  horizontal and divided by the IPD. Without a landmark detector, feed ``mean_shape_68()``: the
  shape term then becomes a constant per-AU bias (FER+ pseudo-label training does exactly this,
  since FER+ has no landmarks).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aue_edge.core.errors import ConfigError
from aue_edge.train.au.backbone import ResNetTrunk

SCAN_ORDERS = ("raster", "snake")
STAGES = (1, 2, 3)
RIGHT_EYE_68 = tuple(range(36, 42))
LEFT_EYE_68 = tuple(range(42, 48))


def normalize_landmarks(landmarks: torch.Tensor, size_px: tuple[int, int]) -> torch.Tensor:
    """(N, 68, 2) crop fractions -> (N, 136) eye-aligned, IPD-normalised shape vector.

    Written with elementwise ops only (no atan2), so it exports to any ONNX opset and TensorRT.
    """
    h, w = size_px
    scale = landmarks.new_tensor([float(w), float(h)])
    pts = landmarks * scale
    eye_a = pts[:, RIGHT_EYE_68[0]:RIGHT_EYE_68[-1] + 1].mean(1)
    eye_b = pts[:, LEFT_EYE_68[0]:LEFT_EYE_68[-1] + 1].mean(1)
    centre = 0.5 * (eye_a + eye_b)
    delta = eye_b - eye_a
    ipd = torch.sqrt((delta * delta).sum(1, keepdim=True)).clamp(min=1e-6)
    cos = delta[:, :1] / ipd
    sin = delta[:, 1:] / ipd
    p = pts - centre[:, None, :]
    x = p[..., 0] * cos + p[..., 1] * sin      # rotate by -angle: eye line becomes horizontal
    y = -p[..., 0] * sin + p[..., 1] * cos
    return (torch.stack([x, y], dim=-1) / ipd[:, :, None]).reshape(landmarks.shape[0], -1)


class LPNet(nn.Module):
    """``forward(image, landmarks=None, stage=None) -> dict(au_logits, appearance_features
    (f_au), shape_features (f_s, stage 3))`` (:mod:`aue_edge.train.models.outputs`), i.e.
    ``forward_head(forward_features(image), landmarks, stage)``."""

    def __init__(self, au_names: tuple[str, ...] | list[str], depth: int = 34, width: float = 1.0,
                 stem: str = "imagenet", input_size_px: int = 224, lstm_hidden: int = 64,
                 lstm_layers: int = 1, scan_order: str = "raster", pnet_hidden: int = 256,
                 use_lnet: bool = True, use_pnet: bool = True) -> None:
        super().__init__()
        if not au_names:
            raise ConfigError("LP-Net needs at least one AU name")
        if scan_order not in SCAN_ORDERS:
            raise ConfigError(f"scan_order must be one of {SCAN_ORDERS}, got {scan_order!r}")
        if lstm_hidden < 1 or lstm_layers < 1 or pnet_hidden < 1:
            raise ConfigError("lstm_hidden, lstm_layers and pnet_hidden must be >= 1")
        self.config = dict(au_names=list(au_names), depth=depth, width=width, stem=stem,
                           input_size_px=input_size_px, lstm_hidden=lstm_hidden,
                           lstm_layers=lstm_layers, scan_order=scan_order,
                           pnet_hidden=pnet_hidden, use_lnet=use_lnet, use_pnet=use_pnet)
        self.au_names = tuple(au_names)
        self.input_size_px = (input_size_px, input_size_px)
        num_aus = len(au_names)
        self.stem = ResNetTrunk(depth, width, stem, stages=4)
        feat = self.stem.channels
        grid_h, grid_w = self.stem.output_size(self.input_size_px)
        self.num_local = grid_h * grid_w
        order = torch.arange(self.num_local).reshape(grid_h, grid_w)
        if scan_order == "snake":
            order[1::2] = order[1::2].flip(1)
        self.register_buffer("scan_index", order.flatten(), persistent=False)
        # Stage-1 head: the plain ResNet classifier on the pooled local features.
        self.fc = nn.Linear(feat, num_aus)
        self.use_lnet, self.use_pnet = use_lnet, use_pnet
        if use_lnet:
            self.lstms = nn.ModuleList(nn.LSTM(feat, lstm_hidden, lstm_layers, batch_first=True)
                                       for _ in range(num_aus))
            self.lstm_out = nn.ModuleList(nn.Linear(lstm_hidden, 1) for _ in range(num_aus))
        if use_pnet:
            self.pnet_hidden = nn.Sequential(nn.Linear(136, pnet_hidden), nn.ReLU(inplace=True),
                                             nn.Linear(pnet_hidden, feat))
            self.pnet_out = nn.Linear(feat, num_aus)
        self.last_stage = (3 if use_lnet and use_pnet else 2) if use_lnet else 1

    def check_stage(self, stage: int | None) -> int:
        """``stage`` (``None``: the last one this model has) after checking the model has it."""
        if stage is None:
            return self.last_stage
        if stage not in STAGES:
            raise ConfigError(f"LP-Net stage must be one of {STAGES}, got {stage}")
        if stage > self.last_stage:
            raise ConfigError(f"stage {stage} needs use_lnet{' and use_pnet' * (stage == 3)}; "
                              f"this model was built with use_lnet={self.use_lnet}, "
                              f"use_pnet={self.use_pnet}")
        return stage

    def needs_landmarks(self, stage: int | None = None) -> bool:
        """True when ``stage`` runs P-Net, whose input is the landmarks."""
        return self.check_stage(stage) == 3

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """(N, k, C) local features in scan order."""
        fmap = self.stem(image)
        local = fmap.flatten(2).transpose(1, 2)
        return local[:, self.scan_index]

    def forward_head(self, local: torch.Tensor, landmarks: torch.Tensor | None = None,
                     stage: int | None = None) -> dict[str, torch.Tensor]:
        """The head of training stage ``stage`` on the local features: the linear head (1),
        L-Net (2), L-Net + P-Net on ``landmarks`` (3)."""
        stage = self.check_stage(stage)
        f_au = local.mean(1)
        out = {"appearance_features": f_au}
        if stage == 1:
            logits = self.fc(f_au)
        else:
            logits = torch.cat([head(lstm(local)[0]).mean(1)
                                for lstm, head in zip(self.lstms, self.lstm_out)], dim=1)
        if stage == 3:
            if landmarks is None:
                raise ConfigError("LP-Net stage 3 (P-Net) needs a landmarks input (N, 68, 2); "
                                  "use mean_shape_68() when no landmark detector is available")
            f_s = self.pnet_hidden(normalize_landmarks(landmarks, self.input_size_px))
            logits = logits + self.pnet_out(f_s)
            out["shape_features"] = f_s
        out["au_logits"] = logits
        return out

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor | None = None,
                stage: int | None = None) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(image), landmarks, stage)


# Variants (create_model's names): option overrides of LPNet's defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    # the paper's LP-Net: ResNet-34 stem, 224 px, one LSTM per AU, P-Net (BP4D's 12 AUs)
    "lp_net": {},
    # Jetson-sized for 112 px gray faces: ResNet-18, small stem (7x7 grid at 112)
    "lp_net_r18_112": {"depth": 18, "stem": "small", "input_size_px": 112},
    # tests: ResNet-18 at width 1/8, 64 px (4x4 grid), hidden 8
    "lp_net_tiny": {"depth": 18, "width": 0.125, "stem": "small", "input_size_px": 64,
                    "lstm_hidden": 8, "pnet_hidden": 16},
}


def build(au_names: list[str] | None = None, **config: Any) -> LPNet:
    """An LP-Net from keyword options; ``au_names`` default: BP4D's 12 AUs."""
    if au_names is None:
        from aue_edge.data.knowledge import BP4D_AUS

        au_names = BP4D_AUS
    return LPNet(au_names=au_names, **config)
