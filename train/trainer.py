"""Training: YAML config, device-resident data, a generic epoch loop with checkpoint + resume,
and the AUE-CRL three-stage schedule. Train stage (torch); ``aue train`` calls :func:`train`.

Generic pieces (the AU detectors' trainers reuse them):

* :func:`load_split_arrays` / :func:`pack_arrays`: a data set split as uint8 arrays, from the
  reader (FER+ layout) or from a *packed arrays file* (``.npz`` or lzma-compressed ``.npz.xz``
  written by ``aue train CONFIG --pack-data FILE``), which is how a run ships FER+ to a remote
  GPU machine in one small file;
* :func:`iterate_batches`: shuffled index batches over device-resident arrays;
* :func:`run_epochs`: the epoch loop (tqdm, AMP, per-step LR, validation, ``{tag}_last.pt`` every
  epoch for resume and ``{tag}_best.pt`` on the best validation score);
* :func:`predict_arrays`: batched inference over uint8 images.

AUE-CRL schedule (paper Sec. III-D): stage 1 trains backbone + expression classifier with CE;
stage 2 freezes them and trains the AU branch, crop nets, AU head and W on knowledge pseudo
labels; stage 3 freezes the AU path and trains the KCAUS attention and fused classifier with
L_e = CE + alpha (l_p + l_n). Frozen modules run in eval mode (their BN statistics stay fixed,
dropout off). Each stage starts from the previous stage's best checkpoint. Model selection uses
the validation split only; ``aue evaluate`` reports the test split.

Multi-GPU: started with ``torchrun --nproc_per_node=K -m aue_edge.cli train CONFIG``, each rank
takes its share of every batch and gradients are all-reduced (DDP). This path has not been
executed on this project's machines (one GPU at most); single-GPU and CPU runs have.
"""
from __future__ import annotations

import dataclasses
import io
import json
import lzma
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from aue_edge.edge.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.edge.errors import ConfigError, DatasetError, ModelFileError
from aue_edge.train.augment import AugmentConfig, GpuAugment, preprocess
from aue_edge.train.metrics import au_pseudo_label_stats, classification_report
from aue_edge.train.runtime import (read_checkpoint, save_checkpoint, seed_everything,
                                    select_device)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PACKED_FORMAT = "aue_edge.packed_arrays.v1"

# ---------------------------------------------------------------------------------------------
# Configuration (one YAML per run; frozen dataclasses validated on load; CLI flags override)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ferplus"
    root: str = ""                 # data set folder in its published layout
    packed: str = ""               # packed arrays file; used instead of root when set
    label_mode: str = "majority"
    train_split: str = "train"
    val_split: str = "valid"
    limit_train: int = 0           # first N images only (0 = all): smoke runs and tests
    limit_val: int = 0
    # Real AU labels (stages 2-3): CK+ faces mixed into every batch (stageN.ckplus_fraction).
    # ckplus_fold k trains on the other two folds' subjects (a cross-validation model for fold
    # k); 0 on every subject.
    ckplus_root: str = ""
    ckplus_fold: int = 0


@dataclass(frozen=True)
class InputConfig:
    color: str = "gray3"           # FER+ is grey; replicated to the 3 channels
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class StageConfig:
    epochs: int = 0
    max_images: int = 0            # this stage's epochs cover the first N training images (0 all)
    ckplus_fraction: float = 0.25  # with data.ckplus_root: this share of a batch is CK+ faces
    lr: float = 0.01
    optimizer: str = "sgd"         # sgd (paper: momentum 0.9) | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"       # cosine | step (x0.1 at 3/8 and 3/4 of the epochs, paper)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # stage 2 (AU): pseudo-label regression + W's prior regulariser (+ code's pair term)
    au_loss: str = "bce"           # bce (default: learns) | mse (paper) | weighted_mse (code)
    prior_regulariser: str = "l2"  # l2 (paper) | l1 (code)
    prior_weight: float = 1.0
    au_pair_weight: float = 0.0    # code: 0.5 on the AU predictions; paper: none
    # stage 3 (fusion): CE(pred2) + alpha (l_p + l_n) on the attention probabilities
    pair_variant: str = "paper"    # paper | code
    pair_weight: float = 0.5       # alpha (paper 0.5; code 0.05)
    pair_threshold: float = 0.5
    expr_ce_weight: float = 0.0    # code adds CE(pred1) in stage 3 (and trains pred1)
    # Start pred2 as pred1 on f_e with zero weight on f_a (ours, not the paper's: stage 3 then
    # begins at stage 1's accuracy and the attention path only has to add to it).
    init_fused_from_pred1: bool = False
    # Re-initialise this stage's modules before it trains (the paper's stages start their
    # modules fresh); off: continue from the weights the starting checkpoint holds.
    reinit: bool = False


@dataclass(frozen=True)
class TrainConfig:
    model: str
    model_options: dict = field(default_factory=dict)
    data: DataConfig = DataConfig()
    input: InputConfig = InputConfig()
    augment: AugmentConfig = AugmentConfig()
    stages: tuple[int, ...] = (1, 2, 3)
    stage1: StageConfig = StageConfig()
    stage2: StageConfig = StageConfig()
    stage3: StageConfig = StageConfig()
    batch_size: int = 256
    eval_batch_size: int = 512
    select_metric: str = "accuracy"  # accuracy | mean_class_accuracy (validation split)
    seed: int = 0
    device: str = "auto"
    amp: bool = True               # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True
    num_threads: int = 0           # torch CPU threads (0 = torch's default)
    pretrained: str = ""           # torchvision-format ResNet state dict for the backbone
    out_dir: str = "runs/aue_crl"

    def stage(self, n: int) -> StageConfig:
        return getattr(self, f"stage{n}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def config_from_dict(raw: dict[str, Any], origin: str = "<config>",
                     lines: dict[str, int] | None = None,
                     overridden: frozenset[str] = frozenset()) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from parsed YAML (``lines``, ``overridden``:
    see :func:`aue_edge.edge.config_files.load_dataclass`)."""
    if not isinstance(raw, dict) or "model" not in raw:
        raise ConfigError(f"{origin}: a training config is a mapping with at least 'model'")
    cfg = load_dataclass(TrainConfig, raw, origin, lines, overridden)
    validate_config(cfg, origin)
    return cfg


def validate_config(cfg: TrainConfig, origin: str = "<config>") -> None:
    problems = []
    if not set(cfg.stages) <= {1, 2, 3} or not cfg.stages or list(cfg.stages) != sorted(
            set(cfg.stages)):
        problems.append(f"stages must be an increasing subset of [1, 2, 3], got "
                        f"{list(cfg.stages)}")
    for n in cfg.stages if set(cfg.stages) <= {1, 2, 3} else ():
        st = cfg.stage(n)
        if st.epochs <= 0:
            problems.append(f"stage{n}.epochs must be > 0 for a stage that runs, got "
                            f"{st.epochs}")
        if st.lr <= 0:
            problems.append(f"stage{n}.lr must be > 0, got {st.lr}")
        if st.optimizer not in ("sgd", "adamw"):
            problems.append(f"stage{n}.optimizer must be sgd or adamw, got {st.optimizer!r}")
        if st.schedule not in ("cosine", "step"):
            problems.append(f"stage{n}.schedule must be cosine or step, got {st.schedule!r}")
        if not 0 <= st.ckplus_fraction < 1:
            problems.append(f"stage{n}.ckplus_fraction must be in [0, 1)")
        if st.max_images < 0:
            problems.append(f"stage{n}.max_images must be >= 0 (0 = every image)")
        if not 0 <= st.label_smoothing < 1:
            problems.append(f"stage{n}.label_smoothing must be in [0, 1)")
    if cfg.batch_size < 2 or cfg.eval_batch_size < 1:
        problems.append("batch_size must be >= 2 (BatchNorm) and eval_batch_size >= 1")
    if cfg.select_metric not in ("accuracy", "mean_class_accuracy"):
        problems.append(f"select_metric must be accuracy or mean_class_accuracy, got "
                        f"{cfg.select_metric!r}")
    if cfg.data.label_mode not in ("majority", "probability"):
        problems.append(f"data.label_mode must be majority or probability, got "
                        f"{cfg.data.label_mode!r}")
    if not cfg.data.root and not cfg.data.packed:
        problems.append("data.root (data set folder) or data.packed (packed arrays) is needed")
    if cfg.data.ckplus_root and cfg.data.ckplus_fold not in (0, 1, 2, 3):
        problems.append(f"data.ckplus_fold must be 0 (all subjects) or 1..3, got "
                        f"{cfg.data.ckplus_fold}")
    if cfg.input.color != "gray3":
        problems.append(f"input.color {cfg.input.color!r}: the grey FER+ trainer feeds gray3")
    if problems:
        raise ConfigError(f"{origin}: invalid training config: " + "; ".join(problems))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` maps dotted keys (``stage1.epochs``) to values."""
    path = Path(path)
    raw, lines = read_yaml_with_lines(path, "training config")
    raw = raw or {}
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(raw, str(path), lines, frozenset(overrides or {}))


# ---------------------------------------------------------------------------------------------
# Data arrays
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitArrays:
    """One split as arrays: uint8 images (N, H, W), int64 labels, float32 label distributions."""

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    names: list[str]
    label_names: tuple[str, ...]
    source: str


def load_split_arrays(data: DataConfig, split: str, limit: int = 0,
                      progress: bool = True) -> SplitArrays:
    """A split from the packed arrays file when ``data.packed`` is set, else from the reader."""
    if data.packed:
        arrays = read_packed(data.packed, split)
        if arrays.label_names and data.label_mode not in arrays.source:
            raise DatasetError(f"{data.packed} was packed for {arrays.source}, but the config "
                               f"asks for label_mode {data.label_mode!r}; re-pack the data")
    else:
        from aue_edge.train.data import get_dataset

        kwargs = {"label_mode": data.label_mode} if data.dataset == "ferplus" else {}
        dataset = get_dataset(data.dataset, data.root, split, **kwargs)
        if not hasattr(dataset, "load_arrays"):
            raise DatasetError(f"data set {data.dataset!r} has no array loader; the AUE-CRL "
                               f"trainer reads FER+-style grey arrays")
        images, labels, probs, names = dataset.load_arrays(progress=progress)
        arrays = SplitArrays(images, labels, probs, list(names), tuple(dataset.labels),
                             f"{data.dataset}:{data.root}:{split}:{data.label_mode}")
    if limit:
        arrays = SplitArrays(arrays.images[:limit], arrays.labels[:limit], arrays.probs[:limit],
                             arrays.names[:limit], arrays.label_names, arrays.source)
    if len(arrays.labels) == 0:
        raise DatasetError(f"split {split!r} of {data.packed or data.root} holds no images "
                           f"after the label rule; nothing to train or evaluate on")
    return arrays


def pack_arrays(path: str | Path, splits: dict[str, SplitArrays], compress: bool = True) -> Path:
    """Write splits to one ``.npz`` (``compress``: lzma, ``.npz.xz``; FER+ train+valid ~50 MB)."""
    path = Path(path)
    payload: dict[str, np.ndarray] = {}
    meta = {"format": PACKED_FORMAT, "splits": {}}
    for split, arr in splits.items():
        payload[f"{split}/images"] = arr.images
        payload[f"{split}/labels"] = arr.labels
        payload[f"{split}/probs"] = arr.probs
        payload[f"{split}/names"] = np.asarray(arr.names)
        meta["splits"][split] = {"label_names": list(arr.label_names), "source": arr.source,
                                 "num_images": int(len(arr.labels))}
    payload["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    data = buffer.getvalue()
    if compress:
        data = lzma.compress(data, preset=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def read_packed(path: str | Path, split: str) -> SplitArrays:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"packed arrays file {path} does not exist; write one with "
                           f"'aue train CONFIG --pack-data {path}'")
    data = path.read_bytes()
    try:
        if data[:6] == b"\xfd7zXZ\x00":
            data = lzma.decompress(data)
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
    except (lzma.LZMAError, ValueError, KeyError, OSError) as exc:
        raise DatasetError(f"{path} is not a packed arrays file ({type(exc).__name__}: "
                           f"{exc}); write one with 'aue train CONFIG --pack-data FILE'") from None
    if meta.get("format") != PACKED_FORMAT:
        raise DatasetError(f"{path}: format {meta.get('format')!r}, expected {PACKED_FORMAT!r}")
    if split not in meta["splits"]:
        raise DatasetError(f"{path} holds splits {sorted(meta['splits'])}, not {split!r}")
    info = meta["splits"][split]
    return SplitArrays(npz[f"{split}/images"], npz[f"{split}/labels"], npz[f"{split}/probs"],
                       [str(n) for n in npz[f"{split}/names"]], tuple(info["label_names"]),
                       info["source"])


# ---------------------------------------------------------------------------------------------
# Generic loop pieces
# ---------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_request: str) -> tuple[torch.device, DistInfo]:
    """Single process unless started by torchrun (WORLD_SIZE > 1): then NCCL/Gloo DDP."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return select_device(device_request), DistInfo()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device, DistInfo(dist.get_rank(), dist.get_world_size())


def iterate_batches(num_items: int, batch_size: int, generator: torch.Generator,
                    device: torch.device, dist_info: DistInfo = DistInfo()
                    ) -> Iterator[torch.Tensor]:
    """Shuffled index batches; the last incomplete batch is dropped (BatchNorm needs > 1).

    Under DDP every rank draws the same permutation (same seed) and takes its slice.
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
        train_logs = {k: v / max(1, count) for k, v in sums.items()}
        score, val_metrics = validate()
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
                   upto: str = "full", amp: bool = True,
                   channels_last: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) over uint8 images; returns every output as float32 numpy."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    try:
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start:start + batch_size].to(device), size_px, mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                out = model(x, upto=upto)
            for key, value in out.items():
                chunks.setdefault(key, []).append(value.float().cpu().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}


# ---------------------------------------------------------------------------------------------
# AUE-CRL three-stage training
# ---------------------------------------------------------------------------------------------


@dataclass
class CkPlusArrays:
    """CK+ training faces for stages 2-3: labels in the model's label space, AUs in its AU
    order (``known`` False for a model AU that CK+ does not code)."""

    images: np.ndarray
    labels: np.ndarray
    aus: np.ndarray
    known: np.ndarray
    subjects: list[str]
    fold: int


def load_ckplus_arrays(data: DataConfig, emotion_labels: tuple[str, ...],
                       au_names: tuple[str, ...], progress: bool = True) -> CkPlusArrays | None:
    """The CK+ faces a run trains on (``data.ckplus_root``; fold 0 = every subject), or None."""
    if not data.ckplus_root:
        return None
    from aue_edge.train.data.ckplus import CKPLUS_AUS, CkPlus
    from aue_edge.train.knowledge import label_mapping

    if not au_names:
        raise ConfigError("data.ckplus_root gives real AU labels, but this model has no AU "
                          "branch (the backbone baseline); drop data.ckplus_root")
    reader = CkPlus(data.ckplus_root, "all" if data.ckplus_fold == 0 else "train",
                    max(1, data.ckplus_fold))
    images, labels, _probs, _names = reader.load_arrays(progress=progress)
    mapping = label_mapping(reader.labels, emotion_labels)
    if (mapping < 0).any():
        missing = [n for n, m in zip(reader.labels, mapping) if m < 0]
        raise ConfigError(f"the model's labels {list(emotion_labels)} lack the CK+ emotions "
                          f"{missing}; CK+ faces cannot be trained on")
    matrix = reader.au_matrix()
    known = np.array([a in CKPLUS_AUS for a in au_names])
    aus = np.zeros((len(labels), len(au_names)), dtype=np.float32)
    for j, name in enumerate(au_names):
        if known[j]:
            aus[:, j] = matrix[:, CKPLUS_AUS.index(name)]
    return CkPlusArrays(images, mapping[labels], aus, np.broadcast_to(known, aus.shape).copy(),
                        list(reader.subjects), data.ckplus_fold)


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


def check_ckplus_inheritance(data: DataConfig, inherited: set[str], init: str | None) -> None:
    """A cross-validation run for CK+ fold k must not start from weights that saw fold k."""
    from aue_edge.train.data.folds import CKPLUS_FOLDS

    if data.ckplus_root and data.ckplus_fold:
        leaked = inherited & set(CKPLUS_FOLDS[data.ckplus_fold - 1])
        if leaked:
            raise ModelFileError(
                f"{init} was trained on {len(leaked)} CK+ subjects of fold {data.ckplus_fold} "
                f"({sorted(leaked)[:3]}...), which this run holds out; a fold model started "
                f"from it would be scored on faces its weights saw. Start from a checkpoint "
                f"that never saw CK+ (e.g. 'aue import-onnx' of the first release, or a stage-1 "
                f"checkpoint)")


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
                     # CK+ subjects this run trained on and those the starting weights saw
                     **({"ckplus": {"fold_held_out": (ck.fold or None) if ck else None,
                                    "num_images": int(len(ck.labels)) if ck else 0,
                                    "subjects": sorted(set(ck.subjects if ck else ())
                                                       | set(inherited_ckplus))}}
                        if ck or inherited_ckplus else {})},
    }


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
    from aue_edge.train import knowledge
    from aue_edge.train.losses import (au_pair_loss, au_regression_loss, prior_regulariser,
                                       pseudo_au_labels)
    from aue_edge.train.models import create_model

    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device, dist_info = setup_distributed(cfg.device)
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
        # Rebuild from the checkpoint's own config; model_options may change options that add
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
                                 f"model_options {cfg.model_options}: {exc}") from None
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
    aug_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
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
        """A FER+ batch plus ``fraction`` of a batch of CK+ faces drawn at random."""
        count = round(fraction * cfg.batch_size)
        if not ck or count == 0:
            return idx
        pick = torch.randint(len(ck_index), (count,), generator=generator)
        return torch.cat([idx, ck_index[pick.to(device)]])

    def batch_inputs(idx: torch.Tensor) -> torch.Tensor:
        x = augment(images[idx], aug_generator)
        return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

    def classify_validation(logit_key: str) -> tuple[float, dict[str, Any]]:
        out = predict_arrays(model, val_images, size_px, mean, std, cfg.eval_batch_size, device,
                             upto="expression" if logit_key == "expr_logits" else "full",
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
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        if stage == 1:
            targets = (torch.from_numpy(train_arr.probs).to(device)
                       if cfg.data.label_mode == "probability" else labels)

            def step(idx, st=st, targets=targets, tm=train_model):
                _set_modes(model, 1, st)
                out = tm(batch_inputs(idx), upto="expression")
                loss = F.cross_entropy(out["expr_logits"].float(), targets[idx],
                                       label_smoothing=st.label_smoothing)
                return loss, {"ce": loss.item()}

            validate = lambda: classify_validation("expr_logits")  # noqa: E731
        elif stage == 2:
            core = model

            def step(idx, st=st, tm=train_model, core=core):
                _set_modes(model, 2, st)
                idx = with_ckplus(idx, st.ckplus_fraction)
                out = tm(batch_inputs(idx), upto="au")
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
                                     device, upto="au", amp=cfg.amp,
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
                out = tm(batch_inputs(idx), upto="full")
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
                                 device, upto="au", amp=cfg.amp, channels_last=cfg.channels_last)
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
                                 cfg.eval_batch_size, device, upto="au", amp=cfg.amp,
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
    return report
