"""Configuration of an AU-detector training run: frozen dataclasses loaded from one YAML file.

Train stage. ``aue train aue_edge/train/configs/lp_net_ferplus.yaml`` (through
``train_from_config``) reads a file of this shape; every key is checked, unknown keys are errors
that name the file and the key, and command-line overrides (``aue train ... --set
run.batch_size=8``, dotted keys) are applied before validation::

    model:   {name: lp_net_r18_112, au_set: auecrl, kwargs: {}}
    data:    {dataset: ferplus, root: ../shared/data/ferplus, pseudo_labels: majority, ...}
    run:     {batch_size: 64, device: auto, seed: 0, out_dir: runs/lp_net, ...}
    augment: {flip_prob: 0.5, ...}             # aue_edge.train.augment.AugmentConfig
    lp_net:  {...} | gtle_net: {...} | kdsrl: {...}   # the method's stages, one section

This is the layout every training config shares (:mod:`aue_edge.train.run_config`, AUE-CRL's
too); the method section is chosen by the model's family (``aue_edge.train.models.model_family``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import ConfigError
from aue_edge.train.augment import AugmentConfig
from aue_edge.train.run_config import AU_FAMILIES as FAMILIES, apply_overrides
DATASETS = ("ferplus", "bp4d", "disfa", "ckplus")
AU_SETS = ("auecrl", "bp4d", "disfa")


@dataclass(frozen=True)
class ModelSection:
    name: str = "lp_net_tiny"
    au_set: str = "auecrl"            # auecrl (FER+ pseudo labels) | bp4d | disfa, or a list
    au_names: tuple[str, ...] = ()    # explicit AU list; overrides au_set when given
    kwargs: dict = field(default_factory=dict)
    init_checkpoint: str = ""         # start from this checkpoint's matching tensors (--init)
    init_prefixes: tuple[str, ...] = ()   # copy only tensors under these names ("stem.")

    @property
    def family(self) -> str:
        from aue_edge.train.models import list_models, model_family

        family = model_family(self.name)
        if family not in FAMILIES:
            raise ConfigError(f"model.name {self.name!r} is not an AU detector; AU detectors: "
                              f"{[n for n in list_models() if model_family(n) in FAMILIES]}")
        return family

    def resolved_au_names(self) -> tuple[str, ...]:
        from aue_edge.data import knowledge

        if self.au_names:
            return tuple(self.au_names)
        return {"auecrl": knowledge.AUECRL_AUS, "bp4d": knowledge.BP4D_AUS,
                "disfa": knowledge.DISFA_AUS}[self.au_set]


@dataclass(frozen=True)
class DataSection:
    dataset: str = "ferplus"
    root: str = "../shared/data/ferplus"
    packed: str = ""                      # FER+ packed arrays file (aue train --pack-data)
    face_crop: str = "as_is"              # BP4D/DISFA: as_is (face crops) | detect (YuNet+align)
    pseudo_labels: str = "majority"       # FER+ only: majority | soft (vote distribution)
    train_split: str = "train"            # FER+ only
    eval_split: str = "valid"             # FER+ only
    max_train_images: int | None = None   # a subset, for smoke runs and tests
    max_eval_images: int | None = None
    folds: tuple[int, ...] = (1, 2, 3)    # BP4D/DISFA/CK+: test folds to run (3-fold protocol)
    # CK+ only: after the folds, train one model on every subject (<out_dir>/all, the one to
    # ship; its thresholds come from the folds' out-of-fold predictions), and score the folds
    # beside this `aue evaluate --dataset ckplus` result of the default model's fold models.
    train_all: bool = False
    ckplus_reference: str = ""


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/au"
    batch_size: int = 64
    eval_batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    num_threads: int | None = None        # torch CPU threads; None leaves torch's default
    max_steps_per_epoch: int | None = None
    progress: bool = True
    amp: bool = True                      # bf16 autocast on CUDA (ignored on the CPU)
    resume: bool = False                  # skip stages whose checkpoint exists in out_dir/stages


@dataclass(frozen=True)
class LpNetStage:
    stage: int
    epochs: int
    lr_stem: float
    lr_head: float                        # stage 1: fc; 2: L-Net; 3: L-Net
    lr_pnet: float = 1e-3                 # stage 3 only


@dataclass(frozen=True)
class LpNetSection:
    """LP-Net's incremental stages (paper: Adam; stem 1e-3; then 5e-4 stem / 1e-3 new part)."""

    stages: tuple[LpNetStage, ...] = (
        LpNetStage(1, 30, 1e-3, 1e-3), LpNetStage(2, 30, 5e-4, 1e-3),
        LpNetStage(3, 30, 5e-4, 5e-4, 1e-3))
    orthogonality_weight: float = 1.0
    selective_learning: bool = True
    target_positive_rate: float = 0.5     # SL target balance per AU
    max_sl_weight: float | None = 10.0


@dataclass(frozen=True)
class GtleSection:
    """GEE triplet pre-training, then the full network (paper: Adam lr 1e-5, wd 1e-6)."""

    gee_epochs: int = 5
    gee_lr: float = 1e-4
    num_triplets: int = 20000
    triplet_margin: float = 0.1
    triplet_max_pair_distance: float = 0.2
    triplet_min_gap: float = 0.3
    epochs: int = 20
    lr: float = 1e-5
    weight_decay: float = 1e-6
    warmup_steps: int = 1000
    reconstruction_weight: float = 0.001
    # The paper keeps E_m out of Adam without saying what updates it; plain SGD with momentum
    # (its own step size, no adaptive scaling) is the reading used here (docs/au_detectors.md).
    mask_optimizer: str = "sgd"           # sgd | adam | frozen
    mask_lr: float = 1e-3                 # for mask_optimizer sgd
    freeze_gee: bool = False


@dataclass(frozen=True)
class KdsrlSection:
    """Self-supervised pre-training (Adam 1e-4), then per-AU-group classifiers."""

    ssl_epochs: int = 10
    ssl_lr: float = 1e-4
    temperature: float = 0.07
    intra_weight: float = 0.1
    alpha: float = 0.01
    beta: float = 1.0
    stop_gradient_targets: bool = False   # paper: same view, gradient to both sides
    jitter_brightness: float = 0.4        # colour jitter is the paper's only augmentation
    jitter_contrast: float = 0.4
    classify_mode: str = "frozen"         # frozen ("linear" evaluation) | finetune
    classify_epochs: int = 10
    classify_lr: float = 1e-3
    finetune_encoder_lr: float = 1e-4


@dataclass(frozen=True)
class AuTrainConfig:
    model: ModelSection
    data: DataSection
    run: RunSection
    augment: AugmentConfig
    method: LpNetSection | GtleSection | KdsrlSection
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out[self.model.family] = out.pop("method")
        return out


_METHOD_SECTIONS = {"lp_net": LpNetSection, "gtle_net": GtleSection, "kdsrl": KdsrlSection}


def _validate(cfg: AuTrainConfig) -> None:
    where = cfg.source
    problems = []
    model, data, run, method = cfg.model, cfg.data, cfg.run, cfg.method
    model.family  # noqa: B018 - raises on a non-AU model name
    if not model.au_names and model.au_set not in AU_SETS:
        problems.append(f"model.au_set must be one of {AU_SETS}, got {model.au_set!r}")
    if data.dataset not in DATASETS:
        problems.append(f"data.dataset must be one of {DATASETS}, got {data.dataset!r}")
    if data.pseudo_labels not in ("majority", "soft"):
        problems.append(f"data.pseudo_labels must be 'majority' or 'soft', got "
                        f"{data.pseudo_labels!r}")
    if data.face_crop not in ("as_is", "detect"):
        problems.append(f"data.face_crop must be as_is or detect, got {data.face_crop!r}")
    if data.dataset == "ckplus" and data.face_crop != "as_is":
        problems.append("data.face_crop must be as_is for ckplus (its images are face crops)")
    if data.dataset != "ckplus" and (data.train_all or data.ckplus_reference):
        problems.append("data.train_all and data.ckplus_reference apply to dataset ckplus only")
    if data.train_all and tuple(data.folds) != (1, 2, 3):
        problems.append("data.train_all takes its thresholds from all three folds' out-of-fold "
                        "predictions: set data.folds to [1, 2, 3]")
    if not data.folds or any(f not in (1, 2, 3) for f in data.folds):
        problems.append(f"data.folds must be a non-empty subset of (1, 2, 3), got {data.folds}")
    for name in ("max_train_images", "max_eval_images"):
        value = getattr(data, name)
        if value is not None and (not isinstance(value, int) or value < 2):
            problems.append(f"data.{name} must be null or an integer >= 2, got {value!r}")
    if run.batch_size < 2 or run.eval_batch_size < 1:
        problems.append(f"run.batch_size must be >= 2 (batch-norm, contrastive losses) and "
                        f"eval_batch_size >= 1; got {run.batch_size}, {run.eval_batch_size}")
    if run.max_steps_per_epoch is not None and run.max_steps_per_epoch < 1:
        problems.append("run.max_steps_per_epoch must be null or >= 1")
    if isinstance(method, LpNetSection):
        stages = [s.stage for s in method.stages]
        if not stages or stages != sorted(set(stages)) or any(s not in (1, 2, 3) for s in stages):
            problems.append(f"lp_net.stages must be increasing stage numbers from (1, 2, 3), got "
                            f"{stages}")
        if any(s.epochs < 0 or s.lr_stem <= 0 or s.lr_head <= 0 or s.lr_pnet <= 0
               for s in method.stages):
            problems.append("lp_net.stages: epochs must be >= 0 and learning rates > 0")
        if not 0 < method.target_positive_rate < 1:
            problems.append("lp_net.target_positive_rate must be in (0, 1)")
    elif isinstance(method, GtleSection):
        if method.mask_optimizer not in ("adam", "sgd", "frozen"):
            problems.append(f"gtle_net.mask_optimizer must be adam, sgd or frozen, got "
                            f"{method.mask_optimizer!r}")
        if method.lr <= 0 or method.gee_lr <= 0 or method.warmup_steps < 0:
            problems.append("gtle_net: learning rates must be > 0, warmup_steps >= 0")
        if method.gee_epochs > 0 and data.dataset != "ferplus":
            problems.append("gtle_net.gee_epochs > 0 builds triplets from FER+ votes: set "
                            "data.dataset ferplus, or gee_epochs 0 and start from a checkpoint")
    elif isinstance(method, KdsrlSection):
        if method.classify_mode not in ("frozen", "finetune"):
            problems.append(f"kdsrl.classify_mode must be frozen or finetune, got "
                            f"{method.classify_mode!r}")
        if method.temperature <= 0:
            problems.append("kdsrl.temperature must be > 0")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def load_au_config(source: str | Path | dict, overrides: dict[str, Any] | None = None
                   ) -> AuTrainConfig:
    """Parse and validate a YAML file (or an already-parsed dict) into :class:`AuTrainConfig`."""
    lines: dict[str, int] = {}
    if isinstance(source, dict):
        raw, where = source, "<config>"
    else:
        path = Path(source)
        raw, lines = read_yaml_with_lines(path, "AU training config")
        where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping with model/data/run/... "
                          f"sections")
    raw = apply_overrides(raw, overrides)
    overridden = frozenset(overrides or {})

    def section(cls: type, name: str) -> Any:
        return load_dataclass(cls, raw.get(name), where, lines, overridden, prefix=name)

    model = section(ModelSection, "model")
    family = model.family
    allowed = {"model", "data", "run", "augment", family}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown} for a {family} model; allowed: "
                          f"{sorted(allowed)}")
    cfg = AuTrainConfig(
        model=model,
        data=section(DataSection, "data"),
        run=section(RunSection, "run"),
        augment=section(AugmentConfig, "augment"),
        method=section(_METHOD_SECTIONS[family], family),
        source=where,
    )
    _validate(cfg)
    return cfg
