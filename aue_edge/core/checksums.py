"""SHA-256 of model, checkpoint and cache files and of image arrays, recorded in cards,
sidecars, caches and reports."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def sha256_of_files(*paths: str | Path) -> str:
    """One digest over the files' bytes, in order (an ONNX file plus its external data, say)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def pixel_sha256(image: np.ndarray) -> str:
    """SHA-256 of an array's values, shape and dtype (decoded pixels: the same picture in two
    files matches; a batch of faces: the same faces in the same order)."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()
