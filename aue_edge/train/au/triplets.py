"""Expression-similarity triplets from FER+ vote distributions, for GTLE-Net's GEE pre-training.

GTLE-Net pre-trains its expression embedding on Google's FEC triplets (three faces, annotators
say which two are most alike). FEC cannot be obtained here, so triplets are built from FER+:
every FER+ image carries the votes of 10 annotators, and two images whose vote distributions
agree were read as the same expression mix by the crowd.

The rule (numpy only; :func:`build_triplets`):

1. Each image's distribution is its votes over the 8 emotions with "unknown" and "not a face"
   removed, normalised to sum 1 (``FerPlus(..., label_mode="probability")`` gives it).
2. The distance of two images is the total-variation distance ``0.5 * sum |p - q|`` (in [0, 1]).
3. Random triples are drawn; the closest pair becomes (anchor, positive), the third image the
   negative (FEC's "odd one out").
4. A triple is kept only if it is unambiguous: the pair's distance is at most
   ``max_pair_distance`` and both distances to the odd one exceed it by at least ``min_gap``
   (FEC keeps only triplets the annotators agree on). Everything drawn is counted: kept,
   rejected as ambiguous, rejected as a not-similar-enough pair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aue_edge.core.errors import DatasetError


@dataclass(frozen=True)
class TripletStats:
    drawn: int
    kept: int
    rejected_pair_too_far: int
    rejected_ambiguous: int


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise total-variation distance of two (N, K) distributions."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


def build_triplets(probs: np.ndarray, num_triplets: int, max_pair_distance: float = 0.2,
                   min_gap: float = 0.3, seed: int = 0, max_draws_factor: int = 50
                   ) -> tuple[np.ndarray, TripletStats]:
    """``(triplets (T, 3) int64 [anchor, positive, negative], stats)`` from (N, 8) vote
    distributions.

    Draws candidate triples in vectorised chunks until ``num_triplets`` are kept or
    ``max_draws_factor * num_triplets`` were drawn; fewer kept than asked raises
    :class:`DatasetError` with the counts (loosen the thresholds or give more images).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 3:
        raise DatasetError(f"triplets need (N >= 3, K) vote distributions, got shape {probs.shape}")
    sums = probs.sum(1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise DatasetError(f"vote distribution of row {bad} sums to {sums[bad]:.4f}, expected 1; "
                           f"load FER+ with label_mode='probability'")
    if num_triplets < 1 or not 0 <= max_pair_distance < 1 or min_gap <= 0:
        raise DatasetError(f"need num_triplets >= 1, 0 <= max_pair_distance < 1, min_gap > 0; "
                           f"got {num_triplets}, {max_pair_distance}, {min_gap}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    n_kept = drawn = too_far = ambiguous = 0
    chunk = max(1024, 4 * num_triplets)
    while n_kept < num_triplets and drawn < max_draws_factor * num_triplets:
        idx = rng.integers(0, len(probs), size=(chunk, 3))
        idx = idx[(idx[:, 0] != idx[:, 1]) & (idx[:, 0] != idx[:, 2]) & (idx[:, 1] != idx[:, 2])]
        drawn += len(idx)
        a, b, c = idx[:, 0], idx[:, 1], idx[:, 2]
        # distances of the three pairs (a,b), (a,c), (b,c); the odd one is the one left out
        dist = np.stack([total_variation(probs[a], probs[b]), total_variation(probs[a], probs[c]),
                         total_variation(probs[b], probs[c])], axis=1)
        pair = np.argmin(dist, axis=1)
        d_pair = dist[np.arange(len(idx)), pair]
        d_other = np.sort(dist, axis=1)[:, 1]
        close = d_pair <= max_pair_distance
        clear = d_other >= d_pair + min_gap
        too_far += int((~close).sum())
        ambiguous += int((close & ~clear).sum())
        ok = close & clear
        order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[pair[ok]]
        kept.append(np.take_along_axis(idx[ok], order, axis=1))
        n_kept += int(ok.sum())
    triplets = np.concatenate(kept)[:num_triplets].astype(np.int64)
    stats = TripletStats(drawn=drawn, kept=int(n_kept), rejected_pair_too_far=too_far,
                         rejected_ambiguous=ambiguous)
    if len(triplets) < num_triplets:
        raise DatasetError(
            f"only {len(triplets)} of {num_triplets} unambiguous triplets after {drawn} draws "
            f"({too_far} pairs too far apart, {ambiguous} ambiguous); raise max_pair_distance "
            f"(now {max_pair_distance}), lower min_gap (now {min_gap}) or use more images")
    return triplets, stats
