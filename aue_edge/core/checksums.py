"""SHA-256 of model, checkpoint and cache files, recorded in cards, sidecars and reports."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of_files(*paths: str | Path) -> str:
    """One digest over the files' bytes, in order (an ONNX file plus its external data, say)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
