"""Machine record: a fake Jetson AGX Orin / x86 file tree and fake system commands."""
from __future__ import annotations

from pathlib import Path

import pytest

from aue_edge.benchmarks.machine import (collect_machine_record, cpu_model, parse_l4t_release,
                                         parse_nvpmodel, summary_lines)

ORIN_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    f"CPU variant\t: 0x1\nCPU part\t: 0xd42\nCPU revision\t: 1\n\n" for i in range(8))
TEGRA_RELEASE = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: "
                 "aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n")
CLOCK_KHZ = {"max": "2201600", "low": "115200"}


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_orin(root: Path, clocks_pinned: bool) -> Path:
    write(root, "etc/nv_tegra_release", TEGRA_RELEASE)
    write(root, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    write(root, "proc/cpuinfo", ORIN_CPUINFO)
    write(root, "proc/meminfo", "MemTotal:       31811580 kB\n")
    for i in range(8):
        base = f"sys/devices/system/cpu/cpu{i}/cpufreq"
        write(root, f"{base}/cpuinfo_max_freq", CLOCK_KHZ["max"] + "\n")
        write(root, f"{base}/scaling_min_freq",
              (CLOCK_KHZ["max"] if clocks_pinned else CLOCK_KHZ["low"]) + "\n")
    gpu = "sys/class/devfreq/17000000.ga10b"
    write(root, f"{gpu}/max_freq", "1300500000\n")
    write(root, f"{gpu}/min_freq", "1300500000\n" if clocks_pinned else "306000000\n")
    for name in ("15880000.nvdla0", "158c0000.nvdla1", "3100000.serial"):
        (root / "sys/bus/platform/devices" / name).mkdir(parents=True)
    write(root, "usr/local/cuda/version.json", '{"cuda": {"version": "11.4.315"}}')
    return root


class FakeCommands:
    """Stands in for nvpmodel / dpkg-query / nvcc / nvidia-smi; records what was asked."""

    def __init__(self, outputs: dict[str, str | None]) -> None:
        self.outputs, self.asked = outputs, []

    def __call__(self, argv: list[str]) -> str | None:
        self.asked.append(argv)
        key = " ".join(argv)
        return next((out for prefix, out in self.outputs.items() if key.startswith(prefix)), None)


ORIN_COMMANDS = {"nvpmodel -q": "NV Power Mode: MAXN\n0\n",
                 "dpkg-query --showformat=${Version} --show tensorrt": "8.5.2.2-1+cuda11.4"}


def test_jetson_orin_record(tmp_path):
    commands = FakeCommands(ORIN_COMMANDS)
    record = collect_machine_record(fake_orin(tmp_path, clocks_pinned=True), commands)
    jetson = record["jetson"]
    assert jetson["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert jetson["l4t"] == "35.4.1"
    # nvidia-jetpack is not installed in the fake: JetPack comes from the L4T table, and says so
    assert (jetson["jetpack"], jetson["jetpack_source"]) == ("5.1.2", "derived from L4T 35.4.1")
    assert jetson["tensorrt"] == "8.5.2.2-1+cuda11.4"
    assert jetson["nvpmodel"] == {"name": "MAXN", "id": 0}
    assert jetson["jetson_clocks"] is True
    assert "8/8 CPU cores at min==max" in jetson["jetson_clocks_evidence"]
    assert jetson["dla_cores"] == 2
    assert record["cpu"]["model"] == "ARM Cortex-A78AE"
    assert record["memory_gib"] == pytest.approx(30.3, abs=0.1)
    assert (record["cuda_toolkit"], record["cuda_toolkit_source"]) == (
        "11.4.315", "/usr/local/cuda/version.json")
    assert ["nvpmodel", "-q"] in commands.asked
    lines = "\n".join(summary_lines(record))
    assert "JetPack 5.1.2 (derived from L4T 35.4.1)" in lines
    assert "nvpmodel MAXN (id 0)" in lines and "jetson_clocks on" in lines


def test_jetson_clocks_off_and_jetpack_from_dpkg(tmp_path):
    commands = FakeCommands({**ORIN_COMMANDS, "dpkg-query --showformat=${Version} --show "
                             "nvidia-jetpack": "5.1.2-b104"})
    jetson = collect_machine_record(fake_orin(tmp_path, clocks_pinned=False), commands)["jetson"]
    assert jetson["jetson_clocks"] is False
    assert "0/8 CPU cores at min==max clock; GPU min==max: False" == \
        jetson["jetson_clocks_evidence"]
    assert (jetson["jetpack"], jetson["jetpack_source"]) == ("5.1.2-b104", "dpkg nvidia-jetpack")


def test_jetson_with_unknown_release_and_no_nvpmodel(tmp_path):
    root = fake_orin(tmp_path, clocks_pinned=True)
    write(root, "etc/nv_tegra_release", "# R99 (release), REVISION: 1.0\n")
    record = collect_machine_record(root, FakeCommands({}))
    assert record["jetson"]["l4t"] == "99.1.0"
    assert record["jetson"]["jetpack"] is None
    assert record["jetson"]["nvpmodel"] is None
    notes = " ".join(record["notes"])
    assert "L4T 99.1.0 is not in the L4T->JetPack table" in notes
    assert "'nvpmodel -q' not available" in notes


def test_workstation_record(tmp_path):
    write(tmp_path, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n")
    commands = FakeCommands({"nvidia-smi": "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB\n",
                             "nvcc --version": "Cuda compilation tools, release 12.4, "
                                               "V12.4.131\n"})
    record = collect_machine_record(tmp_path, commands)
    assert record["jetson"] is None
    assert record["cpu"]["model"] == "AMD EPYC 7B13"
    assert record["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15",
                               "memory": "81559 MiB"}]
    assert record["cuda_toolkit"] == "12.4.131"
    assert record["packages"]["onnxruntime"]  # read from package metadata of this venv
    assert "CPUExecutionProvider" in record["onnxruntime_providers"]
    assert not any(argv[0] == "nvpmodel" for argv in commands.asked)  # not a Jetson


def test_parsers():
    assert parse_l4t_release(TEGRA_RELEASE) == "35.4.1"
    assert parse_l4t_release("garbage") is None
    assert parse_nvpmodel("NV Power Mode: 15W\n2\n") == {"name": "15W", "id": 2}
    assert parse_nvpmodel("") is None
    assert cpu_model("CPU implementer\t: 0x4e\nCPU part\t: 0x004\n") == "NVIDIA Carmel"
    assert cpu_model("CPU implementer\t: 0x41\nCPU part\t: 0xfff\n") == \
        "ARM implementer 0x41 part 0xfff"
    assert cpu_model(None) is None
