"""``aue train CONFIG`` for a student model (:mod:`aue_edge.train.models.student`): knowledge
distillation from an exported AUE-CRL model. Train stage (torch).

The config shares the layout of every training config (:mod:`aue_edge.train.run_config`); its
own section is ``distill``::

    model:   {name: student_s48, kwargs: {...}}
    data:    {root: ../shared/data/ferplus, ckplus_root: ../shared/data/ckplus, ckplus_fold: 1}
    run:     {out_dir, batch_size, eval_batch_size, select_metric, seed, device, num_threads}
    augment: {...}
    distill: {teacher: runs/au_ck/fold1/onnx/model.onnx, temperature, kd_weight, au_weight,
              ckplus_fraction, epochs, lr, ...}

What the student learns, per face of a batch:

- emotion: ``(1 - kd_weight) * CE(label) + kd_weight * T^2 * KL(teacher_T || student_T)``, the
  teacher's probabilities softened by the temperature ``T`` (Hinton et al. 2015), the label the
  data set's (FER+ majority vote; a CK+ face's emotion label);
- action units: BCE to the CK+ FACS codes on the CK+ faces of the training subjects (where CK+
  codes the AU), to the teacher's AU probabilities elsewhere; weighted by ``au_weight``.

The teacher runs once over every training face (ONNX Runtime for a ``.onnx``, torch for an
``aue train`` checkpoint; the edge's preprocessing at the teacher's own input size) and its
outputs are kept in ``out_dir/teacher_targets.npz`` for ``--resume`` and later runs with the
same teacher and faces. A cross-validation student for CK+ fold k must have a teacher that
never saw fold k (its card lists the CK+ subjects it trained on): the run refuses any other.
The final card lists the CK+ subjects of the student and of its teacher, so ``aue evaluate``
refuses to score the student on them; its AU thresholds are fitted on the CK+ training faces.
Model selection uses the validation split only. Output: ``out_dir/model.pt`` (``aue export``
turns it into ``model.onnx`` + ``card.json``) and ``training_report.json``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.train.augment import AugmentConfig
from aue_edge.train.config import DataConfig, InputConfig, StageConfig
from aue_edge.train.run_config import apply_overrides, config_family

TARGETS_FILE = "teacher_targets.npz"


@dataclass(frozen=True)
class DistillSection:
    teacher: str = ""              # exported model.onnx (card beside it) or aue train checkpoint
    temperature: float = 2.0       # T: softens both distributions in the KL term
    kd_weight: float = 0.7         # share of the KL term in the emotion loss (rest: CE to label)
    au_weight: float = 1.0         # weight of the AU BCE next to the emotion loss
    ckplus_fraction: float = 0.125  # with data.ckplus_root: this share of a batch is CK+ faces
    epochs: int = 15
    lr: float = 0.003
    optimizer: str = "adamw"       # adamw | sgd
    weight_decay: float = 1e-4
    schedule: str = "cosine"       # cosine | step
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    teacher_batch_size: int = 128

    def __post_init__(self) -> None:
        problems = []
        if not self.teacher:
            problems.append("distill.teacher is needed: the exported AUE-CRL model.onnx (or "
                            "its aue train checkpoint) to learn from")
        if self.temperature <= 0:
            problems.append(f"distill.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.kd_weight <= 1:
            problems.append(f"distill.kd_weight must be in [0, 1], got {self.kd_weight}")
        if self.au_weight < 0:
            problems.append(f"distill.au_weight must be >= 0, got {self.au_weight}")
        if not 0 <= self.ckplus_fraction < 1:
            problems.append(f"distill.ckplus_fraction must be in [0, 1), got "
                            f"{self.ckplus_fraction}")
        if self.epochs <= 0 or self.lr <= 0 or self.teacher_batch_size <= 0:
            problems.append("distill.epochs, distill.lr and distill.teacher_batch_size must "
                            "be > 0")
        if self.optimizer not in ("adamw", "sgd") or self.schedule not in ("cosine", "step"):
            problems.append(f"distill.optimizer must be adamw or sgd and distill.schedule "
                            f"cosine or step, got {self.optimizer!r}, {self.schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"distill.label_smoothing must be in [0, 1), got "
                            f"{self.label_smoothing}")
        if problems:
            raise ConfigError("; ".join(problems))

    def stage(self) -> StageConfig:
        """The optimiser and schedule settings in the shape the epoch loop reads."""
        return StageConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, schedule=self.schedule,
                           warmup_epochs=self.warmup_epochs,
                           label_smoothing=self.label_smoothing,
                           ckplus_fraction=self.ckplus_fraction)


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/student"
    batch_size: int = 128
    eval_batch_size: int = 512
    select_metric: str = "accuracy"  # accuracy | mean_class_accuracy (validation split)
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0           # torch CPU threads (0 = torch's default)

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.eval_batch_size < 1:
            raise ConfigError("run.batch_size must be >= 2 (BatchNorm) and run.eval_batch_size "
                              ">= 1")
        if self.select_metric not in ("accuracy", "mean_class_accuracy"):
            raise ConfigError(f"run.select_metric must be accuracy or mean_class_accuracy, got "
                              f"{self.select_metric!r}")


@dataclass(frozen=True)
class DistillConfig:
    model: str
    model_options: dict
    data: DataConfig
    augment: AugmentConfig
    run: RunSection
    distill: DistillSection

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def load_distill_config(path: str | Path, overrides: dict[str, Any] | None = None
                        ) -> DistillConfig:
    """Read a student config; ``overrides`` maps dotted keys (``distill.epochs``) to values."""
    path = Path(path)
    raw, lines = read_yaml_with_lines(path, "training config")
    raw = apply_overrides(raw or {}, overrides)
    origin = str(path)
    if config_family(raw, origin) != "student":
        raise ConfigError(f"{origin}: model.name {raw['model'].get('name')!r} is not a student "
                          f"model; aue train dispatches on model.name")
    allowed = {"model", "data", "augment", "run", "distill"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s) {unknown} for a student model; "
                          f"allowed: {sorted(allowed)}")
    model = raw["model"]
    bad = sorted(set(model) - {"name", "kwargs"})
    if bad:
        raise ConfigError(f"{origin}: model: unknown key(s) {bad}; known keys: ['kwargs', "
                          f"'name']")
    if not isinstance(model.get("kwargs") or {}, dict):
        raise ConfigError(f"{origin}: model.kwargs must be a mapping")
    overridden = frozenset(overrides or {})
    sections = {key: load_dataclass(cls, raw.get(key), origin, lines, overridden, prefix=key)
                for key, cls in (("data", DataConfig), ("augment", AugmentConfig),
                                 ("run", RunSection), ("distill", DistillSection))}
    cfg = DistillConfig(model=model["name"], model_options=dict(model.get("kwargs") or {}),
                        **sections)
    if not cfg.data.root and not cfg.data.packed:
        raise ConfigError(f"{origin}: data.root (data set folder) or data.packed (packed "
                          f"arrays) is needed")
    if cfg.data.ckplus_root and cfg.data.ckplus_fold not in (0, 1, 2, 3):
        raise ConfigError(f"{origin}: data.ckplus_fold must be 0 (all subjects) or 1..3, got "
                          f"{cfg.data.ckplus_fold}")
    return cfg


def _teacher_targets(predictor: tuple, digest: str, images: np.ndarray, out_dir: Path,
                     batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (emotion, AU) probabilities on ``images``, from ``out_dir/
    teacher_targets.npz`` when that holds this teacher's (``digest``) outputs on these faces;
    ``predictor``: :func:`~aue_edge.train.evaluate.load_predictor`'s result (closed here)."""
    import zipfile

    from aue_edge.core.checksums import pixel_sha256
    from aue_edge.train.evaluate import predict_faces

    card, predict, close = predictor
    faces = pixel_sha256(images)  # which faces the cached outputs belong to
    cache = out_dir / TARGETS_FILE
    if cache.is_file():
        try:
            with np.load(cache) as saved:
                if (str(saved["teacher_sha256"]) == digest
                        and str(saved["faces_sha256"]) == faces):
                    emotion, au = saved["emotion"], saved["au"]
                    close()
                    return emotion, au
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            print(f"{cache} is unreadable ({exc}); running the teacher again", flush=True)
    emotion, au = predict_faces(predict, close, images, card, batch_size, "teacher", progress)
    partial = cache.with_name(cache.name + ".partial.npz")
    np.savez(partial, emotion=emotion, au=au, teacher_sha256=digest, faces_sha256=faces)
    partial.replace(cache)
    return emotion, au


def train(cfg: DistillConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Distil the student; returns the run report (also ``out_dir/training_report.json``)."""
    from aue_edge.train.arrays import load_ckplus_arrays, load_split_arrays
    from aue_edge.train.augment import GpuAugment
    from aue_edge.train.ckplus_eval import ckplus_subjects_seen
    from aue_edge.train.evaluate import knowledge_table
    from aue_edge.train.loop import make_optimizer, predict_arrays, run_epochs
    from aue_edge.train.metrics import classification_report
    from aue_edge.train.models import create_model
    from aue_edge.train.runtime import read_checkpoint, save_checkpoint, start_run
    from aue_edge.train.trainer import (check_ckplus_inheritance, ckplus_card_entry,
                                        fit_au_thresholds)

    device, out_dir = start_run(cfg.run.seed, cfg.run.num_threads, cfg.run.device,
                                cfg.run.out_dir)
    teacher = Path(cfg.distill.teacher)
    if not teacher.is_file():
        raise ModelFileError(f"distill.teacher {teacher} does not exist; give an exported "
                             f"AUE-CRL model.onnx (card.json beside it) or an aue train "
                             f"checkpoint")
    t_start = time.time()
    train_arr = load_split_arrays(cfg.data, cfg.data.train_split, cfg.data.limit_train, progress)
    val_arr = load_split_arrays(cfg.data, cfg.data.val_split, cfg.data.limit_val, progress)
    labels_names = tuple(train_arr.label_names)

    from aue_edge.core.checksums import sha256_of_files
    from aue_edge.train.evaluate import load_predictor

    digest = sha256_of_files(teacher)
    predictor = load_predictor(teacher, device=cfg.run.device)
    card_t = predictor[0]
    try:
        if card_t.outputs.au_probs is None:
            raise ModelFileError(f"teacher {teacher} has no AU output (its card names no "
                                 f"au_probs); distil from an AUE-CRL model with its AU branch")
        if tuple(card_t.outputs.emotion_labels) != labels_names:
            raise ModelFileError(f"teacher {teacher} predicts "
                                 f"{list(card_t.outputs.emotion_labels)}, the data set has "
                                 f"{list(labels_names)}; use a teacher trained on these labels")
        inherited = ckplus_subjects_seen(card_t)
        check_ckplus_inheritance(
            cfg.data, inherited, f"teacher {teacher}",
            f"Use fold {cfg.data.ckplus_fold}'s cross-validation teacher (AUE-CRL trained with "
            f"data.ckplus_fold={cfg.data.ckplus_fold}, exported; docs/training.md)")
        options = dict(cfg.model_options)
        options.setdefault("emotion_labels", list(labels_names))
        options.setdefault("au_names", list(card_t.outputs.au_names))
        model = create_model(cfg.model, **options)
        au_names = tuple(model.cfg.au_names) if model.cfg.branches == "full" else ()
        if tuple(model.cfg.emotion_labels) != labels_names:
            raise ModelFileError(f"the model's labels {list(model.cfg.emotion_labels)} differ "
                                 f"from the data set's {list(labels_names)}")
        if au_names and tuple(card_t.outputs.au_names) != au_names:
            raise ModelFileError(f"teacher {teacher} outputs AUs "
                                 f"{list(card_t.outputs.au_names)}, the student "
                                 f"{list(au_names)}; leave model.kwargs.au_names out to take "
                                 f"the teacher's")
        ck = load_ckplus_arrays(cfg.data, labels_names, au_names, progress)
    except BaseException:
        predictor[2]()
        raise
    num_train = len(train_arr.labels)
    images_np = np.concatenate([train_arr.images] + ([ck.images] if ck else []))
    t_emotion, t_au = _teacher_targets(predictor, digest, images_np, out_dir,
                                       cfg.distill.teacher_batch_size, progress)
    model.to(device)

    images = torch.from_numpy(images_np).to(device)
    labels = torch.from_numpy(np.concatenate([train_arr.labels]
                                             + ([ck.labels] if ck else []))).to(device)
    temperature = cfg.distill.temperature
    soft = torch.softmax(torch.log(torch.from_numpy(t_emotion).clamp_min(1e-8)) / temperature,
                         dim=1).to(device)
    au_target = torch.from_numpy(t_au).float().to(device)
    if ck and au_names:
        ck_aus = torch.from_numpy(ck.aus).float().to(device)
        ck_known = torch.from_numpy(ck.known).to(device)
        au_target[num_train:] = torch.where(ck_known, ck_aus, au_target[num_train:])
        ck_index = torch.arange(num_train, len(labels), device=device)
    size_px = (model.cfg.input_size_px, model.cfg.input_size_px)
    inp = InputConfig()
    augment = GpuAugment(cfg.augment, size_px, inp.mean, inp.std)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    aug_generator = torch.Generator(device=device).manual_seed(cfg.run.seed + 1)
    st = cfg.distill.stage()
    val_images = torch.from_numpy(val_arr.images)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.model}: {n_params / 1e6:.2f} M parameters; train {num_train} FER+"
          f"{f' + {len(ck.labels)} CK+' if ck else ''} / val {len(val_arr.labels)} faces on "
          f"{device}; teacher {teacher}", flush=True)

    def step(idx: torch.Tensor):
        count = round(st.ckplus_fraction * cfg.run.batch_size) if ck else 0
        if count:
            pick = torch.randint(len(ck_index), (count,), generator=generator)
            idx = torch.cat([idx, ck_index[pick.to(device)]])
        out = model(augment(images[idx], aug_generator))
        logits = out["emotion_logits"].float()
        ce = F.cross_entropy(logits, labels[idx], label_smoothing=st.label_smoothing)
        kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft[idx],
                      reduction="batchmean") * temperature ** 2
        loss = (1 - cfg.distill.kd_weight) * ce + cfg.distill.kd_weight * kd
        logs = {"ce": ce.item(), "kd": kd.item()}
        if au_names:
            au = F.binary_cross_entropy_with_logits(out["au_logits"].float(), au_target[idx])
            loss = loss + cfg.distill.au_weight * au
            logs["au"] = au.item()
        return loss, logs

    def validate() -> tuple[float, dict[str, Any]]:
        out = predict_arrays(model, val_images, size_px, inp.mean, inp.std,
                             cfg.run.eval_batch_size, device, amp=False)
        rep = classification_report(val_arr.labels, out["emotion_logits"].argmax(1),
                                    model.cfg.emotion_labels)
        rep.pop("confusion_matrix")
        return rep[cfg.run.select_metric], rep

    training = {"dataset": cfg.data.dataset, "label_mode": cfg.data.label_mode,
                "train_split": cfg.data.train_split, "val_split": cfg.data.val_split,
                "num_train_images": num_train, "source": train_arr.source,
                "augment": dataclasses.asdict(cfg.augment), "epochs": st.epochs,
                "seed": cfg.run.seed,
                "distillation": {"teacher": teacher.name, "teacher_model": card_t.model_name,
                                 "teacher_sha256": digest,
                                 "temperature": temperature,
                                 "kd_weight": cfg.distill.kd_weight,
                                 "au_weight": cfg.distill.au_weight},
                **ckplus_card_entry(ck, inherited)}
    card = {"input": {"size_px": list(size_px), "color": inp.color, "mean": list(inp.mean),
                      "std": list(inp.std),
                      "resize": "cv2.INTER_LINEAR (aue_edge.edge.preprocess.to_model_input)"},
            "emotion_labels": list(labels_names), "au_names": list(au_names),
            "training": training}
    table = knowledge_table(card_t)
    if table is not None and au_names:
        # The teacher's expression->AU table: the knowledge read-out baseline the student's AU
        # output is scored against (aue evaluate, CK+ cross-validation).
        card["knowledge_prior"] = np.round(table, 5).tolist()
    extra = {"train_config": cfg.to_dict(), "card": card}
    model.train()
    result = run_epochs(model=model, model_name=cfg.model,
                        optimizer=make_optimizer(list(model.parameters()), st), step=step,
                        num_items=num_train, batch_size=cfg.run.batch_size, epochs=st.epochs,
                        st=st, validate=validate, out_dir=out_dir, tag="distill",
                        device=device, generator=generator, amp=False, resume=resume,
                        extra=extra, progress=progress)
    model.load_state_dict(read_checkpoint(result["best_path"])["state_dict"])
    _score, val_report = validate()
    if ck and au_names:
        # Per-AU decision thresholds fitted on the CK+ training faces (never a test fold).
        out = predict_arrays(model, torch.from_numpy(ck.images), size_px, inp.mean, inp.std,
                             cfg.run.eval_batch_size, device, amp=False)
        card["au_thresholds"] = fit_au_thresholds(1 / (1 + np.exp(-out["au_logits"])), ck.aus,
                                                  ck.known, au_names)
    card["metrics"] = {cfg.data.val_split: {k: val_report[k] for k in
                                            ("accuracy", "mean_class_accuracy", "num_images")}}
    model.cpu()
    save_checkpoint(out_dir / "model.pt", model, cfg.model, **{**extra, "card": card},
                    final_logits="emotion_logits", val_metrics=val_report)
    report = {"model": cfg.model, "out_dir": str(out_dir), "teacher": str(teacher),
              "train_images": num_train, "ckplus_images": len(ck.labels) if ck else 0,
              "val_images": len(val_arr.labels), "device": str(device),
              "best_score": result["best_score"], "history": result["history"],
              "validation": val_report, "au_thresholds": card.get("au_thresholds", {}),
              "train_seconds": round(time.time() - t_start, 1)}
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done in {report['train_seconds']} s: val accuracy {val_report['accuracy']:.4f}, "
          f"mean class accuracy {val_report['mean_class_accuracy']:.4f}; model "
          f"{out_dir / 'model.pt'}")
    return report

