"""Data set readers (shared by training and calibration) for the published layouts of FER+,
FER2013, RAF-DB, SFEW 2.0, BP4D, DISFA and CK+ (numpy + OpenCV, no torch: the calibration stage
reads its images through them too).

``get_dataset("ferplus", root, "train", label_mode="probability")`` picks a reader by name;
every reader is a :class:`FaceDataset` of :class:`Sample` with a ``report`` of what it kept and
dropped. See ``docs/data.md``.
"""
from __future__ import annotations

from pathlib import Path

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import DatasetReport, FaceDataset, Sample, read_image
from aue_edge.data.bp4d import Bp4d
from aue_edge.data.ckplus import CkPlus
from aue_edge.data.disfa import Disfa
from aue_edge.data.fer2013 import Fer2013Csv, Fer2013Folder
from aue_edge.data.ferplus import FerPlus
from aue_edge.data.rafdb import RafDbBasic
from aue_edge.data.sfew import Sfew

DATASETS: dict[str, type[FaceDataset]] = {
    "ferplus": FerPlus,
    "fer2013_csv": Fer2013Csv,
    "fer2013_folder": Fer2013Folder,
    "rafdb": RafDbBasic,
    "sfew": Sfew,
    "bp4d": Bp4d,
    "disfa": Disfa,
    "ckplus": CkPlus,
}


def get_dataset(name: str, root: str | Path, split: str, **kwargs) -> FaceDataset:
    """Build the reader ``name`` for ``split``; ``kwargs`` go to its constructor.

    ``root`` is the file for ``fer2013_csv`` (its ``split`` is the Usage) and the data set
    folder otherwise. BP4D/DISFA/CK+ take ``fold=1..3`` and split train/test/all.
    """
    if name not in DATASETS:
        raise DatasetError(f"data set {name!r} unknown; choose one of {sorted(DATASETS)}")
    if name == "fer2013_csv":
        return Fer2013Csv(root, usage=split, **kwargs)
    return DATASETS[name](root, split=split, **kwargs)


__all__ = ["DATASETS", "Bp4d", "CkPlus", "DatasetReport", "Disfa", "FaceDataset", "Fer2013Csv",
           "Fer2013Folder", "FerPlus", "RafDbBasic", "Sample", "Sfew", "get_dataset",
           "read_image"]
