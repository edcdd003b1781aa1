"""BP4D-Spontaneous reader: frame images + per-frame AU occurrence, subject-exclusive folds.

Layout (the release's AU coding and 2D frame sequences; pass their common parent as ``root``)::

    <root>/AUCoding/AU_OCC/<subject>_<task>.csv      e.g. F001_T1.csv
        header:  <frame column>,1,2,4,...       (AU numbers; "AU01"/"AU1" also accepted)
        rows:    <frame number>,0|1|9,...        (1 present, 0 absent, 9 not coded)
    <root>/<images_dir>/<subject>/<task>/<frame>.jpg   (images_dir "Sequences" by default;
                                                        any zero padding of the frame number)

We read the 12 AUs of the common protocol (:data:`~aue_edge.data.knowledge.BP4D_AUS`);
9 becomes -1 (unknown). The subject-exclusive 3 folds are in
:mod:`aue_edge.data.folds`. BP4D ships 49-point (not 68-point) landmarks, so samples
carry no landmarks.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import (FaceDataset, Record, check_missing_image_policy,
                                      numbered_frames, parse_int, read_text_lines)
from aue_edge.data.folds import BP4D_FOLDS, fold_subjects
from aue_edge.data.knowledge import BP4D_AUS

LABEL_DIR = Path("AUCoding") / "AU_OCC"
_FILE_NAME = re.compile(r"^(?P<subject>[FM]\d{3})_(?P<task>T\d+)\.csv$")
_AU_HEADER = re.compile(r"^(?:AU)?0*(\d+)$", re.IGNORECASE)


def _au_number(cell: str) -> int | None:
    match = _AU_HEADER.match(cell.strip())
    return int(match.group(1)) if match else None


class Bp4d(FaceDataset):
    """BP4D frames of ``fold`` (1..3) and ``split`` (train/test/all).

    ``on_missing_image``: ``"error"`` (default) stops at the first coded frame without an image;
    ``"skip"`` drops such frames and counts them in ``report``.
    """

    name = "bp4d"
    au_names = BP4D_AUS
    color = "bgr"

    def __init__(self, root: str | Path, fold: int = 1, split: str = "train",
                 images_dir: str = "Sequences", on_missing_image: str = "error") -> None:
        check_missing_image_policy(on_missing_image)
        root = Path(root)
        label_dir = root / LABEL_DIR
        super().__init__(f"fold{fold}/{split}", label_dir)
        subjects = set(fold_subjects(BP4D_FOLDS, fold, split))
        known = {s for fold_ in BP4D_FOLDS for s in fold_}
        if not label_dir.is_dir():
            raise DatasetError(f"folder {label_dir} does not exist; expected BP4D's AU "
                               f"occurrence files AUCoding/AU_OCC/<subject>_<task>.csv")
        found_subjects = set()
        for path in sorted(label_dir.iterdir()):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise DatasetError(f"{path}: not a BP4D AU file name; expected "
                                   f"<subject>_<task>.csv such as F001_T1.csv")
            subject, task = match["subject"], match["task"]
            if subject not in known:
                raise DatasetError(f"{path}: subject {subject} is not in the BP4D 3-fold "
                                   f"protocol (41 subjects); is the file misnamed?")
            found_subjects.add(subject)
            if subject not in subjects:
                continue
            frames = numbered_frames(root / images_dir / subject / task)
            self._read_sequence(path, subject, frames, on_missing_image)
        absent = sorted(subjects - found_subjects)
        if absent:
            self.report.notes.append(f"{len(absent)} subjects of this split have no AU file "
                                     f"here: {' '.join(absent)}")
        self._finish()

    def _read_sequence(self, path: Path, subject: str, frames: dict[int, Path],
                       on_missing_image: str) -> None:
        rows = csv.reader(read_text_lines(path))
        header = next(rows, None)
        if not header:
            raise DatasetError(f"{path}:1: empty file; expected a header row of AU numbers")
        numbers = [_au_number(cell) for cell in header[1:]]
        columns = []
        for au in BP4D_AUS:
            if int(au[2:]) not in numbers:
                raise DatasetError(f"{path}:1: header has no column for {au}; expected AU "
                                   f"numbers such as 1,2,4,6,7,10,12,14,15,17,23,24")
            columns.append(numbers.index(int(au[2:])) + 1)
        seen: set[int] = set()
        for line_no, row in enumerate(rows, start=2):
            where = f"{path}:{line_no}"
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetError(f"{where}: expected {len(header)} fields like the header, "
                                   f"found {len(row)}")
            frame = parse_int(row[0], where, "frame number", 0)
            if frame in seen:
                raise DatasetError(f"{where}: frame {frame} is listed twice")
            seen.add(frame)
            codes = np.array([parse_int(row[c], where, f"{BP4D_AUS[i]} code", 0, 9)
                              for i, c in enumerate(columns)], dtype=np.int8)
            bad = ~np.isin(codes, (0, 1, 9))
            if bad.any():
                raise DatasetError(f"{where}: AU codes must be 0, 1 or 9 (not coded), found "
                                   f"{int(codes[bad][0])}")
            image = self._frame_image(
                frames, frame, on_missing_image,
                f"{where}: no image for frame {frame} in {path.stem.replace('_', '/')} of the "
                f"images folder; extract the frames, or pass on_missing_image='skip'",
                "coded frame has no image file")
            if image is None:
                continue
            self._records.append(Record(path=str(image), aus=np.where(codes == 9, -1, codes)
                                        .astype(np.int8), subject=subject))
