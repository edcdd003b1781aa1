"""Measuring what INT8 did to the model: agreement, accuracy, per-tensor SNR, and plots.

Last step of the calibration flow. Accumulators are streaming (fed batch by batch on held-out
images); :func:`write_plots` draws the histograms of the worst tensors with the thresholds of
every calibrator, and the per-layer SNR, with matplotlib's Agg backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aue_edge.calibration.calibrators import (entropy_threshold, minmax_threshold,
                                              percentile_threshold)
from aue_edge.calibration.stats import TensorHistogram
from aue_edge.edge.model_card import ModelCard
from aue_edge.core.plotting import pyplot, save_figure


class OutputAgreement:
    """FP32 vs INT8 outputs of the model on the same images, and task accuracy of both.

    ``label_map[i]`` is the index in the card's emotion labels of source label ``i`` (-1 when
    the card has no such label: those images are left out of the accuracy and counted).
    """

    def __init__(self, card: ModelCard, label_map: np.ndarray | None) -> None:
        self.card = card
        self.label_map = label_map
        self.emotion = card.outputs.emotion_probs
        self.au = card.outputs.au_probs
        self.num_images = 0
        self.max_abs: dict[str, float] = {}
        self.sum_abs: dict[str, float] = {}
        self.num_values: dict[str, int] = {}
        self.top1_same = 0
        self.au_same = 0
        self.au_values = 0
        self.correct = {"fp32": 0, "int8": 0}
        self.labelled = 0
        self.unmappable_labels = 0
        self.per_class = None

    def update(self, fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray],
               labels: list[int | None]) -> None:
        self.num_images += len(labels)
        for name, reference in fp32.items():
            diff = np.abs(reference.astype(np.float64) - int8[name].astype(np.float64))
            self.max_abs[name] = max(self.max_abs.get(name, 0.0), float(diff.max(initial=0.0)))
            self.sum_abs[name] = self.sum_abs.get(name, 0.0) + float(diff.sum())
            self.num_values[name] = self.num_values.get(name, 0) + int(diff.size)
        if self.emotion is not None and self.emotion in fp32:
            top_fp32 = fp32[self.emotion].argmax(axis=1)
            top_int8 = int8[self.emotion].argmax(axis=1)
            self.top1_same += int((top_fp32 == top_int8).sum())
            if self.label_map is not None:
                num_classes = len(self.card.outputs.emotion_labels)
                if self.per_class is None:
                    # [fp32/int8, class, (correct, images)]
                    self.per_class = np.zeros((2, num_classes, 2), np.int64)
                for i, label in enumerate(labels):
                    if label is None:
                        continue
                    target = int(self.label_map[label]) if 0 <= label < len(self.label_map) \
                        else -1
                    if target < 0:
                        self.unmappable_labels += 1
                        continue
                    self.labelled += 1
                    for m, top in enumerate((top_fp32, top_int8)):
                        hit = int(top[i] == target)
                        self.correct[("fp32", "int8")[m]] += hit
                        self.per_class[m, target] += (hit, 1)
        if self.au is not None and self.au in fp32:
            threshold = np.asarray(self.card.outputs.thresholds(), dtype=np.float32)  # per AU
            same = (fp32[self.au] >= threshold) == (int8[self.au] >= threshold)
            self.au_same += int(same.sum())
            self.au_values += int(same.size)

    def summary(self) -> dict:
        outputs = {name: {"max_abs_diff": self.max_abs[name],
                          "mean_abs_diff": self.sum_abs[name] / max(self.num_values[name], 1)}
                   for name in self.max_abs}
        result: dict = {"num_images": self.num_images, "outputs": outputs}
        if self.emotion is not None and self.num_images:
            result["emotion_top1_agreement"] = self.top1_same / self.num_images
        if self.au_values:
            result["au_active_agreement"] = self.au_same / self.au_values
        accuracy = None
        if self.labelled:
            fp32 = self.correct["fp32"] / self.labelled
            int8 = self.correct["int8"] / self.labelled
            per_class = {}
            for c, name in enumerate(self.card.outputs.emotion_labels):
                n = int(self.per_class[0, c, 1])
                if n:
                    per_class[name] = {"num_images": n,
                                       "fp32": float(self.per_class[0, c, 0] / n),
                                       "int8": float(self.per_class[1, c, 0] / n)}
            mean_class = {m: float(np.mean([v[m] for v in per_class.values()]))
                          for m in ("fp32", "int8")}
            accuracy = {"num_labelled": self.labelled, "fp32": fp32, "int8": int8,
                        "delta_points": 100.0 * (int8 - fp32),
                        "mean_class_fp32": mean_class["fp32"],
                        "mean_class_int8": mean_class["int8"],
                        "left_out_label_not_in_card": self.unmappable_labels,
                        "per_class": per_class}
        result["accuracy"] = accuracy
        return result


class TensorSnr:
    """SNR (dB) of INT8 tensors against the FP32 ones, accumulated over images."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.signal = dict.fromkeys(self.names, 0.0)
        self.noise = dict.fromkeys(self.names, 0.0)

    def update(self, fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray]) -> None:
        for name in self.names:
            reference = fp32[name].astype(np.float64)
            self.signal[name] += float((reference ** 2).sum())
            self.noise[name] += float(((reference - int8[name]) ** 2).sum())

    def snr_db(self) -> dict[str, float]:
        out = {}
        for name in self.names:
            if self.noise[name] <= 0.0:
                out[name] = float("inf")
            elif self.signal[name] <= 0.0:
                out[name] = float("-inf")
            else:
                out[name] = 10.0 * float(np.log10(self.signal[name] / self.noise[name]))
        return out


def write_plots(out_dir: Path, histograms: dict[str, TensorHistogram], worst: list[str],
                chosen_amax: dict[str, float], method: str, percentile: float,
                start_bin: int, max_clip_fraction: float, flatten_zero_bin: bool,
                node_snr_db: dict[str, float], suffix: str = "") -> list[str]:
    """Histogram plot of the ``worst`` tensors and a per-layer SNR plot; returns file names
    (``calibration_worst_histograms<suffix>.png``, ``calibration_layer_snr<suffix>.png``)."""
    plt = pyplot()

    written = []
    if worst:
        cols = min(3, len(worst))
        rows = (len(worst) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.ravel(), worst):
            hist = histograms[name]
            # Shown with 8x coarser bins: 2048 bins of a quantised input (256 grey levels)
            # would draw as a comb.
            group = 8 if hist.num_bins % 8 == 0 else 1
            shown = hist.counts.reshape(-1, group).sum(axis=1)
            centres = (np.arange(shown.size) + 0.5) * hist.bin_width * group
            ax.fill_between(centres, np.maximum(shown, 0.5), 0.5, step="mid", color="0.6",
                            linewidth=0)
            ax.set_yscale("log")
            candidates = {
                "minmax": minmax_threshold(hist).amax,
                f"p{percentile:g}": percentile_threshold(hist, percentile).amax,
                "entropy": entropy_threshold(hist, start_bin, max_clip_fraction,
                                             flatten_zero_bin).amax,
            }
            for (label, amax), colour in zip(candidates.items(), ("C0", "C1", "C2")):
                ax.axvline(amax, color=colour, linestyle="--", linewidth=1,
                           label=f"{label} {amax:.3g}")
            ax.axvline(chosen_amax[name], color="C3", linewidth=1.5,
                       label=f"chosen ({method}) {chosen_amax[name]:.3g}")
            ax.set_title(name if len(name) <= 40 else "..." + name[-37:], fontsize=8)
            ax.set_xlabel("|activation|", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        for ax in axes.ravel()[len(worst):]:
            ax.axis("off")
        fig.suptitle("|x| histograms (log counts) of the quantised activations with the lowest "
                     "int8 SNR, with each calibrator's threshold", fontsize=10)
        save_figure(fig, out_dir / f"calibration_worst_histograms{suffix}.png", dpi=80)
        written.append(f"calibration_worst_histograms{suffix}.png")
    finite = {k: v for k, v in node_snr_db.items() if np.isfinite(v)}
    if finite:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(finite)), 3.4))
        ax.plot(range(len(finite)), list(finite.values()), marker=".", linewidth=1)
        ax.set_xlabel("quantised layer output, in graph order")
        ax.set_ylabel("SNR vs FP32 (dB)")
        ax.set_title("INT8 vs FP32 per layer on held-out images (accumulated error)")
        ax.grid(alpha=0.3)
        save_figure(fig, out_dir / f"calibration_layer_snr{suffix}.png", dpi=80)
        written.append(f"calibration_layer_snr{suffix}.png")
    return written
