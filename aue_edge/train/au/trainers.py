"""Stage trainers of the three AU detectors (train stage, PyTorch).

One function per paper, each running that paper's stages in order on :class:`AuArrays`:

- :func:`train_lp_net`: (1) stem + linear head, (2) + L-Net, (3) + P-Net; Adam; BCE with
  Selective Learning weights + ``L_r`` orthogonality in stage 3.
- :func:`train_gtle_net`: (1) GEE pre-training with the two-sided triplet loss on FER+ vote
  triplets, (2) the whole network with ``sum_AU BCE + 0.001 L_rec``; Adam (wd 1e-6) with a
  linear warm-up then ``step^-0.5`` decay; E_m's optimiser configurable.
- :func:`train_kdsrl`: (1) self-supervised pre-training (two colour-jittered views, SupCon +
  NT-Xent + predictors), (2) per-AU-group classifiers with the encoder frozen or fine-tuned.

Each stage ends with a checkpoint in ``<out_dir>/stages/`` (``run.resume: true`` skips stages
whose checkpoint exists); the run ends with ``<out_dir>/model.pt``, ``history.json`` (every
logged loss), ``loss_curve.png`` and, given evaluation data, F1-frame scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from aue_edge.core.errors import ConfigError
from aue_edge.edge.model_card import InputSpec
from aue_edge.core.plotting import save_figure
from aue_edge.train.au import losses
from aue_edge.train.au.config import AuTrainConfig, GtleSection, KdsrlSection, LpNetSection
from aue_edge.train.au.data import AuArrays, color_jitter, mean_landmarks
from aue_edge.train.au.evaluate import AuScores, f1_frame
from aue_edge.train.augment import GpuAugment, preprocess
from aue_edge.train.runtime import read_checkpoint, save_checkpoint
from aue_edge.train.loop import autocast_context, iterate_batches

# The input convention of every model trained here: grey faces replicated to 3 channels,
# ImageNet mean/std (the model card's defaults; the edge's to_model_input applies the same).
INPUT_COLOR = "gray3"
INPUT_MEAN = InputSpec().mean
INPUT_STD = InputSpec().std


@dataclass
class TrainResult:
    model: nn.Module
    checkpoint: Path
    history: list[dict]
    scores: AuScores | None
    stage: int | None = None     # LP-Net: the stage trained last (its forward's ``stage``)


class _Context:
    """What every stage needs: the run settings, device tensors, batching and model inputs."""

    def __init__(self, cfg: AuTrainConfig, model: nn.Module, train: AuArrays,
                 out_dir: Path, device: torch.device) -> None:
        self.cfg, self.model, self.train, self.out_dir, self.device = (cfg, model, train,
                                                                        out_dir, device)
        self.size_px = tuple(model.input_size_px)
        self.images = torch.as_tensor(train.images, device=device)
        self.targets = torch.as_tensor(train.targets, device=device)
        self.augment = GpuAugment(cfg.augment, self.size_px, INPUT_MEAN, INPUT_STD)
        self.generator = torch.Generator().manual_seed(cfg.run.seed)
        self.history: list[dict] = []
        self.landmarks = (None if train.landmarks is None
                          else torch.as_tensor(train.landmarks, device=device))
        self.boxes = _boxes_from_landmarks(train.landmarks, self.size_px[0], device)

    def batches(self, n: int, desc: str) -> Iterator[torch.Tensor]:
        """Shuffled index batches of one epoch (the shared trainer's ``iterate_batches``: last
        partial batch dropped), capped at ``run.max_steps_per_epoch``."""
        bs = min(self.cfg.run.batch_size, n)
        steps = n // bs
        if self.cfg.run.max_steps_per_epoch is not None:
            steps = min(steps, self.cfg.run.max_steps_per_epoch)
        batches = iterate_batches(n, bs, self.generator, self.device)
        for _ in tqdm(range(steps), desc=desc, unit="step", leave=False,
                      disable=not self.cfg.run.progress):
            yield next(batches)

    def autocast(self):
        return autocast_context(self.device, self.cfg.run.amp)

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """Augmented, normalised model inputs (random warp + erasing: the shared GpuAugment)."""
        return self.augment(self.images[idx], generator=None)

    def landmarks_for(self, idx: torch.Tensor) -> torch.Tensor:
        if self.landmarks is not None:
            return self.landmarks[idx]
        return mean_landmarks(len(idx), self.device)

    def boxes_for(self, idx: torch.Tensor) -> torch.Tensor | None:
        return None if self.boxes is None else self.boxes[idx]

    def log(self, stage: str, epoch: int, terms: dict[str, torch.Tensor | float]) -> None:
        self.history.append({"stage": stage, "epoch": epoch, "step": len(self.history),
                             **{k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                                for k, v in terms.items()}})

    # ---------------------------------------------------------------- stage checkpoints
    def stage_path(self, index: int, name: str) -> Path:
        return self.out_dir / "stages" / f"{index}_{name}.pt"

    def resume_stage(self, index: int, name: str) -> bool:
        """Load a finished stage's weights when resuming; True if the stage can be skipped."""
        path = self.stage_path(index, name)
        if not (self.cfg.run.resume and path.is_file()):
            return False
        payload = read_checkpoint(path)
        self.model.load_state_dict(payload["state_dict"], strict=True)
        self.history = list(payload.get("history", []))   # cumulative over earlier stages
        return True

    def finish_stage(self, index: int, name: str) -> None:
        save_checkpoint(self.stage_path(index, name), self.model, self.cfg.model.name,
                        stage=name, history=self.history)


def _boxes_from_landmarks(landmarks: np.ndarray | None, size_px: int,
                          device: torch.device) -> torch.Tensor | None:
    if landmarks is None:
        return None
    from aue_edge.data.knowledge import area_boxes

    boxes = np.stack([area_boxes(lm * size_px, (size_px, size_px)) for lm in landmarks])
    return torch.as_tensor(boxes, dtype=torch.float32, device=device)


def _float(value):
    """Outputs of an autocast forward back in float32 for the losses (dicts/lists/tuples)."""
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, dict):
        return {k: _float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_float(v) for v in value)
    return value


def _adam(groups: list[dict], weight_decay: float = 0.0) -> torch.optim.Adam:
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups, weight_decay=weight_decay)


def _params(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


# -------------------------------------------------------------------------------------- LP-Net
def train_lp_net(ctx: _Context) -> None:
    model, method = ctx.model, ctx.cfg.method
    if not isinstance(method, LpNetSection):
        raise ConfigError("train_lp_net needs the lp_net section")
    rate = method.target_positive_rate
    sl_generator = torch.Generator().manual_seed(ctx.cfg.run.seed + 1)
    for index, stage in enumerate(method.stages):
        name = f"stage{stage.stage}"
        model.check_stage(stage.stage)
        if ctx.resume_stage(index, name):
            continue
        groups = [{"params": _params(model.stem), "lr": stage.lr_stem}]
        if stage.stage == 1:
            groups.append({"params": _params(model.fc), "lr": stage.lr_head})
        else:
            groups.append({"params": _params(model.lstms, model.lstm_out), "lr": stage.lr_head})
        if stage.stage == 3:
            groups.append({"params": _params(model.pnet_hidden, model.pnet_out),
                           "lr": stage.lr_pnet})
        optimizer = _adam(groups)
        model.train()
        for epoch in range(stage.epochs):
            for idx in ctx.batches(len(ctx.train), f"LP-Net {name} epoch {epoch + 1}"):
                targets = ctx.targets[idx]
                with ctx.autocast():
                    out = _float(model(ctx.inputs(idx), ctx.landmarks_for(idx),
                                       stage=stage.stage))
                weights = (losses.selective_learning_weights(targets, rate, method.max_sl_weight,
                                                             sl_generator)
                           if method.selective_learning else None)
                l_au = losses.weighted_bce(out["au_logits"], targets, weights, "mean_au")
                terms = {"au_bce": l_au}
                loss = l_au
                if stage.stage == 3 and method.orthogonality_weight > 0:
                    l_r = losses.orthogonality_loss(out["appearance_features"],
                                                    out["shape_features"])
                    loss = loss + method.orthogonality_weight * l_r
                    terms["orthogonality"] = l_r
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                ctx.log(name, epoch, {"loss": loss, **terms})
        ctx.finish_stage(index, name)


# ------------------------------------------------------------------------------------ GTLE-Net
def warmup_rsqrt(warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup_steps``, then ``(step / warmup)^-0.5`` decay."""
    def factor(step: int) -> float:
        if warmup_steps <= 0:
            return 1.0
        s = (step + 1) / warmup_steps
        return s if s < 1.0 else s ** -0.5
    return factor


def train_gtle_net(ctx: _Context) -> None:
    from aue_edge.train.au.triplets import build_triplets

    model, method = ctx.model, ctx.cfg.method
    if not isinstance(method, GtleSection):
        raise ConfigError("train_gtle_net needs the gtle_net section")
    # ---- stage 1: GEE on expression-similarity triplets
    if method.gee_epochs > 0 and not ctx.resume_stage(0, "gee"):
        if ctx.train.probs is None:
            raise ConfigError("GEE pre-training builds triplets from FER+ vote distributions; "
                              "this training set has none (use data.dataset ferplus)")
        triplets, stats = build_triplets(ctx.train.probs, method.num_triplets,
                                         method.triplet_max_pair_distance,
                                         method.triplet_min_gap, seed=ctx.cfg.run.seed)
        ctx.history.append({"stage": "gee", "triplet_stats": stats.__dict__})
        triplets_t = torch.as_tensor(triplets, device=ctx.device)
        optimizer = _adam([{"params": model.lam_parameters("gee"), "lr": method.gee_lr}])
        model.train()
        for epoch in range(method.gee_epochs):
            for tidx in ctx.batches(len(triplets), f"GTLE GEE epoch {epoch + 1}"):
                trip = triplets_t[tidx]
                with ctx.autocast():
                    emb = model.embedding(ctx.inputs(trip.flatten())).float()
                emb = emb.view(len(trip), 3, -1)
                loss = losses.two_sided_triplet_loss(emb[:, 0], emb[:, 1], emb[:, 2],
                                                     method.triplet_margin)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                ctx.log("gee", epoch, {"loss": loss, "triplet": loss})
        ctx.finish_stage(0, "gee")
    # ---- stage 2: AU detection with the LAM, reconstruction and per-AU classifiers
    if ctx.resume_stage(1, "au"):
        return
    groups = [{"params": model.lam_parameters("rest"), "lr": method.lr}]
    if method.freeze_gee:
        for p in model.lam_parameters("gee"):
            p.requires_grad_(False)
    else:
        groups.append({"params": model.lam_parameters("gee"), "lr": method.lr})
    mask_params = model.lam_parameters("mask")
    mask_optimizer = None
    if method.mask_optimizer == "adam":
        groups.append({"params": mask_params, "lr": method.lr})
    elif method.mask_optimizer == "sgd":
        mask_optimizer = torch.optim.SGD(mask_params, lr=method.mask_lr, momentum=0.9)
    else:
        for p in mask_params:
            p.requires_grad_(False)
    optimizer = _adam(groups, weight_decay=method.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_rsqrt(method.warmup_steps))
    model.train()
    for epoch in range(method.epochs):
        for idx in ctx.batches(len(ctx.train), f"GTLE-Net AU epoch {epoch + 1}"):
            images = ctx.inputs(idx)
            with ctx.autocast():
                out = _float(model(images))
            l_bce = losses.weighted_bce(out["au_logits"], ctx.targets[idx], None, "sum_au")
            l_rec = losses.reconstruction_loss(out["reconstruction"],
                                               model.reconstruction_target(images))
            loss = l_bce + method.reconstruction_weight * l_rec
            optimizer.zero_grad(set_to_none=True)
            if mask_optimizer is not None:
                mask_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if mask_optimizer is not None:
                mask_optimizer.step()
            schedule.step()
            ctx.log("au", epoch, {"loss": loss, "au_bce": l_bce, "reconstruction": l_rec})
    ctx.finish_stage(1, "au")


# --------------------------------------------------------------------------------------- KDSRL
def train_kdsrl(ctx: _Context) -> None:
    from aue_edge.data.knowledge import SYMMETRIC_AREAS

    model, method = ctx.model, ctx.cfg.method
    if not isinstance(method, KdsrlSection):
        raise ConfigError("train_kdsrl needs the kdsrl section")
    zeros, ones = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = torch.tensor(INPUT_MEAN, device=ctx.device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_STD, device=ctx.device).view(1, 3, 1, 1)
    # ---- stage 1: self-supervised pre-training on unlabelled faces (labels never read)
    if method.ssl_epochs > 0 and not ctx.resume_stage(0, "ssl"):
        optimizer = _adam([{"params": model.ssl_parameters(), "lr": method.ssl_lr}])
        model.train()
        for epoch in range(method.ssl_epochs):
            for idx in ctx.batches(len(ctx.train), f"KDSRL SSL epoch {epoch + 1}"):
                base = preprocess(ctx.images[idx], ctx.size_px, zeros, ones)   # [0, 1]
                views = [(color_jitter(base, method.jitter_brightness, method.jitter_contrast,
                                       ctx.generator) - mean) / std for _ in range(2)]
                boxes = ctx.boxes_for(idx)
                with ctx.autocast():
                    z1, pred1 = _float(model.ssl_forward(views[0], boxes))
                    z2, pred2 = _float(model.ssl_forward(views[1], boxes))
                terms = losses.kdsrl_ssl_loss(
                    torch.stack([z1, z2]), [pred1, pred2], SYMMETRIC_AREAS,
                    method.temperature, method.intra_weight, method.alpha, method.beta,
                    method.stop_gradient_targets)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                ctx.log("ssl", epoch, terms)
        ctx.finish_stage(0, "ssl")
    # ---- stage 2: per-AU-group classifiers, encoder frozen ("linear") or fine-tuned
    name = f"classify_{method.classify_mode}"
    if ctx.resume_stage(1, name):
        return
    groups = [{"params": _params(model.classifiers), "lr": method.classify_lr}]
    frozen = method.classify_mode == "frozen"
    if frozen:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
    else:
        groups.append({"params": model.encoder_parameters(), "lr": method.finetune_encoder_lr})
    optimizer = _adam(groups)
    model.train()
    if frozen:
        model.encoder.eval()     # frozen means its batch-norm statistics too
    fixed = torch.tensor(model.config["fixed_boxes"], dtype=torch.float32, device=ctx.device)
    for epoch in range(method.classify_epochs):
        for idx in ctx.batches(len(ctx.train), f"KDSRL {name} epoch {epoch + 1}"):
            boxes = ctx.boxes_for(idx)
            if boxes is None:
                boxes = fixed[None].expand(len(idx), -1, -1)
            # the geometric augmentation moves the face, so the area boxes move with it
            images, boxes = ctx.augment(ctx.images[idx], boxes=boxes)
            with ctx.autocast():
                out = _float(model(images, boxes))
            loss = losses.weighted_bce(out["au_logits"], ctx.targets[idx], None, "mean_au")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ctx.log(name, epoch, {"loss": loss})
    ctx.finish_stage(1, name)


TRAINERS = {"lp_net": train_lp_net, "gtle_net": train_gtle_net, "kdsrl": train_kdsrl}


# ------------------------------------------------------------------------------ run + predict
@torch.no_grad()
def predict_au_probs(model: nn.Module, arrays: AuArrays, batch_size: int = 128,
                     device: torch.device | str = "cpu", stage: int | None = None
                     ) -> np.ndarray:
    """(N, A) AU probabilities of a trained model on an :class:`AuArrays` (no augmentation);
    ``stage``: the LP-Net stage to run (a checkpoint's ``model_stage``; None: its last)."""
    model.eval()
    size_px = tuple(model.input_size_px)
    out = []
    for start in range(0, len(arrays), batch_size):
        images = torch.as_tensor(arrays.images[start:start + batch_size], device=device)
        x = preprocess(images, size_px, INPUT_MEAN, INPUT_STD)
        kwargs = {} if stage is None else {"stage": stage}
        if hasattr(model, "needs_landmarks") and model.needs_landmarks(stage):
            kwargs["landmarks"] = (mean_landmarks(len(images), device) if arrays.landmarks is None
                                   else torch.as_tensor(arrays.landmarks[start:start + batch_size],
                                                        device=device))
        elif hasattr(model, "fixed_roi_weights") and arrays.landmarks is not None:
            kwargs["boxes"] = _boxes_from_landmarks(arrays.landmarks[start:start + batch_size],
                                                    size_px[0], torch.device(device))
        out.append(torch.sigmoid(model(x, **kwargs)["au_logits"].float()).cpu().numpy())
    return np.concatenate(out)


def run_training(cfg: AuTrainConfig, model: nn.Module, train: AuArrays, out_dir: Path,
                 device: torch.device, evaluation: AuArrays | None = None,
                 extra: dict | None = None) -> TrainResult:
    """Run the model family's stages; save ``model.pt``, history and plot; score
    ``evaluation`` (F1-frame at 0.5) when given. ``extra`` goes into the checkpoint (and so
    the exported card): ``au_thresholds``, ``ckplus``; ``fit_thresholds: True`` fits per-AU
    best-F1 thresholds on the model's own training images (real AU labels only)."""
    extra = dict(extra or {})
    if tuple(train.au_names) != tuple(model.au_names):
        raise ConfigError(f"training targets are for {train.au_names}, the model predicts "
                          f"{model.au_names}")
    if len(train) < 2:
        raise ConfigError(f"{train.source}: at least 2 training images are needed, got "
                          f"{len(train)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    ctx = _Context(cfg, model, train, out_dir, device)
    TRAINERS[cfg.model.family](ctx)
    stage = cfg.method.stages[-1].stage if isinstance(cfg.method, LpNetSection) else None
    scores = None
    if evaluation is not None:
        probs = predict_au_probs(model, evaluation, cfg.run.eval_batch_size, device, stage)
        scores = f1_frame(probs, evaluation.binary_targets(), evaluation.au_names)
    if extra.pop("fit_thresholds", False):
        extra["au_thresholds"] = fit_thresholds_on(model, train, cfg.run.eval_batch_size, device,
                                                   stage)
    model.cpu()
    checkpoint = save_checkpoint(
        out_dir / "model.pt", model, cfg.model.name, history=ctx.history,
        au_names=list(model.au_names), model_stage=stage,
        pseudo_labels=train.pseudo, train_source=train.source,
        input={"color": INPUT_COLOR, "mean": list(INPUT_MEAN), "std": list(INPUT_STD),
               "size_px": list(model.input_size_px)},
        metrics={} if scores is None else {"f1_pct": list(scores.f1_pct),
                                           "mean_f1_pct": scores.mean_f1_pct,
                                           "eval_source": evaluation.source},
        config=_plain(cfg.to_dict()), **extra)
    (out_dir / "history.json").write_text(json.dumps(ctx.history, indent=1) + "\n",
                                          encoding="utf-8")
    plot_history(ctx.history, out_dir / "loss_curve.png", title=f"{cfg.model.name}: "
                 f"{train.source}")
    return TrainResult(model=model, checkpoint=checkpoint, history=ctx.history, scores=scores,
                       stage=stage)


def fit_thresholds_on(model: nn.Module, arrays: AuArrays, batch_size: int = 128,
                      device: torch.device | str = "cpu", stage: int | None = None
                      ) -> dict[str, float]:
    """Per-AU best-F1 thresholds of ``model`` on ``arrays`` (real labels; AUs without a
    positive keep the card's default)."""
    from aue_edge.train.trainer import fit_au_thresholds

    if arrays.pseudo:
        raise ConfigError("thresholds are fitted on real AU labels, not on pseudo labels")
    probs = predict_au_probs(model, arrays, batch_size, device, stage)
    targets = arrays.binary_targets()
    return fit_au_thresholds(probs, targets == 1, targets >= 0, arrays.au_names)


def _plain(value):
    """A config dict with tuples as lists and nothing torch.load(weights_only) cannot read."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plot_history(history: list[dict], out_png: Path, title: str = "") -> Path:
    """Total loss per step, one colour per stage (a moving average smooths the noise)."""
    from aue_edge.core.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 3.5))
    stages = [h["stage"] for h in history if "loss" in h]
    for stage in dict.fromkeys(stages):
        points = [(h["step"], h["loss"]) for h in history if h.get("stage") == stage
                  and "loss" in h]
        steps, values = np.array(points).T
        window = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, label=stage)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title[:90])
    if stages:
        ax.legend(fontsize=8)
    return save_figure(fig, out_png, dpi=90)

