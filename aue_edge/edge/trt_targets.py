"""The TensorRT releases a Jetson runs, and what differs between them for our artefacts.

Shared by ``aue calibrate`` (which cache header and Q/DQ layout to write), the TensorRT
compatibility lint (``aue_edge/edge/trt_lint.py``) and ``aue build`` (does a cache header match the
installed TensorRT). Plain data, no TensorRT import.

Facts (see docs/jetson.md for the sources):

- JetPack 5.1.x ships TensorRT 8.5.2 (Python 3.8), JetPack 6.0 TensorRT 8.6.2, JetPack 6.1 and
  6.2 TensorRT 10.3.0 (Python 3.10).
- The version number TensorRT writes in a calibration cache header is ``NV_TENSORRT_VERSION``:
  ``major*1000 + minor*100 + patch`` up to 8.x (NvInferVersion.h of 8.5/8.6: 8.5.2 -> 8502) but
  ``major*10000 + minor*100 + patch`` from 10.0 (10.3.0 -> 100300).
- onnx-tensorrt's docs/operators.md: TensorRT 8.5 and 8.6 parse opsets up to 17, TensorRT 10.0
  opsets 9 to 20.
- Implicit INT8 (calibrators, calibration caches) is deprecated since TensorRT 10.1 and removed
  in TensorRT 11 (TensorRT 10.1 / 11.0 release notes); TensorRT 11 also drops
  ``BuilderFlag.FP16/INT8``: it is not a target of this project.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aue_edge.core.errors import ConfigError


@dataclass(frozen=True)
class TrtTarget:
    """One TensorRT release family the artefacts are made for."""

    name: str                         # what --trt-version takes: "8.5", "8.6", "10.x"
    version: tuple[int, int, int]     # the JetPack release of that family
    jetpack: str
    max_opset: int
    implicit_int8: str                # "supported" | "deprecated"

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)

    @property
    def cache_version_code(self) -> str:
        """The number TensorRT of this target writes in a calibration cache header."""
        return str(version_code(self.version))


TARGETS = {
    "8.5": TrtTarget("8.5", (8, 5, 2), "JetPack 5.1.x", 17, "supported"),
    "8.6": TrtTarget("8.6", (8, 6, 2), "JetPack 6.0", 17, "supported"),
    "10.x": TrtTarget("10.x", (10, 3, 0), "JetPack 6.1 / 6.2", 20, "deprecated"),
}
TARGET_NAMES = tuple(TARGETS)


def version_code(version: tuple[int, ...]) -> int:
    """``NV_TENSORRT_VERSION`` of a release: 8.5.2 -> 8502, 10.3.0 -> 100300."""
    major, minor, patch = (tuple(version) + (0, 0, 0))[:3]
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


def decode_version_code(code: str | int) -> tuple[int, int, int]:
    """Inverse of :func:`version_code` (8502 -> (8, 5, 2), 100300 -> (10, 3, 0)).

    Codes below 10000 can only be the 8.x form: a 10.x code is at least 100000.
    """
    value = int(code)
    if value >= 100000:
        return value // 10000, value // 100 % 100, value % 100
    return value // 1000, value // 100 % 10, value % 100


def parse_version(text: str) -> tuple[int, int, int]:
    """"8.5.2.2" / "10.3.0.26" / "8.5" -> (major, minor, patch); ConfigError if not a version."""
    parts = str(text).strip().split(".")
    try:
        numbers = [int(p) for p in parts[:3]]
    except ValueError:
        raise ConfigError(f"{text!r} is not a TensorRT version (expected e.g. 8.5.2 or "
                          f"10.3.0)") from None
    if len(numbers) < 2:
        raise ConfigError(f"{text!r} is not a TensorRT version (expected e.g. 8.5.2 or 10.3.0)")
    return tuple((numbers + [0])[:3])


def target_of_version(version: tuple[int, ...]) -> TrtTarget:
    """The target family a TensorRT release belongs to; a clear error for one we do not
    support (before 8.5, or 11 and later)."""
    major, minor = version[0], version[1]
    if major == 8 and minor in (5, 6):
        return TARGETS[f"8.{minor}"]
    if major == 10:
        return TARGETS["10.x"]
    if major >= 11:
        raise ConfigError(
            f"TensorRT {major}.{minor} is not supported: TensorRT 11 removed implicit INT8 "
            f"calibrators and BuilderFlag.FP16/INT8, which this project's build uses. Use "
            f"TensorRT 10.x (JetPack 6.1/6.2) or 8.5/8.6 (JetPack 5.1 / 6.0).")
    raise ConfigError(f"TensorRT {major}.{minor} is older than this project supports (8.5, "
                      f"JetPack 5.1); upgrade JetPack")


def resolve_target(text: str) -> TrtTarget:
    """--trt-version: a target name (8.5, 8.6, 10.x) or a full version (8.6.2, 10.3.0).

    A full version keeps its own number (the cache header of 8.5.1 is 8501, not 8502).
    """
    if text in TARGETS:
        return TARGETS[text]
    try:
        version = parse_version(text)
        return dataclasses.replace(target_of_version(version), version=version)
    except ConfigError as exc:
        raise ConfigError(f"--trt-version {text!r}: {exc}; choose one of {TARGET_NAMES}") \
            from None
