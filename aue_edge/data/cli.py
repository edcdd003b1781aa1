"""``aue data``: check a data set copy before training on it.

Reads one split with the same reader training uses, prints what was kept and dropped (and
why), and optionally plots the class counts or AU base rates. Any malformed row, missing or
unreadable image stops it with the file and line, so a broken copy is found in seconds rather
than hours into a run.

    aue data ferplus ../shared/data/ferplus --split test
    aue data bp4d /data/BP4D --split train --fold 2 --plot bp4d.png
    aue data ckplus ../shared/data/ckplus --split test --fold 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from aue_edge.core.plotting import save_figure
from aue_edge.data import DATASETS, FaceDataset, get_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue data",
        description="Read one split of a data set in its published layout and report what "
                    "was kept and dropped.")
    parser.add_argument("name", choices=sorted(DATASETS), help="data set reader")
    parser.add_argument("root", type=Path,
                        help="data set folder (for fer2013_csv: the fer2013.csv file)")
    parser.add_argument("--split", default="train",
                        help="split: train/valid/test (FER+, FER2013 csv), train/test (RAF-DB, "
                             "FER2013 folders), train/valid (SFEW), train/test/all (BP4D, "
                             "DISFA, CK+); default train")
    parser.add_argument("--fold", type=int, help="BP4D/DISFA/CK+ fold 1..3")
    parser.add_argument("--label-mode", choices=("majority", "probability"),
                        help="FER+ label mode (default majority)")
    parser.add_argument("--original", action="store_true",
                        help="RAF-DB: read Image/original instead of Image/aligned")
    parser.add_argument("--aligned", action="store_true", help="SFEW: the aligned faces")
    parser.add_argument("--decode-all", action="store_true",
                        help="also decode every image (finds corrupt files; slower)")
    parser.add_argument("--plot", type=Path, help="write a PNG of class counts / AU rates")
    return parser


def _kwargs(args: argparse.Namespace) -> dict:
    kwargs: dict = {}
    if args.fold is not None:
        kwargs["fold"] = args.fold
    if args.label_mode is not None:
        kwargs["label_mode"] = args.label_mode
    if args.name == "rafdb":
        kwargs["aligned"] = not args.original
    if args.name == "sfew":
        kwargs["aligned"] = args.aligned
    return kwargs


def plot_dataset(dataset: FaceDataset, path: Path) -> None:
    """Bar chart of class counts (expression data) or AU base rates (AU data)."""
    from aue_edge.core.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4))
    if dataset.labels:
        counts = dataset.report.class_counts
        ax.bar(list(counts), list(counts.values()), color="tab:blue")
        ax.set_ylabel("images")
    else:
        aus = dataset.au_matrix().astype(np.float64)
        known = aus >= 0
        rates = np.where(known.sum(0) > 0, (aus == 1).sum(0) / np.maximum(known.sum(0), 1), 0)
        ax.bar(list(dataset.au_names), rates, color="tab:orange")
        ax.set_ylabel("fraction of coded frames with the AU present")
    ax.set_title(f"{dataset.name} [{dataset.split}]: {len(dataset)} samples")
    ax.tick_params(axis="x", rotation=45)
    save_figure(fig, path, dpi=100)


def data_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    dataset = get_dataset(args.name, args.root, args.split, **_kwargs(args))
    if args.decode_all:
        dataset.check_images()
    print(dataset.report.summary())
    if args.plot is not None:
        plot_dataset(dataset, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def main() -> int:
    from aue_edge.core.errors import AueError

    try:
        return data_main(sys.argv[1:])
    except AueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
