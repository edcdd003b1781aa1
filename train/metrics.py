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

from aue_edge.edge.errors import DatasetError
from aue_edge.edge.plotting import save_figure


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
                          threshold: float = 0.5) -> dict[str, Any]:
    """How well the AU head follows its knowledge-derived pseudo labels, per AU.

    ``mean_target``/``mean_prob``: averages over the images; ``mae``: mean |prob - target|;
    ``agreement``: fraction of images where prob and target fall on the same side of
    ``threshold``; ``active_rate``: fraction predicted active.
    """
    au_probs = np.asarray(au_probs, dtype=np.float64)
    pseudo = np.asarray(pseudo, dtype=np.float64)
    if au_probs.shape != pseudo.shape or au_probs.shape[1:] != (len(au_names),):
        raise DatasetError(f"AU probabilities {au_probs.shape} and pseudo labels {pseudo.shape} "
                           f"must both be (N, {len(au_names)})")
    agree = (au_probs >= threshold) == (pseudo >= threshold)
    per_au = {
        name: {"mean_target": float(pseudo[:, a].mean()), "mean_prob": float(au_probs[:, a].mean()),
               "mae": float(np.abs(au_probs[:, a] - pseudo[:, a]).mean()),
               "agreement": float(agree[:, a].mean()),
               "active_rate": float((au_probs[:, a] >= threshold).mean())}
        for a, name in enumerate(au_names)
    }
    return {"num_images": int(au_probs.shape[0]),
            "mean_mae": float(np.abs(au_probs - pseudo).mean()),
            "mean_agreement": float(agree.mean()), "per_au": per_au}
