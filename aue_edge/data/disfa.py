"""DISFA reader: per-frame AU intensities (positive iff intensity >= 2), subject-exclusive folds.

Published layout (pass the DISFA folder as ``root``)::

    <root>/ActionUnit_Labels/SN001/SN001_au1.txt     lines "<frame>,<intensity 0..5>",
                                                      frames numbered from 1
    <root>/Videos_LeftCamera/LeftVideoSN001_comp.avi  (and Videos_RightCamera/...)

DISFA ships videos, not frames. :func:`extract_frames` writes the frames this reader reads::

    <root>/Frames/LeftCamera/SN001/00001.jpg          (frame k of the video = label frame k)

We read the 8 AUs of the common protocol (:data:`~aue_edge.data.knowledge.DISFA_AUS`) and
binarise: intensity >= 2 is present (1), 0 or 1 absent (0). DISFA's 66-point landmarks are not
the 68-point scheme, so samples carry no landmarks.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from aue_edge.core.errors import DatasetError
from aue_edge.data.base import (FaceDataset, Record, check_missing_image_policy,
                                      numbered_frames, parse_int, read_text_lines)
from aue_edge.data.folds import DISFA_FOLDS, fold_subjects
from aue_edge.data.knowledge import DISFA_AUS

LABEL_DIR = Path("ActionUnit_Labels")
CAMERAS = ("Left", "Right")
POSITIVE_INTENSITY = 2


def frames_dir(root: str | Path, camera: str = "Left") -> Path:
    return Path(root) / "Frames" / f"{camera}Camera"


class Disfa(FaceDataset):
    """DISFA frames of ``fold`` (1..3) and ``split`` (train/test/all) from one camera.

    ``on_missing_image``: ``"error"`` (default) or ``"skip"`` (dropped frames are counted in
    ``report``).
    """

    name = "disfa"
    au_names = DISFA_AUS
    color = "bgr"

    def __init__(self, root: str | Path, fold: int = 1, split: str = "train",
                 camera: str = "Left", on_missing_image: str = "error") -> None:
        if camera not in CAMERAS:
            raise DatasetError(f"DISFA camera {camera!r} unknown; choose one of {CAMERAS}")
        check_missing_image_policy(on_missing_image)
        root = Path(root)
        label_dir = root / LABEL_DIR
        super().__init__(f"fold{fold}/{split}", label_dir)
        if not label_dir.is_dir():
            raise DatasetError(f"folder {label_dir} does not exist; expected DISFA's "
                               f"ActionUnit_Labels/SNxxx/SNxxx_au<N>.txt files")
        absent = []
        for subject in fold_subjects(DISFA_FOLDS, fold, split):
            if not (label_dir / subject).is_dir():
                absent.append(subject)
                continue
            self._read_subject(label_dir / subject, subject,
                               numbered_frames(frames_dir(root, camera) / subject),
                               on_missing_image)
        if absent:
            self.report.notes.append(f"{len(absent)} subjects of this split have no label "
                                     f"folder here: {' '.join(absent)}")
        self._finish()

    def _read_subject(self, folder: Path, subject: str, frames: dict[int, Path],
                      on_missing_image: str) -> None:
        per_au: list[dict[int, int]] = []
        for au in DISFA_AUS:
            path = folder / f"{subject}_au{au[2:]}.txt"
            intensities: dict[int, int] = {}
            for line_no, line in enumerate(read_text_lines(path), start=1):
                where = f"{path}:{line_no}"
                if not line.strip():
                    continue
                fields = line.split(",")
                if len(fields) != 2:
                    raise DatasetError(f"{where}: expected '<frame>,<intensity>', found "
                                       f"{line!r}")
                frame = parse_int(fields[0], where, "frame number", 1)
                if frame in intensities:
                    raise DatasetError(f"{where}: frame {frame} is listed twice")
                intensities[frame] = parse_int(fields[1], where, f"{au} intensity", 0, 5)
            per_au.append(intensities)
        frame_numbers = sorted(per_au[0])
        for au, intensities in zip(DISFA_AUS[1:], per_au[1:]):
            if sorted(intensities) != frame_numbers:
                raise DatasetError(f"{folder}: {subject}_au{au[2:]}.txt covers "
                                   f"{len(intensities)} frames, {subject}_au1.txt "
                                   f"{len(frame_numbers)}; the AU files of a subject must list "
                                   f"the same frames")
        for frame in frame_numbers:
            image = self._frame_image(
                frames, frame, on_missing_image,
                f"{folder}: no image for frame {frame} of {subject} (expected a numbered file "
                f"in the Frames folder); run extract_frames() or pass on_missing_image='skip'",
                "labelled frame has no image file")
            if image is None:
                continue
            aus = np.array([intensities[frame] >= POSITIVE_INTENSITY for intensities in per_au],
                           dtype=np.int8)
            self._records.append(Record(path=str(image), aus=aus, subject=subject))


def extract_frames(root: str | Path, camera: str = "Left", subjects: list[str] | None = None,
                   jpeg_quality: int = 95) -> dict[str, int]:
    """Write ``Frames/<camera>Camera/SNxxx/<k:05d>.jpg`` from DISFA's published videos.

    Frame ``k`` (1-based) of ``Videos_<camera>Camera/<camera>VideoSNxxx_comp.avi`` is label frame
    ``k``. Returns frames written per subject. Subjects default to every video found.
    """
    if camera not in CAMERAS:
        raise DatasetError(f"DISFA camera {camera!r} unknown; choose one of {CAMERAS}")
    video_dir = Path(root) / f"Videos_{camera}Camera"
    pattern = re.compile(rf"^{camera}VideoSN(\d{{3}})_comp\.avi$", re.IGNORECASE)
    videos = {f"SN{m.group(1)}": p for p in sorted(video_dir.glob("*"))
              if (m := pattern.match(p.name))}
    if not videos:
        raise DatasetError(f"no videos named {camera}VideoSNxxx_comp.avi in {video_dir}")
    wanted = list(videos) if subjects is None else subjects
    written: dict[str, int] = {}
    for subject in tqdm(wanted, desc=f"DISFA {camera} frames", unit="video"):
        if subject not in videos:
            raise DatasetError(f"no video for {subject} in {video_dir}")
        out_dir = frames_dir(root, camera) / subject
        out_dir.mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(videos[subject]))
        if not capture.isOpened():
            raise DatasetError(f"video {videos[subject]} cannot be opened by OpenCV")
        count = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                count += 1
                cv2.imwrite(str(out_dir / f"{count:05d}.jpg"), frame,
                            [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        finally:
            capture.release()
        if count == 0:
            raise DatasetError(f"video {videos[subject]} yielded no frames (corrupt or codec "
                               f"missing from this OpenCV build)")
        written[subject] = count
    return written
