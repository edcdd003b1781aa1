"""Pseudo AU labels for expression data, from AUE-CRL's expression -> AU prior (train stage).

A user without AU-labelled data still gets a working AU detector: each FER+ image's expression
becomes AU targets through the AUE-CRL prior W (7-8 expressions x AUs, primary / secondary /
other bands). As in AUE-CRL, the target is ``one-hot(expression) x W`` with every entry of W
clamped into its band (primary [0.75, 1], secondary [0.5, 0.75], other [0, 0.25]); with the
initial values (1.0 / 0.5 / 0.1) that is 1.0 for a primary AU, 0.5 for a secondary one and 0.1
otherwise. ``mode="soft"`` uses FER+'s vote distribution instead of the one-hot label
(``probs @ W``: the expected target over the annotators' readings).

These targets are soft: the AU losses treat them as BCE targets; F1 on them is only a sanity
check (the knowledge, not a human FACS coder, produced them).
"""
from __future__ import annotations

import numpy as np

from aue_edge.core.errors import ConfigError, DatasetError

PSEUDO_LABEL_MODES = ("majority", "soft")


def clamped_prior(labels: tuple[str, ...], aus: tuple[str, ...]) -> np.ndarray:
    """(E, A) float32: the AUE-CRL prior's initial values clamped into their bands."""
    from aue_edge.data.knowledge import clamp_prior, prior_matrix

    return clamp_prior(*prior_matrix(labels, aus=aus)).astype(np.float32)


def pseudo_au_targets(labels: np.ndarray | None, probs: np.ndarray | None,
                      label_set: tuple[str, ...], aus: tuple[str, ...],
                      mode: str = "majority") -> np.ndarray:
    """(N, A) float32 pseudo AU targets for N expression-labelled images.

    ``labels`` (N,) int indices into ``label_set`` (mode ``majority``) or ``probs`` (N, E)
    distributions over ``label_set`` (mode ``soft``).
    """
    if mode not in PSEUDO_LABEL_MODES:
        raise ConfigError(f"pseudo-label mode must be one of {PSEUDO_LABEL_MODES}, got {mode!r}")
    prior = clamped_prior(tuple(label_set), tuple(aus))
    if mode == "majority":
        if labels is None:
            raise ConfigError("pseudo-label mode 'majority' needs expression labels")
        labels = np.asarray(labels)
        bad = (labels < 0) | (labels >= len(label_set))
        if bad.any():
            raise DatasetError(f"{int(bad.sum())} expression labels outside "
                               f"0..{len(label_set) - 1} (first at row "
                               f"{int(np.argmax(bad))}); the label set is {label_set}")
        return prior[labels]
    if probs is None:
        raise ConfigError("pseudo-label mode 'soft' needs vote distributions (FER+ "
                          "label_mode='probability')")
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(label_set):
        raise DatasetError(f"vote distributions must be (N, {len(label_set)}), got {probs.shape}")
    return probs @ prior
