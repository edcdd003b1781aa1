"""CK+ peak frames with FACS codes (Lucey et al., CVPR Workshops 2010): the project's only
real action-unit labels. Layout of ``../shared/data/ckplus`` (see its PROVENANCE.md)::

    <root>/labels.csv   # image,subject,sequence,frame,emotion,aus  (aus: "1 2 5 25 27")
    <root>/CK+48/<emotion>/<subject>_<sequence>_<frame>.png   # 48x48 grey peak frames

Splits are subject-exclusive (``folds.CKPLUS_FOLDS``): ``split="test"`` is fold ``k``'s
subjects, ``"train"`` the other two folds', ``"all"`` every subject. The three frames of a
sequence are near-duplicates and share its labels, so they always fall on the same side.

Labels: ``label`` indexes :data:`CKPLUS_LABELS` (the FER+ names of CK+'s seven emotions; CK+
has no neutral class), so a FER+ model's classes line up without a table. ``aus`` holds one
int8 per :data:`CKPLUS_AUS` (1 present at the peak, 0 absent; CK+ codes occurrence only).

Framing: the CK+48 crops are framed like FER+'s 48x48 faces. Measured here: warping the mean
CK+ face by scale 0.975 and a half-pixel shift maximises its correlation with the mean FER+
training face (0.893 vs 0.877 unwarped), so the crops are used as they are, like FER+ images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import FaceDataset, Record, read_csv_rows, read_gray_crops
from aue_edge.data.folds import CKPLUS_FOLDS, fold_subjects

#: CK+ emotion folder/label names -> the package's canonical expression names.
CKPLUS_EMOTIONS: dict[str, str] = {
    "anger": "anger", "contempt": "contempt", "disgust": "disgust", "fear": "fear",
    "happy": "happiness", "sadness": "sadness", "surprise": "surprise",
}
CKPLUS_LABELS: tuple[str, ...] = tuple(CKPLUS_EMOTIONS.values())
#: The 23 AUs that occur in the development part, in numeric order.
CKPLUS_AUS: tuple[str, ...] = tuple(f"AU{n}" for n in (
    1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27))
COLUMNS = ("image", "subject", "sequence", "frame", "emotion", "aus")
IMAGE_SIZE_PX = 48


class CkPlus(FaceDataset):
    """CK+ ``split`` train/test/all of ``fold`` 1..3 (``all`` ignores the fold)."""

    name = "ckplus"
    labels = CKPLUS_LABELS
    au_names = CKPLUS_AUS
    color = "gray"
    image_size_px = IMAGE_SIZE_PX

    def __init__(self, root: str | Path, split: str = "all", fold: int = 1) -> None:
        root = Path(root)
        label_file = root / "labels.csv"
        super().__init__(split if split == "all" else f"{split} (fold {fold})", label_file)
        subjects = set(fold_subjects(CKPLUS_FOLDS, fold, split))
        known = {s for f in CKPLUS_FOLDS for s in f}
        self.fold = fold
        self.sequences: list[str] = []
        seen: set[str] = set()
        for line_no, row in read_csv_rows(label_file, COLUMNS):
            where = f"{label_file}:{line_no}"
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise DatasetError(f"{where}: expected {len(COLUMNS)} fields, found {len(row)}")
            image, subject, sequence, _frame, emotion, aus = (v.strip() for v in row)
            if image in seen:
                raise DatasetError(f"{where}: image {image} is listed twice")
            seen.add(image)
            if emotion not in CKPLUS_EMOTIONS:
                raise DatasetError(f"{where}: emotion {emotion!r} is not one of "
                                   f"{sorted(CKPLUS_EMOTIONS)}")
            if subject not in known:
                raise DatasetError(f"{where}: subject {subject} is in no CK+ fold; this reader "
                                   f"serves the development part in ../shared/data/ckplus")
            vector = np.zeros(len(CKPLUS_AUS), dtype=np.int8)
            for token in aus.split():
                name = f"AU{token}"
                if name not in CKPLUS_AUS:
                    raise DatasetError(f"{where}: AU {token!r} is not one of the CK+ AUs "
                                       f"{[a[2:] for a in CKPLUS_AUS]}")
                vector[CKPLUS_AUS.index(name)] = 1
            if subject not in subjects:
                self.report.drop(f"subject in another split (subject-exclusive {split})")
                continue
            path = root / image
            if not path.is_file():
                raise DatasetError(f"{where}: image {path} does not exist; the CK+ copy is "
                                   f"incomplete")
            self._records.append(Record(path=str(path), label=CKPLUS_LABELS.index(
                CKPLUS_EMOTIONS[emotion]), aus=vector, subject=subject))
            self.sequences.append(f"{subject}_{sequence}")
        self.report.notes.append(f"{len(set(self.sequences))} sequences of "
                                 f"{len(set(self.subjects))} subjects")
        self._finish()

    def load_arrays(self, progress: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """``(images uint8 (N, 48, 48), labels int64, one-hot probs float32, names)``, the
        same form as the FER+ reader's, so the trainer and ``aue evaluate`` take either."""
        n = len(self._records)
        images = read_gray_crops(self._records, self.image_size_px, f"CK+ {self.split}",
                                 progress)
        labels = self.targets
        probs = np.eye(len(self.labels), dtype=np.float32)[labels] if n else \
            np.zeros((0, len(self.labels)), dtype=np.float32)
        names = [Path(r.path).name for r in self._records]
        return images, labels, probs, names
