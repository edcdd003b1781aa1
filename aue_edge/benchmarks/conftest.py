"""pytest fixtures and hooks of the benchmark suites (``aue_edge/benchmarks/bench_*.py``).

Part of the benchmark stage; ``aue bench`` (``aue_edge.benchmarks.cli``) runs pytest on this
folder with ``-o python_files=bench_*.py -o python_functions=bench_*`` and the options below.
What this file adds to pytest-benchmark:

- the run's :class:`~aue_edge.benchmarks.config.BenchConfig` (``--aue-bench-config``,
  ``--aue-smoke``) and the parametrization it implies (models x backends x precisions,
  batches of faces, 1 and 5 faces);
- :func:`measure`: every case runs ``benchmark.pedantic`` with the config's warm-up and timed
  rounds and one call per round, so raw per-round times are per-call latencies;
  :func:`record_series` saves latencies a case measures itself (the 30 Hz ROS stream) in the
  same layout;
- real-face frames (checked with the detector to hold exactly 1 and 5 faces before timing);
- the machine record in ``machine_info["aue"]`` and, under ``"aue"`` in the JSON, the config,
  the command line and every skipped case with its reason (a report lists what was NOT
  measured).
"""
from __future__ import annotations

import statistics

import pytest

from aue_edge.benchmarks.cases import model_variants
from aue_edge.benchmarks.config import FACE_COUNTS, BenchConfig
from aue_edge.benchmarks.report import without_prefix

BENCH_CONFIG = pytest.StashKey[BenchConfig]()
RECORDER = pytest.StashKey["SkipRecorder"]()
COMMAND = pytest.StashKey[str]()
SERIES = pytest.StashKey[list]()


class SkipRecorder:
    """Collects every skipped case with its reason, for the JSON and the report."""

    def __init__(self) -> None:
        self.skipped: list[dict[str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.skipped and report.when in ("setup", "call"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
                report.longrepr)
            self.skipped.append({"case": report.nodeid.split("::")[-1],
                                 "reason": without_prefix(reason, "Skipped: ")})


def pytest_addoption(parser) -> None:
    group = parser.getgroup("aue bench")
    group.addoption("--aue-bench-config", default=None, metavar="FILE",
                    help="BenchConfig as YAML/JSON (aue bench writes one per run)")
    group.addoption("--aue-smoke", action="store_true",
                    help="smoke mode: 1 warm-up + 2 timed rounds per case")
    group.addoption("--aue-command", default="", help="command line recorded in the JSON")


def pytest_configure(config) -> None:
    path = config.getoption("--aue-bench-config")
    bench = BenchConfig.load(path) if path else BenchConfig()
    if config.getoption("--aue-smoke") and not bench.smoke:
        bench = bench.as_smoke()
    config.stash[BENCH_CONFIG] = bench
    config.stash[COMMAND] = config.getoption("--aue-command")
    config.stash[SERIES] = []
    recorder = SkipRecorder()
    config.stash[RECORDER] = recorder
    config.pluginmanager.register(recorder, "aue-skip-recorder")
    # Registered here too, so the suites run with --strict-markers from an installed package
    # (where the repository's pytest.ini is absent).
    config.addinivalue_line("markers", "ros: starts real ROS 2 processes")


def pytest_generate_tests(metafunc) -> None:
    bench = metafunc.config.stash[BENCH_CONFIG]
    if "variant" in metafunc.fixturenames:
        variants = model_variants(bench)
        metafunc.parametrize("variant", variants, ids=[v.case_id for v in variants])
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", bench.batches, ids=[f"b{b}" for b in bench.batches])
    if "faces" in metafunc.fixturenames:
        metafunc.parametrize("faces", FACE_COUNTS,
                             ids=[f"{n}face{'s' if n > 1 else ''}" for n in FACE_COUNTS])


def pytest_collection_modifyitems(config, items) -> None:
    """Leave out the groups the config does not ask for, and the AU-detector cases when no
    ``--au-model`` is given (reported as deselected)."""
    bench = config.stash[BENCH_CONFIG]
    keep, drop = [], []
    for item in items:
        wanted = getattr(item.module, "GROUP", None) in bench.groups and (
            bench.au_model_dir is not None
            or getattr(item, "originalname", "") != "bench_pipeline_with_au_detector")
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    from aue_edge.benchmarks.machine import collect_machine_record

    machine_info["aue"] = collect_machine_record()


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    output_json["benchmarks"].extend(config.stash[SERIES])
    output_json["aue"] = {
        "config": config.stash[BENCH_CONFIG].to_dict(),
        "command": config.stash[COMMAND],
        "skipped": config.stash[RECORDER].skipped,
    }


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def bench_config(request) -> BenchConfig:
    return request.config.stash[BENCH_CONFIG]


@pytest.fixture
def measure(benchmark, bench_config):
    """``measure(fn, group=..., items_per_call=N, item_unit="faces", **extra)`` -> fn's result.

    Runs ``fn`` for the config's warm-up rounds, then its timed rounds (``rounds`` overrides),
    one call per round; ``extra`` goes to the JSON's ``extra_info``.
    """

    def run(target, *, group: str, items_per_call: int = 1, item_unit: str = "calls",
            rounds: int | None = None, **extra):
        benchmark.group = group
        benchmark.extra_info.update(items_per_call=items_per_call, item_unit=item_unit, **extra)
        return benchmark.pedantic(target, rounds=rounds or bench_config.rounds,
                                  warmup_rounds=bench_config.warmup_rounds, iterations=1)

    return run


@pytest.fixture
def record_series(request):
    """``record_series(data_ms, group=..., item_unit=..., **extra)``: save latencies measured
    by the case itself (not by pytest-benchmark's timer, e.g. per-frame latencies of a stream)
    as a case in the run's JSON, in pytest-benchmark's layout, so reports treat it like any
    other case."""

    def record(data_ms: list[float], *, group: str, items_per_call: int = 1,
               item_unit: str = "calls", **extra) -> None:
        data_s = [v / 1000.0 for v in data_ms]
        request.config.stash[SERIES].append({
            "group": group, "name": request.node.name, "fullname": request.node.nodeid,
            "params": None, "param": getattr(getattr(request.node, "callspec", None), "id",
                                             None),
            "extra_info": {"items_per_call": items_per_call, "item_unit": item_unit,
                           "timed_by": "the case (per-item latencies)", **extra},
            "options": {},
            "stats": {"min": min(data_s), "max": max(data_s),
                      "mean": statistics.fmean(data_s), "median": statistics.median(data_s),
                      "rounds": len(data_s), "iterations": 1, "data": data_s},
        })

    return record


@pytest.fixture(scope="session")
def face_photo(bench_config):
    """The real face photo the frames are built from (astronaut, or --face-image)."""
    from aue_edge.benchmarks import scenes

    if bench_config.face_image:
        return scenes.load_face_image(bench_config.face_image)
    return scenes.astronaut_bgr()


@pytest.fixture(scope="session")
def detector(bench_config):
    """The vendored YuNet with the pipeline's default thresholds and the run's thread count."""
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.edge.face.yunet import DEFAULT_MODEL_PATH, YuNetDetector

    backend = OrtBackend(DEFAULT_MODEL_PATH, num_threads=bench_config.num_threads)
    with YuNetDetector(backend=backend) as det:
        yield det


@pytest.fixture(scope="session")
def frames(face_photo, detector):
    """{faces: 640x480 BGR frame}, each checked to hold exactly that many faces."""
    from aue_edge.benchmarks import scenes
    from aue_edge.core.errors import InputImageError

    try:
        return scenes.benchmark_frames(face_photo, detector)
    except InputImageError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def detections(frames, detector):
    """{faces: Detections} of the frames (the input of alignment and tracking)."""
    return {count: detector.detect(frame) for count, frame in frames.items()}


@pytest.fixture(scope="session")
def default_card(bench_config):
    """The model card of the first model directory (the model ONNX Runtime would run)."""
    from aue_edge.benchmarks.cases import model_dirs
    from aue_edge.edge.backends.factory import find_model_card
    from aue_edge.edge.pipeline import resolve_model_file

    return find_model_card(resolve_model_file(model_dirs(bench_config)[0], "auto", "ort"))


@pytest.fixture(scope="session")
def alignment_template(default_card):
    """The card's 5-point template; the FER+ one when the card has none (as the pipeline does)."""
    from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT

    return default_card.alignment.template_5pt or FERPLUS_TEMPLATE_5PT


@pytest.fixture(scope="session")
def aligned_crops(frames, detections, default_card, alignment_template):
    """The 5 real faces of the 5-face frame, aligned to the default model's input size."""
    from aue_edge.edge.face.alignment import align_faces

    return align_faces(frames[5], detections[5].landmarks5, alignment_template,
                       default_card.input.size_px)
