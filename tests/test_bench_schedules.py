"""``aue bench --schedules``: the every-frame and the scheduled pipeline on the demo clip and
the benchmark scenes, in a subprocess as a user runs it. It checks what the comparison reports
(the faces of every sequence found by both, the agreement of their outputs, the per-stage
tables) and asserts nothing about how long anything took."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aue_edge.benchmarks.schedules import SCENE_FRAMES
from aue_edge.edge.pipeline import STAGES

# faces in every frame of each sequence, as the every-frame pipeline finds them
EXPECTED_FACES = {"demo clip": 30 * 1 + 25 * 3 + 20 * 1, "scene 1 face": SCENE_FRAMES,
                  "scene 5 faces": 5 * SCENE_FRAMES}
MISSED_NEW_FACES = {"demo clip": 2 * 2}
FRAMES = {"demo clip": 75, "scene 1 face": SCENE_FRAMES, "scene 5 faces": SCENE_FRAMES}


def aue_bench(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aue_edge.cli", "bench", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.bench
def test_schedules_compare_every_frame_and_scheduled_pipelines(tmp_path, repo_root):
    config = tmp_path / "pipeline.yaml"
    config.write_text("detect_interval_frames: 4\ninfer_interval_frames: 2\nnum_threads: 1\n")
    done = aue_bench("--schedules", "--rounds", "1", "--pipeline-config", str(config),
                     "--out", str(tmp_path / "out"), "--name", "s", cwd=repo_root)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "s.json").read_text())
    assert report["settings"] == {
        "every frame": {"detect_interval_frames": 1, "infer_interval_frames": 1},
        "scheduled": {"detect_interval_frames": 4, "infer_interval_frames": 2}}
    assert report["config"]["num_threads"] == 1 and "cpu" in report["machine"]
    for name, faces in EXPECTED_FACES.items():
        data = report["sequences"][name]
        for pipeline in ("every frame", "scheduled"):
            assert set(data[pipeline]["mean_ms"]) == set(STAGES)
            assert data[pipeline]["frames"] == FRAMES[name]   # one round
            assert data[pipeline]["cpu_ms_per_frame"] > 0
        agreement = data["agreement"]
        assert agreement["faces"] == faces, name
        # Whole-frame detections on frames 0, 4, ..., 28, 32: the two faces that enter the
        # clip at frame 30 appear at frame 32, within the interval; none is missed later.
        missed = MISSED_NEW_FACES.get(name, 0)
        assert agreement["missed"] == missed and agreement["extra"] == 0, name
        assert agreement["matched"] == faces - missed and agreement["same_track_ids"], name
        assert agreement["box_iou"]["min"] > 0.75, name
        assert agreement["same_emotion_label"] == faces - missed, name
        assert agreement["emotion_prob_max_abs_diff"]["max"] < 0.1, name
    markdown = (tmp_path / "out" / "s.md").read_text()
    assert "| scene 5 faces | scheduled |" in markdown and "every frame / scheduled" in markdown
    assert "aue bench --schedules --rounds 1" in markdown
    assert "| demo clip | 125 | 4 | 0 |" in markdown


def test_schedules_refuse_bad_settings(tmp_path, repo_root):
    done = aue_bench("--schedules", "--rounds", "0", "--out", str(tmp_path), cwd=repo_root)
    assert done.returncode != 0 and "--rounds must be >= 1, got 0" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("infer_interval_frames: 0\n")
    done = aue_bench("--schedules", "--pipeline-config", str(bad), "--out", str(tmp_path),
                     cwd=repo_root)
    assert done.returncode != 0
    assert "bad.yaml:1: field 'infer_interval_frames': expected >= 1, found 0" in done.stderr
    assert not list(tmp_path.glob("*.json"))
