"""``aue bench --schedules``: the pipeline with every-frame detection and inference against
its detection / inference schedule, timed interleaved, with how much the outputs differ.

Benchmark stage. The pipeline detects the whole frame every ``detect_interval_frames`` frames
(in between it finds the tracked faces again in small regions around their last boxes) and
runs the model on each tracked face every ``infer_interval_frames`` frames
(``config/pipeline.yaml``). Setting both to 1 is the pipeline as it was before the schedule:
YuNet on the whole frame and the model on every face, every frame. This module opens both
pipelines in one process and runs them over the same frame sequences:

- the bundled clip ``aue_edge/edge/samples/demo_clip.mp4`` (75 frames, 480x360, 1 then 3 then
  1 moving faces), and the benchmark scenes of :mod:`aue_edge.benchmarks.scenes` (640x480
  frames with 1 and 5 faces, ``SCENE_FRAMES`` frames each, as a still camera gives them);
- per round, each sequence goes through both pipelines back to back (from a reset state), the
  order alternating between rounds, so both see the same machine state; per-stage times are
  the pipeline's own ``timings_ms``, averaged over every frame (a scheduled pipeline's frames
  differ: the mean is what a stream costs, the p90 shows the whole-frame detection frames).
  Beside the wall-clock times, the process's CPU time per frame (all threads): on a shared,
  loaded machine the wall clock also counts the time other programs held the cores, the CPU
  time only the work this pipeline did;
- agreement: per frame, each face of the every-frame pipeline is matched to a face of the
  scheduled one by box IoU (greedy, at least ``MATCH_IOU``); unmatched faces are misses. For
  matched faces: the box IoU, the largest difference of any emotion or AU probability (the
  smoothed values the pipeline reports), the emotion label and the active AUs, and whether
  both pipelines gave the faces of one track the same ID mapping.

Writes ``OUT/NAME.json`` (every number, the machine record, the command) and ``OUT/NAME.md``
(the tables docs/benchmarks.md shows).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from aue_edge.core.paths import DEMO_CLIP
from aue_edge.edge.frames import read_video
from aue_edge.edge.pipeline import STAGES, Pipeline, PipelineConfig
from aue_edge.edge.tracking import greedy_assignment, iou_matrix

SCENE_FRAMES = 30
SCENE_FPS = 30.0
MATCH_IOU = 0.5
EVERY_FRAME = {"detect_interval_frames": 1, "infer_interval_frames": 1}


def sequences(face_photo: np.ndarray, detector) -> dict[str, tuple[list[np.ndarray], float]]:
    """{name: (frames, fps)}: the demo clip and the 1- and 5-face benchmark scenes."""
    from aue_edge.benchmarks.scenes import benchmark_frames

    scenes = benchmark_frames(face_photo, detector)
    return {"demo clip": read_video(DEMO_CLIP),
            "scene 1 face": ([scenes[1]] * SCENE_FRAMES, SCENE_FPS),
            "scene 5 faces": ([scenes[5]] * SCENE_FRAMES, SCENE_FPS)}


def run_sequence(pipeline: Pipeline, frames: list[np.ndarray], fps: float) -> list:
    pipeline.reset()
    return [pipeline.process(frame, timestamp_s=i / fps) for i, frame in enumerate(frames)]


def timed_sequence(pipeline: Pipeline, frames: list[np.ndarray], fps: float
                   ) -> tuple[list, float]:
    """The results and the process CPU time they took, in ms."""
    start = time.process_time()
    results = run_sequence(pipeline, frames, fps)
    return results, (time.process_time() - start) * 1e3


def agreement(reference: list, scheduled: list) -> dict[str, Any]:
    """How far the scheduled pipeline's faces are from the every-frame pipeline's, per face."""
    faces = misses = extra = same_label = same_active = 0
    ious, emotion_diff, au_diff = [], [], []
    id_pairs: set[tuple[int, int]] = set()
    for ref, new in zip(reference, scheduled):
        faces += len(ref.faces)
        boxes = [np.stack([f.box_xyxy for f in r.faces]) if r.faces else np.zeros((0, 4))
                 for r in (ref, new)]
        pairs = greedy_assignment(iou_matrix(*boxes), MATCH_IOU)
        misses += len(ref.faces) - len(pairs)
        extra += len(new.faces) - len(pairs)
        for i, j in pairs:
            a, b = ref.faces[i], new.faces[j]
            ious.append(float(iou_matrix(a.box_xyxy, b.box_xyxy)[0, 0]))
            id_pairs.add((a.track_id, b.track_id))
            if a.emotion_probs is not None:
                emotion_diff.append(float(np.abs(a.emotion_probs - b.emotion_probs).max()))
                same_label += a.emotion_label == b.emotion_label
            if a.au_probs is not None:
                au_diff.append(float(np.abs(a.au_probs - b.au_probs).max()))
                same_active += bool(np.array_equal(a.au_active, b.au_active))
    matched = len(ious)
    # One ID on one side always pairs with one ID on the other: the tracks are the same.
    same_ids = (len({a for a, _ in id_pairs}) == len(id_pairs)
                == len({b for _, b in id_pairs}))

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"min": None, "median": None, "max": None}
        return {"min": min(values), "median": float(np.median(values)), "max": max(values)}

    return {"faces": faces, "matched": matched, "missed": misses,
            "miss_rate": misses / faces if faces else 0.0, "extra": extra,
            "box_iou": stats(ious), "emotion_prob_max_abs_diff": stats(emotion_diff),
            "au_prob_max_abs_diff": stats(au_diff),
            "same_emotion_label": same_label, "same_active_aus": same_active,
            "same_track_ids": same_ids}


def stage_summary(results: list, cpu_ms: float) -> dict[str, Any]:
    per_stage = {s: [r.timings_ms[s] for r in results] for s in STAGES}
    total = np.asarray(per_stage["total"])
    return {"frames": len(results), "cpu_ms_per_frame": cpu_ms / len(results),
            "mean_ms": {s: float(np.mean(v)) for s, v in per_stage.items()},
            "median_total_ms": float(np.median(total)),
            "p90_total_ms": float(np.percentile(total, 90)),
            "max_total_ms": float(total.max())}


def compare(config: PipelineConfig, rounds: int, face_photo: np.ndarray,
            progress: bool = True) -> dict[str, Any]:
    """Time the every-frame and the scheduled pipeline interleaved; see the module docstring."""
    from tqdm import tqdm

    from aue_edge.edge.face.yunet import YuNetDetector

    with YuNetDetector() as detector:
        inputs = sequences(face_photo, detector)
    settings = {"every frame": config.replace(**EVERY_FRAME), "scheduled": config}
    pipelines = {name: Pipeline(cfg) for name, cfg in settings.items()}
    try:
        timed = {(seq, name): [] for seq in inputs for name in settings}
        cpu_ms = dict.fromkeys(timed, 0.0)
        outputs = {}
        for seq, (frames, fps) in inputs.items():  # warm-up, and the outputs compared
            for name, pipeline in pipelines.items():
                outputs[seq, name] = run_sequence(pipeline, frames, fps)
        steps = [(r, seq) for r in range(rounds) for seq in inputs]
        for r, seq in tqdm(steps, desc="aue bench --schedules", unit="sequence",
                           disable=not progress):
            frames, fps = inputs[seq]
            order = list(pipelines) if r % 2 == 0 else list(pipelines)[::-1]
            for name in order:
                results, cpu = timed_sequence(pipelines[name], frames, fps)
                timed[seq, name] += results
                cpu_ms[seq, name] += cpu
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
    report = {"settings": {name: {k: getattr(cfg, k) for k in EVERY_FRAME}
                           for name, cfg in settings.items()},
              "num_threads": config.num_threads, "rounds": rounds, "sequences": {}}
    for seq in inputs:
        before, after = (stage_summary(timed[seq, name], cpu_ms[seq, name])
                         for name in settings)
        report["sequences"][seq] = {
            "every frame": before, "scheduled": after,
            "speedup_mean_total": before["mean_ms"]["total"] / after["mean_ms"]["total"],
            "speedup_cpu": before["cpu_ms_per_frame"] / after["cpu_ms_per_frame"],
            "agreement": agreement(outputs[seq, "every frame"], outputs[seq, "scheduled"])}
    return report


def _ms(value: float) -> str:
    return f"{value:.2f}"


def render_markdown(report: dict[str, Any], command: str, machine_lines: list[str]) -> str:
    settings = report["settings"]["scheduled"]
    lines = ["Command:", "", "```", command, "```", "", *[f"- {line}" for line in machine_lines],
             "", f"Scheduled: detect_interval_frames {settings['detect_interval_frames']}, "
             f"infer_interval_frames {settings['infer_interval_frames']}; every frame: both 1 "
             f"(the pipeline before the schedule). {report['rounds']} rounds, ONNX Runtime "
             f"threads: {report['num_threads'] or 'default'}. Mean ms per frame:", "",
             "| sequence | pipeline | " + " | ".join(STAGES)
             + " | median total | p90 total | CPU ms per frame |",
             "|---|---|" + "---|" * (len(STAGES) + 3)]
    for seq, data in report["sequences"].items():
        for name in ("every frame", "scheduled"):
            s = data[name]
            lines.append(f"| {seq} | {name} | "
                         + " | ".join(_ms(s["mean_ms"][st]) for st in STAGES)
                         + f" | {_ms(s['median_total_ms'])} | {_ms(s['p90_total_ms'])} | "
                         f"{_ms(s['cpu_ms_per_frame'])} |")
        lines.append(f"| {seq} | **every frame / scheduled** | | | | | "
                     f"**{data['speedup_mean_total']:.2f}x** | | | "
                     f"**{data['speedup_cpu']:.2f}x** |")
    lines += ["", "Outputs of the scheduled pipeline against the every-frame pipeline (faces "
                  f"matched per frame by box IoU >= {MATCH_IOU}):", "",
              "| sequence | faces | missed | extra | box IoU min / median | max emotion prob "
              "diff (median / max) | max AU prob diff (median / max) | same label | same "
              "active AUs | same IDs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for seq, data in report["sequences"].items():
        a = data["agreement"]
        iou, emo, au = a["box_iou"], a["emotion_prob_max_abs_diff"], a["au_prob_max_abs_diff"]

        def pair(s: dict) -> str:
            return "-" if s["median"] is None else f"{s['median']:.3f} / {s['max']:.3f}"

        iou_cell = "-" if iou["min"] is None else f"{iou['min']:.3f} / {iou['median']:.3f}"
        lines.append(f"| {seq} | {a['faces']} | {a['missed']} | {a['extra']} | {iou_cell} | "
                     f"{pair(emo)} | {pair(au)} | {a['same_emotion_label']} of {a['matched']} "
                     f"| {a['same_active_aus']} of {a['matched']} | "
                     f"{'yes' if a['same_track_ids'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run_schedules(out_dir: Path, name: str, config_path: str | None, num_threads: int | None,
                  rounds: int, face_image: str | None, command: str) -> int:
    """The ``aue bench --schedules`` entry point: compare, write JSON + Markdown, print."""
    from aue_edge.benchmarks.machine import collect_machine_record, summary_lines
    from aue_edge.benchmarks.scenes import astronaut_bgr, load_face_image
    from aue_edge.core.errors import ConfigError
    from aue_edge.edge.outputs import prepare_output_dir, staged_outputs

    if rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {rounds}")
    overrides = {} if num_threads is None else {"num_threads": num_threads}
    config = (PipelineConfig.from_yaml(config_path, **overrides) if config_path
              else PipelineConfig().replace(**overrides))
    face_photo = load_face_image(face_image) if face_image else astronaut_bgr()
    files = (f"{name}.json", f"{name}.md")
    created = prepare_output_dir(out_dir, files)
    report = compare(config, rounds, face_photo)
    record = collect_machine_record()
    markdown = render_markdown(report, command, summary_lines(record))
    with staged_outputs(out_dir, created) as stage:
        (stage / files[0]).write_text(json.dumps(
            {"command": command, "config": dataclasses.asdict(config), "machine": record,
             **report}, indent=2) + "\n", encoding="utf-8")
        (stage / files[1]).write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"results: {out_dir / files[0]}\ntables: {out_dir / files[1]}")
    return 0
