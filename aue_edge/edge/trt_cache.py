"""TensorRT implicit-INT8 calibration cache: writer and the one validating reader.

Written by ``aue calibrate`` and checked by ``aue build`` (the reader lives in the edge stage so
that the build on the robot uses the same validator as the calibration). Output of the
calibration flow for TensorRT 8.5 (JetPack 5), whose builder reads the cache
through an ``IInt8Calibrator`` (``readCalibrationCache``) or ``trtexec --int8 --calib=FILE``
instead of calibrating on the device. Format, as TensorRT writes it::

    TRT-8502-EntropyCalibration2
    image: 3c010a14
    /backbone/conv1/Conv_output_0: 3d1a2b3c

First line ``TRT-<version>-<calibrator>``; then one line per tensor, ``<ONNX tensor name>:
<hex>``, where hex is the float32 bit pattern of ``scale = amax / 127``, most significant byte
first, without ``0x`` (0.5/127 -> ``3b810204``). TensorRT's ONNX parser names network tensors
after the ONNX tensors, so the names here are the ONNX graph's (input included).

TensorRT compares the calibrator name in the header with the calibrator it is given and
ignores (recalibrates over) a cache written for another algorithm; ``trtexec --calib`` uses an
entropy-2 calibrator, so only ``EntropyCalibration2`` caches load there (see
docs/calibration.md for writing a minmax/percentile cache under that name).
Implicit INT8 calibrators are deprecated since TensorRT 10.1: use the Q/DQ ONNX model there.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from aue_edge.core.errors import CalibrationError
from aue_edge.edge.trt_targets import decode_version_code, version_code

# TensorRT's calibrator names (CalibrationAlgoType) as they appear in a cache header.
CACHE_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration",
                    "LegacyCalibration")
# The only calibrator 'aue build' and 'trtexec --calib' replay a cache with.
REPLAY_ALGORITHM = "EntropyCalibration2"

# The calibrator name TensorRT writes for each method. TensorRT has no percentile calibrator;
# its legacy calibrator (IInt8LegacyCalibrator) is the one that clips at a quantile, so a
# percentile cache is labelled LegacyCalibration.
ALGORITHM_BY_METHOD = {
    "entropy": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "LegacyCalibration",
}
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


def scale_to_hex(scale: float) -> str:
    """float32 bit pattern of ``scale``, big-endian, 8 lowercase hex digits."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass(frozen=True)
class CalibrationCache:
    """A parsed cache: ``scales[name] = amax / 127`` for each tensor."""

    trt_version: str
    algorithm: str
    scales: dict[str, float]

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0

    @property
    def header(self) -> str:
        return f"TRT-{self.trt_version}-{self.algorithm}"

    @property
    def version(self) -> tuple[int, int, int]:
        """The TensorRT release the header names (8502 -> (8, 5, 2), 100300 -> (10, 3, 0))."""
        return decode_version_code(self.trt_version)

    def check_matches(self, tensor_names: set[str] | list[str], model_label: str,
                      required: tuple[str, ...] | list[str] = ()) -> None:
        """Raise if the cache names tensors the model lacks (a cache for another model) or
        lacks one of ``required`` (the network inputs: TensorRT needs their scales)."""
        known = set(tensor_names)
        foreign = sorted(set(self.scales) - known)
        if foreign:
            raise CalibrationError(
                f"calibration cache does not belong to {model_label}: {len(foreign)} of its "
                f"{len(self.scales)} tensors are not in the model (e.g. {foreign[:3]}). "
                f"Recalibrate this model with 'aue calibrate' instead of reusing a cache.")
        missing = [name for name in required if name not in self.scales]
        if missing:
            raise CalibrationError(
                f"calibration cache has no scale for network input(s) {missing} of "
                f"{model_label} ({len(self.scales)} tensors listed): recalibrate this model "
                f"with 'aue calibrate'")

    def check_replayable(self, installed_version: tuple[int, ...]) -> None:
        """Raise unless TensorRT ``installed_version`` would load this cache as it is.

        TensorRT ignores a cache whose header names another TensorRT version or another
        calibrator and then calibrates from scratch; a replaying calibrator has no images,
        so the build fails late and obscurely. 'aue build' replays with an entropy-2
        calibrator, as 'trtexec --calib' does.
        """
        installed = tuple(installed_version[:3])
        expected = f"TRT-{version_code(installed)}-{REPLAY_ALGORITHM}"
        if self.algorithm != REPLAY_ALGORITHM:
            raise CalibrationError(
                f"calibration cache header {self.header!r} names the {self.algorithm} "
                f"calibrator; TensorRT only replays it with that calibrator and 'aue build' "
                f"(like trtexec --calib) uses {REPLAY_ALGORITHM}: recalibrate with 'aue "
                f"calibrate --cache-algorithm {REPLAY_ALGORITHM}' (expected {expected!r})")
        if self.version != installed:
            raise CalibrationError(
                f"calibration cache header {self.header!r} is for TensorRT "
                f"{'.'.join(map(str, self.version))}, this device runs TensorRT "
                f"{'.'.join(map(str, installed))}, which ignores such a cache: recalibrate "
                f"with 'aue calibrate --trt-version {'.'.join(map(str, installed))}' "
                f"(expected header {expected!r})")


def write_cache(path: str | Path, amax_by_tensor: dict[str, float], trt_version: str = "8502",
                algorithm: str = "EntropyCalibration2") -> Path:
    """Write ``amax_by_tensor`` as a TensorRT cache; returns the path."""
    if algorithm not in CACHE_ALGORITHMS:
        raise CalibrationError(f"unknown TensorRT calibrator name {algorithm!r}; TensorRT "
                               f"writes one of {CACHE_ALGORITHMS}")
    if not str(trt_version).isdigit():
        raise CalibrationError(f"TensorRT version must be digits as TensorRT writes it (8502), "
                               f"got {trt_version!r}")
    lines = [f"TRT-{trt_version}-{algorithm}"]
    for name, amax in amax_by_tensor.items():
        if not name or "\n" in name:
            raise CalibrationError(f"tensor name {name!r} cannot be written to a cache line")
        if not math.isfinite(amax) or amax <= 0.0:
            raise CalibrationError(f"tensor {name!r}: amax must be a positive finite number, "
                                   f"got {amax}")
        lines.append(f"{name}: {scale_to_hex(amax / 127.0)}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def read_cache(path: str | Path) -> CalibrationCache:
    """Parse and validate a cache; every defect is a :class:`CalibrationError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"calibration cache {path} is not a text cache (byte "
                               f"{exc.start} is not ASCII); is it an engine or a corrupt "
                               f"file?") from None
    lines = text.splitlines()
    if not lines:
        raise CalibrationError(f"calibration cache {path} is empty")
    header = _HEADER.match(lines[0].strip())
    if header is None:
        raise CalibrationError(f"{path}:1: expected a header 'TRT-<version>-<calibrator>' "
                               f"(e.g. TRT-8502-EntropyCalibration2), found {lines[0][:60]!r}")
    version, algorithm = header.groups()
    if algorithm not in CACHE_ALGORITHMS:
        raise CalibrationError(f"{path}:1: unknown calibrator {algorithm!r}; TensorRT writes "
                               f"one of {CACHE_ALGORITHMS}")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name or not _HEX.match(value):
            raise CalibrationError(f"{path}:{number}: expected '<tensor name>: <8 hex digits>', "
                                   f"found {line[:80]!r} (corrupt or truncated cache)")
        if name in scales:
            raise CalibrationError(f"{path}:{number}: tensor {name!r} appears twice")
        scale = hex_to_scale(value)
        if not math.isfinite(scale) or scale <= 0.0:
            raise CalibrationError(f"{path}:{number}: scale of {name!r} is {scale}, expected a "
                                   f"positive finite float32")
        scales[name] = scale
    if not scales:
        raise CalibrationError(f"calibration cache {path} has a header but no tensor lines "
                               f"(truncated?)")
    return CalibrationCache(trt_version=version, algorithm=algorithm, scales=scales)
