"""68-point facial landmarks: a canonical mean shape in aligned coordinates, and providers.

Edge stage. The AU models crop regions around landmark-derived centres (see the FACS knowledge in
aue_edge/data/knowledge.py); those centres are defined on the 68-point iBUG 300-W scheme (0-based:
jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67; "right" = the person's right =
image-left). The pipeline has only YuNet's 5 points, so by default the 68 points come from a mean
shape placed by the 5-point alignment (:class:`MeanShapeProvider`); a real per-face landmark
detector can be swapped in behind :class:`LandmarkProvider` (:class:`MediapipeProvider`,
:class:`DlibProvider`, optional extras).

Provenance of :data:`CANONICAL_MEAN_SHAPE_68`: the 68-point mean shape published by OpenFace
(Amos, Ludwiczuk, Satyanarayanan, "OpenFace: A general-purpose face recognition library with
mobile applications", CMU-CS-16-118, 2016), the ``TEMPLATE`` array in ``openface/align_dlib.py``
of github.com/cmusatyalab/openface (Apache License 2.0): the mean of dlib's 68 iBUG-scheme
landmarks over the OpenFace authors' face images, in units of the face's extent (x in
0.08-0.97, y in 0.18-1.06). The numbers are copied, rounded to 6 decimals; no code is. dlib's
68-point predictor is trained on iBUG 300-W, whose images are for non-commercial research; the
averaged shape is a set of 136 numbers, and OpenFace distributes it under Apache 2.0.
"""
from __future__ import annotations

import abc
import logging
from pathlib import Path

import cv2
import numpy as np

from aue_edge.core.errors import BackendUnavailableError, InputImageError
from aue_edge.edge.face.alignment import invert_affine, similarity_transform, transform_points
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT, template_array
from aue_edge.edge.frames import validate_frame

__all__ = ["CANONICAL_MEAN_SHAPE_68", "DlibProvider", "LandmarkProvider", "MeanShapeProvider",
           "MediapipeProvider", "MEDIAPIPE_TO_68", "five_points_from_68", "mean_shape_68"]

log = logging.getLogger(__name__)

CANONICAL_MEAN_SHAPE_68 = np.array([
    # 0-16: jaw
    (0.079240, 0.339224), (0.082922, 0.456955), (0.096793, 0.575648),
    (0.122142, 0.691922), (0.168688, 0.800341), (0.239789, 0.895733),
    (0.325662, 0.977069), (0.422318, 1.043290), (0.531778, 1.060804),
    (0.641296, 1.039819), (0.738106, 0.972269), (0.824444, 0.889624),
    (0.894793, 0.792494), (0.939395, 0.681547), (0.961119, 0.562238),
    (0.970580, 0.441759), (0.971193, 0.322119),
    # 17-21: right brow (image-left)
    (0.163846, 0.249152), (0.217804, 0.204256), (0.291299, 0.192367),
    (0.367460, 0.203582), (0.439295, 0.233136),
    # 22-26: left brow
    (0.586446, 0.228142), (0.660153, 0.195924), (0.737466, 0.182361),
    (0.813237, 0.192828), (0.870757, 0.235293),
    # 27-35: nose
    (0.515345, 0.318635), (0.516221, 0.396200), (0.517119, 0.473798),
    (0.518164, 0.553158), (0.433701, 0.604054), (0.475501, 0.620763),
    (0.520713, 0.634268), (0.565874, 0.618797), (0.607054, 0.601577),
    # 36-41: right eye (image-left)
    (0.252419, 0.331052), (0.298663, 0.302646), (0.355750, 0.303021),
    (0.403719, 0.338677), (0.352507, 0.349988), (0.296792, 0.350479),
    # 42-47: left eye
    (0.631326, 0.334137), (0.679073, 0.296454), (0.735972, 0.294721),
    (0.782865, 0.321305), (0.740312, 0.341849), (0.684999, 0.343734),
    # 48-59: outer lip
    (0.353168, 0.746189), (0.414588, 0.719054), (0.477678, 0.706836),
    (0.522733, 0.717092), (0.569832, 0.705414), (0.635196, 0.715656),
    (0.699517, 0.739419), (0.639447, 0.805237), (0.576411, 0.835437),
    (0.525398, 0.841706), (0.476415, 0.837506), (0.413795, 0.810046),
    # 60-67: inner lip
    (0.380085, 0.749980), (0.477956, 0.745132), (0.523390, 0.748924),
    (0.571058, 0.743329), (0.672409, 0.744177), (0.572540, 0.776609),
    (0.524011, 0.783371), (0.477561, 0.778476),
], dtype=np.float64)
CANONICAL_MEAN_SHAPE_68.setflags(write=False)

# 68-point indices that define YuNet's 5 points: eye centres (mean of each eye's 6 points),
# nose tip 30, mouth corners 48 (right, image-left) and 54 (left).
RIGHT_EYE_68 = tuple(range(36, 42))
LEFT_EYE_68 = tuple(range(42, 48))
NOSE_TIP_68 = 30
RIGHT_MOUTH_CORNER_68 = 48
LEFT_MOUTH_CORNER_68 = 54

# MediaPipe Face Mesh index (or the mean of two) for each of the 68 points, in order. Index
# correspondence as published by Peizhi Yan (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks,
# mp2dlib.py, 2024; the repository states no license -- a table of 68 index facts, re-typed).
MEDIAPIPE_TO_68 = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,),
    (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,),
    (380,),
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)


def five_points_from_68(points68: np.ndarray) -> np.ndarray:
    """YuNet-order 5 points ``(..., 5, 2)`` from 68-point landmarks ``(..., 68, 2)``."""
    points68 = np.asarray(points68, dtype=np.float64)
    return np.stack([
        points68[..., RIGHT_EYE_68, :].mean(axis=-2),
        points68[..., LEFT_EYE_68, :].mean(axis=-2),
        points68[..., NOSE_TIP_68, :],
        points68[..., RIGHT_MOUTH_CORNER_68, :],
        points68[..., LEFT_MOUTH_CORNER_68, :],
    ], axis=-2)


def mean_shape_68(template_5pt=FERPLUS_TEMPLATE_5PT) -> np.ndarray:
    """The canonical 68 points as ``(68, 2)`` fractions of a crop aligned to ``template_5pt``.

    The mean shape is moved by the least-squares similarity that takes its own 5 points (see
    :func:`five_points_from_68`) onto the template, so its eyes, nose and mouth land where the
    alignment puts a detected face's.
    """
    template = template_array(template_5pt)
    matrix = similarity_transform(five_points_from_68(CANONICAL_MEAN_SHAPE_68), template)
    return transform_points(CANONICAL_MEAN_SHAPE_68, matrix)


class LandmarkProvider(abc.ABC):
    """68 landmarks per detected face, in the frame's pixel coordinates.

    ``landmarks68(frame, boxes, landmarks5)`` takes the frame (BGR uint8), the detector's
    ``boxes_xyxy`` (N, 4) and ``landmarks5`` (N, 5, 2) and returns (N, 68, 2) float32.
    """

    name = "landmarks"

    @abc.abstractmethod
    def landmarks68(self, frame: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray
                    ) -> np.ndarray:
        """(N, 68, 2) landmarks for the N faces."""

    def close(self) -> None:
        """Release resources. Safe to call twice."""

    def __enter__(self) -> "LandmarkProvider":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MeanShapeProvider(LandmarkProvider):
    """The default: the mean shape placed on each face by its 5-point alignment.

    Exactly the points :func:`mean_shape_68` gives in the aligned crop, mapped back into the
    frame with the inverse of the alignment similarity. It follows head position, size and
    in-plane rotation, not expression or out-of-plane pose: AU regions cut around these points
    are fixed regions of the aligned face.
    """

    name = "mean_shape"

    def __init__(self, template_5pt=FERPLUS_TEMPLATE_5PT) -> None:
        self.template_5pt = template_array(template_5pt)
        self._shape_fractions = mean_shape_68(self.template_5pt)

    def landmarks68(self, frame: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray
                    ) -> np.ndarray:
        landmarks5 = _check_faces(boxes, landmarks5)
        if landmarks5.shape[0] == 0:
            return np.zeros((0, 68, 2), np.float32)
        # Frame -> fraction space is the alignment similarity for any square crop size.
        to_crop = similarity_transform(landmarks5, self.template_5pt)
        return transform_points(self._shape_fractions, invert_affine(to_crop)).astype(
            np.float32)


class MediapipeProvider(LandmarkProvider):
    """68 points from MediaPipe Face Mesh (468 points) run on each detected face.

    Optional extra: ``pip install 'aue_edge[mediapipe]'`` (mediapipe 0.10.21, the last release
    with the bundled face-mesh model and the ``mp.solutions`` API; it needs numpy < 2, so it
    cannot share a venv with the default numpy 2 install). Each face box is enlarged by
    ``box_margin`` per side, cropped and given to Face Mesh; the 468 points are reduced to 68
    with :data:`MEDIAPIPE_TO_68`. Where Face Mesh finds no face in a crop, that face gets the
    mean-shape points and :attr:`fallback_count` goes up (logged as a warning).
    """

    name = "mediapipe"

    def __init__(self, box_margin: float = 0.25, min_detection_confidence: float = 0.5,
                 template_5pt=FERPLUS_TEMPLATE_5PT) -> None:
        try:
            import mediapipe as mp
        except ImportError as exc:
            raise BackendUnavailableError(
                f"MediapipeProvider needs mediapipe ({exc}); install the extra with "
                f"pip install 'aue_edge[mediapipe]' (mediapipe==0.10.21, numpy<2), or use the "
                f"default MeanShapeProvider") from None
        self.box_margin = float(box_margin)
        self.fallback_count = 0
        self._fallback = MeanShapeProvider(template_5pt)
        self._index_a = np.array([pair[0] for pair in MEDIAPIPE_TO_68])
        self._index_b = np.array([pair[-1] for pair in MEDIAPIPE_TO_68])
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence)

    def landmarks68(self, frame: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray
                    ) -> np.ndarray:
        frame = validate_frame(frame)
        landmarks5 = _check_faces(boxes, landmarks5)
        out = self._fallback.landmarks68(frame, boxes, landmarks5)
        for i, (x0, y0, x1, y1) in enumerate(_expanded_boxes(boxes, self.box_margin, frame)):
            found = None
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                crop = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2RGB)
                found = self._mesh.process(crop).multi_face_landmarks
            if not found:
                self.fallback_count += 1
                log.warning("MediaPipe Face Mesh found no face in box %d; using the mean shape "
                            "(%d fallbacks so far)", i, self.fallback_count)
                continue
            mesh = np.array([(p.x * (x1 - x0) + x0, p.y * (y1 - y0) + y0)
                             for p in found[0].landmark], dtype=np.float64)
            out[i] = (mesh[self._index_a] + mesh[self._index_b]) / 2
        return out

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


class DlibProvider(LandmarkProvider):
    """68 points from dlib's shape predictor run on each detected face box.

    Optional extra: ``pip install 'aue_edge[dlib]'`` (dlib and face-recognition-models, whose
    wheel ships ``shape_predictor_68_face_landmarks.dat``; Debian's ``libdlib-data`` has the same
    file). That model is trained on iBUG 300-W: research use, not for commercial products.
    ``model_path`` overrides the file. The predictor was trained on boxes from dlib's own HOG
    detector; YuNet's boxes are similar in centre and size but not identical.
    """

    name = "dlib"

    def __init__(self, model_path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise BackendUnavailableError(
                f"DlibProvider needs dlib ({exc}); install the extra with "
                f"pip install 'aue_edge[dlib]', or use the default MeanShapeProvider") from None
        if model_path is None:
            try:
                import face_recognition_models
            except ImportError as exc:
                raise BackendUnavailableError(
                    f"DlibProvider needs shape_predictor_68_face_landmarks.dat ({exc}); "
                    f"install face-recognition-models (part of the 'aue_edge[dlib]' extra) or "
                    f"pass model_path") from None
            model_path = face_recognition_models.pose_predictor_model_location()
        if not Path(model_path).is_file():
            raise BackendUnavailableError(f"dlib landmark model {model_path} does not exist")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_path))

    def landmarks68(self, frame: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray
                    ) -> np.ndarray:
        frame = validate_frame(frame)
        landmarks5 = _check_faces(boxes, landmarks5)
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        out = np.zeros((landmarks5.shape[0], 68, 2), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)):
            rect = self._dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)),
                                        int(round(y2)))
            shape = self._predictor(rgb, rect)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


def _check_faces(boxes: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes)
    landmarks5 = np.asarray(landmarks5, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputImageError(f"boxes must have shape (N, 4) x1, y1, x2, y2, got {boxes.shape}")
    if landmarks5.ndim != 3 or landmarks5.shape[1:] != (5, 2) \
            or landmarks5.shape[0] != boxes.shape[0]:
        raise InputImageError(f"landmarks5 must have shape (N, 5, 2) with the N of boxes "
                              f"({boxes.shape[0]}), got {landmarks5.shape}")
    return landmarks5


def _expanded_boxes(boxes: np.ndarray, margin: float, frame: np.ndarray
                    ) -> list[tuple[int, int, int, int]]:
    """Integer crop windows: each box grown by ``margin`` of its size per side, clipped."""
    height, width = frame.shape[:2]
    windows = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64):
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        windows.append((max(0, int(x1 - dx)), max(0, int(y1 - dy)),
                        min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))))
    return windows
