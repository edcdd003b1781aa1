"""Turn a saved benchmark run into a Markdown table and plots (``aue bench --report``).

Last step of the benchmark stage: ``aue bench`` writes pytest-benchmark JSON (one entry per
case, raw per-round timings included, the machine record under ``machine_info["aue"]``); this
module reads one run, optionally a baseline run (e.g. a Jetson run against a workstation run),
and writes

- ``report.md``: per group, the figures trtexec prints for a query: min / median / mean /
  p90 / p95 / p99 latency and throughput, plus the baseline's median and the ratios run/baseline
  (> 1 means this run is slower); the per-stage split of the end-to-end time; the cases that
  were skipped and why; the machine records of both runs;
- ``latency_<group>.png``: latency distributions per case (box plots, baseline beside);
- ``end_to_end_breakdown.png``: median time per pipeline stage for each end-to-end case.

Percentiles are computed from the raw per-round timings with linear interpolation between
closest ranks (numpy's default). With fewer than 100 rounds p99 is close to the maximum and
the table says so. Each round is one call (the suites run ``iterations=1``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aue_edge.benchmarks.machine import summary_lines
from aue_edge.core.config_files import read_json
from aue_edge.core.errors import AueError, PlotsUnavailableError
from aue_edge.core.plotting import pyplot, save_figure


def without_prefix(text: str, prefix: str) -> str:
    """``str.removeprefix`` (Python 3.9+; the runtime supports 3.8)."""
    return text[len(prefix):] if text.startswith(prefix) else text


class BenchReportError(AueError, ValueError):
    """A benchmark JSON file that cannot be read as a pytest-benchmark run."""


STAGES = ("detect", "align", "infer", "postprocess")
GROUP_ORDER = ("preprocess", "infer", "postprocess", "end_to_end", "ros")
PERCENTILES = (90, 95, 99)


@dataclass(frozen=True)
class CaseStats:
    """Latency statistics of one benchmark case, in milliseconds."""

    group: str
    name: str
    rounds: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    items_per_call: int
    item_unit: str
    data_ms: tuple[float, ...] = ()
    stage_ms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_median_ms(self) -> dict[str, float]:
        """Median of the pipeline's own time per stage (end-to-end cases; empty otherwise)."""
        return {stage: float(np.median(values)) for stage, values in self.stage_ms.items()}

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"

    @property
    def label(self) -> str:
        """The case name without the suites' ``bench_`` function prefix."""
        return without_prefix(self.name, "bench_")

    @property
    def calls_per_s(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else math.inf

    @property
    def items_per_s(self) -> float:
        """Items per second: measured by the case when it records ``throughput_per_s`` (e.g. a
        stream at camera rate), else one call at a time: items per call / mean latency."""
        measured = self.extra.get("throughput_per_s")
        if isinstance(measured, (int, float)) and measured >= 0:
            return float(measured)
        return self.items_per_call * self.calls_per_s


@dataclass(frozen=True)
class BenchRun:
    """One saved run: its cases, what was skipped, the machine and the config it ran with."""

    path: Path
    datetime: str
    cases: tuple[CaseStats, ...]
    machine: dict[str, Any]
    config: dict[str, Any]
    command: str
    skipped: tuple[dict[str, str], ...]
    engine_summary: dict[str, Any] = field(default_factory=dict)

    def by_key(self) -> dict[str, CaseStats]:
        return {case.key: case for case in self.cases}

    def groups(self) -> list[str]:
        present = {case.group for case in self.cases}
        return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))


def percentile_ms(data_ms: np.ndarray, q: float) -> float:
    """The q-th percentile, linear interpolation between closest ranks."""
    return float(np.percentile(data_ms, q))


def case_from_entry(entry: Any, origin: str) -> CaseStats:
    """One ``benchmarks[i]`` entry of a pytest-benchmark JSON -> :class:`CaseStats`."""
    if not isinstance(entry, dict):
        raise BenchReportError(f"{origin}: expected an object, got {type(entry).__name__}")
    for key in ("name", "stats"):
        if key not in entry:
            raise BenchReportError(f"{origin}: missing field '{key}'; is this pytest-benchmark "
                                   f"JSON written by 'aue bench' or --benchmark-json?")
    stats = entry["stats"]
    extra = entry.get("extra_info") or {}
    if not isinstance(stats, dict) or not isinstance(extra, dict):
        raise BenchReportError(f"{origin}: 'stats' and 'extra_info' must be objects")
    iterations = stats.get("iterations", 1)
    data = stats.get("data")
    if data is not None:
        try:
            data_ms = np.asarray(data, dtype=np.float64) * 1000.0
        except (TypeError, ValueError):
            raise BenchReportError(f"{origin}: stats.data must be a list of seconds") from None
        if data_ms.ndim != 1 or data_ms.size == 0 or not np.all(np.isfinite(data_ms)) \
                or np.any(data_ms < 0):
            raise BenchReportError(f"{origin}: stats.data must be a non-empty list of finite, "
                                   f"non-negative seconds")
        values = {
            "min_ms": float(data_ms.min()),
            "median_ms": float(np.median(data_ms)),
            "mean_ms": float(data_ms.mean()),
            **{f"p{q}_ms": percentile_ms(data_ms, q) for q in PERCENTILES},
        }
        rounds = int(data_ms.size)
    else:
        # Saved without raw data (e.g. --benchmark-save without --benchmark-save-data):
        # summary figures only; percentiles cannot be recovered and are shown as n/a.
        try:
            values = {key: float(stats[src]) * 1000.0 for key, src in
                      (("min_ms", "min"), ("median_ms", "median"), ("mean_ms", "mean"))}
            rounds = int(stats["rounds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchReportError(f"{origin}: stats has no raw 'data' and no usable "
                                   f"min/median/mean/rounds ({exc})") from None
        values.update({f"p{q}_ms": None for q in PERCENTILES})
    items = extra.get("items_per_call", 1)
    if not isinstance(items, int) or items < 1:
        raise BenchReportError(f"{origin}: extra_info.items_per_call must be a positive "
                               f"integer, got {items!r}")
    stage_ms = {}
    for stage, samples in (extra.get("stage_ms") or {}).items():
        if not isinstance(samples, list) or not samples or not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in samples):
            raise BenchReportError(f"{origin}: extra_info.stage_ms.{stage} must be a non-empty "
                                   f"list of non-negative milliseconds")
        stage_ms[stage] = tuple(float(v) for v in samples)
    if iterations != 1:
        extra = {**extra, "iterations_per_round": iterations}
    return CaseStats(
        group=str(entry.get("group") or "ungrouped"),
        name=str(entry["name"]),
        rounds=rounds,
        items_per_call=items,
        item_unit=str(extra.get("item_unit", "calls")),
        data_ms=tuple(float(v) for v in data_ms) if data is not None else (),
        stage_ms=stage_ms,
        extra={k: v for k, v in extra.items() if k != "stage_ms"},
        **values,
    )


def load_run(path: str | Path) -> BenchRun:
    """Read a pytest-benchmark JSON file written by ``aue bench`` (or plain pytest-benchmark)."""
    path = Path(path)
    doc = read_json(path, "benchmark run", "pass the JSON that 'aue bench' wrote (default "
                    "runs/bench/<name>.json)", error=BenchReportError)
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise BenchReportError(f"{path}: expected a pytest-benchmark JSON object with a "
                               f"'benchmarks' list; found {type(doc).__name__} without it")
    cases = tuple(case_from_entry(entry, f"{path}: benchmarks[{i}]")
                  for i, entry in enumerate(doc["benchmarks"]))
    keys = [c.key for c in cases]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise BenchReportError(f"{path}: case names repeat within a group: {duplicates}")
    machine_info = doc.get("machine_info") or {}
    aue = doc.get("aue") or {}
    return BenchRun(
        path=path,
        datetime=str(doc.get("datetime", "")),
        cases=cases,
        machine=machine_info.get("aue") or {},
        config=aue.get("config") or {},
        command=str(aue.get("command", "")),
        skipped=tuple(aue.get("skipped") or ()),
        engine_summary=aue.get("engine_summary") or {},
    )


# ---------------------------------------------------------------------------- Markdown
def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(run: float | None, base: float | None) -> str:
    if run is None or base is None or base <= 0:
        return "n/a"
    return f"{run / base:.2f}x"


def _throughput(case: CaseStats) -> str:
    rate = case.items_per_s
    text = f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}"
    return f"{text} {case.item_unit}/s"


def _p99_cell(case: CaseStats) -> str:
    """p99, marked * when it comes from fewer than 100 rounds (it is then near the maximum)."""
    return _ms(case.p99_ms) + ("*" if case.p99_ms is not None and case.rounds < 100 else "")


def group_table(run: BenchRun, group: str, baseline: BenchRun | None) -> list[str]:
    base = baseline.by_key() if baseline else {}
    header = ["case", "rounds", "min ms", "median ms", "mean ms", "p90 ms", "p95 ms", "p99 ms",
              "throughput"]
    if baseline:
        header += ["baseline median ms", "median ratio", "p99 ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for case in (c for c in run.cases if c.group == group):
        if "frames_sent" in case.extra:
            notes.append(f"- `{case.label}`: {case.extra.get('frames_answered')} of "
                         f"{case.extra['frames_sent']} frames sent at "
                         f"{case.extra.get('camera_rate_hz')} Hz were answered "
                         f"({case.extra.get('frames_dropped')} dropped by the node's depth-1 "
                         f"queue while it was busy); latencies are of the answered frames")
        row = [f"`{case.label}`", str(case.rounds), _ms(case.min_ms), _ms(case.median_ms),
               _ms(case.mean_ms), _ms(case.p90_ms), _ms(case.p95_ms), _p99_cell(case),
               _throughput(case)]
        if baseline:
            other = base.get(case.key)
            row += [_ms(other.median_ms) if other else "not in baseline",
                    _ratio(case.median_ms, other.median_ms if other else None),
                    _ratio(case.p99_ms, other.p99_ms if other else None)]
        lines.append("| " + " | ".join(row) + " |")
    return lines + ([""] + notes if notes else [])


SUMMARY_GROUPS = ("end_to_end", "ros", "engine")


def summary_table(run: BenchRun) -> list[str]:
    """The per-frame cases (pipeline, ROS round trip, engine) in one short table."""
    cases = [c for g in SUMMARY_GROUPS for c in run.cases if c.group == g]
    if not cases:
        return []
    lines = ["| case | median ms | p90 ms | p99 ms | throughput |", "|---|---|---|---|---|"]
    for case in cases:
        lines.append(f"| `{case.label}` | {_ms(case.median_ms)} | {_ms(case.p90_ms)} | "
                     f"{_p99_cell(case)} | {_throughput(case)} |")
    return lines


def breakdown_table(run: BenchRun, baseline: BenchRun | None) -> list[str]:
    cases = [c for c in run.cases if c.stage_ms]
    if not cases:
        return []
    stages = [s for s in STAGES if any(s in c.stage_median_ms for c in cases)]
    lines = ["| case | " + " | ".join(f"{s} ms" for s in stages)
             + " | other ms | total ms (pipeline) | measured median ms |",
             "|" + "---|" * (len(stages) + 4)]
    rows = [(run, c) for c in cases]
    if baseline:
        rows += [(baseline, c) for c in baseline.cases if c.stage_ms]
    for source, case in rows:
        parts = [case.stage_median_ms.get(s, 0.0) for s in stages]
        total = case.stage_median_ms.get("total", sum(parts))
        label = f"`{case.label}`" + (" (baseline)" if source is baseline else "")
        lines.append("| " + " | ".join([label] + [_ms(p) for p in parts]
                                       + [_ms(max(total - sum(parts), 0.0)), _ms(total),
                                          _ms(case.median_ms)]) + " |")
    return lines


def load_warning(machine: dict[str, Any]) -> str | None:
    """A warning when the machine was busier than its cores when the run ended."""
    load = machine.get("load_average_1_5_15min")
    cpu = machine.get("cpu") or {}
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    if not load or not cores or load[1] <= cores:
        return None
    return (f"Warning: the 5-minute load average was {load[1]} on {cores} cores when this run "
            f"ended: other work competed with the benchmark, so expect slower and wider "
            f"distributions than on an idle machine.")


def render_markdown(run: BenchRun, baseline: BenchRun | None,
                    plots: dict[str, Path], note: str | None = None) -> str:
    """The whole report as Markdown; plot paths are written relative to the report; ``note``
    (why the plots are missing) goes under the title."""
    lines = [f"# Benchmark report: {run.path.name}", ""]
    if note:
        lines += [f"Note: {note}", ""]
    if run.command:
        lines += ["Command:", "", "```", run.command, "```", ""]
    config = run.config
    if run.engine_summary:
        summary = run.engine_summary
        lines += [
            f"TensorRT engine benchmark ({summary.get('tensorrt_version')}): "
            f"{summary.get('queries')} queries of batch {summary.get('batch')} in "
            f"{summary.get('walltime_s', 0):.3f} s host wall time = "
            f"{summary.get('throughput_qps', 0):.2f} qps. Settings: "
            + ", ".join(f"{k}={v}" for k, v in config.items()) + ".", "",
            "Same measurement with trtexec:", "", "```", str(summary.get("trtexec_command")),
            "```", ""]
        lines += [f"Note: {note}" for note in summary.get("notes") or []]
    elif config:
        lines.append(
            f"Rounds per case: {config.get('rounds')} timed after {config.get('warmup_rounds')} "
            f"warm-up (ROS 2 round trip: {config.get('ros_rounds')}); ONNX Runtime threads: "
            f"{config.get('num_threads') or 'ONNX Runtime default (all cores)'}"
            + ("; SMOKE MODE: numbers are not meaningful" if config.get("smoke") else "") + ".")
        lines.append("")
    lines += [f"Run recorded {run.datetime}. Machine:", ""]
    lines += [f"- {line}" for line in summary_lines(run.machine)] or ["- (no machine record)"]
    lines.append("")
    warning = load_warning(run.machine)
    if warning:
        lines += [f"**{warning}**", ""]
    if baseline:
        lines += [f"Baseline: `{baseline.path.name}`, recorded {baseline.datetime}. Machine:", ""]
        lines += [f"- {line}" for line in summary_lines(baseline.machine)] \
            or ["- (no machine record)"]
        lines += ["", "Ratios are this run / baseline: above 1.00x this run is slower.", ""]
    lines += ["Latency per call in milliseconds; throughput = items per call / mean latency "
              "(items: faces for inference and per-face steps, frames for the pipeline and the "
              "round trip), one call at a time. p99 marked * comes from fewer than 100 rounds "
              "and is close to the maximum.", ""]
    headline = summary_table(run)
    if headline:
        lines += ["## Summary: per-frame latency", "",
                  "The pipeline on one 640x480 frame, and camera image to /emotion through "
                  "ROS 2; all groups follow below.", ""] + headline + [""]
    for group in run.groups():
        lines += [f"## {group}", ""] + group_table(run, group, baseline) + [""]
        if group in plots:
            lines += [f"![{group} latency distribution]({plots[group].name})", ""]
    if baseline:
        missing = sorted(set(baseline.by_key()) - set(run.by_key()))
        if missing:
            lines += ["Cases only in the baseline: " + ", ".join(f"`{k}`" for k in missing), ""]
    breakdown = breakdown_table(run, baseline)
    if breakdown:
        lines += ["## End-to-end time per stage (medians)", "",
                  "Stage times are the pipeline's own `timings_ms`; 'other' is the pipeline "
                  "total minus the named stages; the measured median is the benchmark's "
                  "wall-clock time around `process()`.", ""] + breakdown + [""]
        for key, title in (("breakdown", "end-to-end breakdown"),
                           ("stages", "end-to-end stage distributions")):
            if key in plots:
                lines += [f"![{title}]({plots[key].name})", ""]
    if run.skipped:
        lines += ["## Not measured in this run", ""]
        by_reason: dict[str, list[str]] = {}
        for item in run.skipped:
            by_reason.setdefault(str(item.get("reason")), []).append(
                without_prefix(str(item.get("case")), "bench_"))
        for reason, cases in by_reason.items():
            lines.append(f"- {reason}: " + ", ".join(f"`{c}`" for c in cases))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def _horizontal(matplotlib_version: str) -> dict[str, Any]:
    """boxplot's horizontal switch: ``orientation`` since Matplotlib 3.10 (``vert`` is deprecated
    there), ``vert=False`` on the older releases JetPack images carry."""
    major_minor = tuple(int(p) for p in matplotlib_version.split(".")[:2] if p.isdigit())
    return {"orientation": "horizontal"} if major_minor >= (3, 10) else {"vert": False}


def plot_distributions(run: BenchRun, baseline: BenchRun | None,
                       out_dir: Path) -> dict[str, Path]:
    """One PNG per group: horizontal box plots of per-round latency, baseline beside."""
    plt = pyplot()
    from matplotlib import __version__ as matplotlib_version

    base = baseline.by_key() if baseline else {}
    written = {}
    for group in run.groups():
        cases = [c for c in run.cases if c.group == group and c.data_ms]
        if not cases:
            continue
        series, labels, colors = [], [], []
        for case in cases:
            series.append(case.data_ms)
            labels.append(case.label)
            colors.append("tab:blue")
            other = base.get(case.key)
            if other is not None and other.data_ms:
                series.append(other.data_ms)
                labels.append(f"{case.label} (baseline)")
                colors.append("tab:orange")
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(series) + 1.5))
        boxes = ax.boxplot(series, patch_artist=True, showfliers=True, whis=(1, 99),
                           **_horizontal(matplotlib_version))
        for patch, color in zip(boxes["boxes"], colors):
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.invert_yaxis()
        values = np.concatenate([np.asarray(s) for s in series])
        if values.min() > 0 and values.max() / values.min() > 30:
            ax.set_xscale("log")
        ax.set_xlabel("latency per call (ms); whiskers p1-p99")
        ax.set_title(f"{group}: latency distribution ({run.path.name})")
        ax.grid(axis="x", alpha=0.3)
        written[group] = save_figure(fig, out_dir / f"latency_{group}.png", dpi=110)
    return written


def plot_breakdown(run: BenchRun, baseline: BenchRun | None, out_dir: Path) -> Path | None:
    """Stacked bars of the median time per pipeline stage for every end-to-end case."""
    rows = [(c.label, c) for c in run.cases if c.stage_ms]
    if baseline:
        rows += [(f"{c.label} (baseline)", c) for c in baseline.cases if c.stage_ms]
    if not rows:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for stage in (*STAGES, "other"):
        widths = []
        for _label, case in rows:
            parts = case.stage_median_ms
            if stage == "other":
                named = sum(parts.get(s, 0.0) for s in STAGES)
                widths.append(max(parts.get("total", named) - named, 0.0))
            else:
                widths.append(parts.get(stage, 0.0))
        ax.barh(range(len(rows)), widths, left=left, label=stage)
        left += np.asarray(widths)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median time per frame (ms)")
    ax.set_title("end-to-end pipeline: time per stage")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_dir / "end_to_end_breakdown.png", dpi=110)


def plot_stage_distributions(run: BenchRun, out_dir: Path) -> Path | None:
    """Per end-to-end case, the distribution of each pipeline stage's time (box plots)."""
    cases = [c for c in run.cases if c.stage_ms]
    if not cases:
        return None
    plt = pyplot()

    stages = [s for s in (*STAGES, "total") if any(s in c.stage_ms for c in cases)]
    ncols = min(4, len(cases))
    nrows = math.ceil(len(cases) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1, 3.6 * nrows),
                             squeeze=False, sharey=True)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    for ax, case in zip(axes.flat, cases):
        present = [s for s in stages if s in case.stage_ms]
        ax.boxplot([case.stage_ms[s] for s in present], whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(present) + 1), present, rotation=45, fontsize=8)
        ax.set_title(case.label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("time per frame (ms); whiskers p1-p99")
    fig.suptitle(f"end-to-end: distribution of each stage ({run.path.name})", fontsize=10)
    return save_figure(fig, out_dir / "end_to_end_stages.png", dpi=110)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    plots: tuple[Path, ...]
    note: str | None = None    # why there are no plots (matplotlib is not installed)


def write_report(run_path: str | Path, baseline_path: str | Path | None = None,
                 out_dir: str | Path | None = None) -> ReportFiles:
    """Read the run (and baseline), write report.md and the PNGs into ``out_dir``.

    ``out_dir`` defaults to ``<run stem>_report/`` beside the run file.
    """
    run = load_run(run_path)
    baseline = load_run(baseline_path) if baseline_path is not None else None
    out = Path(out_dir) if out_dir is not None else run.path.with_name(
        f"{run.path.stem}_report")
    out.mkdir(parents=True, exist_ok=True)
    note = None
    try:
        plots = plot_distributions(run, baseline, out)
        breakdown = plot_breakdown(run, baseline, out)
        if breakdown is not None:
            plots["breakdown"] = breakdown
        stages = plot_stage_distributions(run, out)
        if stages is not None:
            plots["stages"] = stages
    except PlotsUnavailableError as exc:   # matplotlib is optional on a robot: tables only
        plots, note = {}, f"plots not drawn: {exc}"
    markdown = out / "report.md"
    markdown.write_text(render_markdown(run, baseline, plots, note), encoding="utf-8")
    return ReportFiles(markdown=markdown, plots=tuple(plots.values()), note=note)
