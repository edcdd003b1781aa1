"""FER2013 readers: the challenge's csv and the common image-folder form.

csv form (ICML 2013 challenge, ``fer2013.csv``)::

    emotion,pixels,Usage
    0,"70 80 82 ... (2304 values, 48x48 row-major)",Training

``emotion`` 0..6 = Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral (our
:data:`~aue_edge.data.knowledge.FER2013_LABELS`); ``Usage`` is Training / PublicTest /
PrivateTest (we call them train / valid / test; PublicTest is the usual validation split).

Folder form (the Kaggle image release)::

    <root>/train|test/angry|disgust|fear|happy|neutral|sad|surprise/*.jpg   (48x48 gray)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import (FaceDataset, Record, list_class_folders, parse_int,
                                      read_csv_rows)
from aue_edge.data.knowledge import FER2013_LABELS

USAGES = {"train": "Training", "valid": "PublicTest", "test": "PrivateTest"}
HEADER = ("emotion", "pixels", "Usage")
IMAGE_SIZE_PX = 48
FOLDER_NAMES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}


class Fer2013Csv(FaceDataset):
    """FER2013 from ``fer2013.csv``; ``usage`` is train/valid/test or the file's own
    Training/PublicTest/PrivateTest. Images are decoded from the csv into memory."""

    name = "fer2013_csv"
    labels = FER2013_LABELS
    color = "gray"

    def __init__(self, csv_path: str | Path, usage: str = "train") -> None:
        wanted = USAGES.get(usage, usage)
        if wanted not in USAGES.values():
            raise DatasetError(f"FER2013 usage {usage!r} unknown; choose one of "
                               f"{tuple(USAGES)} or {tuple(USAGES.values())}")
        csv_path = Path(csv_path)
        super().__init__(usage, csv_path)
        other_usages = 0
        for line_no, row in read_csv_rows(csv_path, HEADER):
            where = f"{csv_path}:{line_no}"
            if not row:
                raise DatasetError(f"{where}: empty row inside the csv")
            if len(row) != 3:
                raise DatasetError(f"{where}: expected 3 fields (emotion, pixels, Usage), "
                                   f"found {len(row)}")
            row_usage = row[2].strip()
            if row_usage not in USAGES.values():
                raise DatasetError(f"{where}: Usage {row_usage!r} is not one of "
                                   f"{tuple(USAGES.values())}")
            if row_usage != wanted:
                other_usages += 1
                continue
            label = parse_int(row[0], where, "emotion", 0, len(FER2013_LABELS) - 1)
            self._records.append(Record(path=where, label=label,
                                        image=_decode_pixels(row[1], where)))
        self.report.notes.append(f"{other_usages} rows belong to other usages (not {wanted})")
        self._finish()


def _decode_pixels(text: str, where: str) -> np.ndarray:
    fields = text.split()
    if len(fields) != IMAGE_SIZE_PX * IMAGE_SIZE_PX:
        raise DatasetError(f"{where}: pixels must hold {IMAGE_SIZE_PX * IMAGE_SIZE_PX} values "
                           f"(48x48), found {len(fields)}")
    try:
        values = np.array(fields, dtype=np.int64)
    except ValueError:
        raise DatasetError(f"{where}: pixels must be integers separated by spaces") from None
    if values.min() < 0 or values.max() > 255:
        raise DatasetError(f"{where}: pixel values must be in 0..255, found "
                           f"{values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(IMAGE_SIZE_PX, IMAGE_SIZE_PX)


class Fer2013Folder(FaceDataset):
    """FER2013 as class-named folders: ``<root>/<train|test>/<class>/*.jpg``."""

    name = "fer2013_folder"
    labels = FER2013_LABELS
    color = "gray"

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"FER2013 folder split {split!r} unknown; the image release "
                               f"has 'train' and 'test'")
        split_dir = Path(root) / split
        super().__init__(split, split_dir)
        self._records = list_class_folders(split_dir, FOLDER_NAMES, self.labels, self.report)
        self._finish()
