"""Derive the 5-point alignment template from the framing of FER+ training images.

Host-side tool (train stage, no torch needed). FER+ faces are loosely centred 48x48 crops; a
model trained on them expects faces framed the same way. This script measures that framing:
it upscales FER+ training images (YuNet cannot see 48 px faces), runs the edge detector
(:class:`aue_edge.edge.face.yunet.YuNetDetector`) on them, converts the top face's 5 landmarks to
fractions of the image extent (the convention of :mod:`aue_edge.edge.face.alignment`) and
averages them. The result is committed as
:data:`aue_edge.edge.face.templates.FERPLUS_TEMPLATE_5PT`; rerun this to check or refresh it::

    .venv/bin/python -m aue_edge.train.derive_alignment_template \\
        --ferplus-root ../shared/data/ferplus --max-images 4000 --out runs/alignment_template

Writes ``template.json`` (template, per-point spread, counts, the command) and
``template.png`` (the mean FER+ face with the detected points and the template).
Images whose FER+ votes make "NF" (not a face) the top label are left out, as the FER+
protocol drops them; the count is reported.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from aue_edge.core.errors import DatasetError
from aue_edge.edge.face.yunet import LANDMARK_NAMES, YuNetDetector
from aue_edge.core.plotting import save_figure

FERPLUS_COLUMNS = 12  # image, box, 8 emotions, unknown, NF
NF_COLUMN = 11


def read_ferplus_faces(split_dir: Path) -> tuple[list[Path], int]:
    """Image paths of a FER+ split whose top vote is not NF, and how many were left out."""
    label_file = split_dir / "label.csv"
    if not label_file.is_file():
        raise DatasetError(f"{label_file} does not exist; expected the FER+ layout "
                           f"<root>/FER2013Train/label.csv (see ../shared/data/ferplus)")
    paths, not_faces = [], 0
    with label_file.open(newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if len(row) != FERPLUS_COLUMNS:
                raise DatasetError(f"{label_file}:{line_no}: expected {FERPLUS_COLUMNS} columns "
                                   f"(image, box, 10 vote counts), found {len(row)}")
            try:
                votes = [int(v) for v in row[2:]]
            except ValueError:
                raise DatasetError(f"{label_file}:{line_no}: vote counts must be integers, "
                                   f"got {row[2:]}") from None
            if votes[NF_COLUMN - 2] == max(votes) and votes[NF_COLUMN - 2] > 0:
                not_faces += 1
                continue
            paths.append(split_dir / row[0])
    return paths, not_faces


def derive_template(paths: list[Path], upscale_px: int, score_threshold: float
                    ) -> dict:
    """Detect faces on upscaled images; the mean 5 points and the counts, as a dict."""
    points, scores, mean_face = [], [], np.zeros((48, 48), np.float64)
    zero_faces = several_faces = 0
    with YuNetDetector(score_threshold=score_threshold, detect_max_side_px=None) as detector:
        for path in tqdm(paths, desc="detecting on upscaled FER+", unit="img"):
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise DatasetError(f"{path}: listed in label.csv but missing or unreadable")
            mean_face += cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA)
            big = cv2.resize(gray, (upscale_px, upscale_px), interpolation=cv2.INTER_LINEAR)
            found = detector.detect(big)
            if len(found) == 0:
                zero_faces += 1
                continue
            several_faces += len(found) > 1
            # Fraction of the image extent: pixel centre x sits at (x + 0.5) / size.
            points.append((found.landmarks5[0] + 0.5) / upscale_px)
            scores.append(float(found.scores[0]))
    if not points:
        raise DatasetError("YuNet found no face in any of the images; check --upscale-px and "
                           "--score-threshold")
    stack = np.stack(points)
    return {
        "template_5pt": [[round(float(x), 4), round(float(y), 4)] for x, y in stack.mean(0)],
        "median_5pt": [[round(float(x), 4), round(float(y), 4)]
                       for x, y in np.median(stack, 0)],
        "std_5pt": [[round(float(x), 4), round(float(y), 4)] for x, y in stack.std(0)],
        "landmark_names": list(LANDMARK_NAMES),
        "images": len(paths),
        "detections_used": len(points),
        "images_without_face": zero_faces,
        "images_with_several_faces_top_used": int(several_faces),
        "mean_score": round(float(np.mean(scores)), 4),
        "_points": stack,
        "_mean_face": mean_face / len(paths),
    }


def plot_template(result: dict, out_png: Path) -> None:
    from aue_edge.core.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(result["_mean_face"], cmap="gray", extent=(0, 1, 1, 0))
    pts = result["_points"]
    shown = pts[:: max(1, len(pts) // 1000)]
    for k, name in enumerate(LANDMARK_NAMES):
        ax.scatter(shown[:, k, 0], shown[:, k, 1], s=2, alpha=0.3, label=name)
    tpl = np.asarray(result["template_5pt"])
    ax.scatter(tpl[:, 0], tpl[:, 1], s=60, marker="+", color="red", label="template (mean)")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_title(f"FER+ framing: {result['detections_used']} detections, "
                 f"{result['images']} images")
    ax.legend(fontsize=6, loc="lower right")
    save_figure(fig, out_png, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aue_edge.train.derive_alignment_template",
        description="Derive the 5-point alignment template from FER+ framing (mean YuNet "
                    "landmarks on upscaled training images).")
    parser.add_argument("--ferplus-root", type=Path,
                        default=Path(os.environ.get("AUE_FERPLUS_ROOT",
                                                    "../shared/data/ferplus")),
                        help="FER+ root with FER2013Train/label.csv (default: $AUE_FERPLUS_ROOT "
                             "or ../shared/data/ferplus)")
    parser.add_argument("--split", default="FER2013Train",
                        help="split folder (default: %(default)s)")
    parser.add_argument("--max-images", type=int, default=4000,
                        help="random sample of this many images; 0 = all (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--upscale-px", type=int, default=192,
                        help="side the 48 px images are upscaled to (default: %(default)s)")
    parser.add_argument("--score-threshold", type=float, default=0.6,
                        help="YuNet score threshold (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/alignment_template"),
                        help="output folder for template.json and template.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_images < 0 or args.upscale_px < 48:
        raise DatasetError(f"--max-images must be >= 0 and --upscale-px >= 48, got "
                           f"{args.max_images} and {args.upscale_px}")
    paths, not_faces = read_ferplus_faces(args.ferplus_root / args.split)
    if args.max_images and args.max_images < len(paths):
        picked = np.random.default_rng(args.seed).choice(len(paths), args.max_images,
                                                         replace=False)
        paths = [paths[i] for i in sorted(picked)]
    result = derive_template(paths, args.upscale_px, args.score_threshold)
    result.update({
        "split": args.split, "seed": args.seed, "upscale_px": args.upscale_px,
        "score_threshold": args.score_threshold, "images_left_out_nf": not_faces,
        "command": "python -m aue_edge.train.derive_alignment_template "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
    })
    args.out.mkdir(parents=True, exist_ok=True)
    plot_template(result, args.out / "template.png")
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    (args.out / "template.json").write_text(json.dumps(public, indent=2) + "\n",
                                            encoding="utf-8")
    print(json.dumps(public, indent=2))
    print(f"left out {not_faces} images whose top FER+ vote is NF (not a face); "
          f"{result['images_without_face']} of {result['images']} images had no detection; "
          f"wrote {args.out / 'template.json'} and {args.out / 'template.png'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DatasetError as exc:
        print(f"derive_alignment_template: error: {exc}", file=sys.stderr)
        sys.exit(2)
