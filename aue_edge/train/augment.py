"""Batch preprocessing and augmentation on the training device (GPU or CPU). Train stage.

The training set lives on the device as one uint8 tensor (FER+ train is 58 MB), so a batch is
indexed, augmented and normalised there with no data-loader workers and no host copies.

:func:`preprocess` is the torch twin of the edge's ``aue_edge.edge.preprocess.to_model_input``
(THE preprocessing every stage shares): bilinear resize with half-pixel centres (what
``cv2.resize(..., INTER_LINEAR)`` does; ``align_corners=False``, no antialiasing), rounded back
to whole grey levels as cv2 does for uint8, grey replicated to three channels, ``/255``, then
``(x - mean) / std`` per channel. Evaluating a checkpoint here and its ONNX export through the
edge preprocessing therefore sees the same numbers (the parity tests check it).

:class:`GpuAugment` folds the resize into one random similarity warp per image (``affine_grid``
+ ``grid_sample``): horizontal flip, rotation, scale and shift, then random erasing. With the
identity warp it is exactly :func:`preprocess` before rounding. See the AUE-CRL model docstring
for why a horizontal flip is consistent with its static, mirror-paired AU crops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aue_edge.core.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Random warp and erasing applied per training image (FER+-sized faces)."""

    flip_prob: float = 0.5
    max_rotation_deg: float = 10.0
    max_shift_frac: float = 0.08       # of the image side, each axis
    scale_min: float = 0.9
    scale_max: float = 1.1
    erase_prob: float = 0.25           # random erasing (Zhong et al. 2020) after the warp
    erase_area_min: float = 0.02
    erase_area_max: float = 0.15

    def __post_init__(self) -> None:
        problems = []
        for name in ("flip_prob", "erase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.scale_min <= self.scale_max:
            problems.append(f"need 0 < scale_min <= scale_max, got {self.scale_min}, "
                            f"{self.scale_max}")
        if not 0.0 <= self.erase_area_min <= self.erase_area_max < 1.0:
            problems.append(f"need 0 <= erase_area_min <= erase_area_max < 1, got "
                            f"{self.erase_area_min}, {self.erase_area_max}")
        if self.max_rotation_deg < 0 or self.max_shift_frac < 0:
            problems.append("max_rotation_deg and max_shift_frac must be >= 0")
        if problems:
            raise ConfigError("invalid augmentation config: " + "; ".join(problems))


def _normalise(gray01: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """(N, 1, H, W) grey in [0, 1] -> (N, 3, H, W) normalised per channel (gray3)."""
    mean_t = gray01.new_tensor(mean).view(1, 3, 1, 1)
    std_t = gray01.new_tensor(std).view(1, 3, 1, 1)
    return (gray01.expand(-1, 3, -1, -1) - mean_t) / std_t


def _as_gray_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ConfigError(f"expected grey uint8 images of shape (N, H, W), got "
                          f"{tuple(images.shape)} {images.dtype}")
    return images.unsqueeze(1).float()


def preprocess(images: torch.Tensor, size_px: tuple[int, int], mean: tuple, std: tuple
               ) -> torch.Tensor:
    """uint8 (N, H, W) grey faces -> float32 (N, 3, h, w) model input, as the edge does it."""
    x = _as_gray_batch(images)
    if tuple(x.shape[-2:]) != tuple(size_px):
        x = F.interpolate(x, size=tuple(size_px), mode="bilinear", align_corners=False,
                          antialias=False).round().clamp_(0, 255)
    return _normalise(x / 255.0, mean, std)


def warp_boxes(boxes: torch.Tensor, theta: torch.Tensor, size_px: tuple[int, int]
               ) -> torch.Tensor:
    """Boxes (N, R, 4) in pixels of a ``size_px`` image, moved by the ``affine_grid`` warps
    ``theta`` (N, 2, 3; output -> input coordinates in [-1, 1]): the box around the moved
    corners."""
    h, w = size_px
    scale = boxes.new_tensor([w / 2.0, h / 2.0])
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))],
                          2)                                          # (N, R, 4, 2) pixels
    src = corners / scale - 1.0                                       # input coordinates
    a, t = theta[:, :, :2], theta[:, :, 2]
    inv = torch.linalg.inv(a)                                         # input -> output
    out = torch.einsum("nij,nrkj->nrki", inv, src - t[:, None, None, :])
    out = (out + 1.0) * scale
    return torch.cat([out.amin(2), out.amax(2)], -1)


class GpuAugment:
    """Random similarity warp + resize in one ``grid_sample``, then random erasing."""

    def __init__(self, cfg: AugmentConfig, size_px: tuple[int, int], mean: tuple,
                 std: tuple) -> None:
        self.cfg, self.size_px, self.mean, self.std = cfg, tuple(size_px), mean, std

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 boxes: torch.Tensor | None = None
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised inputs; with ``boxes`` (N, R, 4: x1, y1, x2, y2 in pixels of
        the ``size_px`` crop) also the boxes moved by each image's warp (the axis-aligned box
        around the warped corners; a flip keeps each box on the same facial content)."""
        x = _as_gray_batch(images) / 255.0
        n, dev = x.shape[0], x.device
        cfg = self.cfg

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device=dev, generator=generator) * (high - low) + low

        angle = uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg) * (math.pi / 180.0)
        scale = uniform(cfg.scale_min, cfg.scale_max)
        # affine_grid maps output to input coordinates in [-1, 1]: a zoom-in by s samples
        # a region 1/s as large; a shift of f of the side is 2f in normalised units.
        inv = 1.0 / scale
        cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
        flip = torch.where(torch.rand(n, device=dev, generator=generator) < cfg.flip_prob,
                           -1.0, 1.0)
        tx = uniform(-2 * cfg.max_shift_frac, 2 * cfg.max_shift_frac)
        ty = uniform(-2 * cfg.max_shift_frac, 2 * cfg.max_shift_frac)
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                             torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, (n, 1, *self.size_px), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = _normalise(x, self.mean, self.std)
        if cfg.erase_prob > 0:
            x = self._erase(x, generator)
        if boxes is None:
            return x
        return x, warp_boxes(boxes, theta, self.size_px)

    def _erase(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        rand = lambda: torch.rand(n, device=dev, generator=generator)  # noqa: E731
        area = (rand() * (self.cfg.erase_area_max - self.cfg.erase_area_min)
                + self.cfg.erase_area_min) * h * w
        aspect = torch.exp((rand() - 0.5) * 2 * math.log(3.0))   # 1/3 .. 3
        eh = torch.sqrt(area * aspect).clamp(1, h)
        ew = torch.sqrt(area / aspect).clamp(1, w)
        y0 = rand() * (h - eh)
        x0 = rand() * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        inside = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
                  & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)))
        apply = (rand() < self.cfg.erase_prob).view(n, 1, 1)
        # Erased pixels become 0 after normalisation, i.e. the data mean.
        return x.masked_fill((inside & apply).unsqueeze(1), 0.0)
