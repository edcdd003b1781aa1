"""The AUE-CRL training config: one YAML per run in the layout every training config shares
(:mod:`aue_edge.train.run_config`; AUE-CRL's own settings in its ``aue_crl`` section), frozen
dataclasses validated on load, dotted-key overrides from the command line (``aue train CONFIG
--set aue_crl.stage1.epochs=30``). Train stage."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aue_edge.core.config_files import load_dataclass, read_yaml_with_lines
from aue_edge.core.errors import ConfigError
from aue_edge.train.augment import AugmentConfig
from aue_edge.train.run_config import apply_overrides, config_family

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


_SECTIONS = {"data": DataConfig, "input": InputConfig, "augment": AugmentConfig,
             "stage1": StageConfig, "stage2": StageConfig, "stage3": StageConfig}

# The shared layout -> TrainConfig's fields: section -> {key in the YAML: field}
_LAYOUT = {
    "model": {"name": "model", "kwargs": "model_options", "pretrained": "pretrained"},
    "run": {k: k for k in ("batch_size", "eval_batch_size", "select_metric", "seed", "device",
                           "amp", "channels_last", "num_threads", "out_dir")},
    "aue_crl": {k: k for k in ("stages", "input", "stage1", "stage2", "stage3")},
}


def _fields_from_layout(raw: Any, origin: str) -> dict[str, tuple[Any, str]]:
    """TrainConfig's fields from a config in the layout every training config shares: field ->
    (value, its dotted path in the YAML)."""
    family = config_family(raw, origin)
    if family != "aue_crl":
        raise ConfigError(f"{origin}: a {family} config is trained by the AU-detector trainer "
                          f"(aue train dispatches on model.name), not by AUE-CRL's")
    allowed = {"model", "data", "augment", *_LAYOUT}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        moved = [f"{name} -> {section}.{key}" for name in unknown
                 for section, keys in _LAYOUT.items() for key, field in keys.items()
                 if name == field]
        raise ConfigError(f"{origin}: unknown section(s) {unknown} for an aue_crl model; "
                          f"allowed: {sorted(allowed)}"
                          + (f" (moved: {', '.join(moved)})" if moved else ""))
    fields = {key: (raw[key], key) for key in ("data", "augment") if key in raw}
    for section, keys in _LAYOUT.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: {section} must be a mapping, got {values!r}")
        bad = sorted(set(values) - set(keys))
        if bad:
            raise ConfigError(f"{origin}: {section}: unknown key(s) {bad}; known keys: "
                              f"{sorted(keys)}")
        fields.update({keys[k]: (v, f"{section}.{k}") for k, v in values.items()})
    return fields


def config_from_dict(raw: dict[str, Any], origin: str = "<config>",
                     lines: dict[str, int] | None = None,
                     overridden: frozenset[str] = frozenset()) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from parsed YAML (``lines``, ``overridden``:
    dotted YAML paths, see :func:`aue_edge.core.config_files.load_dataclass`). Each section is
    loaded under its path in the file, so messages name ``aue_crl.stage1.epochs`` and its line."""
    lines = lines or {}
    fields = _fields_from_layout(raw, origin)
    sections = {key: load_dataclass(_SECTIONS[key], value, origin, lines, overridden, prefix=path)
                for key, (value, path) in fields.items() if key in _SECTIONS}
    scalars = {key: value for key, (value, _path) in fields.items() if key not in _SECTIONS}
    paths = {key: path for key, (_value, path) in fields.items() if key not in _SECTIONS}
    cfg = load_dataclass(TrainConfig, scalars, origin,
                         {key: lines[path] for key, path in paths.items() if path in lines},
                         frozenset(key for key, path in paths.items() if path in overridden))
    cfg = dataclasses.replace(cfg, **sections)
    validate_config(cfg, origin)
    return cfg


def validate_config(cfg: TrainConfig, origin: str = "<config>") -> None:
    problems = []
    if not set(cfg.stages) <= {1, 2, 3} or not cfg.stages or list(cfg.stages) != sorted(
            set(cfg.stages)):
        problems.append(f"aue_crl.stages must be an increasing subset of [1, 2, 3], got "
                        f"{list(cfg.stages)}")
    for n in cfg.stages if set(cfg.stages) <= {1, 2, 3} else ():
        st = cfg.stage(n)
        if st.epochs <= 0:
            problems.append(f"aue_crl.stage{n}.epochs must be > 0 for a stage that runs, got "
                            f"{st.epochs}")
        if st.lr <= 0:
            problems.append(f"aue_crl.stage{n}.lr must be > 0, got {st.lr}")
        if st.optimizer not in ("sgd", "adamw"):
            problems.append(f"aue_crl.stage{n}.optimizer must be sgd or adamw, got "
                            f"{st.optimizer!r}")
        if st.schedule not in ("cosine", "step"):
            problems.append(f"aue_crl.stage{n}.schedule must be cosine or step, got "
                            f"{st.schedule!r}")
        if not 0 <= st.ckplus_fraction < 1:
            problems.append(f"aue_crl.stage{n}.ckplus_fraction must be in [0, 1)")
        if st.max_images < 0:
            problems.append(f"aue_crl.stage{n}.max_images must be >= 0 (0 = every image)")
        if not 0 <= st.label_smoothing < 1:
            problems.append(f"aue_crl.stage{n}.label_smoothing must be in [0, 1)")
    if cfg.batch_size < 2 or cfg.eval_batch_size < 1:
        problems.append("run.batch_size must be >= 2 (BatchNorm) and run.eval_batch_size >= 1")
    if cfg.select_metric not in ("accuracy", "mean_class_accuracy"):
        problems.append(f"run.select_metric must be accuracy or mean_class_accuracy, got "
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
        problems.append(f"aue_crl.input.color {cfg.input.color!r}: the grey FER+ trainer feeds "
                        f"gray3")
    if problems:
        raise ConfigError(f"{origin}: invalid training config: " + "; ".join(problems))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` maps dotted keys (``aue_crl.stage1.epochs``) to values."""
    path = Path(path)
    raw, lines = read_yaml_with_lines(path, "training config")
    raw = raw or {}
    config_family(raw, str(path))  # an old layout is reported before overrides land in it
    return config_from_dict(apply_overrides(raw, overrides), str(path), lines,
                            frozenset(overrides or {}))
