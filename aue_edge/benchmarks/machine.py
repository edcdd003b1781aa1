"""The machine record saved with every benchmark run: what the numbers were measured on.

Part of the benchmark stage (the end of the flow). Latency without the machine is not a number
an engineer can use, so ``aue bench`` stores this record in the pytest-benchmark JSON
(``machine_info["aue"]``) and beside it as ``machine.json``; ``aue bench --report`` prints it
above the tables.

On any machine: CPU model, logical/usable cores, memory, OS, Python and the versions of
numpy, ONNX Runtime (and its execution providers), OpenCV, torch (read from package metadata,
never imported: edge machines may not have it), TensorRT and CUDA when present.
On a Jetson additionally: board model (``/proc/device-tree/model``), L4T release
(``/etc/nv_tegra_release``), JetPack (the ``nvidia-jetpack`` Debian package, else derived from
L4T with the source said), nvpmodel power mode (``nvpmodel -q``), whether jetson_clocks is on
(inferred from sysfs: it pins CPU and GPU minimum clocks to their maximum), and the DLA cores
the device tree lists.

Every probe reads under ``root`` and runs commands through ``run_command`` so tests use a fake
tree; a probe that cannot read something records None and a note saying why.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

# typing's generics, not list[...]/collections.abc's: this alias is evaluated at import, and the
# runtime supports Python 3.8 (JetPack 5).
CommandRunner = Callable[[List[str]], Optional[str]]

# L4T release -> JetPack, from NVIDIA's JetPack release notes; used only when the
# nvidia-jetpack package cannot be queried (e.g. inside a container).
L4T_TO_JETPACK = {
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
    "35.5.0": "5.1.3", "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}

# (CPU implementer, CPU part) from /proc/cpuinfo on ARM, where there is no "model name".
ARM_CPU_PARTS = {
    ("0x41", "0xd07"): "ARM Cortex-A57",
    ("0x41", "0xd08"): "ARM Cortex-A72",
    ("0x41", "0xd0b"): "ARM Cortex-A76",
    ("0x41", "0xd42"): "ARM Cortex-A78AE",
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}

_PACKAGES = {
    "numpy": "numpy",
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "torch": "torch",
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
    "cuda_python": ("cuda-python", "cuda-bindings"),
    "pycuda": "pycuda",
    "pytest_benchmark": "pytest-benchmark",
    "aue_edge": "aue_edge",
    "rclpy": ("rclpy", "ros-rclpy"),
}


def run_command(argv: list[str]) -> str | None:
    """stdout of a short system command, or None when it is missing, fails or hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout


def _read(root: Path, path: str) -> str | None:
    try:
        return (root / path.lstrip("/")).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _package_version(names: str | tuple[str, ...]) -> str | None:
    for name in (names,) if isinstance(names, str) else names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_model(cpuinfo: str | None) -> str | None:
    """The CPU's marketing name from /proc/cpuinfo text (x86 'model name', ARM part codes)."""
    if not cpuinfo:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    if match:
        return match.group(1).strip()
    implementer = re.search(r"^CPU implementer\s*:\s*(\S+)", cpuinfo, re.MULTILINE)
    part = re.search(r"^CPU part\s*:\s*(\S+)", cpuinfo, re.MULTILINE)
    if implementer and part:
        key = (implementer.group(1).lower(), part.group(1).lower())
        return ARM_CPU_PARTS.get(key, f"ARM implementer {key[0]} part {key[1]}")
    return None


def parse_l4t_release(text: str | None) -> str | None:
    """'# R35 (release), REVISION: 4.1, ...' -> '35.4.1' (the first line of nv_tegra_release)."""
    if not text:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    if not match:
        return None
    return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"


def parse_nvpmodel(text: str | None) -> dict[str, Any] | None:
    """``nvpmodel -q`` output ('NV Power Mode: MAXN' then the mode id) -> {name, id}."""
    if not text:
        return None
    name = re.search(r"NV Power Mode:\s*(.+)", text)
    if not name:
        return None
    mode_id = re.search(r"^\s*(\d+)\s*$", text[name.end():], re.MULTILINE)
    return {"name": name.group(1).strip(), "id": int(mode_id.group(1)) if mode_id else None}


def _memory_gib(meminfo: str | None) -> float | None:
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo or "", re.MULTILINE)
    return round(int(match.group(1)) / 1024 ** 2, 1) if match else None


def _cuda_version(root: Path, run: CommandRunner) -> tuple[str | None, str | None]:
    """(version, where it was read) from the toolkit's version files, else ``nvcc``."""
    import json

    text = _read(root, "/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"], "/usr/local/cuda/version.json"
        except (ValueError, KeyError, TypeError):
            pass
    text = _read(root, "/usr/local/cuda/version.txt")
    match = re.search(r"CUDA Version\s+([\d.]+)", text or "")
    if match:
        return match.group(1), "/usr/local/cuda/version.txt"
    out = run(["nvcc", "--version"])
    match = re.search(r"release\s+[\d.]+,\s*V([\d.]+)", out or "")
    if match:
        return match.group(1), "nvcc --version"
    return None, None


def _jetson_clocks_state(root: Path) -> tuple[bool | None, str]:
    """Infer jetson_clocks from sysfs: it pins every online CPU's and the GPU's minimum clock
    to the maximum. (``jetson_clocks --show`` says it directly but needs root.)"""
    cpu_dir = root / "sys/devices/system/cpu"
    pinned, checked = [], 0
    for cpufreq in sorted(cpu_dir.glob("cpu[0-9]*/cpufreq")):
        low = _read(root, str(cpufreq.relative_to(root) / "scaling_min_freq"))
        high = _read(root, str(cpufreq.relative_to(root) / "cpuinfo_max_freq"))
        if low is None or high is None:
            continue
        checked += 1
        pinned.append(low.strip() == high.strip())
    gpu_pinned = None
    for devfreq in sorted((root / "sys/class/devfreq").glob("*")):
        name = devfreq.name.lower()
        if not any(tag in name for tag in ("gpu", "gv11b", "ga10b", "gp10b", "gb10b")):
            continue
        low = _read(root, str(devfreq.relative_to(root) / "min_freq"))
        high = _read(root, str(devfreq.relative_to(root) / "max_freq"))
        if low is not None and high is not None:
            gpu_pinned = low.strip() == high.strip()
            break
    if checked == 0 and gpu_pinned is None:
        return None, "no cpufreq or GPU devfreq entries readable"
    cpu_all = checked > 0 and all(pinned)
    evidence = (f"{sum(pinned)}/{checked} CPU cores at min==max clock; GPU min==max: "
                f"{gpu_pinned}")
    state = cpu_all and gpu_pinned is not False
    return state, evidence


def _dla_cores(root: Path) -> int | None:
    """DLA engines the platform exposes (Xavier and Orin AGX/NX have 2, Orin Nano none)."""
    names = set()
    for base in ("sys/bus/platform/devices", "proc/device-tree"):
        folder = root / base
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if "nvdla" in p.name.lower())
    if not names:
        return 0 if (root / "sys/bus/platform/devices").is_dir() else None
    # The same engine can appear as '15880000.nvdla0' and 'nvdla0@15880000': count indices.
    indices = {re.search(r"nvdla(\d+)", n).group(1) for n in names if re.search(r"nvdla(\d+)", n)}
    return len(indices) or len(names)


def jetson_record(root: Path, run: CommandRunner, notes: list[str]) -> dict[str, Any] | None:
    """The Jetson part of the record, or None when this is not a Jetson."""
    model = _read(root, "/proc/device-tree/model")
    tegra = _read(root, "/etc/nv_tegra_release")
    model = model.replace("\x00", "").strip() if model else None
    if tegra is None and not (model and ("jetson" in model.lower() or "nvidia" in model.lower())):
        return None
    l4t = parse_l4t_release(tegra)
    if tegra is not None and l4t is None:
        notes.append("/etc/nv_tegra_release did not have the '# R<major> (release), REVISION: "
                     "<minor>.<patch>' line; L4T unknown")
    jetpack, jetpack_source = None, None
    dpkg = run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"])
    if dpkg and dpkg.strip():
        jetpack, jetpack_source = dpkg.strip(), "dpkg nvidia-jetpack"
    elif l4t:
        jetpack = L4T_TO_JETPACK.get(l4t)
        jetpack_source = (f"derived from L4T {l4t}" if jetpack else None)
        if jetpack is None:
            notes.append(f"L4T {l4t} is not in the L4T->JetPack table and the nvidia-jetpack "
                         f"package is not installed; JetPack unknown")
    power = parse_nvpmodel(run(["nvpmodel", "-q"]))
    if power is None:
        notes.append("'nvpmodel -q' not available or not understood; power mode unknown")
    clocks, clocks_evidence = _jetson_clocks_state(root)
    tensorrt = _package_version(_PACKAGES["tensorrt"])
    if tensorrt is None:
        out = run(["dpkg-query", "--showformat=${Version}", "--show", "tensorrt"])
        tensorrt = out.strip() if out and out.strip() else None
    return {
        "model": model,
        "l4t": l4t,
        "jetpack": jetpack,
        "jetpack_source": jetpack_source,
        "tensorrt": tensorrt,
        "nvpmodel": power,
        "jetson_clocks": clocks,
        "jetson_clocks_evidence": clocks_evidence,
        "dla_cores": _dla_cores(root),
    }


def _gpus(run: CommandRunner) -> list[dict[str, str]] | None:
    out = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
               "--format=csv,noheader"])
    if not out:
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus or None


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def collect_machine_record(root: str | Path = "/",
                           run: CommandRunner = run_command) -> dict[str, Any]:
    """Everything that makes latency numbers comparable, as a JSON-ready dict."""
    root = Path(root)
    notes: list[str] = []
    cpuinfo = _read(root, "/proc/cpuinfo")
    if cpuinfo is None:
        notes.append("/proc/cpuinfo not readable; CPU model unknown")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    cuda, cuda_source = _cuda_version(root, run)
    try:
        # Other work on the machine shows up here: numbers taken under load are not comparable.
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    record = {
        "recorded_at_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": {
            "model": cpu_model(cpuinfo),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable,
            "arch": platform.machine(),
        },
        "memory_gib": _memory_gib(_read(root, "/proc/meminfo")),
        "load_average_1_5_15min": load,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {key: _package_version(names) for key, names in _PACKAGES.items()},
        "onnxruntime_providers": _ort_providers(),
        "cuda_toolkit": cuda,
        "cuda_toolkit_source": cuda_source,
        "gpus": _gpus(run),
        "jetson": jetson_record(root, run, notes),
        "notes": notes,
    }
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """A few human lines for the top of a report (the full record stays in the JSON)."""
    cpu = record.get("cpu") or {}
    packages = record.get("packages") or {}
    lines = [
        f"CPU: {cpu.get('model') or 'unknown'} ({cpu.get('arch') or '?'}), "
        f"{cpu.get('logical_cores')} logical cores, {cpu.get('usable_cores')} usable by this "
        f"process; memory {record.get('memory_gib')} GiB",
        f"OS: {record.get('os')}; Python {record.get('python')}; load average (1/5/15 min) "
        f"when recorded: {record.get('load_average_1_5_15min')}",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in packages.items() if v),
        f"ONNX Runtime providers: {', '.join(record.get('onnxruntime_providers') or []) or '?'}",
    ]
    if record.get("gpus"):
        lines.append("GPU: " + "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})"
                                         for g in record["gpus"]))
    if record.get("cuda_toolkit"):
        lines.append(f"CUDA toolkit: {record['cuda_toolkit']} (from "
                     f"{record.get('cuda_toolkit_source')})")
    jetson = record.get("jetson")
    if jetson:
        power = jetson.get("nvpmodel") or {}
        lines.append(
            f"Jetson: {jetson.get('model')}; JetPack {jetson.get('jetpack')} "
            f"({jetson.get('jetpack_source')}); L4T {jetson.get('l4t')}; TensorRT "
            f"{jetson.get('tensorrt')}; nvpmodel {power.get('name')} (id {power.get('id')}); "
            f"jetson_clocks {'on' if jetson.get('jetson_clocks') else 'off or unknown'} "
            f"({jetson.get('jetson_clocks_evidence')}); DLA cores {jetson.get('dla_cores')}")
    for note in record.get("notes") or []:
        lines.append(f"Note: {note}")
    return lines
