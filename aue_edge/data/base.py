"""What every data set reader shares: the :class:`Sample` it returns, the :class:`FaceDataset`
base, the :class:`DatasetReport` of what was kept and dropped, and strict file helpers.

Readers sit at the very start of the flow (train, and calibration for its INT8 images): they
turn a data set in its published layout into samples. numpy + OpenCV only (no torch), so the
calibration stage can use them. Every row that is not used is counted in the report with its
reason; malformed input raises :class:`~aue_edge.core.errors.DatasetError` naming the file and
line.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from aue_edge.core.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# What a frame-sequence reader (BP4D, DISFA) does with a labelled frame that has no image file.
MISSING_IMAGE_POLICIES = ("error", "skip")


@dataclass
class Sample:
    """One face image and its annotations.

    ``image``: (H, W) uint8 grayscale or (H, W, 3) uint8 BGR. ``label``: class index into the
    data set's ``labels`` or None. ``label_probs``: a distribution over ``labels`` (FER+ votes)
    or None. ``aus``: int8 per ``au_names``, 1 present, 0 absent, -1 unknown; or None.
    ``subject``: subject id where the data set has one. ``landmarks``: (K, 2) float32 points
    (68 for iBUG-style files, 5 for RAF-DB's manual points) in the image's pixel coordinates.
    ``path``: the image file, or ``file:line`` for images stored inside a csv.
    """

    image: np.ndarray
    label: int | None
    label_probs: np.ndarray | None
    aus: np.ndarray | None
    subject: str | None
    landmarks: np.ndarray | None
    path: str


@dataclass
class Record:
    """A sample before its image is read: what a reader keeps in memory per item."""

    path: str
    label: int | None = None
    label_probs: np.ndarray | None = None
    aus: np.ndarray | None = None
    subject: str | None = None
    landmarks: np.ndarray | None = None
    image: np.ndarray | None = None  # set when the image lives in the label file (FER2013 csv)


@dataclass
class DatasetReport:
    """How a reader got from the rows/files it found to the samples it serves."""

    dataset: str
    split: str
    source: str
    found: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    notes: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count

    def summary(self) -> str:
        lines = [f"{self.dataset} [{self.split}] from {self.source}: {self.found} found, "
                 f"{self.kept} kept, {sum(self.dropped.values())} dropped"]
        lines += [f"  dropped {n}: {reason}" for reason, n in sorted(self.dropped.items())]
        if self.class_counts:
            lines.append("  classes: " + ", ".join(f"{k} {v}" for k, v in
                                                    self.class_counts.items()))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class FaceDataset:
    """Base of every reader: an indexable list of :class:`Record`, images read on access.

    Subclasses fill ``self._records`` and ``self.report`` in ``__init__`` and set ``labels``
    (the label set, () for AU-only data) and ``au_names`` (() for expression-only data).
    ``color`` is ``"gray"`` or ``"bgr"``: how image files are decoded; ``image_size_px`` is
    set by readers whose images are all grey square crops of that size (FER+, CK+).
    """

    name = "dataset"
    labels: tuple[str, ...] = ()
    au_names: tuple[str, ...] = ()
    color = "bgr"
    image_size_px: int | None = None

    def __init__(self, split: str, source: str | Path) -> None:
        self.split = split
        self._records: list[Record] = []
        self.report = DatasetReport(dataset=self.name, split=split, source=str(source))

    def _finish(self) -> None:
        """Fill the report's totals once the records are known."""
        self.report.kept = len(self._records)
        self.report.found = self.report.kept + sum(self.report.dropped.values())
        if self.labels:
            counts = Counter(r.label for r in self._records)
            self.report.class_counts = {name: counts.get(i, 0)
                                        for i, name in enumerate(self.labels)}

    def _frame_image(self, frames: dict[int, Path], frame: int, on_missing_image: str,
                     missing_error: str, drop_reason: str) -> Path | None:
        """The image of labelled ``frame``; None (counted as ``drop_reason``) when it has none.

        ``on_missing_image`` "error" raises ``missing_error`` instead of dropping the frame.
        """
        image = frames.get(frame)
        if image is None:
            if on_missing_image == "error":
                raise DatasetError(missing_error)
            self.report.drop(drop_reason)
        return image

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self._records) <= index < len(self._records):
            raise IndexError(f"{self.name} [{self.split}] has {len(self)} samples, index "
                             f"{index} is out of range")
        record = self._records[index]
        image = record.image if record.image is not None else read_image(record.path,
                                                                        self.color)
        return Sample(image=image, label=record.label, label_probs=record.label_probs,
                      aus=record.aus, subject=record.subject, landmarks=record.landmarks,
                      path=record.path)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def check_images(self, progress: bool = True) -> int:
        """Decode every image file once (finds corrupt files up front); returns the count.
        A reader of fixed-size crops (``image_size_px``) checks them with the reader its
        ``load_arrays`` uses, so an image that training or evaluation refuses fails here."""
        from tqdm import tqdm

        if self.image_size_px is not None:
            return len(read_gray_crops(self._records, self.image_size_px,
                                       f"{self.name} {self.split}", progress))
        files = [r.path for r in self._records if r.image is None]
        for path in tqdm(files, desc=f"{self.name} [{self.split}] decoding", unit="img",
                         disable=not progress):
            read_image(path, self.color)
        return len(files)

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self._records]

    @property
    def targets(self) -> np.ndarray:
        """Class index per sample (int64; -1 where a sample has none)."""
        return np.array([-1 if r.label is None else r.label for r in self._records],
                        dtype=np.int64)

    @property
    def subjects(self) -> list[str | None]:
        return [r.subject for r in self._records]

    def au_matrix(self) -> np.ndarray:
        """(N, len(au_names)) int8 AU occurrence (1/0/-1 unknown) of every sample."""
        if not self.au_names:
            raise DatasetError(f"{self.name} has no AU labels")
        return np.stack([r.aus for r in self._records]) if self._records else \
            np.zeros((0, len(self.au_names)), dtype=np.int8)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.split}: {len(self)} samples>"


def read_image(path: str | Path, color: str = "bgr") -> np.ndarray:
    """Decode an image file as uint8 grayscale (H, W) or BGR (H, W, 3); clear errors."""
    path = str(path)
    flag = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    if not os.path.isfile(path):
        raise DatasetError(f"image {path} does not exist; the data set copy is incomplete")
    image = cv2.imread(path, flag)
    if image is None or image.size == 0:
        raise DatasetError(f"image {path} cannot be decoded (corrupt, truncated or not an "
                           f"image); re-extract this file from the data set archive")
    return image


def read_gray_crops(records: list[Record], size_px: int, what: str, progress: bool = True
                    ) -> np.ndarray:
    """Every record's image as one uint8 array (N, size_px, size_px) of grey face crops; a file
    that does not decode, or has another size, is an error naming it."""
    from tqdm import tqdm

    images = np.empty((len(records), size_px, size_px), dtype=np.uint8)
    for i, record in enumerate(tqdm(records, desc=f"{what} images", unit="img",
                                    disable=not progress)):
        image = cv2.imread(record.path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"image {record.path} cannot be decoded (corrupt or not a PNG); "
                               f"restore it from the data set archive")
        if image.shape != (size_px, size_px):
            raise DatasetError(f"image {record.path} is {image.shape[1]}x{image.shape[0]}, "
                               f"{what} images are {size_px}x{size_px}")
        images[i] = image
    return images


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 label file (BOM allowed); a bad encoding is an error naming the line."""
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist; check the data set root and "
                           f"that the archive was extracted in its published layout")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                           f"offset {exc.start}); the label file is corrupt or was re-saved in "
                           f"another encoding: restore the original file") from None
    return text.splitlines()


def read_csv_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a UTF-8 csv label file after its header line, which must be
    ``header`` (an error naming the file otherwise)."""
    reader = csv.reader(read_text_lines(path))
    found = next(reader, None)
    if found is None or tuple(h.strip() for h in found) != tuple(header):
        raise DatasetError(f"{path}:1: expected the header {','.join(header)}, found "
                           f"{','.join(found or [])!r}")
    return enumerate(reader, start=2)


def parse_int(text: str, where: str, what: str, low: int | None = None,
              high: int | None = None) -> int:
    """An integer field, range-checked; ``where`` is ``file:line`` for the message."""
    try:
        value = int(text.strip())
    except ValueError:
        raise DatasetError(f"{where}: {what} must be an integer, found {text.strip()!r}") \
            from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise DatasetError(f"{where}: {what} must be in [{low}, {high}], found {value}")
    return value


def check_missing_image_policy(on_missing_image: str) -> None:
    """Reject an ``on_missing_image`` that is not one of :data:`MISSING_IMAGE_POLICIES`."""
    if on_missing_image not in MISSING_IMAGE_POLICIES:
        raise DatasetError(f"on_missing_image {on_missing_image!r} unknown; choose one of "
                           f"{MISSING_IMAGE_POLICIES}")


def numbered_frames(folder: Path) -> dict[int, Path]:
    """Frame number -> image file for a folder of frames named by number (any zero padding)."""
    frames: dict[int, Path] = {}
    if not folder.is_dir():
        return frames
    for entry in os.scandir(folder):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in IMAGE_EXTENSIONS and stem.isdigit():
            number = int(stem)
            if number in frames:
                raise DatasetError(f"{folder}: frame {number} exists twice "
                                   f"({frames[number].name}, {entry.name}); keep one")
            frames[number] = Path(entry.path)
    return frames


def list_class_folders(split_dir: Path, folder_to_label: dict[str, str],
                       labels: tuple[str, ...], report: DatasetReport) -> list[Record]:
    """Records of a ``<split>/<class name>/<image>`` layout (FER2013 folders, SFEW 2.0).

    Folder names are matched case-insensitively; a folder that names no known class is an
    error; files that are not images are counted in the report, never silently skipped.
    """
    if not split_dir.is_dir():
        raise DatasetError(f"folder {split_dir} does not exist; expected class folders "
                           f"{sorted(set(folder_to_label))} under it")
    records: list[Record] = []
    for entry in sorted(split_dir.iterdir()):
        if not entry.is_dir():
            report.drop(f"not a class folder, ignored: files directly under {split_dir}")
            continue
        label_name = folder_to_label.get(entry.name.lower())
        if label_name is None:
            raise DatasetError(f"{entry}: folder name {entry.name!r} is not a class of this "
                               f"data set; expected one of {sorted(set(folder_to_label))}")
        label = labels.index(label_name)
        for file in sorted(entry.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                records.append(Record(path=str(file), label=label))
            else:
                report.drop(f"not an image file ({', '.join(IMAGE_EXTENSIONS)}), ignored")
    return records
