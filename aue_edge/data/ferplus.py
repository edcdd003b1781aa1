"""FER+ reader (Barsoum et al., ICMI 2016): 48x48 grayscale faces with 10 crowd votes each.

Layout (the FER+ authors' generator, as in ``../shared/data/ferplus``)::

    <root>/FER2013Train|FER2013Valid|FER2013Test/
        label.csv   # name, "(x, y, w, h)", neutral, happiness, surprise, sadness, anger,
                    # disgust, fear, contempt, unknown, NF   (vote counts, no header)
        fer*.png

Label rules (both modes first apply the FER+ generator's outlier removal: a category with a
single vote gets 0 votes, because one tagger out of ten is treated as noise):

- ``majority``: keep an image iff its most-voted category holds MORE than half of the remaining
  votes and is one of the 8 emotions. Dropped, with separate reasons in the report: no votes
  left, no category above half, majority is unknown, majority is NF.
- ``probability``: the label distribution is the remaining votes of the 8 emotions, normalised
  (unknown and NF votes removed). An image is kept iff some emotion keeps a vote and the top
  emotion has at least as many votes as unknown and as NF (otherwise the taggers said "not
  this/no face" more than any emotion). ``label`` is the top emotion (first on ties).

In both modes ``label_probs`` is that 8-emotion distribution.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import (FaceDataset, Record, parse_int, read_gray_crops,
                                      read_text_lines)
from aue_edge.data.knowledge import FERPLUS_LABELS

SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
LABEL_MODES = ("majority", "probability")
VOTE_COLUMNS = FERPLUS_LABELS + ("unknown", "NF")
IMAGE_SIZE_PX = 48
_BOX = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)$")


def ferplus_target(votes: np.ndarray, label_mode: str) -> tuple[int | None, np.ndarray | None,
                                                                 str | None]:
    """Apply the FER+ label rule to one row of 10 vote counts.

    Returns ``(label, probs over the 8 emotions, None)`` for a kept image or
    ``(None, None, reason)`` for a dropped one.
    """
    if label_mode not in LABEL_MODES:
        raise DatasetError(f"FER+ label_mode {label_mode!r} unknown; choose one of "
                           f"{LABEL_MODES}")
    votes = np.where(votes <= 1, 0, votes).astype(np.float64)  # outlier removal: single votes
    total = votes.sum()
    emotion_votes = votes[:8]
    if emotion_votes.sum() == 0:
        return None, None, "no emotion votes left after single-vote removal"
    if label_mode == "majority":
        top = int(np.argmax(votes))
        if votes[top] <= 0.5 * total:
            return None, None, "no majority: top category holds at most half of the votes"
        if top >= 8:
            return None, None, f"majority vote is {VOTE_COLUMNS[top]}"
    else:
        top = int(np.argmax(emotion_votes))
        if emotion_votes[top] < votes[8:].max():
            return None, None, "unknown or NF outvotes every emotion"
    return top, (emotion_votes / emotion_votes.sum()).astype(np.float32), None


class FerPlus(FaceDataset):
    """FER+ split ``train``/``valid``/``test`` with ``label_mode`` ``majority``/``probability``.

    ``rows`` (all label.csv rows) and ``report`` (kept/dropped with reasons) are exact; tests
    check them against the label files.
    """

    name = "ferplus"
    labels = FERPLUS_LABELS
    color = "gray"
    image_size_px = IMAGE_SIZE_PX

    def __init__(self, root: str | Path, split: str = "train",
                 label_mode: str = "majority") -> None:
        if split not in SPLIT_FOLDERS:
            raise DatasetError(f"FER+ split {split!r} unknown; choose one of "
                               f"{tuple(SPLIT_FOLDERS)}")
        if label_mode not in LABEL_MODES:
            raise DatasetError(f"FER+ label_mode {label_mode!r} unknown; choose one of "
                               f"{LABEL_MODES}")
        folder = Path(root) / SPLIT_FOLDERS[split]
        label_file = folder / "label.csv"
        super().__init__(split, label_file)
        self.label_mode = label_mode
        self.folder = folder
        self.report.notes.append(f"label_mode={label_mode}; single votes removed as outliers")
        lines = read_text_lines(label_file)
        present = {p.name for p in folder.iterdir() if p.suffix.lower() == ".png"}
        names_seen: set[str] = set()
        blank_lines = 0
        for line_no, row in enumerate(csv.reader(lines), start=1):
            where = f"{label_file}:{line_no}"
            if not row:
                blank_lines += 1
                continue
            if len(row) != 12:
                raise DatasetError(f"{where}: expected 12 fields (name, box, 10 vote counts), "
                                   f"found {len(row)}: {','.join(row)[:80]!r}")
            name = row[0].strip()
            if not _BOX.match(row[1].strip()):
                raise DatasetError(f"{where}: face box must look like \"(x, y, w, h)\", found "
                                   f"{row[1]!r}")
            if name in names_seen:
                raise DatasetError(f"{where}: image {name} is listed twice")
            names_seen.add(name)
            if name not in present:
                raise DatasetError(f"{where}: image {folder / name} listed in the label file "
                                   f"does not exist; the copy of FER+ is incomplete")
            votes = np.array([parse_int(v, where, f"vote count {VOTE_COLUMNS[i]}", 0, 100)
                              for i, v in enumerate(row[2:])], dtype=np.int64)
            label, probs, reason = ferplus_target(votes, label_mode)
            if reason is not None:
                self.report.drop(reason)
                continue
            self._records.append(Record(path=str(folder / name), label=label,
                                        label_probs=probs))
        self.rows = len(names_seen)
        if blank_lines:
            self.report.notes.append(f"{blank_lines} blank lines in {label_file} skipped")
        unlisted = len(present - names_seen)
        if unlisted:
            self.report.notes.append(f"{unlisted} PNG files in {folder} are not in label.csv "
                                     f"and are not used")
        self._finish()

    def load_arrays(self, progress: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """All kept images at once: ``(images uint8 (N, 48, 48), labels int64 (N,),
        probs float32 (N, 8), names)``; names are the PNG file names."""
        n = len(self._records)
        images = read_gray_crops(self._records, self.image_size_px, f"FER+ {self.split}",
                                 progress)
        labels = self.targets
        probs = (np.stack([r.label_probs for r in self._records]) if n else
                 np.zeros((0, len(self.labels)), dtype=np.float32))
        names = [Path(r.path).name for r in self._records]
        return images, labels, probs, names
