"""Side by side with the PyPI package `fer` (mini-Xception trained on FER2013, OpenCV Haar
face detection, TensorFlow): accuracy on identical face crops and speed on identical frames.

Run from the repository root (``make compare`` builds ``.venv-fer`` first, then runs this)::

    .venv/bin/python tools/compare_fer/compare.py --out runs/compare_fer

Two interpreters, never one: this script runs in the project's ``.venv`` and uses only the
product's public API for our side (``aue_edge.Pipeline`` on ONNX Runtime with the default
settings and the shipped default model, or ``--pipeline-config``'s, e.g. the fast profile
``config/pipeline_fast.yaml``, so a faster pipeline shows up when the harness is run again);
`fer` runs in
``.venv-fer`` (``tools/compare_fer/requirements.txt``) as ``fer_worker.py``, one process per
thread setting, fed the same arrays through files. Nothing of `fer` is a dependency of the
product.

Accuracy, classifier only (no detection, so the detectors do not confound it): every face crop
of FER+ test (majority vote over the 8 emotions, the project's reader) and of CK+
(``../shared/data/ckplus``, 648 peak frames, its emotion labels), given to both classifiers as
their own code prepares a face crop (ours: :func:`~aue_edge.edge.preprocess.to_model_input`
with the model card, as ``aue evaluate`` does; fer: ``FER.detect_emotions``' resize to 64x64
and scaling, then ``FER._classify_emotions``). fer's 7 FER2013 classes map to FER+ names by
:data:`FER_TO_CANONICAL`. fer has no contempt class, so each data set is scored twice:
``all`` classes (contempt images count, fer can never get them right) and without contempt
(contempt images left out and both models restricted to fer's 7 classes: argmax over them).

Speed: whole frames (detection + classification) on the bundled clip (75 frames, 480x360) and
the benchmark scenes (640x480, 1 and 5 faces, ``aue_edge/benchmarks/scenes.py``), and the classifier
alone per face (batch 1, FER+ test crops), at one thread and at the libraries' default threads.
Per frame, the wall clock and the CPU time of the process doing the work (all its threads: a
side that runs on two cores spends more CPU than wall clock). Rounds interleave the two sides
(their order alternates) so load on the shared machine hits both alike; ratios come from one
run. Each timed pass over a frame set starts with one wake-up call on its first frame, on both
sides, timed apart (ours then resets the pipeline, so the timed pass starts from no tracks):
while one side works the other sits idle for seconds, and on the 2-core development VM the
first call after such a pause cost tens of milliseconds more than the same frame a moment later
(the report's last column), a cost of the pause, not of a frame, that would otherwise fall on
whichever side waited longer and weigh most on the side with the cheaper frames.

Frames back to back measure what a frame costs the CPU when it is busy; a camera delivers them
at its rate and the process idles in between. The ``paced`` rows (``--paced-fps``, default 30;
0 leaves them out) time the same frames at default threads handed over at that rate: a frame
waits for its time (frame i at i / fps after the pass began; a late frame starts at once) and
only the call is timed. On the development VM a call after even a few tens of milliseconds of
idling costs more than back to back, most of all for the cheaper side.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "fer_worker.py"
DEFAULT_FER_PYTHON = REPO / ".venv-fer" / "bin" / "python"
REPORT_JSON, REPORT_MD = "compare_fer.json", "compare_fer.md"

#: fer's class names (``FER._get_labels()``, FER2013 order) -> the package's canonical names.
FER_TO_CANONICAL = {"angry": "anger", "disgust": "disgust", "fear": "fear",
                    "happy": "happiness", "sad": "sadness", "surprise": "surprise",
                    "neutral": "neutral"}
THREAD_MODES = ("1", "default")
#: the frame-timing rows: {row: (thread setting, paced?)}; 'paced' only with --paced-fps > 0
FRAME_ROWS = {"1": ("1", False), "default": ("default", False), "paced": ("default", True)}
FER_VARIANTS = {"tflite": "fer, TFLite int8 (its default)",
                "keras": "fer, Keras .hdf5 (use_tflite=False)"}
OURS = "aue_edge"
FRAME_SETS = {"clip": "bundled clip (480x360, 1-3 faces)",
              "scene_1face": "scene, 1 face (640x480)",
              "scene_5faces": "scene, 5 faces (640x480)"}
SCENE_FPS = 30.0


class CompareError(Exception):
    """Bad input or a failed `fer` worker: one line saying what to do."""


# ------------------------------------------------------------------------------ labels
def fer_canonical_labels(fer_labels: Sequence[str]) -> tuple[str, ...]:
    """fer's label list (index order) as canonical names; an unknown name is an error (a fer
    release that changed its classes must not be scored with a wrong table)."""
    unknown = [name for name in fer_labels if name not in FER_TO_CANONICAL]
    if unknown or len(set(fer_labels)) != len(fer_labels):
        raise CompareError(f"fer reports classes {list(fer_labels)}; this harness maps "
                           f"{sorted(FER_TO_CANONICAL)} (FER2013's 7). Update FER_TO_CANONICAL "
                           f"for this fer release")
    return tuple(FER_TO_CANONICAL[name] for name in fer_labels)


def predict(probs: np.ndarray, labels: Sequence[str], target: Sequence[str],
            allowed: Sequence[str] | None = None) -> np.ndarray:
    """Argmax of ``probs`` (columns named by ``labels``) over the ``allowed`` classes (all when
    None), as indices into ``target``."""
    from aue_edge.data.knowledge import label_mapping

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise CompareError(f"expected probabilities of shape (N, {len(labels)}), got "
                           f"{probs.shape}")
    to_target = label_mapping(labels, target)
    keep = np.array([to_target[i] >= 0 and (allowed is None or name in allowed)
                     for i, name in enumerate(labels)])
    if not keep.any():
        raise CompareError(f"no class of {list(labels)} is allowed ({allowed})")
    masked = np.where(keep[None, :], probs, -np.inf)
    return to_target[np.argmax(masked, axis=1)]


def score_protocols(true_names: Sequence[str],
                    outputs: dict[str, tuple[np.ndarray, Sequence[str]]],
                    target: Sequence[str], fer_classes: Sequence[str]) -> dict[str, Any]:
    """Both protocols for every model: ``all`` (every image, each model's own classes) and
    ``without_contempt`` (contempt images left out, predictions restricted to ``fer_classes``).

    ``true_names``: the canonical label of each image; ``outputs``: model -> (probs, labels).
    """
    from aue_edge.train.metrics import classification_report

    true = np.array([list(target).index(name) for name in true_names], dtype=np.int64)
    no_contempt = np.array([name in fer_classes for name in true_names])
    out: dict[str, Any] = {"all": {}, "without_contempt": {}}
    for model, (probs, labels) in outputs.items():
        out["all"][model] = classification_report(true, predict(probs, labels, target), target)
        restricted = predict(np.asarray(probs)[no_contempt], labels, target, fer_classes)
        out["without_contempt"][model] = classification_report(true[no_contempt], restricted,
                                                               target)
    return out


# ------------------------------------------------------------------------------ timings
def summarise_seconds(seconds: Sequence[float]) -> dict[str, float]:
    """Mean, median, 10th and 90th percentile in milliseconds, and the count. The mean is the
    cost per frame of a stream (our pipeline detects and infers on some frames only, so its
    median frame is a cheap one)."""
    if not seconds:
        raise CompareError("no timing was recorded")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "n": int(len(ms))}


def faces_summary(counts: Sequence[int]) -> dict[str, Any]:
    """How many faces a side found per frame: {faces: frames}."""
    values, freq = np.unique(np.asarray(counts, dtype=np.int64), return_counts=True)
    return {str(int(v)): int(f) for v, f in zip(values, freq)}


# ------------------------------------------------------------------------------ report
def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def markdown_report(report: dict[str, Any]) -> str:
    """The report's tables as markdown (also printed by the harness)."""
    lines = [f"# aue_edge vs fer {report['fer']['fer']}", "",
             f"Command: `{report['command']}`  ", f"Recorded {report['recorded_at_utc']}; "
             f"{report['machine_summary']}", ""]
    acc = report["accuracy"]
    models = list(next(iter(acc.values()))["all"])
    lines += ["## Accuracy, classifier only (identical face crops, no detection)", "",
              "| data set | images | " + " | ".join(models) + " |",
              "|---|---|" + "---|" * len(models)]
    for dataset, protocols in acc.items():
        for protocol, what in (("all", "all classes"), ("without_contempt", "without contempt")):
            row = protocols[protocol]
            n = next(iter(row.values()))["num_images"]
            cells = [f"{_pct(row[m]['accuracy'])} ({_pct(row[m]['mean_class_accuracy'])})"
                     for m in models]
            lines.append(f"| {dataset}, {what} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy (mean-class accuracy in brackets). " + report["protocol_note"], ""]
    speed = report["speed"]
    settings = report["ours"]["pipeline_config"]
    schedule = ", ".join(f"{key}: {json.dumps(settings.get(key))}" for key in
                         ("detect_interval_frames", "infer_interval_frames", "num_threads"))
    detection = ", ".join(f"{key}: {json.dumps(settings.get(key))}" for key in
                          ("detect_max_side_px", "detect_region_px", "region_interval_frames"))
    lines += ["## Speed, ms per frame (detection + classification): mean (median)", "",
              f"Our model: `{report['ours']['model_file']}`. Our pipeline: {schedule}, "
              f"{detection} (the 'default' rows; the '1' rows one thread).", "",
              "| frames | threads | aue_edge | fer | fer / aue_edge (means) | CPU ms per frame, "
              "aue_edge / fer (fer / aue_edge) | frames with N faces found (N: frames), "
              "aue_edge / fer | wake-up call before each pass (untimed), median ms, "
              "aue_edge / fer |", "|---|---|---|---|---|---|---|---|"]
    for key, what in FRAME_SETS.items():
        for mode, cell in speed["frames"][key].items():
            ours, fer = cell["ours"], cell["fer"]
            threads = (mode if mode != "paced" else
                       f"default, frames at {speed['paced_fps']:g} fps")
            lines.append(f"| {what} | {threads} "
                         f"| {ours['mean_ms']:.1f} ({ours['median_ms']:.1f}) "
                         f"| {fer['mean_ms']:.1f} ({fer['median_ms']:.1f}) "
                         f"| {cell['fer_over_ours']:.1f}x | {ours['cpu_mean_ms']:.1f} / "
                         f"{fer['cpu_mean_ms']:.1f} ({cell['fer_over_ours_cpu']:.1f}x) "
                         f"| {_faces_text(ours['faces'])} / {_faces_text(fer['faces'])} "
                         f"| {ours['wake_up_median_ms']:.1f} / {fer['wake_up_median_ms']:.1f} |")
    lines += ["", "## Speed, classifier only: median ms per face (batch 1, FER+ test crops)", "",
              "| threads | " + " | ".join(speed["classifier"][THREAD_MODES[0]]) + " |",
              "|---|" + "---|" * len(speed["classifier"][THREAD_MODES[0]])]
    for mode in THREAD_MODES:
        row = speed["classifier"][mode]
        lines.append(f"| {mode} | " + " | ".join(f"{v['median_ms']:.2f}" for v in row.values())
                     + " |")
    lines += ["", speed["note"], ""]
    return "\n".join(lines)


def _faces_text(faces: dict[str, int]) -> str:
    return ", ".join(f"{n}: {count}" for n, count in faces.items())


def write_report(out_dir: str | Path, report: dict[str, Any]) -> list[Path]:
    """``compare_fer.json`` and ``compare_fer.md`` in ``out_dir``, replacing earlier ones only
    when both were written (aue_edge/edge/outputs.py)."""
    from aue_edge.edge.outputs import prepare_output_dir, staged_outputs

    created = prepare_output_dir(out_dir, (REPORT_JSON, REPORT_MD))
    with staged_outputs(out_dir, created) as stage:
        (stage / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
        (stage / REPORT_MD).write_text(markdown_report(report) + "\n")
    return [Path(out_dir) / REPORT_JSON, Path(out_dir) / REPORT_MD]


def frame_table(times: dict[str, dict[str, dict[str, tuple[list, list, list, list]]]]
                ) -> dict[str, Any]:
    """{frame set: {threads: {side: timing summary, mean CPU ms, faces found, median wake-up
    ms; ratios}}} from the raw ``times[frame set][threads][side] = (seconds, CPU seconds,
    faces) per frame + wake-up seconds per pass``."""
    table: dict[str, Any] = {}
    for key, per_mode in times.items():
        table[key] = {}
        for mode, sides in per_mode.items():
            cell = {side: {**summarise_seconds(sec),
                           "cpu_mean_ms": summarise_seconds(cpu)["mean_ms"],
                           "faces": faces_summary(faces),
                           "wake_up_median_ms": summarise_seconds(wake)["median_ms"]}
                    for side, (sec, cpu, faces, wake) in sides.items()}
            cell["fer_over_ours"] = cell["fer"]["mean_ms"] / cell["ours"]["mean_ms"]
            cell["fer_over_ours_cpu"] = cell["fer"]["cpu_mean_ms"] / cell["ours"]["cpu_mean_ms"]
            table[key][mode] = cell
    return table


def build_report(argv: Sequence[str], fer_info: dict[str, Any], our_model: Path,
                 our_labels: Sequence[str], our_pipeline: dict[str, Any],
                 accuracy: dict[str, Any],
                 agreement: dict[str, float], frames: dict[str, Any],
                 classifier: dict[str, dict[str, list[float]]],
                 settings: dict[str, int]) -> dict[str, Any]:
    """The JSON report (``markdown_report`` renders its tables); ``our_pipeline`` is our
    pipeline's settings (``PipelineConfig`` as a dict)."""
    from aue_edge.benchmarks.machine import collect_machine_record, summary_lines

    machine = collect_machine_record()
    our_model = Path(our_model)
    return {
        "command": " ".join([".venv/bin/python", "tools/compare_fer/compare.py", *argv]),
        "recorded_at_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "machine_summary": summary_lines(machine)[0] + f"; load average at the end "
                                                       f"{machine['load_average_1_5_15min']}",
        "fer": fer_info,
        "ours": {"model_file": str(our_model.relative_to(REPO))
                 if our_model.is_relative_to(REPO) else str(our_model),
                 "emotion_labels": list(our_labels), "backend": "onnxruntime",
                 "pipeline_config": our_pipeline},
        "label_mapping": {"fer_to_ferplus": FER_TO_CANONICAL},
        "protocol_note": (
            "fer's 7 FER2013 classes map to FER+ names (angry->anger, happy->happiness, "
            "sad->sadness, the others by name); fer has no contempt. 'all classes': every "
            "image, each model picks among its own classes (ours 8, fer 7: contempt images "
            "always count as wrong for fer). 'without contempt': contempt images left out and "
            "both models pick among fer's 7 classes. CK+ has no neutral class: a 'neutral' "
            "answer counts as wrong. The shipped models saw all 648 CK+ faces in training "
            "(their AU codes, for the AU output), so our CK+ rows are not held-out numbers "
            "(README: those of subject-exclusive fold models). fer's model comes from "
            "oarriaga/face_classification, whose training script fits FER2013's Training rows "
            "and picks the checkpoint on its PublicTest + PrivateTest rows, where FER+ test's "
            "images come from."),
        "accuracy": accuracy,
        "fer_tflite_keras_agreement": agreement,
        "speed": {
            **settings, "frames": frames,
            "classifier": {m: {title: summarise_seconds(sec) for title, sec in row.items()}
                           for m, row in classifier.items()},
            "note": (
                "Threads '1': OpenCV one thread in both processes, ONNX Runtime intra-op 1 "
                "(ours, detector and classifier), TFLite interpreter 1 and TensorFlow 1 intra/1 "
                "inter-op (fer). 'default': each library's own default. fer: "
                "FER().detect_emotions(frame) (Haar cascade, its defaults) per frame; ours: "
                "Pipeline.process(frame) (YuNet, alignment, classifier with AU head, tracking, "
                "smoothing) per frame, frames in order, from no tracks. Each pass starts with "
                "one untimed wake-up call on its first frame, on both sides: the first call after "
                "a process sat idle while the other side worked costs more than a frame (its "
                "median is the last column). 'frames at N fps': default threads, each frame "
                "handed over at its time as from a camera at N fps (a late frame at once), "
                "only the call timed. Classifier only: one 48x48 FER+ crop per call, "
                "each side's own preparation included."),
        },
    }


# ------------------------------------------------------------------------------ fer side
class FerWorker:
    """``fer_worker.py`` in the fer venv, one thread setting, spoken to in JSON lines."""

    def __init__(self, python: Path, threads: str, log_dir: Path) -> None:
        self.threads = threads
        self.log_path = log_dir / f"fer_worker_threads_{threads}.log"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen([str(python), str(WORKER), "--threads", threads],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, text=True, env=env, cwd=REPO)
        self._reply("starting")

    def _reply(self, what: str) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise CompareError(f"the fer worker (threads {self.threads}) exited with code "
                               f"{self.process.returncode} while {what} (is --fer-python the "
                               f"fer venv's interpreter? 'make compare-venv' builds it); its "
                               f"output ended with:\n{self._log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CompareError(f"the fer worker (threads {self.threads}) failed while {what}: "
                               f"{reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def _log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        return self._reply(f"answering {op!r}")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()


# ------------------------------------------------------------------------------ our side
class OurSide:
    """The product through its public API: one Pipeline per thread setting, both from
    ``config`` (a ``PipelineConfig``; the '1' one at one ONNX Runtime thread)."""

    def __init__(self, config) -> None:
        import cv2

        from aue_edge import Pipeline

        self.cv2 = cv2
        self.default_cv2_threads = cv2.getNumThreads()
        self.pipelines = {"1": Pipeline(config.replace(num_threads=1)),
                          "default": Pipeline(config)}

    def threads(self, mode: str):
        """Set OpenCV's process-wide threads for ``mode``; returns that mode's pipeline."""
        self.cv2.setNumThreads(1 if mode == "1" else self.default_cv2_threads)
        return self.pipelines[mode]

    def classify(self, crops: np.ndarray, mode: str = "default") -> np.ndarray:
        from aue_edge.edge.preprocess import to_model_input

        pipeline = self.threads(mode)
        out = []
        for start in range(0, len(crops), 64):
            batch = crops[start:start + 64]
            outputs = pipeline.model.infer(to_model_input(batch, pipeline.card.input))
            out.append(pipeline.model.output(outputs, "emotion_probs", len(batch)))
        return np.concatenate(out)

    def time_classifier(self, crops: np.ndarray, mode: str) -> list[float]:
        seconds = []
        for crop in crops:
            start = time.perf_counter()
            self.classify(crop[None], mode)
            seconds.append(time.perf_counter() - start)
        return seconds

    def time_frames(self, frames: np.ndarray, repeats: int, fps: float, mode: str,
                    paced: bool = False
                    ) -> tuple[list[float], list[float], list[int], list[float]]:
        """``pipeline.process`` on each frame in order (a video: tracking and smoothing as a
        robot runs them), ``repeats`` times, starting fresh each time, after one wake-up call
        on the first frame (module docstring, "Speed"): wall-clock seconds, CPU seconds of this
        process (all threads) and faces found, per frame, and the wake-up call's seconds.
        ``fps`` stamps the frames; ``paced``: each frame is also handed over at its time
        (frame i at i / fps after the pass began), back to back otherwise."""
        pipeline = self.threads(mode)
        start = time.perf_counter()
        pipeline.process(frames[0], timestamp_s=0.0)
        wake = [time.perf_counter() - start]
        seconds, cpu_seconds, faces = [], [], []
        for _ in range(repeats):
            pipeline.reset()
            begin = time.perf_counter()
            for index, frame in enumerate(frames):
                if paced:
                    time.sleep(max(0.0, begin + index / fps - time.perf_counter()))
                start, cpu_start = time.perf_counter(), time.process_time()
                result = pipeline.process(frame, timestamp_s=index / fps)
                seconds.append(time.perf_counter() - start)
                cpu_seconds.append(time.process_time() - cpu_start)
                faces.append(len(result.faces))
        return seconds, cpu_seconds, faces, wake

    def close(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.close()


# ------------------------------------------------------------------------------ inputs
def scene_frames(pipeline) -> dict[str, np.ndarray]:
    """The benchmark scenes, checked with the pipeline's detector to hold 1 and 5 faces."""
    from aue_edge.benchmarks import scenes

    built = scenes.benchmark_frames(scenes.astronaut_bgr(), pipeline.detector)
    return {"scene_1face": built[1][None], "scene_5faces": built[5][None]}


def data_root(arg: str | None, env: str, name: str) -> Path:
    root = Path(arg or os.environ.get(env, REPO.parent / "shared" / "data" / name))
    if not root.is_dir():
        raise CompareError(f"{name} not found at {root}; pass --{name}-root or set {env}")
    return root


# ------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/compare_fer", help="report folder")
    parser.add_argument("--fer-python", default=str(DEFAULT_FER_PYTHON),
                        help="the fer venv's interpreter (make compare-venv builds it)")
    parser.add_argument("--model-dir", default=None, help="our model folder (default: shipped)")
    parser.add_argument("--pipeline-config", default=None, metavar="YAML",
                        help="our pipeline's settings (config/pipeline.yaml layout; default: "
                             "the built-in defaults); its num_threads applies to the "
                             "'default' rows, the '1' rows run one thread")
    parser.add_argument("--ferplus-root", default=None)
    parser.add_argument("--ckplus-root", default=None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--scene-repeats", type=int, default=10,
                        help="frames per scene per round (a static camera)")
    parser.add_argument("--classifier-faces", type=int, default=50,
                        help="FER+ test crops timed one by one per round")
    parser.add_argument("--paced-fps", type=float, default=30.0,
                        help="also time the frames handed over at this rate, as a camera "
                             "delivers them (default threads); 0: back to back only")
    return parser


def main(argv: list[str] | None = None) -> int:
    from aue_edge.core.errors import AueError

    args = build_parser().parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except (CompareError, AueError) as exc:
        print(f"compare_fer: {exc}", file=sys.stderr)
        return 2


def measure_accuracy(ours: OurSide, fer: FerWorker, crops: dict[str, np.ndarray],
                     truth: dict[str, list[str]], tmp: Path
                     ) -> tuple[dict[str, Any], dict[str, float]]:
    """Both protocols on every data set for our model and both fer models; and how often fer's
    two model files agree. ``crops[name]`` is also saved as ``tmp/<name>.npy`` for fer."""
    from tqdm import tqdm

    from aue_edge.data.knowledge import FER2013_LABELS, FERPLUS_LABELS

    fer_labels = fer_canonical_labels(fer.request("info")["labels"])
    our_labels = ours.pipelines["default"].emotion_labels
    accuracy, agreement = {}, {}
    for name, images in tqdm(crops.items(), desc="accuracy", unit="data set"):
        outputs = {OURS: (ours.classify(images), our_labels)}
        for variant, title in FER_VARIANTS.items():
            path = tmp / f"{name}_{variant}.npy"
            fer.request("classify", variant=variant, crops=str(tmp / f"{name}.npy"),
                        out=str(path))
            outputs[title] = (np.load(path), fer_labels)
        accuracy[name] = score_protocols(truth[name], outputs, FERPLUS_LABELS, FER2013_LABELS)
        tflite, keras = (predict(outputs[title][0], fer_labels, FERPLUS_LABELS)
                         for title in FER_VARIANTS.values())
        agreement[name] = float(np.mean(tflite == keras))
    return accuracy, agreement


def measure_speed(ours: OurSide, workers: dict[str, FerWorker], frames: dict[str, np.ndarray],
                  clip_fps: float, timed_crops: np.ndarray, tmp: Path, rounds: int,
                  scene_repeats: int, paced_fps: float = 0.0
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw timings ``(times[frame set][row][side] = (seconds, CPU seconds, faces, wake-up
    seconds), classifier[threads][model] = seconds)`` for the rows of :data:`FRAME_ROWS`
    ('paced': frames handed over at ``paced_fps``, left out at 0); rounds interleave the
    sides, their order alternating. ``frames`` is also ``tmp/frames.npz`` and
    ``timed_crops`` ``tmp/timed_crops.npy`` for fer."""
    from tqdm import tqdm

    frames_file, crops_file = str(tmp / "frames.npz"), str(tmp / "timed_crops.npy")
    rows = [row for row in FRAME_ROWS if row != "paced" or paced_fps > 0]
    times = {key: {row: {"ours": ([], [], [], []), "fer": ([], [], [], [])} for row in rows}
             for key in frames}
    classifier = {m: {OURS: [], **{title: [] for title in FER_VARIANTS.values()}}
                  for m in THREAD_MODES}

    def run_frames(side: str, row: str, key: str, repeats: int
                   ) -> tuple[list, list, list, list]:
        mode, paced = FRAME_ROWS[row]
        if side == "ours":
            fps = paced_fps if paced else clip_fps if key == "clip" else SCENE_FPS
            return ours.time_frames(np.concatenate([frames[key]] * repeats), 1, fps, mode,
                                    paced)
        reply = workers[mode].request("time_frames", frames=frames_file, key=key,
                                      repeats=repeats, paced_fps=paced_fps if paced else None)
        return reply["seconds"], reply["cpu_seconds"], reply["faces"], reply["wake_seconds"]

    for mode in THREAD_MODES:  # first calls (allocations, caches) are not timed
        for key in frames:
            for side in ("ours", "fer"):
                run_frames(side, mode, key, 1)
        ours.time_classifier(timed_crops, mode)
        for variant in FER_VARIANTS:
            workers[mode].request("time_classifier", variant=variant, crops=crops_file)
    for round_index in tqdm(range(rounds), desc="timing rounds", unit="round"):
        for row in rows:
            mode = FRAME_ROWS[row][0]
            for side in ("fer", "ours") if round_index % 2 == 0 else ("ours", "fer"):
                for key in frames:
                    for kept, new in zip(times[key][row][side], run_frames(
                            side, row, key, 1 if key == "clip" else scene_repeats)):
                        kept.extend(new)
                if row not in THREAD_MODES:
                    continue   # the classifier alone is timed once per thread setting
                if side == "ours":
                    classifier[mode][OURS] += ours.time_classifier(timed_crops, mode)
                    continue
                for variant, title in FER_VARIANTS.items():
                    classifier[mode][title] += workers[mode].request(
                        "time_classifier", variant=variant, crops=crops_file)["seconds"]
    return times, classifier


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from aue_edge import PipelineConfig
    from aue_edge.edge.outputs import prepare_output_dir, remove_if_empty
    from aue_edge.core.paths import DEMO_CLIP
    from aue_edge.edge.frames import read_video
    from aue_edge.data import CkPlus, FerPlus
    from aue_edge.data.knowledge import FERPLUS_LABELS

    fer_python = Path(args.fer_python)
    if not fer_python.is_file():
        raise CompareError(f"{fer_python} does not exist: build the fer venv with "
                           f"'make compare-venv' (or pass --fer-python)")
    for name in ("rounds", "scene_repeats", "classifier_faces"):
        if getattr(args, name) < 1:
            raise CompareError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.paced_fps >= 0:
        raise CompareError(f"--paced-fps must be 0 (no paced rows) or a rate in frames per "
                           f"second, got {args.paced_fps}")
    if prepare_output_dir(args.out, (REPORT_JSON, REPORT_MD)):
        remove_if_empty(args.out)  # checked writable now; written only at the end
    config = (PipelineConfig.from_yaml(args.pipeline_config) if args.pipeline_config
              else PipelineConfig())
    if args.model_dir is not None:
        config = config.replace(model_dir=args.model_dir)
    ferplus = FerPlus(data_root(args.ferplus_root, "AUE_FERPLUS_ROOT", "ferplus"), "test")
    ckplus = CkPlus(data_root(args.ckplus_root, "AUE_CKPLUS_ROOT", "ckplus"), "all")
    fer_images, fer_targets, _, _ = ferplus.load_arrays()
    ck_images, ck_targets, _, _ = ckplus.load_arrays()
    crops = {"FER+ test": fer_images, "CK+": ck_images}
    truth = {"FER+ test": [FERPLUS_LABELS[i] for i in fer_targets],
             "CK+": [ckplus.labels[i] for i in ck_targets]}
    timed_crops = fer_images[:args.classifier_faces]
    clip_frames, clip_fps = read_video(DEMO_CLIP)
    clip = np.stack(clip_frames)

    workers: dict[str, FerWorker] = {}
    ours = None
    with tempfile.TemporaryDirectory(prefix="compare_fer_") as tmp:
        tmp = Path(tmp)
        try:
            print("starting the fer workers and our pipelines ...", file=sys.stderr)
            for mode in THREAD_MODES:
                workers[mode] = FerWorker(fer_python, mode, tmp)
            ours = OurSide(config)
            frames = {"clip": clip, **scene_frames(ours.pipelines["default"])}
            np.savez(tmp / "frames.npz", **frames)
            for name, images in crops.items():
                np.save(tmp / f"{name}.npy", images)
            np.save(tmp / "timed_crops.npy", timed_crops)
            accuracy, agreement = measure_accuracy(ours, workers["default"], crops, truth, tmp)
            times, classifier = measure_speed(ours, workers, frames, clip_fps, timed_crops, tmp,
                                              args.rounds, args.scene_repeats, args.paced_fps)
            info = workers["default"].request("info")
        finally:
            for worker in workers.values():
                worker.close()
            if ours is not None:
                ours.close()

    report = build_report(
        argv, info, ours.pipelines["default"].model.path, ours.pipelines["default"].emotion_labels,
        dataclasses.asdict(config), accuracy, agreement, frame_table(times), classifier,
        {"rounds": args.rounds, "scene_repeats": args.scene_repeats,
         "classifier_faces": int(len(timed_crops)), "paced_fps": args.paced_fps})
    paths = write_report(args.out, report)
    print(markdown_report(report))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
