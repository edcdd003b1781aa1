"""YuNet face detection through the project's own backends, with the project's own decoding.

Edge stage, first step of the per-frame pipeline: frame -> boxes, scores and 5 landmarks per face,
which :mod:`aue_edge.edge.face.alignment` turns into aligned crops. The ONNX graph (vendored in
``aue_edge/edge/models/yunet/``, OpenCV Zoo, MIT) only outputs raw per-anchor tensors; the decoding
that ``cv2.FaceDetectorYN`` does in C++ is done here in numpy, so the same graph runs in ONNX
Runtime today and in TensorRT (any :class:`~aue_edge.edge.backends.base.Backend`) later.

Decoding, as OpenCV 4.x ``modules/objdetect/src/face_detect.cpp`` does it (checked against
``cv2.FaceDetectorYN`` in ``tests/test_face_yunet.py``):

- input: the BGR image as float32 0..255 (no mean, no scaling), zero-padded at the bottom/right
  to a multiple of 32, NCHW;
- outputs ``cls_s``, ``obj_s``, ``bbox_s``, ``kps_s`` for strides ``s`` in 8, 16, 32, one
  anchor per cell of the ``(H/s) x (W/s)`` grid in row-major order, no anchor sizes;
- score ``= sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))`` (the geometric mean, not the product);
- box centre ``((col + dx) * s, (row + dy) * s)``, size ``(exp(dw) * s, exp(dh) * s)``;
- landmark ``k`` at ``((col + kx_k) * s, (row + ky_k) * s)``;
- greedy NMS over the boxes above the score threshold.

Between whole-frame detections the pipeline can look for the faces it already tracks in small
regions around their last boxes (:meth:`YuNetDetector.detect_regions`; ``detect_interval_frames``
in ``config/pipeline.yaml``): the same graph and decoding on a 128 px square per face.

Landmark order is YuNet's: the face's right eye, left eye, nose tip, right mouth corner, left
mouth corner. "Right" is the person's right, which is on the IMAGE-LEFT for a frontal face
(the astronaut test checks ``right_eye.x < left_eye.x``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aue_edge.edge.backends.base import Backend
from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.edge.frames import validate_frame

__all__ = ["DEFAULT_MODEL_PATH", "Detections", "YuNetDetector", "detections_in_frame", "nms_xyxy",
           "LANDMARK_NAMES"]

DEFAULT_MODEL_PATH = (Path(__file__).resolve().parents[1] / "models" / "yunet"
                      / "face_detection_yunet.onnx")
STRIDES = (8, 16, 32)
PAD_DIVISOR_PX = 32
# detect_regions: a region is this many times a face box's longer side, resampled to
# region_side_px (default REGION_SIDE_PX; at most detect_max_side_px): the face fills about
# half of it.
REGION_SCALE = 2.0
REGION_SIDE_PX = 128
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner",
                  "left_mouth_corner")


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, sorted by descending score, in the frame's pixel coordinates.

    ``boxes_xyxy`` (N, 4) float32 (x1, y1, x2, y2), clipped to the frame; ``scores`` (N,)
    float32 in [0, 1]; ``landmarks5`` (N, 5, 2) float32 (x, y) in :data:`LANDMARK_NAMES` order,
    not clipped (a landmark may lie just outside the frame for a face at its border).
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    landmarks5: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, 5, 2), np.float32))


def detections_in_frame(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray,
                        height: int, width: int) -> Detections:
    """Detections of frame-pixel boxes, scores and landmarks, the boxes clipped to a
    ``height`` x ``width`` frame (landmarks are not clipped)."""
    if scores.size == 0:
        return Detections.empty()
    boxes = boxes.copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return Detections(boxes.astype(np.float32), scores.astype(np.float32),
                      landmarks.astype(np.float32))


def nms_xyxy(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds
    ``iou_threshold`` (as ``cv2.dnn.NMSBoxes``). Ties in score keep the earlier box.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes_xyxy[:, i].astype(np.float64) for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0,
                          None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0,
                          None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class YuNetDetector:
    """Detect faces with YuNet: ``with YuNetDetector() as det: faces = det.detect(frame)``.

    ``model_path`` defaults to the vendored ``aue_edge/edge/models/yunet/face_detection_yunet.onnx``
    and runs in ONNX Runtime on the CPU; pass ``backend`` (any :class:`Backend` holding the same
    graph, e.g. TensorRT) to run it elsewhere -- the detector then owns and closes it. Frames whose
    longer side exceeds ``detect_max_side_px`` are downscaled (INTER_AREA) for detection and the
    results mapped back to the full frame; ``None`` detects at full size. ``max_faces`` keeps only
    the highest-scoring faces after NMS (``None``: all).
    """

    def __init__(self, model_path: str | Path | None = None, backend: Backend | None = None,
                 score_threshold: float = 0.6, nms_iou_threshold: float = 0.3,
                 max_faces: int | None = None, detect_max_side_px: int | None = 640,
                 region_side_px: int = REGION_SIDE_PX) -> None:
        if not 0.0 < score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must be in (0, 1], got {score_threshold}")
        if not 0.0 < nms_iou_threshold <= 1.0:
            raise ConfigError(f"nms_iou_threshold must be in (0, 1], got {nms_iou_threshold}")
        if max_faces is not None and max_faces < 1:
            raise ConfigError(f"max_faces must be >= 1 or None (all faces), got {max_faces}")
        if detect_max_side_px is not None and detect_max_side_px < PAD_DIVISOR_PX:
            raise ConfigError(f"detect_max_side_px must be >= {PAD_DIVISOR_PX} or None (no "
                              f"downscaling), got {detect_max_side_px}")
        if region_side_px < PAD_DIVISOR_PX:
            raise ConfigError(f"region_side_px must be >= {PAD_DIVISOR_PX}, got "
                              f"{region_side_px}")
        if backend is not None and model_path is not None:
            raise ConfigError("pass either model_path or backend to YuNetDetector, not both")
        self.score_threshold = float(score_threshold)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_faces = max_faces
        self.detect_max_side_px = detect_max_side_px
        self.region_side_px = min(region_side_px, detect_max_side_px or region_side_px)
        if backend is None:
            # Imported here so that a TensorRT-only deployment does not need onnxruntime.
            from aue_edge.edge.backends.onnxruntime_backend import OrtBackend

            backend = OrtBackend(Path(model_path) if model_path else DEFAULT_MODEL_PATH)
        self.backend = backend
        try:
            self._check_graph()
        except ModelFileError:
            self.close()  # the detector owns the backend, also when it rejects it
            raise

    def _check_graph(self) -> None:
        inputs = self.backend.inputs
        if len(inputs) != 1:
            raise ModelFileError(f"a YuNet graph has 1 input (1x3xHxW BGR), this one has "
                                 f"{[t.name for t in inputs]}")
        self._input_name = inputs[0].name
        expected = {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES}
        missing = sorted(expected - {t.name for t in self.backend.outputs})
        if missing:
            raise ModelFileError(
                f"the face detector graph lacks YuNet outputs {missing} (found "
                f"{[t.name for t in self.backend.outputs]}); use the 2023 OpenCV Zoo "
                f"face_detection_yunet.onnx layout (cls/obj/bbox/kps at strides 8, 16, 32)")

    # ------------------------------------------------------------------ detection
    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """Faces in one frame (any size, 0..N faces); see :class:`Detections`."""
        frame = self._checked_frame(frame_bgr)
        height, width = frame.shape[:2]
        det_height, det_width = self._detection_size(height, width)
        downscaled = (det_height, det_width) != (height, width)
        if downscaled:
            frame = cv2.resize(frame, (det_width, det_height), interpolation=cv2.INTER_AREA)
        boxes, scores, landmarks = self._detect_image(frame)
        if downscaled:
            # Inverse of cv2.resize's coordinate map (both images span the same extent; pixel
            # centres sit at integer coordinates, hence the half-pixel offsets).
            factor = np.array([width / frame.shape[1], height / frame.shape[0]], np.float32)
            boxes = (boxes + 0.5) * np.tile(factor, 2) - 0.5
            landmarks = (landmarks + 0.5) * factor - 0.5
        return detections_in_frame(boxes, scores, landmarks, height, width)

    def detect_regions(self, frame_bgr: np.ndarray, boxes_xyxy: np.ndarray
                       ) -> tuple[Detections, np.ndarray]:
        """Find again the faces known to be near ``boxes_xyxy`` (N, 4), e.g. last frame's.

        Each box is re-detected in its own region: a square of :data:`REGION_SCALE` times the
        box's longer side around its centre, resampled to ``region_side_px`` pixels (pixels
        outside the frame are black). The regions are laid side by side into one image per
        graph run (as many as fit in ``detect_max_side_px``), which costs a fraction of a
        whole-frame detection. Per box, the face in its region that overlaps the box most is
        kept (none when no face scores ``score_threshold`` there or none overlaps the box);
        faces found twice (regions of faces side by side) are merged by NMS. Faces that were
        in no box are not looked for: a whole-frame :meth:`detect` finds those.

        Returns the faces found and, per box, whether its face is among them (False when none
        was found in its region or NMS merged it into another box's face).
        """
        frame = self._checked_frame(frame_bgr)
        height, width = frame.shape[:2]
        prior = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        side = self.region_side_px
        per_run = max(1, (self.detect_max_side_px or side * len(prior)) // side)
        found = []
        for start in range(0, len(prior), per_run):
            found += [(start + k, *face) for k, *face in
                      self._detect_strip(frame, prior[start:start + per_run], side)]
        hit = np.zeros(len(prior), bool)
        if not found:
            return Detections.empty(), hit
        index, boxes, scores, landmarks = (np.stack(parts) for parts in zip(*found))
        keep = nms_xyxy(boxes, scores, self.nms_iou_threshold)
        hit[index[keep]] = True
        return detections_in_frame(boxes[keep].astype(np.float32), scores[keep],
                              landmarks[keep].astype(np.float32), height, width), hit

    def _detect_strip(self, frame: np.ndarray, prior: np.ndarray, side: int) -> list[tuple]:
        """One graph run on the regions of ``prior`` side by side; (index in ``prior``, box,
        score, landmarks) in frame pixels for each box whose face was found (see
        :meth:`detect_regions`)."""
        from aue_edge.edge.tracking import iou_matrix

        strip = np.empty((side, side * len(prior), 3), np.uint8)
        scales, shifts = [], []
        for k, box in enumerate(prior):
            # frame -> region similarity (scale, shift), pixel centres at integer coordinates
            extent = REGION_SCALE * max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
            scale = side / extent
            shift = (side - 1) / 2 - scale * (box[:2] + box[2:]) / 2
            matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], np.float64)
            strip[:, k * side:(k + 1) * side] = cv2.warpAffine(
                frame, matrix, (side, side), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
            scales.append(scale)
            shifts.append(shift + (k * side, 0))
        boxes, scores, landmarks = self._detect_image(strip, limit=False)
        tile = ((boxes[:, 0] + boxes[:, 2]) / 2 // side).astype(np.int64)
        found = []
        for k, box in enumerate(prior):
            mine = np.nonzero(tile == k)[0]
            if mine.size == 0:
                continue
            in_frame = (boxes[mine] - np.tile(shifts[k], 2)) / scales[k]
            overlap = iou_matrix(box[None], in_frame)[0]
            best = int(np.argmax(overlap))
            if overlap[best] > 0:
                found.append((k, in_frame[best], scores[mine[best]],
                              (landmarks[mine[best]] - shifts[k]) / scales[k]))
        return found

    def _checked_frame(self, frame_bgr: np.ndarray) -> np.ndarray:
        if self.backend is None:
            raise ModelFileError("this YuNetDetector was closed; create a new one")
        return validate_frame(frame_bgr)

    def _detect_image(self, image: np.ndarray, limit: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and landmarks after NMS (and ``max_faces`` when ``limit``), in
        ``image``'s pixels."""
        boxes, scores, landmarks = self._decode(*self._run(image))
        if scores.size == 0:
            return boxes, scores, landmarks
        keep = nms_xyxy(boxes, scores, self.nms_iou_threshold)
        if limit and self.max_faces is not None:
            keep = keep[: self.max_faces]
        return boxes[keep], scores[keep], landmarks[keep]

    def input_shape(self, height_px: int, width_px: int) -> tuple[int, int, int, int]:
        """The ``(1, 3, H, W)`` tensor the graph receives for a frame of this size.

        After downscaling to ``detect_max_side_px`` and zero-padding to a multiple of 32. For a
        TensorRT engine with a dynamic input, ``input_shape(m, m)`` with ``m =
        detect_max_side_px`` is the largest shape the optimisation profile must cover.
        """
        height, width = self._detection_size(int(height_px), int(width_px))
        return (1, 3, -(-height // PAD_DIVISOR_PX) * PAD_DIVISOR_PX,
                -(-width // PAD_DIVISOR_PX) * PAD_DIVISOR_PX)

    def _detection_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the frame is detected at: downscaled so the longer side fits."""
        if self.detect_max_side_px is None or max(height, width) <= self.detect_max_side_px:
            return height, width
        scale = self.detect_max_side_px / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _run(self, frame: np.ndarray) -> tuple[dict[str, np.ndarray], int, int]:
        """Raw graph outputs for one BGR frame, zero-padded at bottom/right to /32."""
        height, width = frame.shape[:2]
        pad_h = -(-height // PAD_DIVISOR_PX) * PAD_DIVISOR_PX
        pad_w = -(-width // PAD_DIVISOR_PX) * PAD_DIVISOR_PX
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :height, :width] = frame.transpose(2, 0, 1)
        return self.backend.infer({self._input_name: blob}), pad_h, pad_w

    def _decode(self, raw: dict[str, np.ndarray], pad_h: int, pad_w: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (xyxy), scores and landmarks of every anchor above the score threshold."""
        all_boxes, all_scores, all_landmarks = [], [], []
        for stride in STRIDES:
            rows, cols = pad_h // stride, pad_w // stride
            cls = raw[f"cls_{stride}"].reshape(-1)
            obj = raw[f"obj_{stride}"].reshape(-1)
            bbox = raw[f"bbox_{stride}"].reshape(-1, 4)
            kps = raw[f"kps_{stride}"].reshape(-1, 5, 2)
            if cls.shape[0] != rows * cols or kps.shape[0] != rows * cols:
                raise ModelFileError(
                    f"YuNet output at stride {stride} has {cls.shape[0]} anchors, expected "
                    f"{rows} x {cols} = {rows * cols} for a {pad_h}x{pad_w} input: the graph "
                    f"does not have the one-anchor-per-cell YuNet layout")
            scores = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
            idx = np.nonzero(scores >= self.score_threshold)[0]
            if idx.size == 0:
                continue
            grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)  # (col, row)
            centre = (grid + bbox[idx, :2]) * stride
            size = np.exp(bbox[idx, 2:]) * stride
            all_boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            all_scores.append(scores[idx])
            all_landmarks.append((kps[idx] + grid[:, None, :]) * stride)
        if not all_scores:
            return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                    np.zeros((0, 5, 2), np.float32))
        return (np.concatenate(all_boxes).astype(np.float32),
                np.concatenate(all_scores).astype(np.float32),
                np.concatenate(all_landmarks).astype(np.float32))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the backend. Safe to call twice."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> "YuNetDetector":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
