"""A ResNet trunk cut after a given stage, for the AU detectors (train stage, PyTorch).

LP-Net uses all four ResNet stages (512x7x7 at 224 px), GTLE-Net's GEE and KDSRL's encoder are cut
at the stride-16 stage (16x16 at 256 px, 14x14 at 224 px). The stages after the cut are removed,
so neither their compute nor their weights exist. Built on the shared
:class:`aue_edge.train.models.resnet.ResNet`, so its state-dict names (torchvision layout) and
initialisation are the same as every other model's.
"""
from __future__ import annotations

import torch
from torch import nn

from aue_edge.core.errors import ConfigError
from aue_edge.train.models.resnet import ResNet


class ResNetTrunk(nn.Module):
    """``ResNet(depth, width, stem)`` up to and including ``layer{stages}``; forward -> last map."""

    def __init__(self, depth: int = 18, width: float = 1.0, stem: str = "imagenet",
                 stages: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        if stages not in (1, 2, 3, 4):
            raise ConfigError(f"a ResNet trunk keeps 1 to 4 stages, got {stages}")
        self.resnet = ResNet(depth=depth, width=width, stem=stem, in_chans=in_chans)
        for i in range(stages + 1, 5):
            delattr(self.resnet, f"layer{i}")
        self.stages = stages
        self.channels = self.resnet.feature_info[stages - 1].channels
        self.stride = self.resnet.feature_info[stages - 1].stride

    def output_size(self, input_size_px: tuple[int, int]) -> tuple[int, int]:
        return self.resnet.feature_sizes(input_size_px)[self.stages - 1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        out = []
        for i in range(self.stages):
            x = getattr(r, f"layer{i + 1}")(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]
