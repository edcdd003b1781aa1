"""AUE-CRL losses checked against numbers worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aue_edge.core.errors import ConfigError
from aue_edge.data.knowledge import (AUECRL_AUS, FERPLUS_LABELS, NEGATIVE_AU_PAIRS,
                                      POSITIVE_AU_PAIRS, pair_indices, prior_matrix)
from aue_edge.train.losses import (au_pair_loss, au_regression_loss, batch_pair_probabilities,
                                   prior_regulariser, pseudo_au_labels)

torch.set_num_threads(1)


def test_pseudo_labels_are_one_hot_times_clamped_w():
    low = torch.tensor([[0.75, 0.5, 0.0], [0.0, 0.0, 0.75]])
    high = torch.tensor([[1.0, 0.75, 0.25], [0.25, 0.25, 1.0]])
    w = torch.tensor([[1.2, 0.4, 0.3], [0.1, -0.2, 0.8]], requires_grad=True)
    targets = pseudo_au_labels(torch.tensor([0, 1, 0]), w, low, high)
    expected = torch.tensor([[1.0, 0.5, 0.25], [0.1, 0.0, 0.8], [1.0, 0.5, 0.25]])
    torch.testing.assert_close(targets, expected)
    targets.sum().backward()
    # Gradient reaches W only where it lies inside its band (0.1 and 0.8 of row 1).
    torch.testing.assert_close(w.grad, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]))


def test_pseudo_labels_on_the_ferplus_prior():
    init, low, high = (torch.from_numpy(a) for a in prior_matrix(FERPLUS_LABELS, AUECRL_AUS))
    happy = FERPLUS_LABELS.index("happiness")
    row = pseudo_au_labels(torch.tensor([happy]), init, low, high)[0]
    assert row[AUECRL_AUS.index("AU12")] == 1.0 and row[AUECRL_AUS.index("AU6")] == 1.0
    assert row[AUECRL_AUS.index("AU25")] == 0.5   # secondary
    assert row[AUECRL_AUS.index("AU1")] == pytest.approx(0.1)


def test_prior_regulariser_l2_and_l1_by_hand():
    init = torch.tensor([[1.0, 0.1]])
    low, high = torch.tensor([[0.75, 0.0]]), torch.tensor([[1.0, 0.25]])
    w = torch.tensor([[0.8, 0.3]])
    # paper: sum (W - W0)^2 = 0.2^2 + 0.2^2
    assert prior_regulariser(w, init, low, high, "l2").item() == pytest.approx(0.08)
    assert prior_regulariser(w, init, low, high, "l2", 2.0).item() == pytest.approx(0.16)
    # code: mean |W - centre| = (|0.8 - 0.875| + |0.3 - 0.125|) / 2
    assert prior_regulariser(w, init, low, high, "l1").item() == pytest.approx(0.125)
    with pytest.raises(ConfigError):
        prior_regulariser(w, init, low, high, "l3")


def test_au_regression_losses():
    logits = torch.tensor([[0.0, -4.0], [2.0, 1.0]])
    probs = torch.sigmoid(logits)
    targets = torch.tensor([[1.0, 0.25], [0.0, 1.0]])
    squared = (probs - targets) ** 2
    assert au_regression_loss(logits, targets).item() == pytest.approx(squared.mean().item())
    weights = torch.tensor([[3.0, 1.0], [1.0, 3.0]])
    assert au_regression_loss(logits, targets, "weighted_mse").item() == pytest.approx(
        (weights * squared).mean().item())
    # bce: summed over AUs, averaged over the batch (not over batch x AUs)
    bce = -(targets * probs.log() + (1 - targets) * (1 - probs).log())
    assert au_regression_loss(logits, targets, "bce").item() == pytest.approx(
        bce.sum().item() / 2, rel=1e-5)
    with pytest.raises(ConfigError):
        au_regression_loss(logits, targets, "l1")


def test_batch_probabilities_by_hand():
    x = torch.tensor([[0.8, 0.6], [0.2, 0.9]])
    p = batch_pair_probabilities(x, 0.5, "paper")
    assert p["p1"].tolist() == pytest.approx([0.4, 0.75])
    assert p["p0"].tolist() == pytest.approx([0.4, 0.0])          # (1 - 0.2) / 2
    assert p["p11"][0, 1].item() == pytest.approx(0.8 * 0.6 / 2)
    assert p["p01"][0, 1].item() == pytest.approx(0.8 * 0.9 / 2)   # sample 2: AU0 off, AU1 on
    c = batch_pair_probabilities(x, 0.5, "code")
    assert c["p0"].tolist() == pytest.approx([0.1, 0.0])          # code sums x, not 1 - x
    assert c["p01"][0, 1].item() == pytest.approx(0.1 * 0.75)     # product, not joint


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_pair_loss_is_zero_when_the_constraints_hold(variant):
    pos = torch.tensor([[0, 1]])
    neg = torch.tensor([[2, 3]])
    # AU0/AU1 always together; AU2/AU3 never together.
    x = torch.tensor([[0.9, 0.9, 0.9, 0.1],
                      [0.1, 0.1, 0.1, 0.9],
                      [0.9, 0.9, 0.9, 0.1],
                      [0.1, 0.1, 0.1, 0.9]])
    if variant == "paper":
        assert au_pair_loss(x, pos, neg, variant).item() == pytest.approx(0.0, abs=1e-7)
    else:
        # The code's negative first term h(p1 p1 - p11) is the reverse of the paper's and
        # fires exactly when the pair is exclusive: 0.45 * 0.45 - 0 on this batch.
        assert au_pair_loss(x, pos, neg, variant).item() == pytest.approx(0.45 * 0.45)
        assert au_pair_loss(x, pos, neg[:0], variant).item() == pytest.approx(0.0, abs=1e-7)


def test_pair_loss_penalises_violations_by_hand():
    pos = torch.tensor([[0, 1]])
    x = torch.tensor([[0.9, 0.1], [0.1, 0.9]], requires_grad=True)  # a positive pair apart
    loss = au_pair_loss(x, pos, pos[:0], "paper")
    # p1 = (0.45, 0.45), p11 = 0, p10 = 0.9 * 0.9 / 2 = p01 -> 0.2025 + 0.405 + 0.405
    assert loss.item() == pytest.approx(0.45 * 0.45 + 2 * 0.405)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    neg = torch.tensor([[0, 1]])
    together = torch.tensor([[0.9, 0.9], [0.1, 0.1]])               # a negative pair together
    assert au_pair_loss(together, pos[:0], neg, "paper").item() > 0


def test_pair_loss_on_knowledge_pairs_and_bad_input():
    pos = torch.as_tensor(pair_indices(POSITIVE_AU_PAIRS))
    neg = torch.as_tensor(pair_indices(NEGATIVE_AU_PAIRS))
    x = torch.rand(16, 17, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(au_pair_loss(x, pos, neg).item())
    with pytest.raises(ConfigError, match="non-empty"):
        au_pair_loss(x[:0], pos, neg)
    with pytest.raises(ConfigError, match="variant"):
        au_pair_loss(x, pos, neg, "other")
