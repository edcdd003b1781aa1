"""AU-detector losses (aue_edge/train/au/losses.py) checked by hand on small, explicit batches."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aue_edge.core.errors import ConfigError
from aue_edge.train.au import losses

torch.set_num_threads(1)


def test_selective_learning_balances_each_au_to_the_target():
    # Target 50/50 of the 8 labelled rows = 4 "weight units" per class.
    # AU0: 6 positives / 2 negatives -> positives sub-sampled to 4, negatives weighted 2
    # AU1: 1 positive / 7 negatives -> the positive weighted to half the labelled count (4),
    #      negatives sub-sampled to 4
    # AU2: all negative -> nothing to balance, weights stay 1; AU3: unknown rows weigh 0
    targets = torch.tensor([[1, 1, 0, -1], [1, 0, 0, 1], [1, 0, 0, 0], [1, 0, 0, -1],
                            [1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
                           dtype=torch.float32)
    w = losses.selective_learning_weights(targets, 0.5, max_weight=None,
                                          generator=torch.Generator().manual_seed(0))
    pos0, neg0 = w[targets[:, 0] == 1, 0], w[targets[:, 0] == 0, 0]
    assert (pos0 > 0).sum() == 4 and torch.all(pos0[pos0 > 0] == 1)
    assert torch.all(neg0 == 2.0)
    assert w[0, 1] == pytest.approx(4.0)
    assert (w[1:, 1] > 0).sum() == 4
    assert torch.all(w[:, 2] == 1.0)
    assert torch.all(w[targets[:, 3] < 0, 3] == 0)
    # AU3 has 3 positives, 3 negatives: balanced already -> all known rows keep weight 1
    assert torch.all(w[targets[:, 3] >= 0, 3] == 1.0)


def test_selective_learning_caps_minority_weight_and_checks_rates():
    targets = torch.zeros(20, 1)
    targets[0, 0] = 1
    w = losses.selective_learning_weights(targets, 0.5, max_weight=3.0,
                                          generator=torch.Generator().manual_seed(0))
    assert w[0, 0] == 3.0
    with pytest.raises(ConfigError, match="target_positive_rate"):
        losses.selective_learning_weights(targets, 1.5)


def test_weighted_bce_ignores_unknown_labels_and_reduces_per_au():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    targets = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    per_elem = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), reduction="none")
    au0 = per_elem[:, 0].mean()
    au1 = per_elem[1, 1]                      # the unknown (-1) entry does not count
    assert losses.weighted_bce(logits, targets) == pytest.approx(float((au0 + au1) / 2), 1e-6)
    assert losses.weighted_bce(logits, targets, reduction="sum_au") == pytest.approx(
        float(au0 + au1), 1e-6)


def test_orthogonality_loss_by_hand():
    f_au = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    f_s = torch.tensor([[0.0, 5.0], [-3.0, 1.0]])
    # |cos| = 0 and |-3 + 2| / (sqrt(5) sqrt(10)) -> mean
    expected = 0.5 * (1 / (5 ** 0.5 * 10 ** 0.5))
    assert losses.orthogonality_loss(f_au, f_s) == pytest.approx(expected, rel=1e-5)
    # on unit vectors: shrinking a feature does not meet it (the unnormalised |f_au . f_s| did)
    assert losses.orthogonality_loss(f_au, 1e-3 * f_s) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ConfigError, match="f_s must match"):
        losses.orthogonality_loss(f_au, torch.zeros(2, 3))


def test_two_sided_triplet_loss_by_hand():
    a = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([[0.1, 0.0]])
    n_far = torch.tensor([[1.0, 0.0]])
    assert losses.two_sided_triplet_loss(a, p, n_far, margin=0.1) == 0.0
    n_close = torch.tensor([[0.2, 0.0]])
    # d_ap = 0.01, d_an = 0.04, d_pn = 0.01 -> h(0.01-0.04+0.1) + h(0.01-0.01+0.1) = 0.07 + 0.1
    assert losses.two_sided_triplet_loss(a, p, n_close, margin=0.1).item() == pytest.approx(0.17)


def _area_embeddings(separated: bool, n: int = 4, areas: int = 8, dim: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if not separated:
        return torch.randn(2, n, areas, dim, generator=g)
    # area classes with symmetric pairs (1,2) and (4,5) merged: 6 classes on orthogonal axes
    classes = [0, 1, 1, 2, 3, 3, 4, 5]
    base = torch.eye(dim)[classes]                        # (areas, dim)
    return base.expand(2, n, areas, dim) + 0.01 * torch.randn(2, n, areas, dim, generator=g)


def test_inter_area_supcon_prefers_area_clusters():
    sym = ((1, 2), (4, 5))
    good = losses.inter_area_supcon_loss(_area_embeddings(True), sym)
    bad = losses.inter_area_supcon_loss(_area_embeddings(False), sym)
    assert good < bad
    # every anchor has 2*4*|class|-1 positives of equal similarity among 63 others: a perfect
    # clustering reaches -log(1/ (count of same-class embeddings)) only in the limit; bound it
    assert good.item() < math.log(63)


def test_intra_area_ntxent_finds_the_other_view():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 6, 8, 32, generator=g)
    matched = torch.cat([z, z + 0.01 * torch.randn(1, 6, 8, 32, generator=g)])
    shuffled = torch.cat([z, torch.randn(1, 6, 8, 32, generator=g)])
    assert (losses.intra_area_ntxent_loss(matched, 0.07)
            < losses.intra_area_ntxent_loss(shuffled, 0.07))
    with pytest.raises(ConfigError, match="2 views"):
        losses.intra_area_ntxent_loss(torch.randn(3, 2, 8, 4))


def test_predictor_loss_zero_for_perfect_predictions_and_weights_combine():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 3, 8, 4, generator=g)
    # the paper compares a view's predictions with the same view's embeddings
    perfect = [{q: [emb[v][:, q].clone()] for q in range(8)} for v in (0, 1)]
    assert losses.predictor_cosine_loss(perfect[0], emb[0]).item() == pytest.approx(0, abs=1e-6)
    terms = losses.kdsrl_ssl_loss(emb, perfect, ((1, 2), (4, 5)), 0.07, 0.1, alpha=0.01,
                                  beta=1.0)
    expected = 0.01 * (terms["inter_area"] + 0.1 * terms["intra_area"]) + terms["predict"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["predict"].item() == pytest.approx(0, abs=1e-5)


def test_predictor_loss_is_a_mean_over_areas_with_gradient_to_both_sides():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 5, 8, 4, generator=g, requires_grad=True)
    opposite = [{q: [-emb[v][:, q].detach()] for q in (0, 3)} for v in (0, 1)]
    # cos = -1 on every predicted area: 1 - cos = 2 per area, averaged (not summed) over areas
    assert losses.predictor_cosine_loss(opposite[0], emb[0]).item() == pytest.approx(2.0)
    terms = losses.kdsrl_ssl_loss(emb, opposite, ((1, 2),), alpha=0.0, beta=1.0)
    terms["loss"].backward()
    # the targets (the same view's embeddings of the predicted areas) receive gradient
    assert emb.grad[:, :, (0, 3)].abs().sum() > 0
    emb.grad = None
    terms = losses.kdsrl_ssl_loss(emb, opposite, ((1, 2),), alpha=0.0, beta=1.0,
                                  stop_gradient_targets=True)
    terms["loss"].backward()
    assert emb.grad is None or emb.grad.abs().sum() == 0
