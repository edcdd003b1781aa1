"""AUE-CRL's three-stage schedule; ``aue train`` calls :func:`train`. Train stage (torch).

The pieces it runs on live beside it: the config (:mod:`aue_edge.train.config`), the data arrays
(:mod:`aue_edge.train.arrays`), the epoch loop (:mod:`aue_edge.train.loop`) and the DDP helpers
(:mod:`aue_edge.train.distributed`).

AUE-CRL schedule (paper Sec. III-D): stage 1 trains backbone + expression classifier with CE;
stage 2 freezes them and trains the AU branch, crop nets, AU head and W on knowledge pseudo
labels; stage 3 freezes the AU path and trains the KCAUS attention and fused classifier with
L_e = CE + alpha (l_p + l_n). Frozen modules run in eval mode (their BN statistics stay fixed,
dropout off). Each stage starts from the previous stage's best checkpoint. Model selection uses
the validation split only; ``aue evaluate`` reports the test split.

Several processes: started with ``torchrun --nproc_per_node=K -m aue_edge.cli train CONFIG``,
each rank takes its share of every batch, gradients and logged losses are averaged over the
ranks (DDP), rank 0 validates and writes. ``tests/test_ddp.py`` runs it on the CPU (Gloo); it
has not been executed on several GPUs (NCCL).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.train.arrays import (CkPlusArrays, SplitArrays, load_ckplus_arrays,
                                   load_split_arrays)
from aue_edge.train.augment import GpuAugment
from aue_edge.train.config import DataConfig, StageConfig, TrainConfig
from aue_edge.train.distributed import setup_distributed
from aue_edge.train.loop import make_optimizer, predict_arrays, run_epochs
from aue_edge.train.metrics import au_pseudo_label_stats, classification_report
from aue_edge.train.runtime import read_checkpoint, save_checkpoint, seed_everything


def fit_au_thresholds(au_probs: np.ndarray, aus: np.ndarray, known: np.ndarray,
                      au_names: tuple[str, ...]) -> dict[str, float]:
    """Per-AU F1-maximising thresholds on labelled training faces, kept inside [0.05, 0.95]."""
    from aue_edge.train.metrics import best_f1_threshold

    out = {}
    for j, name in enumerate(au_names):
        rows = known[:, j]
        if rows.any() and aus[rows, j].any():
            t = best_f1_threshold(aus[rows, j] > 0.5, au_probs[rows, j])
            out[name] = round(float(np.clip(t, 0.05, 0.95)), 4)
    return out


def check_ckplus_inheritance(data: DataConfig, inherited: set[str], init: str | None,
                             advice: str = "Start from a checkpoint that never saw CK+ (e.g. "
                                           "'aue import-onnx' of the first release, or a "
                                           "stage-1 checkpoint)") -> None:
    """A cross-validation run for CK+ fold k must not learn from weights that saw fold k (its
    starting checkpoint, or a student's teacher)."""
    from aue_edge.data.folds import CKPLUS_FOLDS

    if data.ckplus_root and data.ckplus_fold:
        leaked = inherited & set(CKPLUS_FOLDS[data.ckplus_fold - 1])
        if leaked:
            raise ModelFileError(
                f"{init} was trained on {len(leaked)} CK+ subjects of fold {data.ckplus_fold} "
                f"({sorted(leaked)[:3]}...), which this run holds out; a fold model that "
                f"learns from it would be scored on faces its weights saw. {advice}")


def card_fields(cfg: TrainConfig, model: torch.nn.Module, train_arrays: SplitArrays,
                ck: CkPlusArrays | None = None, inherited_ckplus: set[str] = frozenset()
                ) -> dict[str, Any]:
    """The model-card facts the trainer knows; ``aue export`` completes the card from them."""
    core = getattr(model, "module", model)
    size = int(core.cfg.input_size_px)
    return {
        "input": {"size_px": [size, size], "color": cfg.input.color,
                  "mean": list(cfg.input.mean), "std": list(cfg.input.std),
                  "resize": "cv2.INTER_LINEAR (aue_edge.edge.preprocess.to_model_input)"},
        "emotion_labels": list(core.cfg.emotion_labels),
        "au_names": list(core.cfg.au_names) if core.cfg.branches == "full" else [],
        "training": {"dataset": cfg.data.dataset, "label_mode": cfg.data.label_mode,
                     "train_split": cfg.data.train_split, "val_split": cfg.data.val_split,
                     "num_train_images": int(len(train_arrays.labels)),
                     "source": train_arrays.source, "augment": dataclasses.asdict(cfg.augment),
                     "stages": list(cfg.stages),
                     "epochs": {f"stage{n}": cfg.stage(n).epochs for n in cfg.stages},
                     "pretrained_backbone": cfg.pretrained or None, "seed": cfg.seed,
                     **ckplus_card_entry(ck, inherited_ckplus)},
    }


def ckplus_card_entry(ck: CkPlusArrays | None, inherited: set[str]) -> dict[str, Any]:
    """The card's ``training.ckplus`` entry: the CK+ subjects this run trained on and those the
    weights it learned from saw (``aue evaluate`` refuses to score a model on them); empty for
    a run that never met CK+."""
    if not ck and not inherited:
        return {}
    return {"ckplus": {"fold_held_out": (ck.fold or None) if ck else None,
                       "num_images": int(len(ck.labels)) if ck else 0,
                       "subjects": sorted(set(ck.subjects if ck else ()) | set(inherited))}}


def _set_trainable(model: torch.nn.Module, stage: int, st: StageConfig) -> list:
    """Freeze everything but the stage's modules; frozen modules go to eval mode."""
    core = getattr(model, "module", model)
    for p in core.parameters():
        p.requires_grad_(False)
    params = list(core.stage_parameters(stage))
    if stage == 3 and st.expr_ce_weight > 0:
        params += list(core.expr_head.parameters())  # reference code also trains pred1 here
    for p in params:
        p.requires_grad_(True)
    return params


def _set_modes(model: torch.nn.Module, stage: int, st: StageConfig) -> None:
    core = getattr(model, "module", model)
    core.train()
    if stage == 1:
        return
    trained = set(core.STAGE_MODULES[stage])
    if stage == 3 and st.expr_ce_weight > 0:
        trained.add("expr_head")
    for name, module in core.named_children():
        if name not in trained:
            module.eval()


def train(cfg: TrainConfig, resume: bool = False, init_checkpoint: str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run the configured AUE-CRL stages; returns the run report (also written to
    ``out_dir/training_report.json``). The final model is ``out_dir/model.pt``."""
    from aue_edge.data import knowledge
    from aue_edge.train.losses import (au_pair_loss, au_regression_loss, prior_regulariser,
                                       pseudo_au_labels)
    from aue_edge.train.models import create_model

    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device, dist_info = setup_distributed(cfg.device)
    if cfg.batch_size % dist_info.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is the batch over all "
                          f"{dist_info.world_size} processes and must divide evenly among them; "
                          f"set a multiple of {dist_info.world_size}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    train_arr = load_split_arrays(cfg.data, cfg.data.train_split, cfg.data.limit_train, progress)
    val_arr = load_split_arrays(cfg.data, cfg.data.val_split, cfg.data.limit_val, progress)

    inherited_ckplus: set[str] = set()
    if init_checkpoint:
        # Rebuild from the checkpoint's own config; model.kwargs may change options that add
        # no parameters (e.g. attention: mean for the no-attention ablation); weights load
        # strictly, so a structural change is reported rather than half-loaded.
        payload = read_checkpoint(init_checkpoint)
        inherited_ckplus = set(payload.get("card", {}).get("training", {})
                               .get("ckplus", {}).get("subjects", []))
        model_name = payload["model_name"]
        model = create_model(model_name, **{**payload["model_config"], **cfg.model_options})
        try:
            model.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{init_checkpoint} does not fit {model_name!r} with "
                                 f"model.kwargs {cfg.model_options}: {exc}") from None
    else:
        model_name = cfg.model
        options = dict(cfg.model_options)
        options.setdefault("emotion_labels", list(train_arr.label_names))
        model = create_model(model_name, **options)
        if cfg.pretrained:
            from aue_edge.train.models.resnet import load_torchvision_state_dict

            load_torchvision_state_dict(model.backbone, cfg.pretrained)
    if tuple(model.cfg.emotion_labels) != tuple(train_arr.label_names):
        raise ModelFileError(f"the model's labels {list(model.cfg.emotion_labels)} differ from "
                             f"the data set's {list(train_arr.label_names)}; train a new model "
                             f"for this label set")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    size_px = (model.cfg.input_size_px, model.cfg.input_size_px)
    mean, std = cfg.input.mean, cfg.input.std
    au_names = tuple(model.cfg.au_names) if model.cfg.branches == "full" else ()
    ck = load_ckplus_arrays(cfg.data, model.cfg.emotion_labels, au_names, progress)
    check_ckplus_inheritance(cfg.data, inherited_ckplus, init_checkpoint)
    num_train = len(train_arr.labels)
    # CK+ faces (when configured) sit after the FER+ ones; au_known marks real AU labels.
    images = torch.from_numpy(np.concatenate([train_arr.images] + ([ck.images] if ck else [])))
    images = images.to(device)
    labels = torch.from_numpy(np.concatenate([train_arr.labels] + ([ck.labels] if ck else [])))
    labels = labels.to(device)
    au_real = torch.zeros(len(labels), len(au_names), device=device)
    au_known = torch.zeros(len(labels), len(au_names), dtype=torch.bool, device=device)
    if ck:
        au_real[num_train:] = torch.from_numpy(ck.aus).float().to(device)
        au_known[num_train:] = torch.from_numpy(ck.known).to(device)
        ck_index = torch.arange(num_train, len(labels), device=device)
    val_images = torch.from_numpy(val_arr.images)
    augment = GpuAugment(cfg.augment, size_px, mean, std)
    generator = torch.Generator().manual_seed(cfg.seed)
    # Each rank warps its own share of a batch: its own augmentation stream.
    aug_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1 + dist_info.rank)
    extra = {"train_config": cfg.to_dict(),
             "card": card_fields(cfg, model, train_arr, ck, inherited_ckplus)}
    if model.cfg.branches == "full":
        pos = torch.as_tensor(knowledge.pair_indices(knowledge.POSITIVE_AU_PAIRS,
                                                     model.cfg.au_names), device=device)
        neg = torch.as_tensor(knowledge.pair_indices(knowledge.NEGATIVE_AU_PAIRS,
                                                     model.cfg.au_names), device=device)
    report: dict[str, Any] = {"model": model_name, "out_dir": str(out_dir), "stages": {},
                              "device": str(device), "train_images": len(train_arr.labels),
                              "val_images": len(val_arr.labels)}
    if dist_info.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{model_name}: {n_params / 1e6:.2f} M parameters; train {len(train_arr.labels)} / "
              f"val {len(val_arr.labels)} images on {device}", flush=True)

    def with_ckplus(idx: torch.Tensor, fraction: float) -> torch.Tensor:
        """A FER+ batch plus ``fraction`` of a batch of CK+ faces drawn at random (under DDP
        every rank draws the same faces and takes its share of them)."""
        count = round(fraction * cfg.batch_size)
        if not ck or count == 0:
            return idx
        pick = torch.randint(len(ck_index), (count,), generator=generator)
        pick = torch.tensor_split(pick, dist_info.world_size)[dist_info.rank]
        return torch.cat([idx, ck_index[pick.to(device)]])

    def batch_inputs(idx: torch.Tensor) -> torch.Tensor:
        x = augment(images[idx], aug_generator)
        return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

    def classify_validation(logit_key: str) -> tuple[float, dict[str, Any]]:
        out = predict_arrays(model, val_images, size_px, mean, std, cfg.eval_batch_size, device,
                             stage=1 if logit_key == "expr_logits" else 3,
                             amp=cfg.amp, channels_last=cfg.channels_last)
        rep = classification_report(val_arr.labels, out[logit_key].argmax(1),
                                    model.cfg.emotion_labels)
        rep.pop("confusion_matrix")
        return rep[cfg.select_metric], rep

    for stage in cfg.stages:
        st = cfg.stage(stage)
        if stage > 1 and not (init_checkpoint and stage == cfg.stages[0]):
            prev = out_dir / f"stage{stage - 1}_best.pt"
            if (stage - 1) not in cfg.stages and not prev.is_file():
                raise ModelFileError(f"stage {stage} starts from stage {stage - 1}'s best "
                                     f"checkpoint {prev}, which does not exist; run stage "
                                     f"{stage - 1} first or pass --init CHECKPOINT")
            state = read_checkpoint(prev)
            model.load_state_dict(state["state_dict"])
        if st.reinit:
            model.reset_stage(stage)
        if stage == 3 and st.init_fused_from_pred1:
            model.init_fused_head_from_expr_head()
        params = _set_trainable(model, stage, st)
        optimizer = make_optimizer(params, st)
        train_model = model
        if dist_info.world_size > 1:
            # The mean-attention ablation leaves stage 3's attention modules out of the forward.
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=stage == 3 and model.cfg.attention == "mean")

        if stage == 1:
            targets = (torch.from_numpy(train_arr.probs).to(device)
                       if cfg.data.label_mode == "probability" else labels)

            def step(idx, st=st, targets=targets, tm=train_model):
                _set_modes(model, 1, st)
                out = tm(batch_inputs(idx), stage=1)
                loss = F.cross_entropy(out["expr_logits"].float(), targets[idx],
                                       label_smoothing=st.label_smoothing)
                return loss, {"ce": loss.item()}

            validate = lambda: classify_validation("expr_logits")  # noqa: E731
        elif stage == 2:
            core = model

            def step(idx, st=st, tm=train_model, core=core):
                _set_modes(model, 2, st)
                idx = with_ckplus(idx, st.ckplus_fraction)
                out = tm(batch_inputs(idx), stage=2)
                logits = out["au_logits"].float()
                probs = torch.sigmoid(logits)
                pseudo = pseudo_au_labels(labels[idx], core.prior_weight, core.prior_low,
                                          core.prior_high)
                # Real FACS codes where a face has them (CK+), pseudo labels elsewhere.
                targets = torch.where(au_known[idx], au_real[idx], pseudo)
                reg_loss = au_regression_loss(logits, targets, st.au_loss)
                prior = prior_regulariser(core.prior_weight, core.prior_init, core.prior_low,
                                          core.prior_high, st.prior_regulariser, st.prior_weight)
                loss = reg_loss + prior
                logs = {"au": reg_loss.item(), "prior": prior.item()}
                if st.au_pair_weight:
                    pair = au_pair_loss(probs, pos, neg, st.pair_variant, st.pair_threshold)
                    loss = loss + st.au_pair_weight * pair
                    logs["pair"] = pair.item()
                return loss, logs

            def validate(core=core):
                out = predict_arrays(model, val_images, size_px, mean, std, cfg.eval_batch_size,
                                     device, stage=2, amp=cfg.amp,
                                     channels_last=cfg.channels_last)
                with torch.no_grad():
                    pseudo = pseudo_au_labels(torch.from_numpy(val_arr.labels).to(device),
                                              core.prior_weight, core.prior_low,
                                              core.prior_high).cpu().numpy()
                probs = 1 / (1 + np.exp(-out["au_logits"]))
                stats = au_pseudo_label_stats(probs, pseudo, model.cfg.au_names)
                # Selection on the mean per-AU AUC against the pseudo positives: a constant
                # output scores exactly 0.5 (MAE and agreement did not tell it apart).
                logs = {k: stats[k] for k in ("mean_auc", "mean_mae", "mean_agreement",
                                              "mean_active_rate", "mean_std_prob")}
                names, au = model.cfg.emotion_labels, model.cfg.au_names
                if {"happiness", "neutral"} <= set(names) and "AU12" in au:
                    col = probs[:, au.index("AU12")]
                    logs["au12_happy_minus_neutral"] = float(
                        col[val_arr.labels == names.index("happiness")].mean()
                        - col[val_arr.labels == names.index("neutral")].mean())
                return stats["mean_auc"], logs
        else:
            def step(idx, st=st, tm=train_model):
                _set_modes(model, 3, st)
                idx = with_ckplus(idx, st.ckplus_fraction)
                out = tm(batch_inputs(idx), stage=3)
                ce = F.cross_entropy(out["fused_logits"].float(), labels[idx],
                                     label_smoothing=st.label_smoothing)
                pair = au_pair_loss(out["attention"].float(), pos, neg, st.pair_variant,
                                    st.pair_threshold)
                loss = ce + st.pair_weight * pair
                logs = {"ce": ce.item(), "pair": pair.item()}
                if st.expr_ce_weight:
                    ce1 = F.cross_entropy(out["expr_logits"].float(), labels[idx])
                    loss = loss + st.expr_ce_weight * ce1
                    logs["ce_pred1"] = ce1.item()
                return loss, logs

            validate = lambda: classify_validation("fused_logits")  # noqa: E731

        result = run_epochs(model=train_model, model_name=model_name, optimizer=optimizer,
                            step=step, num_items=min(num_train, st.max_images or num_train),
                            batch_size=cfg.batch_size,
                            epochs=st.epochs, st=st, validate=validate, out_dir=out_dir,
                            tag=f"stage{stage}", device=device, generator=generator,
                            amp=cfg.amp, resume=resume, extra={**extra, "stage": stage},
                            dist_info=dist_info, progress=progress)
        report["stages"][f"stage{stage}"] = {
            "epochs": st.epochs, "best_score": result["best_score"],
            "best_epoch": max(result["history"], key=lambda r: r["score"])["epoch"]
            if result["history"] else None,
            "history": result["history"], "config": dataclasses.asdict(st)}
        if dist_info.world_size > 1:
            # Rank 0 wrote the stage's best checkpoint; every rank continues from it.
            torch.distributed.barrier()
        model.load_state_dict(read_checkpoint(result["best_path"])["state_dict"])

    if dist_info.is_main:
        final = read_checkpoint(out_dir / f"stage{cfg.stages[-1]}_best.pt")
        model.load_state_dict(final["state_dict"])
        final_logits = "fused_logits" if (model.cfg.branches == "full"
                                          and cfg.stages[-1] == 3) else "expr_logits"
        _score, val_report = classify_validation(final_logits)
        report["validation"] = val_report
        report["train_seconds"] = round(time.time() - t_start, 1)
        if model.cfg.branches == "full" and 2 in cfg.stages:
            report["prior_weight"] = {"learned": model.prior_weight.detach().cpu().tolist(),
                                      "init": model.prior_init.cpu().tolist()}
            out = predict_arrays(model, val_images, size_px, mean, std, cfg.eval_batch_size,
                                 device, stage=2, amp=cfg.amp, channels_last=cfg.channels_last)
            with torch.no_grad():
                pseudo = pseudo_au_labels(torch.from_numpy(val_arr.labels).to(device),
                                          model.prior_weight, model.prior_low,
                                          model.prior_high).cpu().numpy()
            report["au_pseudo_label_stats"] = au_pseudo_label_stats(
                1 / (1 + np.exp(-out["au_logits"])), pseudo, model.cfg.au_names)
        final_card = dict(extra["card"])
        if ck and 2 in cfg.stages:
            # Per-AU decision thresholds fitted on the CK+ training faces (never a test fold).
            out = predict_arrays(model, torch.from_numpy(ck.images), size_px, mean, std,
                                 cfg.eval_batch_size, device, stage=2, amp=cfg.amp,
                                 channels_last=cfg.channels_last)
            final_card["au_thresholds"] = fit_au_thresholds(
                1 / (1 + np.exp(-out["au_logits"])), ck.aus, ck.known, au_names)
            report["au_thresholds"] = final_card["au_thresholds"]
        final_card["metrics"] = {f"{cfg.data.val_split}": {
            k: val_report[k] for k in ("accuracy", "mean_class_accuracy", "num_images")}}
        model.cpu()
        save_checkpoint(out_dir / "model.pt", model.to(memory_format=torch.contiguous_format),
                        model_name, **{**extra, "card": final_card}, stage=cfg.stages[-1],
                        final_logits=final_logits, val_metrics=val_report)
        (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"done in {report['train_seconds']} s: val accuracy "
              f"{val_report['accuracy']:.4f}, mean class accuracy "
              f"{val_report['mean_class_accuracy']:.4f}; model {out_dir / 'model.pt'}")
    if dist_info.world_size > 1:
        torch.distributed.destroy_process_group()
    return report
