"""The generic epoch loop and its pieces (the AUE-CRL schedule and the AU detectors' trainers
reuse them). Train stage.

* :func:`iterate_batches`: shuffled index batches over device-resident arrays;
* :func:`run_epochs`: the epoch loop (tqdm, AMP, per-step LR, validation, ``{tag}_last.pt`` every
  epoch for resume and ``{tag}_best.pt`` on the best validation score);
* :func:`predict_arrays`: batched inference over uint8 images.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.train.augment import preprocess
from aue_edge.train.config import StageConfig
from aue_edge.train.distributed import DistInfo, from_main, mean_over_ranks
from aue_edge.train.runtime import read_checkpoint, save_checkpoint


def iterate_batches(num_items: int, batch_size: int, generator: torch.Generator,
                    device: torch.device, dist_info: DistInfo = DistInfo()
                    ) -> Iterator[torch.Tensor]:
    """Shuffled index batches; the last incomplete batch is dropped (BatchNorm needs > 1).

    Under DDP every rank draws the same permutation (same seed) and takes its slice of each
    batch, so the ranks together see every item of the full batches once per epoch.
    """
    perm = torch.randperm(num_items, generator=generator).to(device)
    per_rank = batch_size // dist_info.world_size
    for start in range(0, num_items - batch_size + 1, batch_size):
        batch = perm[start:start + batch_size]
        yield batch[dist_info.rank * per_rank:(dist_info.rank + 1) * per_rank]


def lr_factor(schedule: str, progress: float, warmup_frac: float) -> float:
    """LR multiplier at ``progress`` in [0, 1) of a stage: linear warm-up, then cosine or the
    paper's step schedule (x1, x0.1 after 15/40, x0.01 after 30/40 of the epochs)."""
    if warmup_frac > 0 and progress < warmup_frac:
        return (progress + 1e-3) / warmup_frac
    if schedule == "cosine":
        rest = (progress - warmup_frac) / max(1e-8, 1.0 - warmup_frac)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))
    return 1.0 if progress < 15 / 40 else (0.1 if progress < 30 / 40 else 0.01)


def make_optimizer(params: list[torch.nn.Parameter], st: StageConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on BN/bias vectors or on parameters marked
    ``no_decay`` (AUE-CRL's W has its own prior regulariser)."""
    decay = [p for p in params if p.ndim > 1 and not getattr(p, "no_decay", False)]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in params if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": st.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if st.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=st.lr, momentum=st.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=st.lr)


def autocast_context(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


StepFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
ValidateFn = Callable[[], tuple[float, dict[str, Any]]]


def run_epochs(*, model: torch.nn.Module, model_name: str, optimizer: torch.optim.Optimizer,
               step: StepFn, num_items: int, batch_size: int, epochs: int, st: StageConfig,
               validate: ValidateFn, out_dir: Path, tag: str, device: torch.device,
               generator: torch.Generator, amp: bool = True, resume: bool = False,
               extra: dict[str, Any] | None = None, dist_info: DistInfo = DistInfo(),
               grad_clip: float = 5.0, progress: bool = True) -> dict[str, Any]:
    """Train for ``epochs`` epochs, validating after each; returns the history and best score.

    ``step(batch_indices) -> (loss, logs)``. Checkpoints: ``{tag}_last.pt`` every epoch (model,
    optimizer, epoch, RNG state, history: ``resume=True`` continues from it) and ``{tag}_best.pt``
    when ``validate()``'s score improves. ``extra`` goes into both (config, card fields).
    """
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / f"{tag}_last.pt", out_dir / f"{tag}_best.pt"
    history: list[dict[str, Any]] = []
    best_score, start_epoch = -math.inf, 0
    if resume and last_path.is_file():
        state = read_checkpoint(last_path)
        if state.get("tag") != tag:
            raise ModelFileError(f"{last_path} belongs to {state.get('tag')!r}, not {tag!r}")
        getattr(model, "module", model).load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_epoch, best_score = int(state["epoch"]), float(state["best_score"])
        history = list(state["history"])
        if dist_info.is_main:
            print(f"resumed {tag} from {last_path} at epoch {start_epoch}/{epochs}")
    steps_per_epoch = max(1, num_items // batch_size)
    total_steps = steps_per_epoch * epochs
    warmup_frac = st.warmup_epochs / epochs if epochs else 0.0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(iterate_batches(num_items, batch_size, generator, device, dist_info),
                   total=steps_per_epoch, desc=f"{tag} epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=not (progress and dist_info.is_main), leave=False, mininterval=2.0)
        for i, batch in enumerate(bar):
            factor = lr_factor(st.schedule, (epoch * steps_per_epoch + i) / total_steps,
                               warmup_frac)
            for group in optimizer.param_groups:
                group["lr"] = st.lr * factor
            with autocast_context(device, amp):
                loss, logs = step(batch)
            if not torch.isfinite(loss):
                raise ConfigError(f"{tag}: loss became {loss.item()} at epoch {epoch + 1} step "
                                  f"{i}; lower the learning rate ({st.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            count += 1
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
        train_logs = mean_over_ranks({k: v / max(1, count) for k, v in sums.items()},
                                     dist_info)
        # Rank 0 validates (the ranks hold the same weights) and every rank takes its verdict.
        score, val_metrics = from_main(validate() if dist_info.is_main else None, dist_info)
        improved = score > best_score
        best_score = max(best_score, score)
        record = {"epoch": epoch + 1, "train": train_logs, "val": val_metrics,
                  "score": score, "seconds": round(time.time() - t0, 2),
                  "lr_end": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if dist_info.is_main:
            loss_text = " ".join(f"{k}={v:.4f}" for k, v in train_logs.items())
            print(f"{tag} epoch {epoch + 1}/{epochs}: {loss_text} val_score={score:.4f}"
                  f"{' *' if improved else ''} ({record['seconds']} s)", flush=True)
            common = {"tag": tag, "epoch": epoch + 1, "best_score": best_score,
                      "history": history, **(extra or {})}
            if improved:
                save_checkpoint(best_path, model, model_name, **common, val_metrics=val_metrics)
            save_checkpoint(last_path, model, model_name, **common,
                            optimizer=optimizer.state_dict(), generator=generator.get_state())
    return {"history": history, "best_score": best_score, "best_path": str(best_path),
            "last_path": str(last_path)}


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, images: torch.Tensor, size_px: tuple[int, int],
                   mean: tuple, std: tuple, batch_size: int, device: torch.device,
                   stage: int = 3, amp: bool = True,
                   channels_last: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) up to training stage ``stage`` over uint8 images; returns
    every output as float32 numpy."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start:start + batch_size].to(device), size_px, mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                out = model(x, stage=stage)
            for key, value in out.items():
                chunks.setdefault(key, []).append(value.float().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}
