"""RAF-DB basic reader (Real-world Affective Faces, 7 basic expressions).

Layout of the ``basic`` release (pass that folder as ``root``)::

    <root>/EmoLabel/list_patition_label.txt   # "train_00001.jpg 5" (labels 1..7)
    <root>/Image/original/train_00001.jpg
    <root>/Image/aligned/train_00001_aligned.jpg   (100x100, aligned by the authors)
    <root>/Annotation/manual/train_00001_manual_attri.txt  # 5 lines "x<TAB>y", then
                                                            # gender, race, age lines
    <root>/Annotation/auto/train_00001_auto_attri.txt      # 37 lines "x<TAB>y"

Labels 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (AUE-CRL's order,
:data:`~aue_edge.data.knowledge.RAFDB_LABELS`, after subtracting 1).

Landmarks (``landmarks=``): ``False`` none; ``"manual"`` the 5 published manual points;
``"auto"`` the 37 published automatic points (both in ORIGINAL image coordinates, so they need
``aligned=False``); or a folder holding one file ``<image stem>.txt`` per image with 68 lines
``x y`` (iBUG order, e.g. from a 68-point detector such as FAN, in the coordinates of the images
you read: aligned or original).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import FaceDataset, Record, parse_int, read_text_lines
from aue_edge.data.knowledge import RAFDB_LABELS

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
PUBLISHED_LANDMARKS = {"manual": 5, "auto": 37}


def read_points(path: Path, count: int) -> np.ndarray:
    """The first ``count`` lines of a landmark file as (count, 2) float32 (tabs or spaces)."""
    lines = read_text_lines(path)
    if len(lines) < count:
        raise DatasetError(f"{path}: expected {count} landmark lines 'x y', found "
                           f"{len(lines)} lines")
    points = np.empty((count, 2), dtype=np.float32)
    for i in range(count):
        fields = lines[i].split()
        try:
            if len(fields) != 2:
                raise ValueError
            points[i] = [float(fields[0]), float(fields[1])]
        except ValueError:
            raise DatasetError(f"{path}:{i + 1}: expected two numbers 'x y', found "
                               f"{lines[i]!r}") from None
    if not np.all(np.isfinite(points)):
        raise DatasetError(f"{path}: landmarks hold NaN or infinite values")
    return points


class RafDbBasic(FaceDataset):
    """RAF-DB basic, split ``train`` (12,271 images) or ``test`` (3,068)."""

    name = "rafdb"
    labels = RAFDB_LABELS
    color = "bgr"

    def __init__(self, root: str | Path, split: str = "train", aligned: bool = True,
                 landmarks: bool | str | Path = False) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"RAF-DB split {split!r} unknown; choose 'train' or 'test'")
        root = Path(root)
        label_file = root / LABEL_FILE
        super().__init__(split, label_file)
        if landmarks is True:
            raise DatasetError("RAF-DB landmarks=True is ambiguous: pass 'manual' (5 points), "
                               "'auto' (37 points) or a folder of 68-point files")
        if landmarks in PUBLISHED_LANDMARKS and aligned:
            raise DatasetError(f"RAF-DB's {landmarks!r} landmarks are in original-image "
                               f"coordinates; use aligned=False with them, or a folder of "
                               f"68-point files made for the aligned images")
        image_dir = root / "Image" / ("aligned" if aligned else "original")
        other_split = 0
        names_seen: set[str] = set()
        for line_no, line in enumerate(read_text_lines(label_file), start=1):
            where = f"{label_file}:{line_no}"
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetError(f"{where}: expected '<image name> <label 1..7>', found "
                                   f"{line!r}")
            name, label_text = fields
            if not name.startswith(("train_", "test_")):
                raise DatasetError(f"{where}: image name {name!r} must start with train_ or "
                                   f"test_ (that prefix is the split)")
            label = parse_int(label_text, where, "label", 1, len(RAFDB_LABELS)) - 1
            if name in names_seen:
                raise DatasetError(f"{where}: image {name} is listed twice")
            names_seen.add(name)
            if not name.startswith(split + "_"):
                other_split += 1
                continue
            stem = Path(name).stem
            image_path = image_dir / (f"{stem}_aligned.jpg" if aligned else name)
            if not image_path.is_file():
                raise DatasetError(f"{where}: image {image_path} does not exist; extract "
                                   f"Image/{image_dir.name} of the RAF-DB basic release")
            points = self._landmarks(root, stem, landmarks) if landmarks else None
            self._records.append(Record(path=str(image_path), label=label, landmarks=points))
        self.report.notes.append(f"{other_split} listed images belong to the other split")
        self._finish()

    @staticmethod
    def _landmarks(root: Path, stem: str, landmarks: str | Path) -> np.ndarray:
        if landmarks in PUBLISHED_LANDMARKS:
            path = root / "Annotation" / landmarks / f"{stem}_{landmarks}_attri.txt"
            return read_points(path, PUBLISHED_LANDMARKS[landmarks])
        return read_points(Path(landmarks) / f"{stem}.txt", 68)
