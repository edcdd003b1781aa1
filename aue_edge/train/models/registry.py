"""A name -> builder registry shared by AUE-CRL and the AU detectors (after timm).

A model module registers its builders with ``@register_model("name")``; the builder takes
keyword configuration and returns an ``nn.Module`` whose ``config`` attribute holds the exact
keywords needed to rebuild it (checkpoints store them, so a checkpoint rebuilds its own model).
"""
from __future__ import annotations

import importlib
from typing import Callable

from aue_edge.core.errors import ConfigError

_BUILDERS: dict[str, Callable] = {}
# Modules imported on first use so that the registry fills itself.
_MODEL_MODULES = (
    "aue_edge.train.models.aue_crl",
    "aue_edge.train.models.lp_net",
    "aue_edge.train.models.gtle_net",
    "aue_edge.train.models.kdsrl",
)


def register_model(name: str) -> Callable[[Callable], Callable]:
    def decorator(builder: Callable) -> Callable:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ConfigError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def _load_all() -> None:
    for module in _MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real import error inside the module
                raise


def list_models() -> list[str]:
    _load_all()
    return sorted(_BUILDERS)


def create_model(name: str, **config):
    """Build a registered model, e.g. ``create_model("aue_crl", num_classes=8)``."""
    _load_all()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; registered models: {sorted(_BUILDERS)}")
    return _BUILDERS[name](**config)
