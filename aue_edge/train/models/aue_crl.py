"""AUE-CRL: AU-Expression Knowledge Constrained Representation Learning (Pu et al.,
arXiv 2012.14587), the default emotion + action-unit model of the product.

Train stage (torch). ``aue export`` turns a trained model into ONNX with two outputs,
``emotion_probs`` (N, E) softmax and ``au_probs`` (N, 17) sigmoid, which the edge pipeline runs.

Architecture (paper, Sec. III; the reference code's differences noted where they matter):

* Backbone: :class:`~aue_edge.train.models.resnet.ResNet` giving four stage maps (56/28/14/7 px
  for the paper's 224 px ResNet-101, and for the shipped 112 px ResNet-18 with the small stem).
* Expression branch (multi-layer fusion): every stage max-pooled to the last stage's size,
  concatenated, LRN, conv3x3 + BN + ReLU, global average pool -> ``f_e`` -> ``pred1``.
* AU branch (inverse fusion): three deconvolutions (k4, s2, p1) back to the first stage's
  resolution, each concatenated with the matching stage and fused by conv3x3 + BN + ReLU, then
  LRN -> the AU map.
* Crop nets: two crops per AU, 34 unshared small nets (conv3x3 + ReLU [+ average pooling] + FC
  + ReLU + dropout), run as one grouped convolution and one batched matmul (identical maths to
  34 separate modules, one kernel each). An AU's feature is the concatenation of its two crops.
* AU head (stage 2): one linear unit per AU (paper) or one shared linear layer over all AU
  features (reference code, ``au_head="shared"``); sigmoid.
* KGAURL: the learnable expression->AU matrix ``W`` (initialised from the prior, clamped to the
  prior bands when building pseudo labels: see :mod:`aue_edge.train.losses`).
* KCAUS: low-rank bilinear attention: ``q = tanh(BN(Linear(f_e)))``, per-AU
  ``k_i = tanh(BN(Linear_i(a_i)))``, score ``relu(Linear(q * k_i))``, softmax over the AUs;
  ``f_a = sum_i alpha_i a_i``; ``pred2 = Linear([f_e, f_a])``. ``attention="mean"`` replaces the
  weights by 1/17 (the paper's "no attention" ablation). ``attention="sigmoid"`` (the default,
  as in the shipped model) scores each AU with an independent gate
  ``g_i = sigmoid(Linear(q * k_i))`` and ``f_a = (1/A) sum_i g_i a_i``: with softmax weights that
  sum to 1 at most one AU can pass the AU-pair loss's 0.5 threshold, so that loss can never act
  (a flaw of the paper's Eq. 5 with Eq. 10-12); independent gates can all be on or off, so the
  pair constraints can act on them.

Crops (design decision): **static crops in aligned coordinates**. The edge pipeline aligns every
face to a fixed 5-point template (the FER+ framing) and FER+ ships no landmarks, so the AU crop
centres are computed once, from the 68-point mean shape placed on that template
(``mean_shape_68()`` -> ``knowledge.crop_centres``), scaled to the AU map, rounded and clamped so
the window stays inside (as the reference code clamps to [12, 44] on its 56 px map). The crops
are then constant slices: they export to ONNX ``Slice`` and build in TensorRT with no landmark
input, no RoiAlign and no GridSample. The centres are stored in the model config, so a
checkpoint rebuilds exactly the crops it was trained with.

Flip augmentation with static crops: a mirrored face puts each region where its mirror image
was. Every AU's two centres are either a left/right mirror pair (AU1, AU2, AU4, AU5, AU6, AU7,
AU9, AU10, AU12, AU15, AU16, AU20) or both on the midline (AU17, AU25, AU26), or inner-lip points
whose mirror lies on the same lip (AU23: 60|62 -> 64|62; AU24: 61|64 -> 63|60) - so after a flip
each crop still covers the same AU's region (of the other side of the face) and the AU targets,
which are per AU and not per side, stay valid. The unshared crop nets simply see both
orientations; no label or crop swap is needed.

Named variants (``create_model(name, **overrides)``):

``aue_crl`` / ``aue_crl_r18``: the shipped model (ResNet-18, width 0.375 (24/48/96/192 channels),
    small stem, 112 px gray3, AU map 16@56, 24x24 crops, crop net conv 16->16 stride 2, 3x3
    average pool, FC 144->64, f_e 192-d, attention dim 96: 3.4 M parameters, ~14 MB FP32,
    about half the CPU time of the same network at width 0.5).
``aue_crl_r18_w050``: the same at width 0.5 (AU map 32, crop conv 32, f_e 256, attention 128;
    6.3 M parameters), the first model trained here.
``aue_crl_r101_paper``: the paper's sizes (ResNet-101, 224 px, AU map 64@56, 24x24 windows,
    conv 64->64, FC 36864->256, 1024-d f_e and attention) - about 330 M parameters.
``aue_crl_baseline``: the backbone baseline of the paper's ablation: the same network with the
    expression branch only (stage 1), no AU branch.
``aue_crl_cpu_tiny``: a very small network for tests and CPU smoke runs (64 px input).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aue_edge.core.errors import ConfigError
from aue_edge.train.models.resnet import STEMS, ResNet, resnet_feature_sizes

BRANCHES = ("full", "expression")
AU_HEADS = ("per_au", "shared")
ATTENTIONS = ("kcaus", "sigmoid", "mean")


@dataclass(frozen=True)
class AueCrlConfig:
    """Every size of the network; a checkpoint stores this (``model.config``) to rebuild it."""

    emotion_labels: tuple[str, ...] = ()
    au_names: tuple[str, ...] = ()
    input_size_px: int = 112
    depth: int = 18
    width: float = 0.375
    stem: str = "small"
    branches: str = "full"
    expr_channels: int = 192          # f_e dimension (reference code: 1024)
    expr_dropout: float = 0.0
    lrn_size: int = 2                 # LRN window (reference code: 2); 0 disables
    au_channels: int = 16             # channels of the AU map (reference code: 64)
    crop_size_px: int = 24            # window on the AU map (paper: 24 on a 56 px map)
    crop_conv_channels: int = 16
    crop_conv_stride: int = 2
    crop_pool_px: int = 3             # average-pool each crop to this size; 0 = no pooling
    crop_fc_dim: int = 64             # per crop; an AU feature is 2x this (paper: 256)
    crop_dropout: float = 0.5
    au_head: str = "per_au"
    attention: str = "sigmoid"        # independent gates (default) | kcaus (paper) | mean
    attention_dim: int = 96           # D of the low-rank bilinear attention (code: 1024)
    attention_dropout: float = 0.5
    # (A, 2, 2) crop centres (x, y) in AU-map pixels; empty -> computed from the aligned
    # mean shape when the model is built (see the module docstring).
    crop_centres: tuple = ()
    # (E, A) prior W: initial values and clamping bands; empty -> knowledge.prior_matrix of
    # prior_table ("reference": AUE-CRL's released table; "emfacs": sadness = 1+4+15).
    prior_table: str = "reference"
    prior_init: tuple = ()
    prior_low: tuple = ()
    prior_high: tuple = ()
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # Plain lists: checkpoints are loaded with weights_only=True, which accepts lists.
        for key in ("emotion_labels", "au_names"):
            out[key] = list(out[key])
        for key in ("crop_centres", "prior_init", "prior_low", "prior_high"):
            out[key] = np.asarray(out[key]).tolist()
        return out


def _nested_tuple(value: Any) -> tuple:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_nested_tuple(v) for v in value)
    return value


def build_config(**kwargs: Any) -> AueCrlConfig:
    """Validate keyword configuration and fill the knowledge-derived defaults."""
    known = {f.name for f in dataclasses.fields(AueCrlConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown AUE-CRL model option(s) {unknown}; known: {sorted(known)}")
    from aue_edge.data import knowledge

    kwargs = dict(kwargs)
    kwargs.setdefault("emotion_labels", knowledge.FERPLUS_LABELS)
    kwargs.setdefault("au_names", knowledge.AUECRL_AUS)
    for key in ("emotion_labels", "au_names", "crop_centres", "prior_init", "prior_low",
                "prior_high"):
        if key in kwargs:
            kwargs[key] = _nested_tuple(kwargs[key])
    cfg = AueCrlConfig(**kwargs)
    problems = []
    if cfg.branches not in BRANCHES:
        problems.append(f"branches must be one of {BRANCHES}, got {cfg.branches!r}")
    if cfg.au_head not in AU_HEADS:
        problems.append(f"au_head must be one of {AU_HEADS}, got {cfg.au_head!r}")
    if cfg.attention not in ATTENTIONS:
        problems.append(f"attention must be one of {ATTENTIONS}, got {cfg.attention!r}")
    if len(cfg.emotion_labels) < 2:
        problems.append(f"emotion_labels needs at least 2 labels, got {cfg.emotion_labels}")
    for name in ("input_size_px", "expr_channels", "au_channels", "crop_size_px",
                 "crop_conv_channels", "crop_conv_stride", "crop_fc_dim", "attention_dim"):
        if int(getattr(cfg, name)) <= 0:
            problems.append(f"{name} must be positive, got {getattr(cfg, name)}")
    if problems:
        raise ConfigError("invalid AUE-CRL config: " + "; ".join(problems))

    if cfg.stem not in STEMS:
        raise ConfigError(f"invalid AUE-CRL config: stem must be one of {STEMS}, got {cfg.stem!r}")
    map_sizes = resnet_feature_sizes((cfg.input_size_px, cfg.input_size_px), cfg.stem)
    _check_geometry(cfg, map_sizes)

    updates: dict[str, Any] = {}
    if cfg.branches == "full":
        au_map_px = map_sizes[0][0]
        if not cfg.crop_centres:
            updates["crop_centres"] = default_crop_centres(cfg.au_names, au_map_px,
                                                           cfg.crop_size_px)
        if not cfg.prior_init:
            init, low, high = knowledge.prior_matrix(cfg.emotion_labels, cfg.au_names,
                                                     cfg.prior_table)
            updates.update(prior_init=_nested_tuple(init.round(6)),
                           prior_low=_nested_tuple(low), prior_high=_nested_tuple(high))
    cfg = dataclasses.replace(cfg, **updates)
    if cfg.branches == "full":
        _check_crops_and_prior(cfg, map_sizes[0][0])
    return cfg


def _check_geometry(cfg: AueCrlConfig, map_sizes: list[tuple[int, int]]) -> None:
    last = map_sizes[-1][0]
    for i, (h, _w) in enumerate(map_sizes):
        if h % last:
            raise ConfigError(
                f"input_size_px={cfg.input_size_px} with stem {cfg.stem!r} gives stage maps "
                f"{[s[0] for s in map_sizes]} px; the expression branch max-pools every stage to "
                f"the last one's size, so each must be a multiple of {last}. Use an input size "
                f"that is a multiple of {32 if cfg.stem == 'imagenet' else 16}.")
        if i < 3 and h != 2 * map_sizes[i + 1][0]:
            raise ConfigError(f"stage maps {[s[0] for s in map_sizes]} px do not halve exactly; "
                              f"the AU branch doubles them back by deconvolution. Use an input "
                              f"size that is a multiple of 32 (imagenet stem) or 16 (small).")


def _check_crops_and_prior(cfg: AueCrlConfig, au_map_px: int) -> None:
    centres = np.asarray(cfg.crop_centres, dtype=np.float64)
    a = len(cfg.au_names)
    if centres.shape != (a, 2, 2):
        raise ConfigError(f"crop_centres must have shape ({a}, 2, 2) (AU, crop, xy), got "
                          f"{centres.shape}")
    half = cfg.crop_size_px // 2
    if cfg.crop_size_px > au_map_px or centres.min() < half or centres.max() > au_map_px - half:
        raise ConfigError(f"crop windows of {cfg.crop_size_px} px around centres in "
                          f"[{centres.min()}, {centres.max()}] do not fit the {au_map_px} px AU "
                          f"map; centres must lie in [{half}, {au_map_px - half}]")
    stride = cfg.crop_conv_stride
    conv_px = (cfg.crop_size_px - 1) // stride + 1
    if cfg.crop_pool_px and conv_px % cfg.crop_pool_px:
        raise ConfigError(f"crop_pool_px={cfg.crop_pool_px} must divide the crop conv output "
                          f"({conv_px} px = crop_size_px {cfg.crop_size_px} / stride {stride})")
    e = len(cfg.emotion_labels)
    for key in ("prior_init", "prior_low", "prior_high"):
        shape = np.shape(getattr(cfg, key))
        if shape != (e, a):
            raise ConfigError(f"{key} must have shape ({e}, {a}) (emotions, AUs), got {shape}")


def default_crop_centres(au_names: tuple[str, ...], au_map_px: int, crop_size_px: int) -> tuple:
    """Crop centres on the AU map from the 68-point mean shape on the FER+ alignment template.

    Rounded to whole pixels (a crop is a slice) and clamped so the ``crop_size_px`` window stays
    inside the map, as the reference code clamps its 56 px centres to [12, 44].
    """
    from aue_edge.edge.face.landmarks import mean_shape_68
    from aue_edge.data.knowledge import crop_centres

    points = np.asarray(mean_shape_68(), dtype=np.float64) * au_map_px
    centres = np.rint(crop_centres(points, au_names))
    half = crop_size_px // 2
    centres = np.clip(centres, half, au_map_px - half).astype(int)
    return _nested_tuple(centres)


class ChannelLRN(nn.Module):
    """Local response normalisation across channels, the same function as
    ``nn.LocalResponseNorm(size)`` (``x / (k + alpha * mean of x^2 over the channel window) **
    beta``, window padded ``size // 2`` before and ``(size - 1) // 2`` after), written with
    Slice, Concat and Add so that the exported graph has static ranks and constant shapes:
    torch's own version squeezes a 5-D tensor, which the legacy exporter turns into a
    shape-dependent ``If`` that TensorRT's ONNX parser rejects, and ONNX's LRN op maps to
    TensorRT's ILRNLayer, which needs an odd window (the reference code's window is 2)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
                 ) -> None:
        super().__init__()
        if size < 1:
            raise ConfigError(f"LRN window must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x * x
        window = square
        for offset in range(-(self.size // 2), (self.size - 1) // 2 + 1):
            k = abs(offset)
            if k == 0:
                continue
            zeros = square[:, :k] * 0.0  # zero channels that keep the graph's shapes static
            shifted = (torch.cat([zeros, square[:, :-k]], dim=1) if offset < 0
                       else torch.cat([square[:, k:], zeros], dim=1))
            window = window + shifted
        return x / (self.k + self.alpha / self.size * window) ** self.beta


class GroupedLinear(nn.Module):
    """``groups`` independent linear layers applied to (N, groups, in) -> (N, groups, out).

    One batched MatMul instead of ``groups`` modules: the same maths as unshared layers, one
    kernel on GPU, one ONNX MatMul.
    """

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        self.reset_parameters()
        self.bias.no_decay = True  # a bias, though 2-D: the trainer skips its weight decay

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])  # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x.transpose(0, 1), self.weight).transpose(0, 1)
        return out + self.bias


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class AueCrl(nn.Module):
    """The AUE-CRL network: ``forward(x, stage) = forward_head(forward_features(x), stage)``.

    ``forward_features`` runs the backbone (its four stage maps); ``forward_head`` computes
    what training stage ``stage`` trains, up to and including that stage's modules:

    ``stage=1``: the expression branch (``expr_features``, ``expr_logits``).
    ``stage=2``: + AU branch, crop nets and AU head (``au_features``, ``au_logits``).
    ``stage=3`` (the default: inference): + KCAUS attention and the fused classifier
    (``attention``, ``fused_logits``).
    ``emotion_logits`` is the final expression output of what ran (pred2 in stage 3, else
    pred1). The keys are those of :mod:`aue_edge.train.models.outputs`. The expression-only
    baseline (``branches="expression"``) has stage 1 only; any stage gives its stage-1 outputs.
    """

    STAGE_MODULES = {
        # Modules each training stage updates (paper Sec. III-D; reference main.py).
        1: ("backbone", "expr_reduce", "expr_head"),
        2: ("au_up", "crop_conv", "crop_fc", "crop_dropout", "au_head", "prior_weight"),
        3: ("fuse_expr", "fuse_au_dropout", "fuse_au", "fuse_au_bn", "attention_fc",
            "fused_head"),
    }

    def __init__(self, cfg: AueCrlConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.config = cfg.to_dict()
        self.backbone = ResNet(cfg.depth, cfg.width, cfg.stem)
        chans = [f.channels for f in self.backbone.feature_info]
        sizes = self.backbone.feature_sizes((cfg.input_size_px, cfg.input_size_px))
        self.pool_kernels = tuple(s[0] // sizes[-1][0] for s in sizes)
        num_e = len(cfg.emotion_labels)
        self.lrn = ChannelLRN(cfg.lrn_size) if cfg.lrn_size else nn.Identity()
        self.expr_reduce = _conv_bn_relu(sum(chans), cfg.expr_channels)
        self.expr_dropout = nn.Dropout(cfg.expr_dropout)
        self.expr_head = nn.Linear(cfg.expr_channels, num_e)
        if cfg.branches == "expression":
            return

        num_au = len(cfg.au_names)
        self.au_up = nn.ModuleList()
        for deep, skip in ((3, 2), (2, 1), (1, 0)):
            # De-convolution back to the shallower stage, concatenated with it, then fused.
            out_ch = cfg.au_channels if skip == 0 else chans[skip]
            self.au_up.append(nn.ModuleDict({
                "deconv": nn.ConvTranspose2d(chans[deep], chans[skip], 4, 2, 1),
                "fuse": _conv_bn_relu(2 * chans[skip], out_ch),
            }))
        self.au_lrn = ChannelLRN(cfg.lrn_size) if cfg.lrn_size else nn.Identity()
        n_crops = 2 * num_au
        self.crop_windows = tuple(
            (int(y) - cfg.crop_size_px // 2, int(x) - cfg.crop_size_px // 2)
            for au in cfg.crop_centres for (x, y) in au)
        self.crop_conv = nn.Sequential(
            nn.Conv2d(n_crops * cfg.au_channels, n_crops * cfg.crop_conv_channels, 3,
                      cfg.crop_conv_stride, 1, groups=n_crops),
            nn.ReLU(inplace=True))
        conv_px = (cfg.crop_size_px - 1) // cfg.crop_conv_stride + 1
        self.crop_pool_kernel = conv_px // cfg.crop_pool_px if cfg.crop_pool_px else 1
        flat_px = cfg.crop_pool_px or conv_px
        self.crop_fc = GroupedLinear(n_crops, cfg.crop_conv_channels * flat_px * flat_px,
                                     cfg.crop_fc_dim)
        self.crop_dropout = nn.Dropout(cfg.crop_dropout)
        au_dim = 2 * cfg.crop_fc_dim
        if cfg.au_head == "per_au":
            self.au_head = GroupedLinear(num_au, au_dim, 1)
        else:
            self.au_head = nn.Linear(num_au * au_dim, num_au)
        self.prior_weight = nn.Parameter(torch.tensor(cfg.prior_init, dtype=torch.float32))
        self.prior_weight.no_decay = True  # regularised towards the prior, not towards 0
        self.register_buffer("prior_init", torch.tensor(cfg.prior_init, dtype=torch.float32))
        self.register_buffer("prior_low", torch.tensor(cfg.prior_low, dtype=torch.float32))
        self.register_buffer("prior_high", torch.tensor(cfg.prior_high, dtype=torch.float32))

        d = cfg.attention_dim
        self.fuse_expr = nn.Sequential(nn.Dropout(cfg.attention_dropout),
                                       nn.Linear(cfg.expr_channels, d), nn.BatchNorm1d(d),
                                       nn.Tanh())
        self.fuse_au_dropout = nn.Dropout(cfg.attention_dropout)
        self.fuse_au = GroupedLinear(num_au, au_dim, d)
        self.fuse_au_bn = nn.BatchNorm1d(num_au * d)
        self.attention_fc = nn.Linear(d, 1)
        self.fused_head = nn.Linear(cfg.expr_channels + au_dim, num_e)

    # ------------------------------------------------------------------ pieces
    def expression_branch(self, feats: list[torch.Tensor]) -> torch.Tensor:
        pooled = [f if k == 1 else F.max_pool2d(f, k, k)
                  for f, k in zip(feats, self.pool_kernels)]
        fused = self.expr_reduce(self.lrn(torch.cat(pooled, dim=1)))
        return fused.mean(dim=(2, 3))

    def au_map(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[3]
        for block, skip in zip(self.au_up, (2, 1, 0)):
            x = block["fuse"](torch.cat([block["deconv"](x), feats[skip]], dim=1))
        return self.au_lrn(x)

    def au_features(self, au_map: torch.Tensor) -> torch.Tensor:
        """(N, A, 2 * crop_fc_dim): the two crops of each AU, through their own nets."""
        s = self.cfg.crop_size_px
        crops = torch.cat([au_map[:, :, y:y + s, x:x + s] for (y, x) in self.crop_windows],
                          dim=1)
        h = self.crop_conv(crops)
        if self.crop_pool_kernel > 1:
            h = F.avg_pool2d(h, self.crop_pool_kernel)
        n = h.shape[0]
        h = h.reshape(n, len(self.crop_windows), -1)
        h = self.crop_dropout(F.relu(self.crop_fc(h)))
        return h.reshape(n, len(self.cfg.au_names), -1)

    def au_logits(self, au_feats: torch.Tensor) -> torch.Tensor:
        if self.cfg.au_head == "per_au":
            return self.au_head(au_feats)[..., 0]  # static rank (no shape-dependent If)
        return self.au_head(au_feats.flatten(1))

    def attention(self, f_e: torch.Tensor, au_feats: torch.Tensor) -> torch.Tensor:
        n, a, _ = au_feats.shape
        if self.cfg.attention == "mean":
            return au_feats.new_full((n, a), 1.0 / a)
        q = self.fuse_expr(f_e)                                         # (N, D)
        k = self.fuse_au(self.fuse_au_dropout(au_feats))                # (N, A, D)
        k = torch.tanh(self.fuse_au_bn(k.reshape(n, -1)).reshape(n, a, -1))
        scores = self.attention_fc(q.unsqueeze(1) * k)[..., 0]
        if self.cfg.attention == "sigmoid":
            return torch.sigmoid(scores)
        return torch.softmax(F.relu(scores), dim=1)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's four stage maps, which both branches read."""
        return self.backbone.forward_features(x)

    def forward_head(self, feats: list[torch.Tensor], stage: int = 3
                     ) -> dict[str, torch.Tensor]:
        if stage not in self.STAGE_MODULES:
            raise ConfigError(f"stage must be 1, 2 or 3, got {stage!r}")
        f_e = self.expression_branch(feats)
        out = {"expr_features": f_e, "expr_logits": self.expr_head(self.expr_dropout(f_e))}
        out["emotion_logits"] = out["expr_logits"]
        if stage == 1 or self.cfg.branches == "expression":
            return out
        au_feats = self.au_features(self.au_map(feats))
        out["au_features"] = au_feats
        out["au_logits"] = self.au_logits(au_feats)
        if stage == 2:
            return out
        attn = self.attention(f_e, au_feats)
        f_a = (attn.unsqueeze(-1) * au_feats).sum(dim=1)
        if self.cfg.attention == "sigmoid":
            f_a = f_a / au_feats.shape[1]
        out["attention"] = attn
        out["fused_logits"] = self.fused_head(torch.cat([f_e, f_a], dim=1))
        out["emotion_logits"] = out["fused_logits"]
        return out

    def forward(self, x: torch.Tensor, stage: int = 3) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x), stage)

    @torch.no_grad()
    def init_fused_head_from_expr_head(self, f_a_scale: float = 0.1) -> None:
        """pred2 := pred1 on f_e, plus a small random map of f_a (stage-3 warm start; an
        option, not the paper's). The f_a columns must not be zero: the gradient that reaches
        the attention is proportional to them, and with zeros it is exactly 0, so the
        attention would never train (what happened to the first shipped model)."""
        e = self.cfg.expr_channels
        fresh = nn.Linear(self.fused_head.in_features - e, self.fused_head.out_features)
        self.fused_head.weight[:, :e].copy_(self.expr_head.weight)
        self.fused_head.weight[:, e:].copy_(f_a_scale * fresh.weight)
        self.fused_head.bias.copy_(self.expr_head.bias)

    @torch.no_grad()
    def reset_stage(self, stage: int) -> None:
        """Re-initialise the modules training stage ``stage`` updates (W back to its prior)."""
        self.stage_parameters(stage)  # validates the stage for this model
        for name in self.STAGE_MODULES[stage]:
            part = getattr(self, name)
            if name == "prior_weight":
                part.copy_(self.prior_init)
                continue
            for module in part.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if hasattr(module, "reset_running_stats"):
                    module.reset_running_stats()

    def export_module(self, emotion_from: str = "fused_logits") -> ExportWrapper:
        """The inference graph ``aue export`` writes to ONNX."""
        if self.cfg.branches == "expression":
            emotion_from = "expr_logits"
        return ExportWrapper(self, emotion_from)

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """The parameters training stage ``stage`` (1, 2 or 3) updates."""
        if stage not in self.STAGE_MODULES:
            raise ConfigError(f"stage must be 1, 2 or 3, got {stage}")
        if stage > 1 and self.cfg.branches == "expression":
            raise ConfigError("this model has the expression branch only (the backbone "
                              "baseline); it trains in stage 1 only")
        params = []
        for name in self.STAGE_MODULES[stage]:
            part = getattr(self, name)
            params.extend([part] if isinstance(part, nn.Parameter) else part.parameters())
        return params


class ExportWrapper(nn.Module):
    """Inference graph for ONNX: image -> (emotion_probs, au_probs) (or emotion only).

    ``emotion_from`` picks the classifier: ``fused_logits`` (pred2, after stage 3) or
    ``expr_logits`` (pred1: the baseline, or a model trained through stage 1 or 2 only).
    """

    def __init__(self, model: AueCrl, emotion_from: str = "fused_logits") -> None:
        super().__init__()
        self.model = model
        self.emotion_from = emotion_from
        self.has_au = model.cfg.branches == "full"
        self.stage = 3 if emotion_from == "fused_logits" else (2 if self.has_au else 1)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("emotion_probs", "au_probs") if self.has_au else ("emotion_probs",)

    def forward(self, image: torch.Tensor):
        out = self.model(image, stage=self.stage)
        emotion = torch.softmax(out[self.emotion_from], dim=1)
        if not self.has_au:
            return emotion
        return emotion, torch.sigmoid(out["au_logits"])


# ---------------------------------------------------------------------------------------------
# Variants (create_model's names; see the module docstring)
# ---------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "aue_crl": {},
    "aue_crl_r18": {},
    "aue_crl_r18_w050": {"width": 0.5, "au_channels": 32, "crop_conv_channels": 32,
                         "expr_channels": 256, "attention_dim": 128},
    "aue_crl_baseline": {"branches": "expression"},
    "aue_crl_r101_paper": {
        "attention": "kcaus",
        "input_size_px": 224, "depth": 101, "width": 1.0, "stem": "imagenet",
        "expr_channels": 1024, "au_channels": 64, "crop_size_px": 24, "crop_conv_channels": 64,
        "crop_conv_stride": 1, "crop_pool_px": 0, "crop_fc_dim": 256, "attention_dim": 1024,
    },
    "aue_crl_cpu_tiny": {
        "input_size_px": 64, "depth": 18, "width": 0.25, "stem": "small", "expr_channels": 64,
        "au_channels": 16, "crop_size_px": 12, "crop_conv_channels": 8, "crop_conv_stride": 2,
        "crop_pool_px": 3, "crop_fc_dim": 16, "attention_dim": 32,
    },
}


def build(**config: Any) -> AueCrl:
    """An AUE-CRL network from keyword options (``create_model`` passes a variant's)."""
    return AueCrl(build_config(**config))
