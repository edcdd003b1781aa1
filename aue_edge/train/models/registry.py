"""One way to build a model from its name, for AUE-CRL and the AU detectors (after timm).

Every model family is a module with a ``VARIANTS`` table (variant name -> the keyword options
that make that variant) and a ``build(**config)`` function. ``create_model(name, **overrides)``
calls its family's ``build`` with the variant's options updated by ``overrides``; the model's
``config`` attribute holds the exact keywords needed to rebuild it (checkpoints store them, so a
checkpoint rebuilds its own model). A new variant is a new row in its family's table.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from aue_edge.core.errors import ConfigError

# family -> its module (imported on first use, so that importing this package needs no torch)
FAMILY_MODULES = {
    "aue_crl": "aue_edge.train.models.aue_crl",
    "lp_net": "aue_edge.train.models.lp_net",
    "gtle_net": "aue_edge.train.models.gtle_net",
    "kdsrl": "aue_edge.train.models.kdsrl",
    "student": "aue_edge.train.models.student",
}
_VARIANTS: dict[str, tuple[str, ModuleType]] = {}


def _variants() -> dict[str, tuple[str, ModuleType]]:
    """Variant name -> (family, module), read from the families' VARIANTS tables once."""
    if not _VARIANTS:
        table: dict[str, tuple[str, ModuleType]] = {}
        for family, module_name in FAMILY_MODULES.items():
            module = importlib.import_module(module_name)
            for name in module.VARIANTS:
                if name in table:
                    raise ConfigError(f"model name {name!r} is in the VARIANTS of both "
                                      f"{table[name][0]} and {family}")
                table[name] = (family, module)
        _VARIANTS.update(table)
    return _VARIANTS


def _lookup(name: str) -> tuple[str, ModuleType]:
    variants = _variants()
    if name not in variants:
        raise ConfigError(f"unknown model {name!r}; registered models: {sorted(variants)}")
    return variants[name]


def list_models() -> list[str]:
    return sorted(_variants())


def model_family(name: str) -> str:
    """The family (a key of :data:`FAMILY_MODULES`) of a registered model name."""
    return _lookup(name)[0]


def create_model(name: str, **overrides):
    """Build a registered model, e.g. ``create_model("aue_crl", attention="mean")``."""
    _family, module = _lookup(name)
    return module.build(**{**module.VARIANTS[name], **overrides})
