"""SFEW 2.0 reader (Static Facial Expressions in the Wild, EmotiW 2015): class folders.

Layout (as the organisers distribute Train and Val; pass the folder holding them as ``root``)::

    <root>/Train/Angry|Disgust|Fear|Happy|Neutral|Sad|Surprise/*.png      (movie frames)
    <root>/Val/<same classes>/*.png
    <root>/Train_Aligned_Faces/<same classes>/*.png   (the organisers' aligned faces,
    <root>/Val_Aligned_Faces/<same classes>/*.png      used with aligned=True)

958 train / 436 val images; results are reported on val. The test images were released
without labels, so there is no labelled ``test`` split. Labels follow AUE-CRL's order
(:data:`~aue_edge.data.knowledge.SFEW_LABELS`).
"""
from __future__ import annotations

from pathlib import Path

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import FaceDataset, list_class_folders
from aue_edge.data.knowledge import SFEW_LABELS

SPLIT_FOLDERS = {"train": "Train", "valid": "Val"}
FOLDER_NAMES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}


class Sfew(FaceDataset):
    """SFEW 2.0 split ``train`` or ``valid``; ``aligned`` reads the ``*_Aligned_Faces`` set."""

    name = "sfew"
    labels = SFEW_LABELS
    color = "bgr"

    def __init__(self, root: str | Path, split: str = "train", aligned: bool = False) -> None:
        if split == "test":
            raise DatasetError("SFEW 2.0 test labels were never released; evaluate on "
                               "split='valid' as the literature does")
        if split not in SPLIT_FOLDERS:
            raise DatasetError(f"SFEW split {split!r} unknown; choose one of "
                               f"{tuple(SPLIT_FOLDERS)}")
        folder = SPLIT_FOLDERS[split] + ("_Aligned_Faces" if aligned else "")
        split_dir = Path(root) / folder
        super().__init__(split, split_dir)
        self._records = list_class_folders(split_dir, FOLDER_NAMES, self.labels, self.report)
        self._finish()
