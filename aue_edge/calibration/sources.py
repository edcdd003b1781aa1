"""Where calibration and evaluation faces come from, and the record of which ones were used.

Feeds the calibration flow: every face reaches the model through exactly the edge
preprocessing named in the model card (:func:`aue_edge.edge.preprocess.to_model_input`).

- :class:`DatasetFaces`: a split of a data set read by :mod:`aue_edge.data` (the torch-free
  readers), e.g. FER+ train. Its images are already framed like the training data.
- :class:`FolderFaces`: a folder of photos, run through the edge face front-end (YuNet
  detection, 5-point alignment to the card's template at the card's input size); images
  without a face are counted, never silently dropped. With ``aligned=True`` the files are taken
  as already aligned face crops.

Images are drawn in a seeded random order; a :class:`UsageLog` keeps each used image's key and
the SHA-256 of its decoded pixels, so the report can prove which images calibrated the model
and that none of them was used for evaluation.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aue_edge.core.checksums import pixel_sha256
from aue_edge.core.errors import CalibrationError, DatasetError, InputImageError
from aue_edge.edge.model_card import ModelCard

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FaceItem:
    """One face ready for preprocessing, with where it came from."""

    face: np.ndarray          # uint8 gray (H, W) or BGR (H, W, 3)
    key: str                  # source image path, relative to the data set root or folder
    sha256: str               # pixel hash of the source image
    label: int | None = None  # index into the source's ``labels``
    note: str | None = None   # a fact worth counting (e.g. several faces in the photo)


class FaceSource:
    """Base: ``len(source)`` candidate images; ``load(i)`` gives a face, or the reason (str)
    why image ``i`` gives none."""

    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> FaceItem | str:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Release detectors and the like."""


class DatasetFaces(FaceSource):
    """A data set split through its :mod:`aue_edge.data` reader (``get_dataset``)."""

    def __init__(self, name: str, root: str | Path, split: str, **reader_kwargs) -> None:
        from aue_edge.data import get_dataset

        self.name, self.root, self.split = name, str(root), split
        self.dataset = get_dataset(name, root, split, **reader_kwargs)
        self.labels = tuple(self.dataset.labels)
        if len(self.dataset) == 0:
            raise DatasetError(f"{name} [{split}] at {root} has no usable images:\n"
                               f"{self.dataset.report}")

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> FaceItem:
        sample = self.dataset[index]
        return FaceItem(sample.image, _relative(sample.path, self.root),
                        pixel_sha256(sample.image), sample.label)

    def describe(self) -> dict:
        return {"kind": "dataset", "dataset": self.name, "root": self.root, "split": self.split,
                "reader_report": self.dataset.report.summary()}


class FolderFaces(FaceSource):
    """Photos in a folder (recursively, sorted by path), detected and aligned with the card's
    template; one face per photo (the highest-scoring one)."""

    def __init__(self, folder: str | Path, card: ModelCard, aligned: bool = False,
                 score_threshold: float = 0.6) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CalibrationError(f"image folder {self.folder} does not exist or is not a "
                                   f"folder")
        self.files = sorted(p for p in self.folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CalibrationError(f"image folder {self.folder} holds no images with suffixes "
                                   f"{IMAGE_SUFFIXES}")
        self.card = card
        self.aligned = aligned
        self.score_threshold = score_threshold
        self._detector = None
        if not aligned and not card.alignment.template_5pt:
            raise CalibrationError(
                f"the model card of {card.model_name} has no alignment template, so photos in "
                f"{self.folder} cannot be aligned the way the model was trained; pass "
                f"--data-aligned if the images are already aligned face crops")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> FaceItem | str:
        import cv2

        from aue_edge.edge.face.alignment import align_faces

        path = self.files[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return "unreadable image file"
        digest = pixel_sha256(image)
        key = _relative(path, self.folder)
        if self.aligned:
            return FaceItem(image, key, digest)
        try:
            detections = self._detect(image)
        except InputImageError as exc:
            return f"rejected by the face detector ({str(exc)[:60]})"
        if len(detections) == 0:
            return "no face detected"
        crops = align_faces(image, detections.landmarks5[:1], self.card.alignment.template_5pt,
                            self.card.input.size_px)
        note = "several faces in the photo (the highest-scoring one used)" \
            if len(detections) > 1 else None
        return FaceItem(crops[0], key, digest, note=note)

    def _detect(self, image: np.ndarray):
        if self._detector is None:
            from aue_edge.edge.face.yunet import YuNetDetector

            self._detector = YuNetDetector(score_threshold=self.score_threshold)
        return self._detector.detect(image)

    def describe(self) -> dict:
        return {"kind": "folder", "folder": str(self.folder), "candidate_files": len(self.files),
                "face_front_end": "as given (already aligned)" if self.aligned else
                f"YuNet (score >= {self.score_threshold}) + 5-point alignment to the card's "
                f"template at {tuple(self.card.input.size_px)} px"}

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None


def _relative(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` when it lies inside it (reports do not leak local paths)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


@dataclass
class UsageLog:
    """Which images one role (calibration or evaluation) used: keys, pixel hashes, skips."""

    role: str
    requested: int
    keys: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)   # reason -> images without a face
    notes: Counter = field(default_factory=Counter)     # note -> count
    excluded_overlap: int = 0     # held-out images dropped because calibration used them
    next_position: int = 0        # where in the source order this role stopped

    @property
    def used(self) -> int:
        return len(self.keys)

    def set_sha256(self) -> str:
        """One hash for the whole set (order-independent: over the sorted image hashes)."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()

    def summary(self, source: FaceSource) -> dict:
        return {"requested": self.requested, "used": self.used,
                "skipped": dict(self.skipped), "notes": dict(self.notes),
                "excluded_as_calibration_duplicates": self.excluded_overlap,
                "set_sha256": self.set_sha256(), "source": source.describe()}


def seeded_order(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(count)


def iter_face_batches(source: FaceSource, order: np.ndarray, log: UsageLog, batch_size: int,
                      exclude_hashes: set[str] | None = None, start: int = 0,
                      ) -> Iterator[list[FaceItem]]:
    """Batches of faces from ``source`` in ``order`` from position ``start`` until ``log``
    has ``log.requested`` faces (0 = all) or the source runs out; fills ``log`` as it goes."""
    batch: list[FaceItem] = []
    position = start
    limit = log.requested if log.requested > 0 else len(order)
    while position < len(order) and log.used + len(batch) < limit:
        item = source.load(int(order[position]))
        position += 1
        if isinstance(item, str):
            log.skipped[item] += 1
            continue
        if item.note:
            log.notes[item.note] += 1
        if exclude_hashes and item.sha256 in exclude_hashes:
            log.excluded_overlap += 1
            continue
        batch.append(item)
        if len(batch) == batch_size:
            _record(log, batch)
            yield batch
            batch = []
    log.next_position = position
    if batch:
        _record(log, batch)
        yield batch


def _record(log: UsageLog, batch: list[FaceItem]) -> None:
    log.keys.extend(item.key for item in batch)
    log.hashes.extend(item.sha256 for item in batch)
