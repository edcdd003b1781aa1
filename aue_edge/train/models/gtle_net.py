"""GTLE-Net: AU detection by transferring a global expression embedding (GEE) into local AU
attention (LAM), an AU detector of the train stage.

Architecture (paper facts; ``../shared/SEED_FACTS.md`` §3):

- **GEE** (global expression encoder): a CNN whose classifier is replaced by a linear layer and
  L2 normalisation, giving a 16-d expression embedding; pre-trained with the two-sided triplet
  loss on expression-similarity triplets (``aue_edge.train.au.triplets``: FEC cannot be
  obtained, FER+ vote distributions stand in). The trunk is cut at its 16x16 stage (256 px
  input) to give ``h``, the input of the LAM.
- **LAM**: the AU feature-map extractor ``E_a`` (residual blocks + an upsampling trunk back to
  the input size, then N+1 heads conv + activation -> ``f^k`` 3xHxW) and the AU-mask extractor
  ``E_m`` (N+1 sigmoid maps 1xHxW, the last one the background); ``c^k = m^k * f^k``.
- **Reconstruction** ``D_r``: the image rebuilt from all N+1 ``c^k`` (``L_rec`` pixel MSE,
  weighted 0.001 in ``L = BCE + 0.001 L_rec``).
- **Per-AU classifiers** ``g^i``: 5 conv blocks (k7, s2, p3; 16/32/64/128/256 channels; BN +
  ELU) -> global average pooling -> 1x1 conv -> sigmoid, on ``c^i``.

Choices the paper leaves open or that cannot be reproduced here (configurable):

- The GEE trunk is a ResNet (default ResNet-34, ImageNet stem: 256 px -> 16x16 at stage 3),
  not InceptionResnetV1 (no pretrained weights can be obtained here and the paper's cut point
  is unclear for it). The embedding is computed from the full trunk (stage 4, global average
  pooling, linear, L2 normalisation); ``h`` is the stride-16 stage.
- ``E_a``: ``lam_res_blocks`` residual blocks at ``lam_channels`` on ``h``, then x2 upsampling
  blocks (nearest + conv 3x3 + BN + ReLU, channels halved down to 16) until the input size.
  ``E_m`` has the same upsampling trunk of its own. The ``f^k`` heads end in a sigmoid so that
  ``f^k`` lives in pixel range [0, 1]; ``D_r`` (conv 3x3 + ReLU + conv 3x3 + sigmoid) rebuilds
  the input image in [0, 1] (the normalised input is mapped back with the card's mean/std).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aue_edge.core.errors import ConfigError
from aue_edge.train.au.backbone import ResNetTrunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def _kaiming_init(module: nn.Module) -> None:
    """The paper's initialisation of everything but the GEE: Kaiming-normal convolutions (fan
    out, ReLU gain), zero biases, unit batch-norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
                                  nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _upsampling_trunk(in_ch: int, channels: int, num_up: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [_conv_bn_relu(in_ch, channels)]
    ch = channels
    for _ in range(num_up):
        out_ch = max(16, ch // 2)
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_bn_relu(ch, out_ch)]
        ch = out_ch
    return nn.Sequential(*layers), ch


class AuClassifier(nn.Module):
    """GTLE-Net's g^i: 5 x (conv k7 s2 p3 + BN + ELU) -> GAP -> 1x1 conv -> one logit."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for ch in channels:
            layers += [nn.Conv2d(in_ch, ch, 7, 2, 3, bias=False), nn.BatchNorm2d(ch), nn.ELU()]
            in_ch = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(in_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.head(pooled).flatten(1)


class GTLENet(nn.Module):
    """``forward(image) -> dict(au_logits, au_masks, reconstruction, expr_embedding)``
    (:mod:`aue_edge.train.models.outputs`), i.e. ``forward_head(forward_features(image))``;
    ``reconstruction_target(image)`` is what ``reconstruction`` rebuilds."""

    def __init__(self, au_names: tuple[str, ...] | list[str], input_size_px: int = 256,
                 gee_depth: int = 34, gee_width: float = 1.0, gee_stem: str = "imagenet",
                 embedding_dim: int = 16, lam_channels: int = 128, lam_res_blocks: int = 2,
                 classifier_channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256),
                 mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
                 std: tuple[float, ...] | list[float] = IMAGENET_STD) -> None:
        super().__init__()
        if not au_names:
            raise ConfigError("GTLE-Net needs at least one AU name")
        if embedding_dim < 1 or lam_channels < 1 or lam_res_blocks < 0:
            raise ConfigError("embedding_dim and lam_channels must be >= 1, lam_res_blocks >= 0")
        if len(classifier_channels) != 5:
            raise ConfigError(f"the per-AU classifier has 5 conv blocks; classifier_channels "
                              f"needs 5 values, got {list(classifier_channels)}")
        self.config = dict(au_names=list(au_names), input_size_px=input_size_px,
                           gee_depth=gee_depth, gee_width=gee_width, gee_stem=gee_stem,
                           embedding_dim=embedding_dim, lam_channels=lam_channels,
                           lam_res_blocks=lam_res_blocks,
                           classifier_channels=list(classifier_channels),
                           mean=list(mean), std=list(std))
        self.au_names = tuple(au_names)
        self.input_size_px = (input_size_px, input_size_px)
        num_maps = len(au_names) + 1   # N AUs + background
        self.gee = ResNetTrunk(gee_depth, gee_width, gee_stem, stages=4)
        self.embed = nn.Linear(self.gee.channels, embedding_dim)
        h_ch = self.gee.resnet.feature_info[2].channels
        h_size = self.gee.resnet.feature_sizes(self.input_size_px)[2][0]
        num_up = math.log2(input_size_px / h_size)
        if h_size * 2 ** round(num_up) != input_size_px:
            raise ConfigError(f"input_size_px {input_size_px} must be the GEE's stride-16 map "
                              f"({h_size} px) times a power of 2")
        num_up = round(num_up)
        self.ea_res = nn.Sequential(_conv_bn_relu(h_ch, lam_channels),
                                    *[_ResBlock(lam_channels) for _ in range(lam_res_blocks)])
        self.ea_up, ea_ch = _upsampling_trunk(lam_channels, lam_channels, num_up)
        self.ea_heads = nn.Conv2d(ea_ch, 3 * num_maps, 3, 1, 1)
        self.em_up, em_ch = _upsampling_trunk(h_ch, lam_channels, num_up)
        self.em_head = nn.Conv2d(em_ch, num_maps, 3, 1, 1)
        self.decoder = nn.Sequential(nn.Conv2d(3 * num_maps, 32, 3, 1, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(32, 3, 3, 1, 1))
        self.classifiers = nn.ModuleList(AuClassifier(tuple(classifier_channels))
                                         for _ in range(len(au_names)))
        for module in (self.ea_res, self.ea_up, self.ea_heads, self.em_up, self.em_head,
                       self.decoder, self.classifiers):
            _kaiming_init(module)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def embedding(self, image: torch.Tensor) -> torch.Tensor:
        """The GEE's L2-normalised expression embedding (N, embedding_dim)."""
        return self._embed(self.gee(image))

    def _embed(self, last_map: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(last_map.mean(dim=(2, 3))), dim=1)

    def forward_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The GEE trunk's four stage maps: ``h`` (the stride-16 one) feeds the LAM, the last
        one the embedding."""
        return self.gee.forward_stages(image)

    def forward_head(self, stages: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        h = stages[2]
        num_maps = len(self.au_names) + 1
        feats = torch.sigmoid(self.ea_heads(self.ea_up(self.ea_res(h))))
        n, _, height, width = feats.shape                                     # the input size
        feats = feats.view(n, num_maps, 3, height, width)                     # f^k
        masks = torch.sigmoid(self.em_head(self.em_up(h)))                    # m^k
        attended = feats * masks[:, :, None]                                   # c^k
        logits = torch.cat([clf(attended[:, i]) for i, clf in enumerate(self.classifiers)], 1)
        reconstruction = torch.sigmoid(self.decoder(attended.flatten(1, 2)))
        return {
            "au_logits": logits,
            "reconstruction": reconstruction,
            "au_masks": masks,
            "expr_embedding": self._embed(stages[3]),
        }

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(image))

    def reconstruction_target(self, image: torch.Tensor) -> torch.Tensor:
        """The normalised input mapped back to pixel range [0, 1] with the card's mean/std:
        what D_r's ``reconstruction`` rebuilds (``L_rec``)."""
        return (image * self.std + self.mean).clamp(0.0, 1.0)

    def lam_parameters(self, which: str) -> list[nn.Parameter]:
        """Parameters of one part: ``gee``, ``mask`` (E_m), or ``rest`` (E_a, D_r, g^i)."""
        parts = {"gee": [self.gee, self.embed], "mask": [self.em_up, self.em_head],
                 "rest": [self.ea_res, self.ea_up, self.ea_heads, self.decoder,
                          self.classifiers]}
        if which not in parts:
            raise ConfigError(f"unknown GTLE-Net part {which!r}; choose from {sorted(parts)}")
        return [p for module in parts[which] for p in module.parameters()]


# Variants (create_model's names): option overrides of GTLENet's defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    # the paper's setting: 256 px, 16-d embedding, 16..256-channel per-AU classifiers
    "gtle_net": {},
    # Jetson-sized: ResNet-18 GEE at width 1/2, 128 px, slimmer LAM/classifiers
    "gtle_net_r18_128": {"input_size_px": 128, "gee_depth": 18, "gee_width": 0.5,
                         "lam_channels": 64, "classifier_channels": [8, 16, 32, 64, 128]},
    # tests: ResNet-18 GEE at width 1/8, small stem, 32 px, 8-channel LAM
    "gtle_net_tiny": {"input_size_px": 32, "gee_stem": "small", "gee_depth": 18,
                      "gee_width": 0.125, "lam_channels": 8, "lam_res_blocks": 1,
                      "classifier_channels": [4, 4, 8, 8, 8]},
}


def build(au_names: list[str] | None = None, **config: Any) -> GTLENet:
    """A GTLE-Net from keyword options; ``au_names`` default: BP4D's 12 AUs."""
    if au_names is None:
        from aue_edge.data.knowledge import BP4D_AUS

        au_names = BP4D_AUS
    return GTLENet(au_names=au_names, **config)
