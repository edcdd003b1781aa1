"""Training arrays for the AU detectors: FER+ with pseudo AU labels, BP4D/DISFA with real ones.

Train stage, between the readers (``aue_edge.data``) and the trainers
(:mod:`aue_edge.train.au.trainers`). Everything ends as one :class:`AuArrays`: grey uint8 face
crops (the project's models take ``gray3`` input, as FER+ is grey), float32 AU targets with -1
for "not coded", optional 68-point landmarks as fractions of the crop, and subject ids.

Face crops: FER+ images are already 48x48 face crops. BP4D/DISFA frames are used as they are
when ``face_crop="as_is"`` (the frames already show one face, e.g. pre-cropped releases and the
test fixtures), or detected with YuNet and similarity-aligned to the FER+ template with
``face_crop="detect"`` (full camera frames: exactly what the edge does at run time). Frames in
which no face is found are dropped and counted (``AuArrays.dropped``).

BP4D and DISFA ship 49/66-point landmarks, not iBUG-68, so their samples carry none; LP-Net's
P-Net and KDSRL's area boxes then use ``mean_shape_68()`` on the aligned crop, like the edge.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import torch
from tqdm import tqdm

from aue_edge.core.errors import ConfigError, DatasetError
from aue_edge.train.au.targets import pseudo_au_targets

FACE_CROP_MODES = ("as_is", "detect")


@dataclass
class AuArrays:
    """A data set in memory: what the trainers index batches from."""

    images: np.ndarray                    # (N, H, W) uint8 grey face crops
    targets: np.ndarray                   # (N, A) float32 in [0, 1]; -1 = unknown
    au_names: tuple[str, ...]
    source: str
    landmarks: np.ndarray | None = None   # (N, 68, 2) float32 fractions of the crop
    subjects: list[str | None] = field(default_factory=list)
    probs: np.ndarray | None = None       # FER+ only: (N, 8) vote distributions
    pseudo: bool = False                  # targets from the expression prior, not FACS coders
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.images)

    def of_subjects(self, subjects: tuple[str, ...], limit: int | None = None,
                    name: str = "") -> "AuArrays":
        """The frames of ``subjects`` (a fold's split), evenly thinned to ``limit`` if given."""
        wanted = set(subjects)
        idx = np.array([i for i, s in enumerate(self.subjects) if s in wanted], dtype=np.int64)
        if len(idx) == 0:
            raise DatasetError(f"{self.source}: none of the {len(wanted)} subjects of "
                               f"{name or 'the split'} has frames here")
        idx = idx[_subset_indices(len(idx), limit)]
        dataset = self.source.split()[0]
        return AuArrays(images=self.images[idx], targets=self.targets[idx],
                        au_names=self.au_names, source=f"{dataset} {name} ({len(idx)} frames)",
                        landmarks=None if self.landmarks is None else self.landmarks[idx],
                        subjects=[self.subjects[i] for i in idx], pseudo=self.pseudo)

    def binary_targets(self) -> np.ndarray:
        """(N, A) int8 in {1, 0, -1} for F1: real labels as they are; pseudo labels count the
        primary AUs of the expression (target >= 0.75) as present."""
        if not self.pseudo:
            return self.targets.astype(np.int8)
        return np.where(self.targets >= 0.75, 1, 0).astype(np.int8)


def _subset_indices(n: int, limit: int | None) -> np.ndarray:
    """Evenly spaced indices, so a subset of a frame sequence spans all of its subjects."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(np.int64)


def ferplus_arrays(root: str, split: str, au_names: tuple[str, ...], pseudo_labels: str,
                   max_images: int | None = None, packed: str = "",
                   progress: bool = True) -> AuArrays:
    """FER+ ``split`` with pseudo AU targets from the AUE-CRL prior (majority or soft mode).

    Read through the AUE-CRL trainer's :func:`~aue_edge.train.arrays.load_split_arrays`, so a
    packed arrays file (``packed``, for a remote GPU run) works here too.
    """
    from aue_edge.train.arrays import load_split_arrays
    from aue_edge.train.config import DataConfig

    mode = "probability" if pseudo_labels == "soft" else "majority"
    split_arrays = load_split_arrays(DataConfig(dataset="ferplus", root=root, packed=packed,
                                                label_mode=mode),
                                     split, limit=max_images or 0, progress=progress)
    labels, probs = split_arrays.labels, split_arrays.probs
    if mode == "probability":
        # a vote distribution has no single label; the largest share stands in where one is needed
        labels = probs.argmax(1)
    targets = pseudo_au_targets(labels, probs, split_arrays.label_names, au_names,
                                mode=pseudo_labels)
    return AuArrays(images=split_arrays.images, targets=targets.astype(np.float32),
                    au_names=tuple(au_names),
                    source=f"FER+ {split} ({len(labels)} images, pseudo AU labels: "
                           f"{pseudo_labels})",
                    subjects=[None] * len(labels), probs=probs.astype(np.float32), pseudo=True)


def _face_crop(image: np.ndarray, detector, size_px: int) -> np.ndarray | None:
    """Grey crop of the most confident face, aligned to the FER+ template; None if no face."""
    from aue_edge.edge.face.alignment import align_faces
    from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT

    bgr = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    found = detector.detect(bgr)
    if len(found) == 0:
        return None
    best = int(np.argmax(found.scores))
    crops = align_faces(bgr, found.landmarks5[best:best + 1], FERPLUS_TEMPLATE_5PT,
                        (size_px, size_px))
    return cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY)


def au_dataset_arrays(dataset, au_names: tuple[str, ...], size_px: int,
                      face_crop: str = "as_is", max_images: int | None = None,
                      progress: bool = True) -> AuArrays:
    """A BP4D/DISFA reader's samples as :class:`AuArrays` with the model's AU columns."""
    if face_crop not in FACE_CROP_MODES:
        raise ConfigError(f"face_crop must be one of {FACE_CROP_MODES}, got {face_crop!r}")
    missing = [a for a in au_names if a not in dataset.au_names]
    if missing:
        raise ConfigError(f"the model predicts {missing}, which {dataset.name} does not label "
                          f"(it has {dataset.au_names}); set model.au_set to {dataset.name}")
    columns = [dataset.au_names.index(a) for a in au_names]
    detector = None
    if face_crop == "detect":
        from aue_edge.edge.face.yunet import YuNetDetector

        detector = YuNetDetector(max_faces=1)
    images, targets, subjects = [], [], []
    dropped: Counter = Counter()
    idx = _subset_indices(len(dataset), max_images)
    try:
        for i in tqdm(idx, desc=f"{dataset.name} {dataset.split}", unit="img",
                      disable=not progress):
            sample = dataset[int(i)]
            if detector is not None:
                crop = _face_crop(sample.image, detector, size_px)
                if crop is None:
                    dropped["no face detected"] += 1
                    continue
            else:
                gray = (sample.image if sample.image.ndim == 2
                        else cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY))
                crop = cv2.resize(gray, (size_px, size_px), interpolation=cv2.INTER_LINEAR)
            images.append(crop)
            targets.append(sample.aus[columns].astype(np.float32))
            subjects.append(sample.subject)
    finally:
        if detector is not None:
            detector.close()
    if not images:
        raise DatasetError(f"{dataset.name} {dataset.split}: no usable frames "
                           f"({dict(dropped) or 'the split is empty'})")
    return AuArrays(images=np.stack(images), targets=np.stack(targets),
                    au_names=tuple(au_names),
                    source=f"{dataset.name} {dataset.split} ({len(images)} frames)",
                    subjects=subjects, dropped=dropped)


@lru_cache(maxsize=1)
def mean_shape_array() -> np.ndarray:
    """(68, 2) float32 ``mean_shape_68()`` of the edge (computed once)."""
    from aue_edge.edge.face.landmarks import mean_shape_68

    return np.asarray(mean_shape_68(), dtype=np.float32)


def mean_landmarks(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 68, 2) float32: the edge's mean 68-point shape on the aligned crop, repeated."""
    shape = torch.as_tensor(mean_shape_array(), device=device)
    return shape[None].expand(n, -1, -1).contiguous()


def color_jitter(gray01: torch.Tensor, brightness: float, contrast: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness and contrast per image on (N, C, H, W) in [0, 1] (grey faces have no
    saturation or hue to jitter). Factors are uniform in [1 - x, 1 + x], as torchvision does."""
    n = gray01.shape[0]

    def factor(strength: float) -> torch.Tensor:
        u = torch.rand(n, 1, 1, 1, generator=generator, device="cpu").to(gray01.device)
        return 1.0 + (2 * u - 1) * strength

    x = gray01 * factor(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(contrast) + mean
    return x.clamp(0.0, 1.0)
