"""Where the package's non-Python files are, the same way in a checkout and in an install.

``config/`` and ``launch/`` sit beside ``package.xml`` as in any ament package: in a source
checkout that is the folder above the ``aue_edge`` package; ``pip install`` and ``colcon build``
copy them to ``<prefix>/share/aue_edge/``. Files inside the package (models, samples, training
configs) are found relative to their own module instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from aue_edge.core.errors import ConfigError

__all__ = ["DEMO_CLIP", "PACKAGE", "PACKAGE_DIR", "find_share_file", "share_file",
           "source_checkout"]

PACKAGE = "aue_edge"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The bundled sample clip (``make demo``, ``aue bench --schedules``, the fer comparison).
DEMO_CLIP = PACKAGE_DIR / "edge" / "samples" / "demo_clip.mp4"


def source_checkout() -> Path | None:
    """The checkout the package is imported from (editable install, or the repository root as
    working directory), recognised by its ``package.xml``; None for an installed package."""
    root = PACKAGE_DIR.parent
    manifest = root / "package.xml"
    if manifest.is_file() and f"<name>{PACKAGE}</name>" in manifest.read_text(encoding="utf-8"):
        return root
    return None


def _share_dirs(package: str = PACKAGE) -> list[Path]:
    """Where ``package``'s share files may be: its folder in the checkout (the repository root
    for aue_edge, ``aue_msgs/`` for the interface package), ``<sys.prefix>/share/<package>``,
    then each ``AMENT_PREFIX_PATH`` prefix's."""
    checkout = source_checkout()
    dirs = []
    if checkout is not None:
        dirs.append(checkout if package == PACKAGE else checkout / package)
    dirs.append(Path(sys.prefix) / "share" / package)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / package)
    return dirs


def find_share_file(relative: str, package: str = PACKAGE) -> Path | None:
    """``relative`` (e.g. ``config/calibration.yaml``) from the checkout first (so edits are
    seen), else ``<sys.prefix>/share/<package>``, else each ``AMENT_PREFIX_PATH`` prefix (a
    sourced colcon workspace); None when none has it."""
    for folder in _share_dirs(package):
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    return None


def share_file(relative: str, package: str = PACKAGE) -> Path:
    """:func:`find_share_file`, or a :class:`ConfigError` naming every place looked in."""
    found = find_share_file(relative, package)
    if found is None:
        looked = ", ".join(str(folder) for folder in _share_dirs(package))
        raise ConfigError(f"{relative} not found in any of: {looked}. Install the package "
                          f"(pip install . or colcon build, then source install/setup.bash) or "
                          f"run from a checkout of the repository.")
    return found
