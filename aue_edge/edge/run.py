"""``aue run``: the per-frame pipeline on an image, a folder of images, a video, a recorded ROS 2
bag or a webcam.

Edge stage, the command-line face of :class:`aue_edge.edge.pipeline.Pipeline`. Writes to
``--out DIR``:

- ``results.jsonl``: one JSON object per frame (frame index, time stamp, source, size, faces
  with box, ID, landmarks, emotion label + probabilities, AU probabilities + active AUs,
  per-stage timings in ms); for a bag also the message's ``header_stamp`` (sec, nanosec),
  ``frame_id`` and ``bag_time_ns`` (when the recorder received it);
- annotated output: ``annotated.mp4`` (mp4v) for a video or webcam, ``annotated/NNNNN_name.png``
  per image for images (``--no-annotate`` skips it);
- ``summary.json``: counts (frames, faces, skipped files and why) and latency per stage;
- ``latency.png``: the time of each stage per frame, stacked (needs matplotlib, the ``plots``
  extra: without it the run skips it with a note in summary.json);
- with ``--out-bag PATH``: the results as aue_msgs messages in a new MCAP bag
  (:mod:`aue_edge.ros_nodes.result_bag`; needs rclpy and aue_msgs).

Bad input never stops a stream: an unreadable image in a folder, a damaged video frame, a bag
message that cannot be decoded or an invalid frame is warned about, counted and skipped; a
truncated video or bag is read as far as it goes and says so; a missing or corrupt model
stops before the first frame with an error saying what to do.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from aue_edge.core.errors import (ConfigError, InferenceError, InputImageError,
                                  PlotsUnavailableError)
from aue_edge.edge.bags import Recording, is_bag
from aue_edge.edge.frames import read_image_file, validate_frame
from aue_edge.edge.outputs import prepare_output_dir, remove_if_empty
from aue_edge.core.plotting import pyplot, save_figure

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_FPS = 30.0
# A damaged stretch longer than this ends a video (it is more likely a cut-off file).
MAX_CONSECUTIVE_BAD_FRAMES = 30
OUTPUT_FILES = ("results.jsonl", "summary.json", "latency.png", "annotated.mp4")


@dataclass
class RunStats:
    """What a run did; written to summary.json. Every skipped input is counted here."""

    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    max_faces_in_frame: int = 0
    unreadable: list[str] = field(default_factory=list)
    invalid_frames: list[str] = field(default_factory=list)
    inference_errors: list[str] = field(default_factory=list)   # non-finite model outputs
    non_image_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    emotions: dict[str, int] = field(default_factory=dict)      # label -> faces
    au_active: dict[str, int] = field(default_factory=dict)     # AU -> faces it was active on

    def add(self, result, au_names: tuple[str, ...] = ()) -> None:
        self.frames += 1
        n = len(result.faces)
        self.faces += n
        self.frames_with_faces += int(n > 0)
        self.max_faces_in_frame = max(self.max_faces_in_frame, n)
        for face in result.faces:
            if face.emotion_label is not None:
                self.emotions[face.emotion_label] = self.emotions.get(face.emotion_label, 0) + 1
            if face.au_active is not None:
                for name, on in zip(au_names, face.au_active):
                    self.au_active[name] = self.au_active.get(name, 0) + int(on)
        for stage, ms in result.timings_ms.items():
            self.timings_ms.setdefault(stage, []).append(float(ms))

    def latency_table(self) -> dict[str, dict[str, float]]:
        table = {}
        for stage, values in self.timings_ms.items():
            arr = np.asarray(values)
            table[stage] = {"mean_ms": round(float(arr.mean()), 3),
                            "p50_ms": round(float(np.percentile(arr, 50)), 3),
                            "p95_ms": round(float(np.percentile(arr, 95)), 3)}
        return table

    def to_json(self) -> dict:
        return {
            "frames": self.frames, "frames_with_faces": self.frames_with_faces,
            "faces": self.faces, "max_faces_in_frame": self.max_faces_in_frame,
            "skipped": {"unreadable": self.unreadable,
                        "invalid_frames": self.invalid_frames,
                        "inference_errors": self.inference_errors,
                        "non_image_files": self.non_image_files},
            "notes": self.notes,
            "emotions": self.emotions,
            "au_active_rate": {name: round(count / max(1, self.faces), 4)
                               for name, count in self.au_active.items()},
            "latency": self.latency_table(),
        }


@dataclass(frozen=True)
class Frame:
    image: np.ndarray | None   # None: unreadable (name says which, error why when known)
    name: str
    index: int                 # position in the source (video frame number, image order)
    timestamp_s: float
    error: str | None = None
    fields: dict = field(default_factory=dict)   # source-specific fields of its results line


# ---------------------------------------------------------------------------------- sources
def parse_source(source: str) -> tuple[str, object]:
    """("webcam", index) | ("images", [paths]) | ("video", path) | ("bag", path) for a
    --source value."""
    if source == "webcam" or source.startswith("webcam:"):
        index_text = source.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ConfigError(f"--source {source!r}: expected webcam or webcam:N with N a camera "
                              f"index (0, 1, ...)")
        return "webcam", int(index_text)
    path = Path(source)
    if path.exists() and is_bag(path):
        return "bag", path
    if path.is_dir():
        return "images", sorted(p for p in path.iterdir() if p.is_file())
    if not path.is_file():
        raise InputImageError(f"--source {source}: no such file or folder (expected an image, a "
                              f"video, a folder of images, a ROS 2 bag, or webcam[:N])")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video", path
    return "images", [path]


def iter_images(paths: list[Path], fps: float, stats: RunStats) -> Iterator[Frame]:
    index = 0
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            stats.non_image_files.append(path.name)
            continue
        # IMREAD_UNCHANGED keeps 16-bit and 4-channel images as they are: validate_frame
        # converts them, with the same rules as for camera frames.
        image = read_image_file(path, cv2.IMREAD_UNCHANGED)
        yield Frame(image, path.name, index, index / fps)
        index += 1


def iter_capture(capture: cv2.VideoCapture, name: str, fps: float, max_frames: int | None,
                 expected_frames: int = 0) -> Iterator[Frame]:
    """Frames of a video or camera. A frame the decoder cannot read inside a video of
    ``expected_frames`` yields ``image=None`` (counted and skipped by the caller): OpenCV's
    next read resumes after a damaged frame, so the stream goes on."""
    index = failures = 0
    while max_frames is None or index < max_frames:
        ok, image = capture.read()
        if not ok:
            failures += 1
            if index < expected_frames and failures <= MAX_CONSECUTIVE_BAD_FRAMES:
                yield Frame(None, f"{name}#{index}", index, index / fps)
                index += 1
                continue
            return
        failures = 0
        yield Frame(image, f"{name}#{index}", index, index / fps)
        index += 1


def iter_bag(bag: Recording, topic) -> Iterator[Frame]:
    """The image messages of ``topic``, time stamped with their header stamps."""
    for message in bag.frames(topic):
        fields = {"bag_time_ns": message.bag_time_ns}
        if message.stamp is not None:
            fields = {"header_stamp": {"sec": message.stamp[0], "nanosec": message.stamp[1]},
                      "frame_id": message.frame_id, **fields}
        yield Frame(message.image, f"{topic.name}#{message.index}", message.index,
                    message.time_s, message.error, fields)


def open_bag(path: Path, topic: str | None) -> tuple[Recording, object]:
    """The bag at ``path`` and its image topic (``topic``, or its only one); ConfigError with
    the list of image topics when that is not possible."""
    bag = Recording(path)
    try:
        chosen = bag.select_topic(topic)
    except BaseException:
        bag.close()
        raise
    return bag, chosen


def open_capture(kind: str, target) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(target) if kind == "webcam" else str(target))
    if not capture.isOpened():
        if kind == "webcam":
            what, check = f"camera {target}", "the device index and permissions"
        else:
            what, check = f"video {target}", "the file (codec, truncated?)"
        raise InputImageError(f"could not open {what} with OpenCV; check {check}")
    return capture


# ---------------------------------------------------------------------------------- run
def run_source(pipeline, source: str, out_dir: str | Path, *, annotate_output: bool = True,
               max_frames: int | None = None, fps: float | None = None, sequence: bool = False,
               progress: bool = True, topic: str | None = None,
               out_bag: str | Path | None = None) -> RunStats:
    """Run ``pipeline`` over ``source`` (see :func:`parse_source`), writing into ``out_dir``.
    ``topic``: the image topic of a bag source (default: its only image topic); ``out_bag``:
    also write the results into a new bag there."""
    from tqdm import tqdm

    from aue_edge.edge.annotate import annotate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, target = parse_source(source)
    stats = RunStats()
    capture = writer = bag = None
    total = None
    if kind == "bag":
        bag, chosen = open_bag(target, topic)
        how = "" if topic else ", its only image topic"
        print(f"aue run: reading {chosen.describe()} from {target}{how}", file=sys.stderr)
        frames = iter_bag(bag, chosen)
        total = min(chosen.count, max_frames) if chosen.count and max_frames else chosen.count
        fps = fps or DEFAULT_FPS     # only the annotated video's rate: frames keep their stamps
        independent = False
    elif kind == "images":
        frames = iter_images(target, fps or DEFAULT_FPS, stats)
        total = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in target)
        if max_frames is not None:
            total = min(total, max_frames)
        if total == 0:
            raise InputImageError(f"--source {source}: no image files "
                                  f"({', '.join(IMAGE_SUFFIXES)}) found")
        # Unrelated photos must not share tracks or smoothing; --sequence treats them as frames.
        independent = not sequence
        if annotate_output:
            (out_dir / "annotated").mkdir(exist_ok=True)
    else:
        capture = open_capture(kind, target)
        video_fps = fps or capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        fps = video_fps if video_fps > 0 else DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
        frames = iter_capture(capture, Path(str(target)).name if kind == "video"
                              else f"webcam{target}", fps, max_frames, max(count, 0))
        total = min(count, max_frames) if count > 0 and max_frames else (count or max_frames)
        independent = False
    n_read = 0
    stopped_by = None
    results_path = out_dir / "results.jsonl"
    labels, au_names = pipeline.emotion_labels, pipeline.au_names
    result_bag = None
    bar = tqdm(total=total, unit="frame", desc="aue run", disable=not progress)
    failed = True
    try:
        if out_bag is not None:
            from aue_edge.ros_nodes.result_bag import ResultBag

            result_bag = ResultBag(out_bag, labels, au_names, pipeline.au_thresholds)
        with results_path.open("w", encoding="utf-8") as results_file:
            for n_seen, frame in enumerate(frames):
                if max_frames is not None and n_seen >= max_frames:
                    break
                if _STOP.requested:     # a signal arrived: stop between frames, none half-done
                    raise KeyboardInterrupt(_STOP.requested)
                bar.update(1)
                n_read += 1
                if frame.image is None:
                    stats.unreadable.append(frame.name)
                    what = "an image OpenCV can decode" if kind == "images" else "decodable"
                    tqdm.write(f"warning: {frame.name}: unreadable ({frame.error or 'not ' + what}"
                               f"); skipped", file=sys.stderr)
                    continue
                if independent:
                    pipeline.reset()
                try:
                    result = pipeline.process(frame.image, timestamp_s=frame.timestamp_s)
                except (InputImageError, InferenceError) as exc:
                    skipped = (stats.invalid_frames if isinstance(exc, InputImageError)
                               else stats.inference_errors)
                    skipped.append(frame.name)
                    tqdm.write(f"warning: {frame.name}: {exc}; skipped", file=sys.stderr)
                    continue
                stats.add(result, au_names)
                line = {"frame_index": frame.index,
                        "timestamp_s": round(result.timestamp_s, 6), "source": frame.name,
                        "width": result.width, "height": result.height,
                        **frame.fields,
                        "faces": [f.to_json(labels, au_names) for f in result.faces],
                        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
                results_file.write(json.dumps(line) + "\n")
                if result_bag is not None:
                    _write_result_bag(result_bag, result, frame)
                if not annotate_output:
                    continue
                drawn = annotate(validate_frame(frame.image), result, au_names,
                                 pipeline.au_thresholds)
                if kind == "images":
                    name = f"{frame.index:05d}_{Path(frame.name).stem}.png"
                    cv2.imwrite(str(out_dir / "annotated" / name), drawn)
                else:
                    if writer is None:
                        writer = _open_writer(out_dir / "annotated.mp4", fps, drawn.shape)
                    if drawn.shape[:2] != writer.size_hw:
                        drawn = cv2.resize(drawn, (writer.size_hw[1], writer.size_hw[0]))
                    writer.video.write(drawn)
        failed = False
    except KeyboardInterrupt as exc:
        # Ctrl-C on a webcam run is the normal way to stop (and SIGTERM, see run_main): keep
        # what was written, close the video so it stays playable, write the summary. The first
        # signal ends the run after the frame in progress; a second one interrupts at once.
        stopped_by = str(exc) or "SIGINT"
        stats.notes.append(f"stopped by {stopped_by} after {n_read} frames")
        tqdm.write(f"{stopped_by}: stopping and writing the summary", file=sys.stderr)
        failed = False
    finally:
        bar.close()
        if capture is not None:
            capture.release()
        if writer is not None:
            writer.video.release()
        if bag is not None:
            bag.close()
        if result_bag is not None:
            result_bag.close(keep=not failed)
    if result_bag is not None:
        print(f"aue run: wrote {', '.join(f'{n} {t}' for t, n in result_bag.counts.items())} "
              f"messages to {out_bag}", file=sys.stderr)
    if bag is not None:
        for note in bag.notes:
            stats.notes.append(note)
            print(f"warning: {note}", file=sys.stderr)
    if kind in ("video", "bag") and total and n_read < total and stopped_by is None:
        # A long damaged stretch ends the read loop like the end of the file (or the container
        # overstates its frame count); say so instead of pretending the video was shorter.
        stats.notes.append(f"the {kind} ended after {n_read} of {total} frames (truncated file "
                           f"or a frame the decoder could not read)")
        print(f"warning: {stats.notes[-1]}", file=sys.stderr)
    if stats.frames:
        try:
            plot_latency(stats, out_dir / "latency.png")
        except PlotsUnavailableError as exc:   # matplotlib is optional on a robot
            stats.notes.append(f"latency.png not written: {exc}")
            print(f"warning: {stats.notes[-1]}", file=sys.stderr)
    summary = {"source": source, **({"topic": chosen.name} if bag is not None else {}),
               "model": str(pipeline.model.path),
               "backend": pipeline.config.backend, **stats.to_json()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return stats


def _write_result_bag(result_bag, result, frame: Frame) -> None:
    """The frame's results into ``--out-bag``, with the source message's header (a bag) or
    the frame's time stamp and frame_id "camera"."""
    stamp = frame.fields.get("header_stamp")
    if stamp is not None:
        sec, nanosec = stamp["sec"], stamp["nanosec"]
    else:
        stamp_ns = max(0, round(result.timestamp_s * 1e9))
        sec, nanosec = divmod(stamp_ns, 10**9)
    result_bag.write(result, (sec, nanosec), frame.fields.get("frame_id", "camera"),
                     frame.fields.get("bag_time_ns", sec * 10**9 + nanosec))


def plot_latency(stats: RunStats, path: Path) -> Path:
    """Per-frame time of each stage, stacked (where does the frame time go, and when)."""
    plt = pyplot()

    stages = [s for s in ("detect", "align", "infer", "postprocess") if s in stats.timings_ms]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    frames = np.arange(stats.frames)
    ax.stackplot(frames, *[stats.timings_ms[s] for s in stages], labels=stages, alpha=0.85)
    table = stats.latency_table()
    ax.set_title(f"aue run: {stats.frames} frames, total per frame p50 "
                 f"{table['total']['p50_ms']:.1f} ms, p95 {table['total']['p95_ms']:.1f} ms")
    ax.set_xlabel("processed frame")
    ax.set_ylabel("ms")
    ax.legend(loc="upper right", fontsize=8)
    ax.margins(x=0)
    return save_figure(fig, path)


@dataclass
class _Writer:
    video: cv2.VideoWriter
    size_hw: tuple[int, int]


def _open_writer(path: Path, fps: float, shape: tuple[int, ...]) -> _Writer:
    height, width = shape[:2]
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                            (width, height))
    if not video.isOpened():
        raise ConfigError(f"OpenCV could not open a video writer for {path} (mp4v, {width}x"
                          f"{height}); use --no-annotate or an image-folder source")
    return _Writer(video, (height, width))


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue run", description="Run face detection, emotion and AU recognition on images, "
        "a video, a ROS 2 bag or a webcam; write results.jsonl, annotated output and "
        "summary.json.")
    parser.add_argument("--source", required=True,
                        help="an image, a folder of images, a video file, a ROS 2 bag (.mcap, "
                             ".db3 or bag folder), or webcam[:N]")
    parser.add_argument("--topic", help="bag sources: the sensor_msgs/Image or CompressedImage "
                                        "topic to read (default: the bag's only image topic)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--config", help="pipeline YAML (default: built-in defaults, see "
                                         "config/pipeline.yaml)")
    parser.add_argument("--model", help="model folder (model.int8.ort.onnx / model.int8.onnx / "
                                        "model.onnx / *.engine + cards) or a shipped model's "
                                        "name (aue_crl, aue_student); default: the shipped "
                                        "aue_edge/edge/models/aue_crl")
    parser.add_argument("--model-file", help="file name in the model folder (default: auto)")
    parser.add_argument("--backend", choices=("ort", "trt"), help="inference backend")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads")
    parser.add_argument("--detector-backend", choices=("ort", "trt"),
                        help="face detector backend (trt: a YuNet engine from 'aue build "
                             "--detector', given with --detector-model)")
    parser.add_argument("--detector-model", help="face detector file (.onnx, or .engine)")
    parser.add_argument("--au-model", help="folder of an exported AU detector replacing the AU "
                                           "output")
    parser.add_argument("--au-threshold", type=float, help="AU active threshold (default: card)")
    parser.add_argument("--smoothing", choices=("none", "ema", "one_euro"))
    parser.add_argument("--max-faces", type=int, help="at most this many faces per frame")
    parser.add_argument("--score-threshold", type=float, help="face detector threshold")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--fps", type=float, help="time base in frames per second (default: "
                                                  "the video's own rate; 30 for images and "
                                                  "sources without one)")
    parser.add_argument("--detect-max-side-px", type=int,
                        help="downscale frames to this longer side for face detection (default "
                             "640); smaller is faster, but faces shrink by the same factor")
    parser.add_argument("--detect-interval", type=int, dest="detect_interval_frames",
                        help="whole-frame face detection at least every N frames, tracked "
                             "faces only in between (default 10; 1: every frame)")
    parser.add_argument("--infer-interval", type=int, dest="infer_interval_frames",
                        help="run the model on each tracked face every K frames (default 3; "
                             "1: every frame)")
    parser.add_argument("--sequence", action="store_true",
                        help="treat a folder of images as consecutive video frames (tracking "
                             "and smoothing across them); default: each image on its own")
    parser.add_argument("--out-bag", help="also write the results as aue_msgs messages (/faces, "
                                          "/emotion, /action_units) into a new MCAP bag at this "
                                          "path (needs rclpy and aue_msgs)")
    parser.add_argument("--no-annotate", action="store_true", help="write results only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace):
    from aue_edge.edge.pipeline import PipelineConfig

    overrides = {key: value for key, value in (
        ("model_dir", args.model), ("model_file", args.model_file), ("backend", args.backend),
        ("num_threads", args.threads), ("au_model_dir", args.au_model),
        ("au_threshold", args.au_threshold), ("smoothing", args.smoothing),
        ("max_faces", args.max_faces), ("score_threshold", args.score_threshold),
        ("detect_max_side_px", args.detect_max_side_px),
        ("detect_interval_frames", args.detect_interval_frames),
        ("infer_interval_frames", args.infer_interval_frames),
        ("detector_backend", args.detector_backend), ("detector_model", args.detector_model),
    ) if value is not None}
    if args.config:
        return PipelineConfig.from_yaml(args.config, **overrides)
    return PipelineConfig().replace(**overrides)


def run_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")

    config = config_from_args(args)
    kind, target = parse_source(args.source)  # bad --source or --out fails before the model loads
    if kind == "bag":
        open_bag(target, args.topic)[0].close()
    elif args.topic is not None:
        raise ConfigError(f"--topic is for ROS 2 bag sources (.mcap, .db3, bag folder); "
                          f"--source {args.source} is not a bag")
    if args.out_bag is not None:
        from aue_edge.ros_nodes.result_bag import check_out_bag

        check_out_bag(Path(args.out_bag))
    created = prepare_output_dir(args.out, OUTPUT_FILES)
    # SIGTERM (docker stop, systemd) stops a run like Ctrl-C: summary written, video closed.
    _STOP.requested = None
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, config)
    except BaseException:
        if created:
            remove_if_empty(args.out)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StopRequest:
    """The first SIGINT/SIGTERM of a run: the frame loop stops before its next frame."""

    requested: str | None = None


_STOP = _StopRequest()


def _request_stop(signum, _frame) -> None:
    name = signal.Signals(signum).name
    if _STOP.requested:              # asked twice: stop now
        raise KeyboardInterrupt(name)
    _STOP.requested = name


def _run(args: argparse.Namespace, config) -> int:
    from aue_edge.edge.pipeline import Pipeline

    started = time.perf_counter()
    with Pipeline(config) as pipeline:
        print(f"aue run: model {pipeline.model.path} ({config.backend}), "
              f"{len(pipeline.emotion_labels)} emotions, {len(pipeline.au_names)} AUs",
              file=sys.stderr)
        stats = run_source(pipeline, args.source, args.out, annotate_output=not args.no_annotate,
                           max_frames=args.max_frames, fps=args.fps, sequence=args.sequence,
                           progress=not args.no_progress, topic=args.topic,
                           out_bag=args.out_bag)
    elapsed = time.perf_counter() - started
    skipped = (len(stats.unreadable) + len(stats.invalid_frames)
               + len(stats.inference_errors) + len(stats.non_image_files))
    total = stats.latency_table().get("total")
    per_frame = f"per frame {total['mean_ms']:.1f} ms mean" if total else "no frame processed"
    print(f"aue run: {stats.frames} frames, {stats.faces} faces in {elapsed:.1f} s; "
          f"{per_frame}; skipped {skipped} "
          f"({len(stats.unreadable)} unreadable, {len(stats.invalid_frames)} invalid "
          f"frames, {len(stats.inference_errors)} inference errors, "
          f"{len(stats.non_image_files)} non-image files); results in {args.out}",
          file=sys.stderr)
    if stats.faces:
        top = sorted(stats.emotions.items(), key=lambda kv: -kv[1])
        active = sorted(((n, c / stats.faces) for n, c in stats.au_active.items() if c),
                        key=lambda kv: -kv[1])
        print("aue run: emotions " + ", ".join(f"{k} {v}" for k, v in top)
              + "; AUs active on " + (", ".join(f"{n} {r:.0%}" for n, r in active[:8])
                                      or "no face") + " of the faces", file=sys.stderr)
    return 0 if stats.frames > 0 else 1
