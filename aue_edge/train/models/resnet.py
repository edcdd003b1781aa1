"""ResNet backbones in plain torch (no torchvision on this host), shared by every model family.

Train stage only. ResNet-18/34/50/101 (He et al., CVPR 2016) with two knobs a deployment needs:

* ``width`` multiplies every stage's channel count (1.0 = the published 64/128/256/512 base), so
  a Jetson-sized model keeps the topology of the paper's network;
* ``stem``: ``"imagenet"`` is the published 7x7/2 convolution + 3x3/2 max-pool (stride 4, the
  paper's 224 px input gives 56/28/14/7 feature maps); ``"small"`` drops the max-pool (stride 2),
  so a 112 px input gives the same 56/28/14/7 maps. FER+ faces are 48x48 px, so a 112 px input
  with the small stem keeps the paper's feature-map geometry at a quarter of its 224 px cost.

Module names follow torchvision's ``resnet.py`` layout (``conv1``, ``bn1``, ``layer1.0.conv1``,
``downsample.0``...), so a torchvision-format state dict loads with
:func:`load_torchvision_state_dict` when a user has one (``--pretrained PATH``). No pretrained
weights can be downloaded here; training on this host is from scratch.

``forward_features`` returns the four stage outputs; ``feature_info`` gives their channels and
strides, which the AUE-CRL heads (expression fusion, AU de-convolution path) are sized from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aue_edge.core.errors import ConfigError, ModelFileError

# depth -> (block kind, blocks per stage), as in He et al. 2016, Table 1.
RESNET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STEMS = ("imagenet", "small")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 convolution (torchvision's "ResNet v1.5").
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: its module name, channels and stride relative to the input."""

    module: str
    channels: int
    stride: int


class ResNet(nn.Module):
    """A ResNet trunk without its classifier; ``forward_features`` gives the 4 stage maps."""

    def __init__(self, depth: int = 18, width: float = 1.0, stem: str = "imagenet",
                 in_chans: int = 3) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ConfigError(f"ResNet depth {depth} is not supported; choose one of "
                              f"{sorted(RESNET_LAYOUTS)}")
        if stem not in STEMS:
            raise ConfigError(f"ResNet stem {stem!r} is not supported; choose one of {STEMS}")
        if not 0.125 <= width <= 4.0:
            raise ConfigError(f"ResNet width multiplier must be in [0.125, 4], got {width}")
        kind, blocks = RESNET_LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth, self.width, self.stem = depth, width, stem
        base = max(8, int(round(64 * width)))
        self.conv1 = nn.Conv2d(in_chans, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        in_ch = base
        stride_so_far = 4 if stem == "imagenet" else 2
        info = []
        for i, n_blocks in enumerate(blocks):
            planes = base * 2 ** i
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(n_blocks):
                layers.append(block(in_ch, planes, stride if b == 0 else 1))
                in_ch = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            stride_so_far *= stride
            info.append(FeatureInfo(f"layer{i + 1}", in_ch, stride_so_far))
        self.feature_info = tuple(info)
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: each block starts as the identity,
        # which makes from-scratch training of deep variants markedly more stable.
        for m in self.modules():
            last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
            if last_bn is not None:
                nn.init.zeros_(last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)

    def feature_sizes(self, input_size_px: tuple[int, int]) -> list[tuple[int, int]]:
        """Spatial size (h, w) of each stage output for an input of ``input_size_px``."""
        return resnet_feature_sizes(input_size_px, self.stem)


def resnet_feature_sizes(input_size_px: tuple[int, int], stem: str) -> list[tuple[int, int]]:
    """(h, w) of the four stage outputs of a ResNet with ``stem`` for an input size."""
    h, w = input_size_px
    h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
    if stem == "imagenet":
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    sizes = []
    for i in range(4):
        if i > 0:
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        sizes.append((h, w))
    return sizes


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def load_torchvision_state_dict(backbone: ResNet, path: str | Path) -> list[str]:
    """Load a torchvision-format ResNet state dict (``resnet18-*.pth`` etc.) into ``backbone``.

    The classifier (``fc.*``) is ignored; every other tensor must be present with the same
    shape (so ``width`` must be 1.0 and the depth must match). Returns the ignored keys.
    Raises :class:`ModelFileError` naming the first mismatching tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"pretrained weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ModelFileError(f"pretrained weights {path} cannot be read ({type(exc).__name__}: "
                             f"{exc}); expected a torchvision ResNet state dict") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                        dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} holds a {type(state).__name__}, expected a state dict")
    ignored = sorted(k for k in state if k.startswith("fc."))
    wanted = backbone.state_dict()
    given = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    wrong_shape = sorted(k for k in set(wanted) & set(given)
                         if tuple(wanted[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong_shape:
        raise ModelFileError(
            f"{path} does not fit a ResNet-{backbone.depth} (width {backbone.width}, stem "
            f"{backbone.stem}): missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape "
            f"{wrong_shape[:5]}. torchvision weights need width 1.0 and the same depth.")
    backbone.load_state_dict(given, strict=True)
    return ignored
