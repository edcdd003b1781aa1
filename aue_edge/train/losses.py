"""AUE-CRL losses: knowledge-guided AU pseudo labels, the prior regulariser on W, and the
AU-pair (knowledge-regularised) constraint. Train stage (torch).

Where the paper (Pu et al., arXiv 2012.14587) and its reference code (HCPLab-SYSU/AUE-CRL,
``loss.py``) differ, the paper's form is the default and the code's form is an option:

=====================  =============================  ===========================================
piece                  paper (default)                reference code (option)
=====================  =============================  ===========================================
W regulariser          ``l2``: lambda*sum (W-W0)^2,   ``l1``: mean |W - band centre|
                       W0 = the prior's initial       (centres 0.875 / 0.625 / 0.125)
                       values (1.0 / 0.5 / 0.1)
AU regression          ``mse``: mean squared error    ``weighted_mse``: x3 where target >= 0.5
pair constraint        ``paper``: joints p(i1,j0),    ``code``: products p(i1)p(j0), p(i0)p(j1);
                       p(i0,j1); negative first term  negative first term h(p1p1 - p11)
                       h(p11 - p1p1)
=====================  =============================  ===========================================

Batch probabilities are soft counts over the batch, so gradients flow through the values:
``p(i1) = mean_b x_bi [x_bi >= t]``, ``p(i1,j1) = mean_b x_bi x_bj [both >= t]``. For the 0-state
the paper form uses ``1 - x`` (the probability the AU is absent); the code form sums ``x`` itself
for the 0-state (``p(i0) = mean_b x_bi [x_bi < t]``), which we reproduce exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aue_edge.core.errors import ConfigError

PRIOR_REGULARISERS = ("l2", "l1")
AU_REGRESSIONS = ("bce", "mse", "weighted_mse")
PAIR_VARIANTS = ("paper", "code")


def pseudo_au_labels(labels: torch.Tensor, prior_weight: torch.Tensor, band_low: torch.Tensor,
                     band_high: torch.Tensor) -> torch.Tensor:
    """(B, A) pseudo AU targets: one-hot(expression) x W clamped entry-wise to its prior band.

    The clamp passes gradients to W inside the band, so W learns from the AU predictions
    (KGAURL) while staying within the knowledge bands.
    """
    clamped = torch.maximum(torch.minimum(prior_weight, band_high), band_low)
    one_hot = F.one_hot(labels, num_classes=prior_weight.shape[0]).to(clamped.dtype)
    return one_hot @ clamped


def prior_regulariser(prior_weight: torch.Tensor, prior_init: torch.Tensor,
                      band_low: torch.Tensor, band_high: torch.Tensor, kind: str = "l2",
                      weight: float = 1.0) -> torch.Tensor:
    """Keep W near the prior: ``l2`` (paper Eq. 3) or ``l1`` to the band centres (code)."""
    if kind == "l2":
        return weight * ((prior_weight - prior_init) ** 2).sum()
    if kind == "l1":
        return weight * (prior_weight - (band_low + band_high) / 2).abs().mean()
    raise ConfigError(f"prior regulariser must be one of {PRIOR_REGULARISERS}, got {kind!r}")


def au_regression_loss(au_logits: torch.Tensor, targets: torch.Tensor, kind: str = "mse"
                       ) -> torch.Tensor:
    """AU output vs (pseudo or real) targets in [0, 1].

    ``mse``: mean squared error of the sigmoid probabilities (paper); ``weighted_mse``: x3 where
    the target is >= 0.5 (code); ``bce``: binary cross-entropy on the logits, summed over AUs and
    averaged over the batch. A mean over batch x AUs of squared sigmoid errors has a gradient 17x
    smaller per AU and vanishing where the sigmoid saturates: with it, the first shipped AU branch
    barely moved from its initialisation. BCE is the default of the shipped recipe.
    """
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(au_logits, targets, reduction="sum") / max(
            1, au_logits.shape[0])
    squared = (torch.sigmoid(au_logits) - targets) ** 2
    if kind == "mse":
        return squared.mean()
    if kind == "weighted_mse":
        weights = 1.0 + 2.0 * (targets >= 0.5).to(squared.dtype)
        return (weights * squared).mean()
    raise ConfigError(f"AU regression loss must be one of {AU_REGRESSIONS}, got {kind!r}")


def batch_pair_probabilities(x: torch.Tensor, threshold: float = 0.5, variant: str = "paper"
                             ) -> dict[str, torch.Tensor]:
    """Soft batch estimates: ``p1``, ``p0`` (A,) and ``p11``, ``p10``, ``p01`` (A, A).

    ``p10[i, j]`` estimates p(i present, j absent). In the ``code`` variant ``p10``/``p01`` are
    the products ``p1[i] p0[j]`` / ``p0[i] p1[j]``, as the reference implementation uses.
    """
    if variant not in PAIR_VARIANTS:
        raise ConfigError(f"pair-loss variant must be one of {PAIR_VARIANTS}, got {variant!r}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"pair loss needs a non-empty (batch, AU) tensor, got {tuple(x.shape)}")
    b = x.shape[0]
    on = (x >= threshold).to(x.dtype)
    s1 = x * on
    s0 = (1.0 - x) * (1.0 - on) if variant == "paper" else x * (1.0 - on)
    p1, p0 = s1.mean(0), s0.mean(0)
    p11 = s1.T @ s1 / b
    if variant == "paper":
        p10, p01 = s1.T @ s0 / b, s0.T @ s1 / b
    else:
        p10, p01 = torch.outer(p1, p0), torch.outer(p0, p1)
    return {"p1": p1, "p0": p0, "p11": p11, "p10": p10, "p01": p01}


def au_pair_loss(x: torch.Tensor, positive_pairs: torch.Tensor, negative_pairs: torch.Tensor,
                 variant: str = "paper", threshold: float = 0.5) -> torch.Tensor:
    """Knowledge-regularised loss l_p + l_n over AU pairs, summed over pairs.

    Positive pairs (i, j) should co-occur: p(i1,j1) >= p(i1)p(j1), p(i0,j1) <= p(i1,j1),
    p(i1,j0) <= p(i1,j1). Negative pairs should exclude each other: p(i1,j1) <= p(i1)p(j1)
    (code: the reverse, kept as released), p(i1,j1) <= p(i0,j1), p(i1,j1) <= p(i1,j0). Each
    violated inequality costs its hinge ``max(., 0)``; a batch that obeys them all costs 0.
    ``positive_pairs``/``negative_pairs``: (P, 2) AU indices (``knowledge.pair_indices``).
    """
    p = batch_pair_probabilities(x, threshold, variant)
    prod = torch.outer(p["p1"], p["p1"])
    total = x.new_zeros(())
    if len(positive_pairs):
        i, j = positive_pairs[:, 0], positive_pairs[:, 1]
        p11 = p["p11"][i, j]
        total = total + (F.relu(prod[i, j] - p11) + F.relu(p["p01"][i, j] - p11)
                         + F.relu(p["p10"][i, j] - p11)).sum()
    if len(negative_pairs):
        i, j = negative_pairs[:, 0], negative_pairs[:, 1]
        p11 = p["p11"][i, j]
        first = p11 - prod[i, j] if variant == "paper" else prod[i, j] - p11
        total = total + (F.relu(first) + F.relu(p11 - p["p01"][i, j])
                         + F.relu(p11 - p["p10"][i, j])).sum()
    return total
