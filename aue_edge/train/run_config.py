"""What every training config shares, AUE-CRL's and the AU detectors': the top-level layout, the
model family that picks the trainer, and one override syntax for the command line. Train stage.

The layout (each trainer checks its own keys inside the sections)::

    model:    {name: <registered model>, kwargs: {...}, ...}  # the name's family picks the trainer
    data:     {dataset: ferplus, root: ../shared/data/ferplus, packed: "", ...}
    run:      {out_dir: runs/x, batch_size: 64, device: auto, seed: 0, num_threads: 1, ...}
    augment:  {flip_prob: 0.5, ...}             # aue_edge.train.augment.AugmentConfig
    <family>: {...}                             # aue_crl | lp_net | gtle_net | kdsrl: its stages

Overrides: ``aue train CONFIG --set SECTION.KEY=VALUE`` (``aue_crl.stage1.epochs=30``,
``run.batch_size=8``, ``model.kwargs.attention=mean``), the value read as YAML; the flags
``--out-dir --root --packed --device --seed --batch-size`` set the keys of :data:`FLAG_KEYS`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from aue_edge.core.config_files import read_yaml
from aue_edge.core.errors import ConfigError

AU_FAMILIES = ("lp_net", "gtle_net", "kdsrl")

# aue train's shorthand flags -> the config keys they set (the same for every trainer)
FLAG_KEYS = {"out_dir": "run.out_dir", "root": "data.root", "packed": "data.packed",
             "device": "run.device", "seed": "run.seed", "batch_size": "run.batch_size"}


def family_of(model_name: str) -> str | None:
    """The family of a registered model name (the family whose VARIANTS table has it, e.g.
    ``lp_net_r18_112`` -> ``lp_net``), or None for a name no family registers."""
    from aue_edge.train.models import list_models, model_family

    return model_family(model_name) if model_name in list_models() else None


def config_family(raw: Any, origin: str) -> str:
    """The trainer a parsed config is for: the family of its ``model.name``."""
    model = raw.get("model") if isinstance(raw, dict) else None
    if isinstance(model, str):
        raise ConfigError(
            f"{origin}: 'model: {model}' is the old AUE-CRL layout. Training configs now share one "
            f"layout: model: {{name: {model}, kwargs: <was model_options>, pretrained: ...}}, "
            f"data: {{...}}, augment: {{...}}, run: {{batch_size, eval_batch_size, select_metric, "
            f"seed, device, amp, channels_last, num_threads, out_dir}}, aue_crl: {{stages, input, "
            f"stage1, stage2, stage3}}; move the keys there (as in "
            f"aue_edge/train/configs/aue_crl_cpu_tiny.yaml), and --set keys alike "
            f"(stage1.epochs -> aue_crl.stage1.epochs, batch_size -> run.batch_size)")
    name = model.get("name") if isinstance(model, dict) else None
    family = family_of(name) if isinstance(name, str) else None
    if family is None:
        from aue_edge.train.models import list_models

        raise ConfigError(f"{origin}: model.name {name!r} names no trainable model; a training "
                          f"config starts with model: {{name: ...}}, one of the registered "
                          f"models: {list_models()}")
    return family


def read_config_family(path: str | Path) -> str:
    """:func:`config_family` of a YAML file."""
    return config_family(read_yaml(Path(path), "training config"), str(path))


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as dotted-key overrides, each value read as YAML."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. run.batch_size=8), got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def cli_overrides(set_items: Iterable[str] = (), **flags: Any) -> dict[str, Any]:
    """The overrides of ``aue train``: ``--set`` items, then the :data:`FLAG_KEYS` flags that
    were given (None: not given)."""
    unknown = sorted(set(flags) - set(FLAG_KEYS))
    if unknown:
        raise TypeError(f"unknown flag(s) {unknown}; known: {sorted(FLAG_KEYS)}")
    overrides = parse_set(set_items)
    overrides.update({FLAG_KEYS[f]: v for f, v in flags.items() if v is not None})
    return overrides


def apply_overrides(raw: dict, overrides: dict[str, Any] | None) -> dict:
    """Dotted keys (``run.batch_size``, ``model.kwargs.lstm_hidden``) set on a copy of ``raw``."""
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        if not parents:
            raise ConfigError(f"override {dotted!r} must name a section and a key, e.g. "
                              f"run.batch_size")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a mapping")
        node[leaf] = value
    return raw
