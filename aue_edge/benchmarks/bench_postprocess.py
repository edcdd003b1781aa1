"""Benchmark group "postprocess": what the robot does with the model's outputs.

IoU tracking of the detected boxes, temporal smoothing of the per-face probabilities (EMA and
one-euro), and building the messages: the JSON line ``aue run`` writes and the ``aue_msgs``
messages the ROS 2 perception node publishes (/faces, /emotion, /action_units). The inputs
are real: the detections and pipeline results of the 1- and 5-face frames.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

GROUP = "postprocess"
# Faces move a little between frames; the tracker sees the boxes shifted by up to this much.
JITTER_PX = 3.0


@pytest.fixture(scope="session")
def frame_results(frames, bench_config):
    """{faces: FrameResult} from the default pipeline on the real frames."""
    from aue_edge.benchmarks.cases import model_dirs
    from aue_edge.edge.pipeline import Pipeline

    with Pipeline.from_model_dir(model_dirs(bench_config)[0],
                                 num_threads=bench_config.num_threads) as pipeline:
        results = {}
        for i, (n, frame) in enumerate(frames.items()):
            pipeline.reset()  # unrelated frames: the 5-face frame is not the 1-face one moved
            results[n] = pipeline.process(frame, timestamp_s=float(i))
        labels, au_names, threshold = (pipeline.emotion_labels, pipeline.au_names,
                                       pipeline.au_thresholds)
    return results, labels, au_names, threshold


def bench_tracking(measure, detections, faces):
    from aue_edge.edge.tracking import IouTracker

    rng = np.random.default_rng(0)
    boxes = detections[faces].boxes_xyxy
    sequence = [boxes + rng.uniform(-JITTER_PX, JITTER_PX, boxes.shape).astype(np.float32)
                for _ in range(16)]
    tracker = IouTracker()
    tracker.update(boxes)  # the faces are already tracked, as on a live camera
    step = itertools.count()
    update = measure(lambda: tracker.update(sequence[next(step) % len(sequence)]), group=GROUP,
                     items_per_call=faces, item_unit="faces", faces=faces,
                     assignment="greedy")
    assert len(update.track_ids) == faces
    assert not update.new_ids, "jittered boxes of the same faces must keep their track IDs"


@pytest.mark.parametrize("method", ["ema", "one_euro"])
def bench_smoothing(measure, frame_results, faces, method):
    from aue_edge.edge.smoothing import TrackSmoother

    results = frame_results[0][faces]
    smoother = TrackSmoother(method)
    clock = itertools.count()

    def smooth_frame():
        t = next(clock) / 30.0
        return [(smoother.smooth(f.track_id, "emotion", f.emotion_probs, t),
                 smoother.smooth(f.track_id, "au", f.au_probs, t)) for f in results.faces]

    smoothed = measure(smooth_frame, group=GROUP, items_per_call=faces, item_unit="faces",
                       faces=faces, method=method)
    assert len(smoothed) == faces


def bench_message_json(measure, frame_results, faces):
    results, labels, au_names, _threshold = frame_results
    result = results[faces]

    def to_json_line():
        return json.dumps({"frame": result.frame_index, "t": result.timestamp_s,
                           "faces": [f.to_json(labels, au_names) for f in result.faces]})

    line = measure(to_json_line, group=GROUP, items_per_call=faces, item_unit="faces",
                   faces=faces)
    assert len(json.loads(line)["faces"]) == faces


def bench_message_ros(measure, frame_results, faces):
    try:
        from std_msgs.msg import Header

        from aue_edge.ros_nodes.messages import (action_units_msg, emotion_msg, face_array_msg,
                                                 select_primary_face)
    except ImportError as exc:
        pytest.skip(f"aue_msgs / ROS 2 messages are not importable ({exc}): ROS message "
                    f"building NOT benchmarked (build them with: pip install ./aue_msgs)")
    results, labels, au_names, threshold = frame_results
    result = results[faces]
    header = Header(frame_id="camera")

    def build():
        primary = select_primary_face(result.faces, "largest", result.width, result.height)
        return (face_array_msg(result, header, labels, au_names, threshold, primary),
                emotion_msg(primary, header, labels),
                action_units_msg(primary, header, au_names, threshold))

    face_array, _emotion, _aus = measure(build, group=GROUP, items_per_call=faces,
                                         item_unit="faces", faces=faces)
    assert len(face_array.faces) == faces
