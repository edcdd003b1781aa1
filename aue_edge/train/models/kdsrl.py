"""Knowledge-driven self-supervised representation learning for AU recognition (Chang & Wang,
CVPR 2022; "KDSRL" here), an AU detector of the train stage.

Architecture (paper facts; ``../shared/SEED_FACTS.md`` §4):

- **Encoder f**: ResNet-50 up to conv4_x (1024 channels, 14x14 at 224 px), then RoIAlign of the
  eight facial judgment areas (``aue_edge.data.knowledge.FACIAL_AREAS`` / ``area_boxes``) ->
  one 4096-d feature per area (2x2 RoI bins x 1024 channels).
- **Projection head g**: MLP 4096 -> 2048 -> 128, shared by the areas.
- **Predicting component**: one MLP ``phi_qp`` 128 -> 1024 -> 128 per predictor edge (area q
  predicts area p; ``AREA_PREDICTOR_EDGES``, a documented hypothesis of 26 arrows).
- **Self-supervised losses** (``aue_edge.train.au.losses.kdsrl_ssl_loss``): inter-area SupCon +
  0.1 x intra-area NT-Xent (tau 0.07), weighted alpha = 0.01, plus beta = 1 x the predictors'
  cosine loss.
- **AU classifiers**: one MLP (1024, 128) per AU group, reading the concatenated features of
  the group's areas (``AU_GROUPS``), trained with f frozen ("linear" evaluation) or fine-tuned.

Choices the paper leaves open (configurable):

- RoI size 2x2 (4096 = 2 x 2 x 1024), sampling ratio 2, ``aligned=True`` pixel convention.
- RoIAlign is written in plain torch as a linear map (bilinear weights of the sampling points,
  averaged per bin) applied with one matrix product; it is exact RoIAlign and exports to ONNX
  MatMul. For deployment the boxes are **fixed**: faces are aligned to one template at the edge,
  so the boxes come from ``mean_shape_68()`` on the aligned crop and are baked into the graph
  (no landmark input, TensorRT-friendly). Training may pass per-image boxes (data sets with
  landmarks, e.g. BP4D/DISFA fixtures); without landmarks the fixed boxes are used.
- MLPs are Linear + BatchNorm + ReLU + Linear (SimCLR-style heads).
- AUs of the model outside the paper's groups (AUE-CRL's AU5, AU16, AU20 in pseudo-label
  training) get a group of their own on the areas in :data:`EXTRA_AU_AREAS`, chosen by anatomy:
  AU5 upper lid raiser -> both brow-eye areas; AU16 lower lip depressor -> mouth, chin; AU20 lip
  stretcher -> both cheeks, mouth.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aue_edge.core.errors import ConfigError
from aue_edge.train.au.backbone import ResNetTrunk

EXTRA_AU_AREAS: dict[str, tuple[int, ...]] = {"AU5": (1, 2), "AU16": (6, 7), "AU20": (4, 5, 6)}


def roi_align_weights(boxes: torch.Tensor, feature_size: tuple[int, int], spatial_scale: float,
                      roi_size: int = 2, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign as a matrix: ``(B, R * roi_size**2, H * W)`` interpolation weights.

    ``boxes`` (B, R, 4) are x1, y1, x2, y2 in input pixels; ``spatial_scale`` maps them to the
    feature map (1 / stride). ``aligned=True`` convention (pixel centres at +0.5): a bin's value
    is the mean of ``sampling_ratio**2`` bilinear samples; samples outside (-1, size) count as 0.
    """
    feat_h, feat_w = feature_size
    b, r, _ = boxes.shape
    box = boxes.to(torch.float32) * spatial_scale - 0.5
    x1, y1, x2, y2 = box.unbind(-1)
    bin_w = (x2 - x1) / roi_size
    bin_h = (y2 - y1) / roi_size
    steps = (torch.arange(roi_size * sampling_ratio, dtype=torch.float32, device=boxes.device)
             + 0.5) / sampling_ratio                                 # in bin units
    ys = y1[..., None] + steps * bin_h[..., None]                     # (B, R, S)
    xs = x1[..., None] + steps * bin_w[..., None]

    def axis_weights(coord: torch.Tensor, size: int) -> torch.Tensor:
        """(B, R, S, size) 1-D linear-interpolation weights of each sample coordinate."""
        valid = (coord >= -1.0) & (coord <= size)
        c = coord.clamp(min=0.0)
        low = c.floor().clamp(max=size - 1)
        c = torch.where(low >= size - 1, low, c)
        frac = c - low
        high = (low + 1).clamp(max=size - 1)
        grid = torch.arange(size, dtype=torch.float32, device=coord.device)
        w = ((grid == low[..., None]) * (1 - frac)[..., None]
             + (grid == high[..., None]) * frac[..., None])
        return w * valid[..., None]

    wy = axis_weights(ys, feat_h).view(b, r, roi_size, sampling_ratio, feat_h).mean(3)
    wx = axis_weights(xs, feat_w).view(b, r, roi_size, sampling_ratio, feat_w).mean(3)
    # separable: weight(bin_y, bin_x, y, x) = wy(bin_y, y) * wx(bin_x, x)
    w = wy[:, :, :, None, :, None] * wx[:, :, None, :, None, :]
    return w.reshape(b, r * roi_size * roi_size, feat_h * feat_w)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def au_groups_for(au_names: tuple[str, ...]) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """The paper's AU groups restricted to ``au_names`` (+ one group per uncovered AU)."""
    from aue_edge.data.knowledge import AU_GROUPS, AU_TO_AREAS

    groups = []
    covered: set[str] = set()
    for areas, aus in AU_GROUPS:
        present = tuple(a for a in aus if a in au_names)
        if present:
            groups.append((tuple(areas), present))
            covered.update(present)
    for au in au_names:
        if au in covered:
            continue
        areas = AU_TO_AREAS.get(au, EXTRA_AU_AREAS.get(au))
        if areas is None:
            raise ConfigError(f"{au} has no facial areas: it is in neither the paper's AU groups "
                              f"nor EXTRA_AU_AREAS; add it to kdsrl.EXTRA_AU_AREAS")
        groups.append((tuple(areas), (au,)))
    return groups


class KDSRL(nn.Module):
    """``forward(image, boxes=None) -> dict(au_logits)`` (:mod:`aue_edge.train.models.outputs`),
    i.e. ``forward_head(forward_features(image, boxes))``; ``ssl_forward`` pre-trains."""

    def __init__(self, au_names: tuple[str, ...] | list[str], depth: int = 50, width: float = 1.0,
                 stem: str = "imagenet", input_size_px: int = 224, roi_size: int = 2,
                 sampling_ratio: int = 2, proj_hidden: int = 2048, proj_dim: int = 128,
                 pred_hidden: int = 1024, classifier_hidden: tuple[int, int] | list[int] = (1024,
                                                                                          128),
                 fixed_boxes: list[list[float]] | None = None) -> None:
        super().__init__()
        from aue_edge.data.knowledge import AREA_PREDICTOR_EDGES, FACIAL_AREAS

        if not au_names:
            raise ConfigError("KDSRL needs at least one AU name")
        if roi_size < 1 or sampling_ratio < 1 or len(classifier_hidden) != 2:
            raise ConfigError("roi_size and sampling_ratio must be >= 1; classifier_hidden needs "
                              "2 widths (the paper's MLP is 1024, 128)")
        self.num_areas = len(FACIAL_AREAS)
        if fixed_boxes is None:
            fixed_boxes = default_area_boxes(input_size_px).tolist()
        if np.shape(fixed_boxes) != (self.num_areas, 4):
            raise ConfigError(f"fixed_boxes must be {self.num_areas} x 4 (x1, y1, x2, y2 in input "
                              f"pixels), got shape {np.shape(fixed_boxes)}")
        self.config = dict(au_names=list(au_names), depth=depth, width=width, stem=stem,
                           input_size_px=input_size_px, roi_size=roi_size,
                           sampling_ratio=sampling_ratio, proj_hidden=proj_hidden,
                           proj_dim=proj_dim, pred_hidden=pred_hidden,
                           classifier_hidden=list(classifier_hidden),
                           fixed_boxes=[[float(v) for v in box] for box in fixed_boxes])
        self.au_names = tuple(au_names)
        self.input_size_px = (input_size_px, input_size_px)
        self.roi_size, self.sampling_ratio = roi_size, sampling_ratio
        self.encoder = ResNetTrunk(depth, width, stem, stages=3)
        self.feature_size = self.encoder.output_size(self.input_size_px)
        self.spatial_scale = self.feature_size[0] / input_size_px
        self.area_dim = self.encoder.channels * roi_size * roi_size
        boxes = torch.tensor(fixed_boxes, dtype=torch.float32)[None]
        self.register_buffer("fixed_roi_weights",
                             roi_align_weights(boxes, self.feature_size, self.spatial_scale,
                                               roi_size, sampling_ratio)[0], persistent=False)
        self.projector = _mlp(self.area_dim, proj_hidden, proj_dim)
        self.edges = tuple(AREA_PREDICTOR_EDGES)
        self.predictors = nn.ModuleList(_mlp(proj_dim, pred_hidden, proj_dim) for _ in self.edges)
        self.groups = au_groups_for(self.au_names)
        self.classifiers = nn.ModuleList(
            nn.Sequential(nn.Linear(len(areas) * self.area_dim, classifier_hidden[0]),
                          nn.BatchNorm1d(classifier_hidden[0]), nn.ReLU(inplace=True),
                          nn.Linear(classifier_hidden[0], classifier_hidden[1]),
                          nn.BatchNorm1d(classifier_hidden[1]), nn.ReLU(inplace=True),
                          nn.Linear(classifier_hidden[1], len(aus)))
            for areas, aus in self.groups)
        # group outputs are concatenated in group order; this gather puts them in au_names order
        flat = [au for _areas, aus in self.groups for au in aus]
        self.register_buffer("output_order", torch.tensor([flat.index(a) for a in self.au_names]),
                             persistent=False)

    def forward_features(self, image: torch.Tensor, boxes: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """(N, 8, area_dim) RoIAlign features; ``boxes`` (N, 8, 4) input pixels or fixed."""
        fmap = self.encoder(image)
        n, c = fmap.shape[:2]
        flat = fmap.flatten(2)                                          # (N, C, HW)
        if boxes is None:
            pooled = torch.matmul(self.fixed_roi_weights, flat.transpose(1, 2))   # (N, R*P, C)
        else:
            weights = roi_align_weights(boxes, self.feature_size, self.spatial_scale,
                                        self.roi_size, self.sampling_ratio)
            pooled = torch.bmm(weights, flat.transpose(1, 2))
        bins = self.roi_size * self.roi_size
        # (N, R, P, C) -> (N, R, C, P): channel-major flattening, as RoIAlign's (C, h, w) output
        return pooled.view(n, self.num_areas, bins, c).transpose(2, 3).reshape(
            n, self.num_areas, c * bins)

    def ssl_forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[int, list[torch.Tensor]]]:
        """Projections (N, 8, proj_dim) and predictions {target area: [(N, proj_dim), ...]}."""
        feats = self.forward_features(image, boxes)
        n = feats.shape[0]
        z = self.projector(feats.reshape(n * self.num_areas, -1)).view(n, self.num_areas, -1)
        predictions: dict[int, list[torch.Tensor]] = {}
        for (source, target), predictor in zip(self.edges, self.predictors):
            predictions.setdefault(target, []).append(predictor(z[:, source]))
        return z, predictions

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-AU-group classifiers on the area features, outputs in ``au_names`` order."""
        logits = torch.cat([clf(feats[:, list(areas)].flatten(1))
                            for (areas, _aus), clf in zip(self.groups, self.classifiers)], 1)
        return {"au_logits": logits[:, self.output_order]}

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(image, boxes))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def ssl_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.projector.parameters(),
                *self.predictors.parameters()]


def default_area_boxes(input_size_px: int) -> np.ndarray:
    """(8, 4) area boxes of the mean 68-point shape on an aligned ``input_size_px`` crop."""
    from aue_edge.edge.face.landmarks import mean_shape_68
    from aue_edge.data.knowledge import area_boxes

    landmarks = mean_shape_68() * np.array([input_size_px, input_size_px], dtype=np.float64)
    return area_boxes(landmarks, (input_size_px, input_size_px))


# Variants (create_model's names): option overrides of KDSRL's defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    # the paper's setting: ResNet-50 to conv4_x, 224 px, 2x2 RoIs (4096-d per area)
    "kdsrl": {},
    # Jetson-sized: ResNet-18 to stage 3 (256 ch, 14x14 at 112 px, small stem)
    "kdsrl_r18_112": {"depth": 18, "stem": "small", "input_size_px": 112, "proj_hidden": 512,
                      "pred_hidden": 256, "classifier_hidden": [256, 64]},
    # tests: ResNet-18 at width 1/8 to stage 3 (32 ch), 64 px, small heads
    "kdsrl_tiny": {"depth": 18, "width": 0.125, "stem": "small", "input_size_px": 64,
                   "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 16,
                   "classifier_hidden": [16, 8]},
}


def build(au_names: list[str] | None = None, **config: Any) -> KDSRL:
    """A KDSRL model from keyword options; ``au_names`` default: BP4D's 12 AUs."""
    if au_names is None:
        from aue_edge.data.knowledge import BP4D_AUS

        au_names = BP4D_AUS
    return KDSRL(au_names=au_names, **config)
