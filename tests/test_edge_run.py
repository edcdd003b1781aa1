"""``aue run`` end to end on the bundled demo clip and on image folders with bad files, through
the real CLI dispatch, real YuNet and real ONNX Runtime (with the test stand-in model of
tests/helpers, not the product's model)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers.standin_model import FERPLUS_LABELS, build_standin_model

from aue_edge.cli import main as aue_main
from aue_edge.core.errors import ConfigError
from aue_edge.edge.run import parse_source


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run_model")
    build_standin_model(directory)
    return directory


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_clip_tracks_one_then_three_faces(repo_root, model_dir, tmp_path):
    clip = repo_root / "aue_edge" / "edge" / "samples" / "demo_clip.mp4"
    out = tmp_path / "demo"
    code = aue_main(["run", "--source", str(clip), "--out", str(out), "--model", str(model_dir),
                     "--threads", "1", "--no-progress"])
    assert code == 0
    lines = read_jsonl(out / "results.jsonl")
    assert len(lines) == 75 and [ln["frame_index"] for ln in lines] == list(range(75))
    assert lines[10]["timestamp_s"] == pytest.approx(1.0)          # 10 fps clip
    scene1 = [ln["faces"] for ln in lines[:30]]
    assert all(len(faces) == 1 for faces in scene1)
    assert {faces[0]["id"] for faces in scene1} == {1}               # one stable ID while panning
    scene2_ids = [sorted(f["id"] for f in ln["faces"]) for ln in lines[31:55]]
    assert all(len(ids) == 3 for ids in scene2_ids)
    assert all(ids == scene2_ids[0] for ids in scene2_ids)         # three stable IDs
    face = lines[40]["faces"][0]
    assert set(face["emotion_probs"]) == set(FERPLUS_LABELS)
    assert abs(sum(face["emotion_probs"].values()) - 1) < 1e-3 and len(face["au_probs"]) == 17
    assert set(lines[0]["timings_ms"]) == {"detect", "align", "infer", "postprocess", "total"}
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = video.read()
    video.release()
    assert ok and first.shape == (360, 480, 3) and frames == 75
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 75 and summary["max_faces_in_frame"] == 3
    assert cv2.imread(str(out / "latency.png")) is not None
    assert summary["faces"] == 30 + 25 * 3 + 20


def test_the_robot_runtime_runs_without_matplotlib(repo_root, model_dir, tmp_path):
    """matplotlib is the optional ``plots`` extra: with it unimportable (a robot installed
    without it), ``aue run`` on the bundled clip writes everything but latency.png and says so;
    nothing else on the run's path may import matplotlib (that would fail the run)."""
    clip = repo_root / "aue_edge" / "edge" / "samples" / "demo_clip.mp4"
    out = tmp_path / "run"
    block = ("import sys; sys.modules['matplotlib'] = None; "   # `import matplotlib` now fails
             "from aue_edge.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", block, "run", "--source", str(clip), "--out",
                           str(out), "--model", str(model_dir), "--max-frames", "12",
                           "--threads", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(out / "results.jsonl")) == 12 and (out / "annotated.mp4").is_file()
    assert not (out / "latency.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12
    note = "latency.png not written: plots need matplotlib, which is not installed here"
    assert any(n.startswith(note) and "aue_edge[plots]" in n for n in summary["notes"]), summary
    assert note in proc.stderr


def test_image_folder_skips_and_counts_bad_files(model_dir, astronaut_bgr, tmp_path, capsys):
    src = tmp_path / "images"
    src.mkdir()
    cv2.imwrite(str(src / "a_face.png"), astronaut_bgr)
    cv2.imwrite(str(src / "b_face16.png"), astronaut_bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "c_empty_scene.jpg"), np.full((240, 320, 3), 90, np.uint8))
    (src / "d_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = aue_main(["run", "--source", str(src), "--out", str(out), "--model", str(model_dir),
                     "--max-faces", "3", "--no-progress"])
    assert code == 0
    lines = read_jsonl(out / "results.jsonl")
    assert [ln["source"] for ln in lines] == ["a_face.png", "b_face16.png", "c_empty_scene.jpg"]
    assert [len(ln["faces"]) for ln in lines] == [1, 1, 0]
    # independent images: each face starts a fresh track (no smoothing across photos)
    assert lines[0]["faces"][0]["id"] != lines[1]["faces"][0]["id"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["unreadable"] == ["d_truncated.png"]
    assert summary["skipped"]["non_image_files"] == ["notes.txt"]
    pngs = sorted(p.name for p in (out / "annotated").iterdir())
    assert pngs == ["00000_a_face.png", "00001_b_face16.png", "00002_c_empty_scene.png"]
    drawn = cv2.imread(str(out / "annotated" / "00000_a_face.png"))
    assert drawn.shape == astronaut_bgr.shape and not np.array_equal(drawn, astronaut_bgr)
    err = capsys.readouterr().err
    assert "d_truncated.png: unreadable" in err and "1 unreadable" in err


def test_damaged_video_frames_are_skipped_and_the_stream_goes_on(repo_root, model_dir,
                                                                 tmp_path):
    data = bytearray((repo_root / "aue_edge" / "edge" / "samples" / "demo_clip.mp4").read_bytes())
    start = len(data) // 3
    data[start:start + 20000] = bytes(20000)   # zero a stretch in the middle of the stream
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert aue_main(["run", "--source", str(damaged), "--out", str(out), "--model",
                     str(model_dir), "--no-annotate", "--no-progress", "--max-frames", "45"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    bad = summary["skipped"]["unreadable"]
    assert bad and all(name.startswith("damaged.mp4#") for name in bad)
    assert summary["frames"] + len(bad) == 45
    indices = [line["frame_index"] for line in read_jsonl(out / "results.jsonl")]
    bad_indices = {int(name.split("#")[1]) for name in bad}
    assert indices[-1] == 44 and bad_indices.isdisjoint(indices)   # video frame numbers


def test_bad_sources_and_models_fail_with_clear_errors(model_dir, tmp_path, capsys):
    assert parse_source("webcam") == ("webcam", 0)
    assert parse_source("webcam:2") == ("webcam", 2)
    with pytest.raises(ConfigError, match="webcam:N"):
        parse_source("webcam:usb")
    code = aue_main(["run", "--source", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"),
                     "--model", str(model_dir)])
    assert code == 2 and "no such file or folder" in capsys.readouterr().err
    broken = tmp_path / "broken_model"
    build_standin_model(broken)
    (broken / "model.onnx").write_bytes(b"")
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    code = aue_main(["run", "--source", str(image), "--out", str(tmp_path / "o2"),
                     "--model", str(broken)])
    assert code == 2 and "could not load" in capsys.readouterr().err
    code = aue_main(["run", "--source", str(image), "--out", str(tmp_path / "o3"),
                     "--model", str(model_dir), "--max-frames", "0"])
    assert code == 2 and "--max-frames" in capsys.readouterr().err


def test_make_demo_command_with_the_shipped_model_reads_the_smile(repo_root, tmp_path):
    """`make demo`'s command on the shipped model (INT8 if present, per the model-file rule):
    the astronaut smiles in every frame, so every face must come out as happiness."""
    model_dir = repo_root / "aue_edge" / "edge" / "models" / "aue_crl"
    if not (model_dir / "model.onnx").is_file():
        pytest.fail(f"the shipped model is missing from {model_dir} (make demo needs it)")
    out = tmp_path / "demo"
    assert aue_main(["run", "--source", str(repo_root / "aue_edge" / "edge" / "samples" / "demo_clip.mp4"),
                     "--out", str(out), "--max-frames", "40", "--threads", "1",
                     "--no-progress"]) == 0
    faces = [f for line in read_jsonl(out / "results.jsonl") for f in line["faces"]]
    assert len(faces) == 30 + 10 * 3
    assert {f["emotion"] for f in faces} == {"happiness"}
    assert all(len(f["au_probs"]) == 17 for f in faces)


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity (Python's accepts them; JSON does not)."""
    def refuse(token):
        raise ValueError(f"{token} is not valid JSON")
    return json.loads(text, parse_constant=refuse)


def _model_with_a_wrong_card(directory):
    """A 7-label stand-in model whose card lists FER+'s 8 labels."""
    build_standin_model(directory, labels=FERPLUS_LABELS[:7])
    card = json.loads((directory / "card.json").read_text())
    card["outputs"]["emotion_labels"] = list(FERPLUS_LABELS)
    (directory / "card.json").write_text(json.dumps(card))
    return directory


def test_a_card_that_does_not_match_fails_before_the_first_frame(tmp_path, astronaut_bgr,
                                                                 capsys):
    wrong = _model_with_a_wrong_card(tmp_path / "wrong")
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), astronaut_bgr)
    out = tmp_path / "out"
    code = aue_main(["run", "--source", str(image), "--out", str(out), "--model", str(wrong),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "emotion_labels lists 8 names" in err, err
    assert not (out / "results.jsonl").exists()


@pytest.mark.parametrize("annotate", [False, True])
def test_non_finite_outputs_are_counted_never_written(tmp_path, astronaut_bgr, capsys, annotate):
    directory = tmp_path / "nan_on_faces"
    build_standin_model(directory, non_finite="on_faces")
    src = tmp_path / "images"
    src.mkdir()
    cv2.imwrite(str(src / "a_face.png"), astronaut_bgr)
    cv2.imwrite(str(src / "b_empty.png"), np.full((240, 320, 3), 90, np.uint8))
    out = tmp_path / "out"
    code = aue_main(["run", "--source", str(src), "--out", str(out), "--model", str(directory),
                     "--no-progress"] + ([] if annotate else ["--no-annotate"]))
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [_strict_json(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [ln["source"] for ln in lines] == ["b_empty.png"]
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["skipped"]["inference_errors"] == ["a_face.png"]
    assert "warning: a_face.png: " in err and "'emotion_probs' has non-finite values" in err
    assert "1 inference errors" in err


def test_a_truncated_jpeg_is_counted_as_unreadable(model_dir, astronaut_bgr, tmp_path, capsys):
    """OpenCV decodes a cut-off JPEG as a grey-filled image (only a libjpeg warning): it must
    not be processed as a picture with 0 faces."""
    src = tmp_path / "images"
    src.mkdir()
    jpeg = cv2.imencode(".jpg", astronaut_bgr)[1].tobytes()
    (src / "a_whole.jpg").write_bytes(jpeg)
    (src / "b_cut.jpg").write_bytes(jpeg[:len(jpeg) * 2 // 3])
    out = tmp_path / "out"
    assert aue_main(["run", "--source", str(src), "--out", str(out), "--model", str(model_dir),
                     "--no-annotate", "--no-progress"]) == 0
    assert [ln["source"] for ln in read_jsonl(out / "results.jsonl")] == ["a_whole.jpg"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["unreadable"] == ["b_cut.jpg"]
    assert "b_cut.jpg: unreadable" in capsys.readouterr().err


def test_an_unwritable_out_fails_in_one_line_before_the_model_loads(model_dir, astronaut_bgr,
                                                                    tmp_path, capsys):
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), astronaut_bgr)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    taken = tmp_path / "taken"
    (taken / "results.jsonl").mkdir(parents=True)
    for out, message in ((a_file, "is a file, not a folder"),
                         ("/sys/kernel", "[Errno 13] Permission denied"),
                         ("/sys/aue_no_such_folder", "[Errno 1] Operation not permitted"),
                         (taken, "results.jsonl is a folder")):
        code = aue_main(["run", "--source", str(image), "--out", str(out), "--model",
                         str(model_dir), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 and "aue run: model" not in err, err


def test_a_failed_run_leaves_no_empty_out_folder(model_dir, tmp_path, astronaut_bgr, capsys):
    wrong = _model_with_a_wrong_card(tmp_path / "wrong")       # refused at load
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), astronaut_bgr)
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "notes.txt").write_text("not an image")
    for source, model in ((image, wrong), (no_images, model_dir)):
        out = tmp_path / "new" / "out"
        assert aue_main(["run", "--source", str(source), "--out", str(out), "--model",
                         str(model), "--no-progress"]) == 2
        assert not out.exists(), capsys.readouterr().err


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, astronaut_bgr):
    """20 s of 640x480 video at 30 fps (the astronaut drifting): long enough to stop mid-run."""
    path = tmp_path_factory.mktemp("long_video") / "long.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    face = cv2.resize(astronaut_bgr, (360, 360))
    for i in range(600):
        frame = np.full((480, 640, 3), 96, np.uint8)
        x = 20 + (i % 240)
        frame[60:420, x:x + 360] = face
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_keeps_a_playable_video_and_says_it_was_stopped(model_dir, long_video,
                                                                       tmp_path, sig):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "aue_edge", "run", "--source", str(long_video), "--out",
         str(out), "--model", str(model_dir), "--threads", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not (
            results.is_file() and results.read_text().count("\n") >= 20):
        time.sleep(0.05)
    process.send_signal(getattr(signal, sig))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert 20 <= summary["frames"] < 600, summary
    notes = " ".join(summary["notes"])
    assert f"stopped by {sig}" in notes and "truncated" not in notes, notes
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, _ = video.read()
    video.release()
    assert ok and frames == summary["frames"], (frames, summary["frames"])
    assert "Traceback" not in stderr


def test_a_run_of_no_frames_says_so_without_nan(model_dir, astronaut_bgr, tmp_path, capsys):
    src = tmp_path / "images"
    src.mkdir()
    jpeg = cv2.imencode(".jpg", astronaut_bgr)[1].tobytes()
    (src / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    code = aue_main(["run", "--source", str(src), "--out", str(tmp_path / "out"), "--model",
                     str(model_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "nan" not in err.lower() and "0 frames" in err, err
