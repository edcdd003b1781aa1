"""Classification and AU metrics shared by every trainer and by ``aue evaluate``. Train stage,
numpy only (no torch), so ONNX evaluation and calibration reports can use it as well.

* overall accuracy;
* mean per-class accuracy: the mean over classes of recall TP_c / N_c (the AUE-CRL paper's
  "Ave. acc", reference ``utils.py acc_2``); classes with no test image are left out of the mean
  and listed under ``classes_without_images``;
* a per-class table (support, recall, precision) and the confusion matrix (rows = truth);
* a confusion-matrix PNG (matplotlib, Agg);
* AU pseudo-label statistics for the AUE-CRL AU stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.core.plotting import save_figure


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise DatasetError(f"{y_true.size} labels but {y_pred.size} predictions")
    for name, arr in (("label", y_true), ("prediction", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise DatasetError(f"{name} index out of range [0, {num_classes}): found "
                               f"{arr.min()}..{arr.max()}")
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray,
                          labels: Sequence[str]) -> dict[str, Any]:
    """``accuracy``, ``mean_class_accuracy``, ``num_images``, ``per_class`` and the
    ``confusion_matrix`` of integer predictions against integer labels."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    total = int(cm.sum())
    if total == 0:
        raise DatasetError("cannot compute metrics on an empty set of images")
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    diag = np.diag(cm)
    recall = np.divide(diag, support, out=np.zeros(len(labels)), where=support > 0)
    precision = np.divide(diag, predicted, out=np.zeros(len(labels)), where=predicted > 0)
    present = support > 0
    return {
        "accuracy": float(diag.sum() / total),
        "mean_class_accuracy": float(recall[present].mean()),
        "num_images": total,
        "per_class": {
            label: {"support": int(support[c]), "accuracy": float(recall[c]),
                    "precision": float(precision[c])}
            for c, label in enumerate(labels)
        },
        "classes_without_images": [label for c, label in enumerate(labels) if not present[c]],
        "confusion_matrix": cm.tolist(),
    }


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: str | Path,
                          title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per cell) with counts, saved as PNG."""
    from aue_edge.core.plotting import pyplot

    plt = pyplot()

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{frac[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center",
                    fontsize=7, color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return save_figure(fig, path, dpi=120)


def au_pseudo_label_stats(au_probs: np.ndarray, pseudo: np.ndarray, au_names: Sequence[str],
                          threshold: float | Sequence[float] = 0.5) -> dict[str, Any]:
    """How well the AU head follows its knowledge-derived pseudo labels, per AU.

    ``mean_target``/``mean_prob``: averages over the images; ``mae``: mean |prob - target|;
    ``agreement``: fraction of images where prob and target fall on the same side of
    ``threshold`` (one value, or one per AU); ``active_rate``: fraction predicted active; ``auc``: ROC AUC of the
    probability against the pseudo positives (target >= 0.5; 0.5 for a constant output, NaN
    where the split has no pseudo positive); ``std_prob``: spread across images. Means over AUs
    are ``mean_*``; MAE and agreement alone are matched by a constant output, AUC is not.
    """
    au_probs = np.asarray(au_probs, dtype=np.float64)
    pseudo = np.asarray(pseudo, dtype=np.float64)
    if au_probs.shape != pseudo.shape or au_probs.shape[1:] != (len(au_names),):
        raise DatasetError(f"AU probabilities {au_probs.shape} and pseudo labels {pseudo.shape} "
                           f"must both be (N, {len(au_names)})")
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(au_names),))
    agree = (au_probs >= threshold) == (pseudo >= threshold)
    per_au = {
        name: {"mean_target": float(pseudo[:, a].mean()), "mean_prob": float(au_probs[:, a].mean()),
               "mae": float(np.abs(au_probs[:, a] - pseudo[:, a]).mean()),
               "agreement": float(agree[:, a].mean()),
               "active_rate": float((au_probs[:, a] >= threshold[a]).mean()),
               "auc": roc_auc(pseudo[:, a] >= 0.5, au_probs[:, a]),
               "std_prob": float(au_probs[:, a].std())}
        for a, name in enumerate(au_names)
    }
    return {"num_images": int(au_probs.shape[0]),
            "mean_mae": float(np.abs(au_probs - pseudo).mean()),
            "mean_agreement": float(agree.mean()),
            "mean_auc": float(np.nanmean([v["auc"] for v in per_au.values()])),
            "mean_active_rate": float(np.mean([v["active_rate"] for v in per_au.values()])),
            "mean_std_prob": float(np.mean([v["std_prob"] for v in per_au.values()])),
            "per_au": per_au}


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of boolean decisions (0 when there is no positive prediction or label)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = float(np.sum(y_true & y_pred))
    denom = float(np.sum(y_true) + np.sum(y_pred))
    return 2 * tp / denom if denom else 0.0


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN if one class
    is missing. A constant score gives exactly 0.5."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true, bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold that maximises F1 on (training) data; among equally good ones the
    one closest to 0.5, placed half-way between neighbouring scores so it generalises."""
    y_true = np.asarray(y_true, bool)
    scores = np.asarray(scores, dtype=np.float64)
    values = np.unique(scores)
    if not y_true.any() or len(values) < 2:
        return 0.5
    candidates = np.concatenate([(values[:-1] + values[1:]) / 2, [values[0] - 1e-6]])
    f1 = np.array([binary_f1(y_true, scores >= t) for t in candidates])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(np.clip(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]], 0.0, 1.0))
