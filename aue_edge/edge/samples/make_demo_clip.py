"""Regenerate ``aue_edge/edge/samples/demo_clip.mp4``, the bundled demo clip for ``make demo``.

The only face in it is public domain: scikit-image's ``astronaut`` (NASA portrait of Eileen
Collins, ``skimage.data.astronaut()``), cut around the head and pasted onto a plain gradient
background at several positions, scales and small rotations, once mirrored. Three scenes
(10 frames per second, 480x360):

1. frames 0-29: one face panning left to right and bobbing;
2. frames 30-54: three faces at different scales, one mirrored, drifting (tracking test);
3. frames 55-74: one face zooming in while tilting +-12 degrees (alignment test).

Run from the repository root (needs scikit-image, installed with the test extras)::

    .venv/bin/python aue_edge/edge/samples/make_demo_clip.py --out aue_edge/edge/samples/demo_clip.mp4

The output is deterministic for a given OpenCV build (no randomness), a few hundred KB.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

FRAME_W_PX, FRAME_H_PX = 480, 360
FPS = 10.0
# Head of the astronaut in the 512x512 image (the face box YuNet finds is about x 178-268,
# y 63-176); a margin keeps hair and chin so the detector sees a whole head.
HEAD_ROWS, HEAD_COLS = slice(20, 240), slice(135, 315)


def background() -> np.ndarray:
    """A soft vertical blue-grey gradient (no image content, no licence question)."""
    rows = np.linspace(0.0, 1.0, FRAME_H_PX, dtype=np.float32)[:, None, None]
    top, bottom = np.array([90, 70, 60], np.float32), np.array([170, 150, 140], np.float32)
    image = top + (bottom - top) * rows
    return np.repeat(image, FRAME_W_PX, axis=1).astype(np.uint8)


def paste(canvas: np.ndarray, head: np.ndarray, centre_xy: tuple[float, float],
          height_px: float, angle_deg: float = 0.0) -> None:
    """Paste ``head`` scaled to ``height_px``, rotated, centred at ``centre_xy`` (in place)."""
    scale = height_px / head.shape[0]
    hc, wc = head.shape[0] / 2.0, head.shape[1] / 2.0
    matrix = cv2.getRotationMatrix2D((wc, hc), angle_deg, scale)
    matrix[:, 2] += np.array(centre_xy) - np.array([wc, hc])
    size = (canvas.shape[1], canvas.shape[0])
    warped = cv2.warpAffine(head, matrix, size, flags=cv2.INTER_LINEAR)
    # A feathered mask so the pasted rectangle has no hard edge for the detector to latch onto.
    mask = np.zeros(head.shape[:2], np.float32)
    border = max(2, head.shape[0] // 20)
    mask[border:-border, border:-border] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), border / 2.0)
    mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR)[..., None]
    canvas[:] = (warped * mask + canvas * (1.0 - mask)).astype(np.uint8)


def frames(head: np.ndarray):
    bg = background()
    mirrored = head[:, ::-1].copy()
    for i in range(30):  # scene 1: pan
        t = i / 29.0
        canvas = bg.copy()
        paste(canvas, head, (70 + 340 * t, 180 + 20 * math.sin(2 * math.pi * t)), 200)
        yield canvas
    for i in range(25):  # scene 2: three faces drifting
        t = i / 24.0
        canvas = bg.copy()
        paste(canvas, head, (95 + 15 * t, 170), 170)
        paste(canvas, mirrored, (250, 200 - 20 * t), 130, angle_deg=-6)
        paste(canvas, head, (390 - 15 * t, 165 + 10 * t), 150, angle_deg=8)
        yield canvas
    for i in range(20):  # scene 3: zoom and tilt
        t = i / 19.0
        canvas = bg.copy()
        paste(canvas, head, (240, 185), 160 + 150 * t, angle_deg=12 * math.sin(2 * math.pi * t))
        yield canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("demo_clip.mp4")))
    args = parser.parse_args(argv)
    from skimage import data  # public-domain test images bundled with scikit-image

    head = np.ascontiguousarray(data.astronaut()[HEAD_ROWS, HEAD_COLS, ::-1])  # RGB -> BGR
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                             (FRAME_W_PX, FRAME_H_PX))
    if not writer.isOpened():
        print(f"could not open an mp4v video writer for {args.out}", file=sys.stderr)
        return 1
    count = 0
    for frame in frames(head):
        writer.write(frame)
        count += 1
    writer.release()
    size_kb = Path(args.out).stat().st_size / 1024
    print(f"wrote {args.out}: {count} frames, {FRAME_W_PX}x{FRAME_H_PX} at {FPS:g} fps, "
          f"{size_kb:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
