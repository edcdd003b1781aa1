"""Losses of the three AU-detection papers (train stage, PyTorch).

- :func:`selective_learning_weights` + :func:`weighted_bce`: LP-Net's AU loss, BCE weighted per
  batch by Selective Learning (Hand, Castillo & Chellappa, AAAI 2018).
- :func:`orthogonality_loss`: LP-Net's ``L_r = |f_au . f_s|``.
- :func:`two_sided_triplet_loss`: GTLE-Net's GEE pre-training loss (FEC-style triplets).
- :func:`reconstruction_loss`: GTLE-Net's pixel MSE (weighted 0.001 by the trainer).
- :func:`inter_area_supcon_loss`, :func:`intra_area_ntxent_loss`, :func:`predictor_cosine_loss`,
  :func:`kdsrl_ssl_loss`: the knowledge-driven self-supervised losses (Chang & Wang, CVPR 2022).

Unknown AU labels are ``-1`` everywhere and never contribute to a loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aue_edge.core.errors import ConfigError


# ---------------------------------------------------------------------------------------- AU BCE
def selective_learning_weights(targets: torch.Tensor, target_positive_rate: torch.Tensor | float,
                               max_weight: float | None = 10.0,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-(sample, AU) loss weights that give each AU the target label balance in this batch.

    Selective Learning balances every label of a multi-label batch independently: for each AU,
    the class that is over-represented relative to ``target_positive_rate`` is randomly
    sub-sampled (dropped samples get weight 0, so "some labels in some samples are not used"),
    and the under-represented class is up-weighted to the target share of the labelled count
    (``weight = target_share * n / n_minority``). Choices the paper leaves open, documented here:
    an AU whose batch has only one class keeps weights 1 (nothing to balance against); minority
    weights are capped at ``max_weight`` (None: no cap) so one rare positive cannot dominate;
    labels ``-1`` (unknown) get weight 0. Soft targets are thresholded at 0.5 for counting.

    ``targets`` is (B, C) in {0, 1, -1} (or soft in [0, 1]); ``target_positive_rate`` a scalar
    or a (C,) tensor (0.5 = balanced; a data set's own rates reproduce its distribution).
    """
    if targets.dim() != 2:
        raise ConfigError(f"selective_learning_weights needs (batch, num_aus) targets, got shape "
                          f"{tuple(targets.shape)}")
    batch, num_aus = targets.shape
    rate = torch.as_tensor(target_positive_rate, dtype=torch.float32, device=targets.device)
    rate = rate.expand(num_aus) if rate.dim() == 0 else rate
    if rate.shape != (num_aus,) or bool(((rate <= 0) | (rate >= 1)).any()):
        raise ConfigError(f"target_positive_rate must be in (0, 1), scalar or one per AU "
                          f"({num_aus}), got {rate.tolist()}")
    known = targets >= 0
    positive = (targets >= 0.5) & known
    negative = known & ~positive
    weights = known.float()
    for au in range(num_aus):
        n_pos = int(positive[:, au].sum())
        n_neg = int(negative[:, au].sum())
        n = n_pos + n_neg
        if n_pos == 0 or n_neg == 0:
            continue
        want_pos = float(rate[au]) * n
        if n_pos > want_pos:
            majority, minority, want_major = positive[:, au], negative[:, au], want_pos
        else:
            majority, minority, want_major = negative[:, au], positive[:, au], n - want_pos
        n_minor = int(minority.sum())
        minor_weight = (n - want_major) / n_minor
        if max_weight is not None:
            minor_weight = min(minor_weight, max_weight)
        weights[minority, au] = minor_weight
        major_idx = torch.nonzero(majority, as_tuple=False).flatten()
        keep = max(1, int(round(want_major)))
        order = torch.randperm(major_idx.numel(), generator=generator,
                               device="cpu").to(major_idx.device)
        weights[major_idx[order[keep:]], au] = 0.0
    return weights


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor,
                 weights: torch.Tensor | None = None, reduction: str = "mean_au") -> torch.Tensor:
    """BCE on logits with unknown (-1) labels masked out.

    ``reduction``: ``mean_au`` = LP-Net's ``(1/C) sum_c`` of per-AU weighted means over the
    batch; ``sum_au`` = GTLE-Net's sum over AUs of per-AU batch means.
    """
    known = (targets >= 0).float()
    w = known if weights is None else weights * known
    loss = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).float(),
                                              reduction="none") * w
    per_au = loss.sum(0) / w.sum(0).clamp(min=1.0)
    if reduction == "mean_au":
        return per_au.mean()
    if reduction == "sum_au":
        return per_au.sum()
    raise ConfigError(f"weighted_bce reduction must be 'mean_au' or 'sum_au', got {reduction!r}")


def orthogonality_loss(f_au: torch.Tensor, f_shape: torch.Tensor) -> torch.Tensor:
    """LP-Net's ``L_r = |f_au . f_s|`` on unit vectors (``|cos(f_au, f_s)|``), averaged over
    the batch (both (B, D)). Normalised, so it cannot be met by shrinking either feature."""
    if f_au.shape != f_shape.shape:
        raise ConfigError(f"orthogonality loss needs equal shapes, got {tuple(f_au.shape)} and "
                          f"{tuple(f_shape.shape)} (P-Net's f_s must match the stem's width)")
    return F.cosine_similarity(f_au, f_shape, dim=1, eps=1e-6).abs().mean()


# ------------------------------------------------------------------------------------ GTLE-Net
def two_sided_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                           margin: float = 0.1) -> torch.Tensor:
    """``h(|A-P|^2 - |A-N|^2 + m) + h(|A-P|^2 - |P-N|^2 + m)`` averaged over triplets.

    Both members of the similar pair must be closer to each other than either is to the odd one
    out. The paper does not state ``m``; 0.1 (the FEC embedding's margin for 16-d unit vectors)
    is the default and is configurable.
    """
    d_ap = (anchor - positive).pow(2).sum(1)
    d_an = (anchor - negative).pow(2).sum(1)
    d_pn = (positive - negative).pow(2).sum(1)
    return (F.relu(d_ap - d_an + margin) + F.relu(d_ap - d_pn + margin)).mean()


def reconstruction_loss(reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Pixel MSE between GTLE-Net's decoder output and its input (the paper's L_rec)."""
    return F.mse_loss(reconstruction, image)


# --------------------------------------------------------------------------------------- KDSRL
def _area_classes(num_areas: int, symmetric_pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Class id per area with each symmetric pair merged (Phi(p) = {p, sym(p)})."""
    classes = list(range(num_areas))
    for a, b in symmetric_pairs:
        classes[b] = classes[a]
    return torch.tensor(classes)


def inter_area_supcon_loss(embeddings: torch.Tensor, symmetric_pairs: tuple[tuple[int, int], ...],
                           temperature: float = 0.07) -> torch.Tensor:
    """Supervised-contrastive loss over areas: L^a.

    ``embeddings`` is (V, N, A, D): V views of N images, A areas. Every one of the V*N*A
    embeddings is an anchor; its positives are all other embeddings of the same or the
    symmetric area (any image, any view), its denominator every other embedding; similarity is
    cosine / temperature; the per-anchor loss is averaged over its positives (SupCon "out").
    """
    views, n, areas, dim = embeddings.shape
    z = F.normalize(embeddings.reshape(-1, dim), dim=1)
    labels = _area_classes(areas, symmetric_pairs).to(z.device).repeat(views * n)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(pos_log_prob / positives.sum(1).clamp(min=1)).mean()


def intra_area_ntxent_loss(embeddings: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Instance discrimination within each area: L^b (NT-Xent over the 2N views of an area).

    ``embeddings`` is (2, N, A, D). For area p the 2N embeddings of p are contrasted: the other
    view of the same image is the positive, the other 2N-2 are negatives. Averaged over areas.
    """
    views, n, areas, dim = embeddings.shape
    if views != 2:
        raise ConfigError(f"the intra-area loss contrasts 2 views, got {views}")
    z = F.normalize(embeddings, dim=-1).permute(2, 0, 1, 3).reshape(areas, 2 * n, dim)
    logits = z @ z.transpose(1, 2) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits.reshape(areas * 2 * n, 2 * n), target.repeat(areas))


def predictor_cosine_loss(predictions: dict[int, list[torch.Tensor]],
                          targets: torch.Tensor) -> torch.Tensor:
    """``mean_q (1 - cos(v_q, mean_p phi_qp(z_p)))`` averaged over the batch.

    ``predictions[q]`` holds the (N, D) predictions of area q from its related areas;
    ``targets`` is (N, A, D). Averaged (not summed) over the predicted areas, so ``beta``
    weighs it like the area-averaged ``L^a`` and ``L^b``.
    """
    if not predictions:
        raise ConfigError("the predicting component has no predictor edges")
    total = targets.new_zeros(())
    for q, preds in predictions.items():
        mean_pred = torch.stack(preds, 0).mean(0)
        total = total + (1 - F.cosine_similarity(mean_pred, targets[:, q], dim=1)).mean()
    return total / len(predictions)


def kdsrl_ssl_loss(embeddings: torch.Tensor, predictions: list[dict[int, list[torch.Tensor]]],
                   symmetric_pairs: tuple[tuple[int, int], ...], temperature: float = 0.07,
                   intra_weight: float = 0.1, alpha: float = 0.01, beta: float = 1.0,
                   stop_gradient_targets: bool = False) -> dict[str, torch.Tensor]:
    """``L = alpha (L^a + lambda L^b) + beta L^pred`` for two views; returns every term.

    As in the paper, ``predictions[v]`` (made from view ``v``'s areas) are compared with the
    *same* view's embeddings, with gradient to both sides, and averaged over both views.
    ``stop_gradient_targets`` detaches the targets (SimSiam's stop-gradient; not the paper's).
    """
    l_inter = inter_area_supcon_loss(embeddings, symmetric_pairs, temperature)
    l_intra = intra_area_ntxent_loss(embeddings, temperature)
    l_pred = embeddings.new_zeros(())
    for view in (0, 1):
        target = embeddings[view]
        if stop_gradient_targets:
            target = target.detach()
        l_pred = l_pred + 0.5 * predictor_cosine_loss(predictions[view], target)
    total = alpha * (l_inter + intra_weight * l_intra) + beta * l_pred
    return {"loss": total, "inter_area": l_inter, "intra_area": l_intra, "predict": l_pred}
