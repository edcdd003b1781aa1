"""AU-detection evaluation: F1-frame per AU and averaged, results table, per-AU F1 bar chart.

The protocol of the three papers (LP-Net, GTLE-Net, KDSRL) on BP4D and DISFA: per AU, frame-level
decisions ``p >= threshold`` (0.5; no per-AU threshold tuning), ``F1 = 2PR / (P + R)`` in percent,
then the mean over AUs; subject-exclusive 3-fold cross-validation, each fold's test split scored
separately and the per-fold numbers reported together with their mean. Frames whose label is
unknown (-1) are left out of that AU's counts, and the report says how many were.

The published numbers (``PAPER_F1``) are printed beside ours so a user sees the gap; they come
from the papers' tables (see ``../shared/SEED_FACTS.md`` in the project's history).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aue_edge.core.errors import ConfigError
from aue_edge.core.plotting import save_figure

_BP4D = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24")
_DISFA = ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26")

# (model family, data set) -> {AU: published F1 %}
PAPER_F1: dict[tuple[str, str], dict[str, float]] = {
    ("lp_net", "bp4d"): dict(zip(_BP4D, (43.4, 38.0, 54.2, 77.1, 76.7, 83.8, 87.2, 63.3, 45.3,
                                         60.5, 48.1, 54.2))),
    ("lp_net", "disfa"): dict(zip(_DISFA, (29.9, 24.7, 72.7, 46.8, 49.6, 72.9, 93.8, 65.0))),
    ("gtle_net", "bp4d"): dict(zip(_BP4D, (58.2, 48.7, 61.5, 78.7, 79.2, 84.2, 89.8, 66.3, 56.7,
                                           64.8, 53.5, 53.6))),
    ("gtle_net", "disfa"): dict(zip(_DISFA, (63.5, 62.5, 69.8, 48.6, 53.9, 75.6, 94.7, 64.4))),
    ("kdsrl_frozen", "bp4d"): dict(zip(_BP4D, (50.1, 45.4, 53.6, 79.2, 78.4, 85.2, 87.4, 65.4,
                                               51.5, 56.1, 44.6, 42.0))),
    ("kdsrl_frozen", "disfa"): dict(zip(_DISFA, (54.6, 53.6, 58.1, 52.5, 45.5, 77.6, 86.9, 53.2))),
    ("kdsrl_finetune", "bp4d"): dict(zip(_BP4D, (53.3, 47.4, 56.2, 79.4, 80.7, 85.1, 89.0, 67.4,
                                                 55.9, 61.9, 48.5, 49.0))),
    ("kdsrl_finetune", "disfa"): dict(zip(_DISFA, (60.4, 59.2, 67.5, 52.7, 51.5, 76.1, 91.3,
                                                   57.7))),
}


@dataclass(frozen=True)
class AuScores:
    """Frame-level scores of one evaluation (one fold's test split)."""

    au_names: tuple[str, ...]
    f1_pct: tuple[float, ...]
    precision_pct: tuple[float, ...]
    recall_pct: tuple[float, ...]
    positives: tuple[int, ...]       # labelled-positive frames per AU
    unknown: tuple[int, ...]         # frames with label -1 per AU, left out
    num_frames: int
    threshold: float

    @property
    def mean_f1_pct(self) -> float:
        return float(np.mean(self.f1_pct))


def f1_frame(probs: np.ndarray, labels: np.ndarray, au_names: tuple[str, ...],
             threshold: float = 0.5) -> AuScores:
    """F1-frame per AU at one fixed threshold. An AU with no positive frame and no positive
    prediction scores 0 (F1 is undefined there; 0 is what the papers' tables imply)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(au_names):
        raise ConfigError(f"f1_frame needs probs and labels of shape (N, {len(au_names)}), got "
                          f"{probs.shape} and {labels.shape}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    known = labels >= 0
    truth = (labels >= 1) & known   # labels 0/1 here; soft pseudo targets are binarised by caller
    pred = (probs >= threshold) & known
    tp = (pred & truth).sum(0).astype(np.float64)
    fp = (pred & ~truth).sum(0).astype(np.float64)
    fn = (~pred & truth & known).sum(0).astype(np.float64)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return AuScores(au_names=tuple(au_names), f1_pct=tuple(np.round(100 * f1, 3).tolist()),
                    precision_pct=tuple(np.round(100 * precision, 3).tolist()),
                    recall_pct=tuple(np.round(100 * recall, 3).tolist()),
                    positives=tuple(int(v) for v in truth.sum(0)),
                    unknown=tuple(int(v) for v in (~known).sum(0)),
                    num_frames=int(len(labels)), threshold=float(threshold))


def results_table(fold_scores: dict[str, AuScores], paper: dict[str, float] | None = None) -> str:
    """Markdown table: one row per fold, their mean, and the paper's row when given."""
    if not fold_scores:
        raise ConfigError("no fold scores to tabulate")
    names = next(iter(fold_scores.values())).au_names
    header = "| | " + " | ".join(names) + " | avg |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for fold, scores in fold_scores.items():
        lines.append(f"| {fold} | " + " | ".join(f"{v:.1f}" for v in scores.f1_pct)
                     + f" | {scores.mean_f1_pct:.1f} |")
    mean = np.mean([s.f1_pct for s in fold_scores.values()], axis=0)
    lines.append("| mean | " + " | ".join(f"{v:.1f}" for v in mean) + f" | {mean.mean():.1f} |")
    if paper and all(n in paper for n in names):
        ref = [paper[n] for n in names]
        lines.append("| paper | " + " | ".join(f"{v:.1f}" for v in ref)
                     + f" | {np.mean(ref):.1f} |")
    return "\n".join(lines)


def plot_f1_bars(fold_scores: dict[str, AuScores], out_png: str | Path,
                 paper: dict[str, float] | None = None, title: str = "") -> Path:
    """Bar chart of the per-AU F1 (mean over folds, fold range as error bars; paper beside)."""
    from aue_edge.core.plotting import pyplot

    plt = pyplot()

    names = next(iter(fold_scores.values())).au_names
    f1 = np.array([s.f1_pct for s in fold_scores.values()])
    mean = f1.mean(0)
    x = np.arange(len(names))
    width = 0.4 if paper else 0.7
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4))
    ax.bar(x - (width / 2 if paper else 0), mean, width,
           yerr=[mean - f1.min(0), f1.max(0) - mean] if len(f1) > 1 else None,
           label=f"this model (mean of {len(f1)} fold(s), avg {mean.mean():.1f})", capsize=3)
    if paper and all(n in paper for n in names):
        ref = np.array([paper[n] for n in names])
        ax.bar(x + width / 2, ref, width, label=f"paper (avg {ref.mean():.1f})", alpha=0.7)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylabel("F1-frame (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "F1-frame per AU")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, out_png, dpi=100)


def write_report(out_dir: str | Path, fold_scores: dict[str, AuScores], model_family: str,
                 dataset: str) -> dict[str, Path]:
    """``results.json``, ``results.md`` and ``f1_per_au.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paper = PAPER_F1.get((model_family, dataset))
    table = results_table(fold_scores, paper)
    mean_f1 = float(np.mean([s.mean_f1_pct for s in fold_scores.values()]))
    payload = {
        "model": model_family, "dataset": dataset, "protocol": "F1-frame, threshold 0.5, "
        "no per-AU threshold tuning, subject-exclusive folds",
        "mean_f1_pct": round(mean_f1, 3),
        "folds": {fold: asdict(s) | {"mean_f1_pct": round(s.mean_f1_pct, 3)}
                  for fold, s in fold_scores.items()},
        "paper_f1_pct": paper,
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    md_path = out_dir / "results.md"
    md_path.write_text(f"# {model_family} on {dataset}: F1-frame (%)\n\n{table}\n",
                       encoding="utf-8")
    png = plot_f1_bars(fold_scores, out_dir / "f1_per_au.png", paper,
                       title=f"{model_family} on {dataset}")
    return {"json": json_path, "markdown": md_path, "plot": png}
