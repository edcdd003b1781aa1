"""``aue run --source BAG`` end to end: ROS 2 bags (MCAP and sqlite3) written here with rosbags,
read through the real CLI, real YuNet and real ONNX Runtime with the bundled model.

Frames are the astronaut photo (one real face). Checked: header stamps, frame_id and receive
times in results.jsonl, every encoding the reader accepts and one it refuses, CompressedImage,
the topic listing when --topic is missing or wrong, damaged bags (files cut short, a broken
message) read as far as they go with what was lost said, and files that are not bags.
"""
from __future__ import annotations

import json
import shutil
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install -r "
                                      "requirements.txt): bag reading NOT tested")

from helpers.bags import (PERIOD_NS, STORAGES, STRING, T0_NS, expected_stamp,  # noqa: E402
                          jpeg_image, mcap_chunks_as_lz4, raw_image, storage_file,
                          write_bag)

from aue_edge.cli import main as aue_main  # noqa: E402
from aue_edge.edge.pipeline import DEFAULT_MODEL_DIR  # noqa: E402

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "card.json").is_file(),
                                reason="the bundled model aue_edge/edge/models/aue_crl is missing")


def run(source, out, *args) -> int:
    return aue_main(["run", "--source", str(source), "--out", str(out), "--threads", "1",
                     "--no-progress", *args])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory, astronaut_bgr):
    """Per storage: 5 raw frames, 4 JPEG frames and a non-image topic."""
    def make(storage):
        return write_bag(tmp_path_factory.mktemp(storage) / "camera", storage, {
            "/camera/image_raw": [raw_image(i, astronaut_bgr) for i in range(5)],
            "/camera/image_raw/compressed": [jpeg_image(i, astronaut_bgr) for i in range(4)],
            "/chatter": [STRING(data=f"hello {i}") for i in range(3)]})
    return {storage: make(storage) for storage in STORAGES}


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("topic, n", [("/camera/image_raw", 5),
                                      ("/camera/image_raw/compressed", 4)])
def test_results_keep_header_stamps_and_receive_times(camera_bag, storage, topic, n, tmp_path,
                                                      capsys):
    source = camera_bag[storage]
    if storage == "mcap" and topic.endswith("compressed"):
        source = storage_file(source)          # a bare .mcap file reads like its folder
    assert run(source, tmp_path / "out", "--topic", topic) == 0
    lines = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [ln["frame_index"] for ln in lines] == list(range(n))
    assert [ln["header_stamp"] for ln in lines] == [expected_stamp(i) for i in range(n)]
    assert [ln["bag_time_ns"] for ln in lines] == [T0_NS + i * PERIOD_NS for i in range(n)]
    assert {ln["frame_id"] for ln in lines} == {"head_camera_optical_frame"}
    assert lines[1]["timestamp_s"] - lines[0]["timestamp_s"] == pytest.approx(0.05, abs=1e-6)
    assert all(ln["source"] == f"{topic}#{ln['frame_index']}" for ln in lines)
    assert all(len(ln["faces"]) == 1 for ln in lines)          # the astronaut, every frame
    assert {ln["faces"][0]["id"] for ln in lines} == {1}        # one track across the frames
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == n and summary["topic"] == topic and summary["notes"] == []
    video = cv2.VideoCapture(str(tmp_path / "out" / "annotated.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == n
    video.release()


def test_every_accepted_encoding_gives_the_same_face_and_16uc1_is_refused(
        tmp_path, astronaut_bgr, capsys):
    encodings = ("bgr8", "rgb8", "bgra8", "rgba8", "mono8", "mono16", "16UC1")
    bag = write_bag(tmp_path / "encodings", "mcap", {
        f"/camera/{enc}": [raw_image(i, astronaut_bgr, enc) for i in range(2)]
        for enc in encodings})
    boxes = {}
    for enc in encodings:
        code = run(bag, tmp_path / enc, "--topic", f"/camera/{enc}", "--no-annotate")
        lines = read_jsonl(tmp_path / enc / "results.jsonl")
        if enc == "16UC1":
            assert code == 1 and lines == []       # no frame processed
            err = capsys.readouterr().err
            assert err.count("unsupported image encoding '16UC1'") == 2
            assert "skipped 2 (2 unreadable" in err
            continue
        assert code == 0 and len(lines) == 2 and all(len(ln["faces"]) == 1 for ln in lines)
        boxes[enc] = lines[0]["faces"][0]
    for enc in ("rgb8", "bgra8", "rgba8"):      # the same pixels: the same results
        assert boxes[enc] == boxes["bgr8"], enc
    assert boxes["mono8"]["box"] == pytest.approx(boxes["mono16"]["box"], abs=2.0)
    assert boxes["mono8"]["box"] == pytest.approx(boxes["bgr8"]["box"], abs=12.0)


def test_topic_listing_when_the_topic_is_missing_wrong_or_not_an_image(camera_bag, tmp_path,
                                                                       capsys):
    bag = camera_bag["sqlite3"]
    for args, message in [
            ((), "has 2 image topics; choose one with --topic: "
                 "/camera/image_raw (sensor_msgs/msg/Image, 5 msgs); "
                 "/camera/image_raw/compressed (sensor_msgs/msg/CompressedImage, 4 msgs). "
                 "Other topics: /chatter (std_msgs/msg/String, 3 msgs)"),
            (("--topic", "/camera/image"), "--topic /camera/image: no such topic in bag"),
            (("--topic", "/chatter"), "--topic /chatter is std_msgs/msg/String, not an image "
                                      "topic")]:
        assert run(bag, tmp_path / "out", *args) == 2
        err = capsys.readouterr().err
        assert message in err and "/camera/image_raw/compressed (" in err, err
        assert not (tmp_path / "out").exists()           # failed before any output
    assert run(tmp_path, tmp_path / "out", "--topic", "/camera/image_raw") == 2
    assert "--topic is for ROS 2 bag sources" in capsys.readouterr().err


def test_a_bag_with_one_image_topic_uses_it_and_says_so(tmp_path, astronaut_bgr, capsys):
    bag = write_bag(tmp_path / "one", "sqlite3", {
        "/head/image": [raw_image(i, astronaut_bgr, "rgb8") for i in range(2)],
        "/chatter": [STRING(data="hi")]})
    assert run(bag, tmp_path / "out") == 0
    assert ("reading /head/image (sensor_msgs/msg/Image, 2 msgs) from "
            f"{bag}, its only image topic") in capsys.readouterr().err
    no_images = write_bag(tmp_path / "none", "mcap", {"/chatter": [STRING(data="hi")]})
    assert run(no_images, tmp_path / "out2") == 2
    assert "has no sensor_msgs/msg/Image or CompressedImage topic. Other topics: /chatter" in \
        capsys.readouterr().err


@pytest.mark.parametrize("storage, compression", [("mcap", None), ("mcap", "zstd"),
                                                  ("mcap", "lz4"), ("sqlite3", None)])
def test_a_cut_off_bag_is_read_as_far_as_it_goes(tmp_path, astronaut_bgr, storage, compression,
                                                 capsys):
    # 20 frames: in a sqlite3 file, table pages are allocated as rows come, so a cut keeps the
    # early rows only once the table has more than one page of rows (as any real recording).
    n = 20
    small = cv2.resize(astronaut_bgr, (256, 256), interpolation=cv2.INTER_AREA)
    bag = write_bag(tmp_path / "full", storage, {
        "/camera/image_raw": [raw_image(i, small) for i in range(n)],
        "/chatter": [STRING(data=f"hi {i}") for i in range(n)]}, compress=bool(compression))
    if compression == "lz4":
        assert mcap_chunks_as_lz4(storage_file(bag)) >= 2
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(bag / "metadata.yaml", cut)
    data = storage_file(bag).read_bytes()
    (cut / storage_file(bag).name).write_bytes(data[:len(data) * 6 // 10])
    assert run(cut, tmp_path / "out", "--topic", "/camera/image_raw") == 0
    err = capsys.readouterr().err
    lines = read_jsonl(tmp_path / "out" / "results.jsonl")
    # Every frame before the cut is kept, in order, with its stamps; the rest is reported.
    assert 2 <= len(lines) < n
    assert [ln["header_stamp"] for ln in lines] == [expected_stamp(i) for i in range(len(lines))]
    assert all(len(ln["faces"]) == 1 for ln in lines)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == len(lines)
    notes = " | ".join(summary["notes"])
    assert "rosbags could not open it through its index" in notes
    assert ("is cut off" if storage == "mcap" else "read page by page") in notes
    assert "the messages after it" in notes and "are lost" in notes and "warning: " in err


@pytest.mark.parametrize("storage", list(STORAGES))
def test_a_bag_folder_without_metadata_is_read_from_its_storage_file(camera_bag, storage,
                                                                     tmp_path, capsys):
    folder = tmp_path / "no_metadata"         # the recorder died before writing metadata.yaml
    folder.mkdir()
    shutil.copy(storage_file(camera_bag[storage]), folder)
    assert run(folder, tmp_path / "out", "--topic", "/camera/image_raw/compressed") == 0
    lines = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [ln["header_stamp"] for ln in lines] == [expected_stamp(i) for i in range(4)]
    assert "rosbags could not open it through its index" in capsys.readouterr().err


def test_a_broken_message_is_counted_and_the_others_are_read(tmp_path, astronaut_bgr, capsys):
    frames = [raw_image(i, astronaut_bgr) for i in range(4)]
    frames[1].step = 100                   # header does not describe the data
    bag = write_bag(tmp_path / "broken", "mcap", {"/camera/image_raw": frames})
    assert run(bag, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "/camera/image_raw#1: unreadable (image step 100 is smaller than" in err
    lines = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [ln["frame_index"] for ln in lines] == [0, 2, 3]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"]["unreadable"] == ["/camera/image_raw#1"]


@pytest.mark.parametrize("name, content, message", [
    ("notes.mcap", b"not a bag at all\n", "does not start with the MCAP magic bytes: not a ROS 2 "
                                          "bag"),
    ("photo.db3", cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes(),
     "does not start with the SQLite magic bytes"),
    ("empty.mcap", b"", "is empty: not a ROS 2 bag"),
])
def test_a_file_that_is_not_a_bag_gets_a_clear_error(tmp_path, name, content, message, capsys):
    (tmp_path / name).write_bytes(content)
    assert run(tmp_path / name, tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_sqlite_database_that_is_not_a_bag_gets_a_clear_error(tmp_path, capsys):
    import sqlite3

    with sqlite3.connect(tmp_path / "inventory.db3") as db:
        db.execute("CREATE TABLE parts (name TEXT, count INTEGER)")
        db.execute("INSERT INTO parts VALUES ('wheel', 4)")
    db.close()
    assert run(tmp_path / "inventory.db3", tmp_path / "out") == 2
    assert "no topic could be recovered from its storage files: not a rosbag2 recording" in \
        capsys.readouterr().err


def test_without_rosbags_the_error_says_what_to_install(tmp_path, monkeypatch, camera_bag,
                                                       capsys):
    for name in ("rosbags", "rosbags.rosbag2", "rosbags.typesys"):
        monkeypatch.setitem(sys.modules, name, None)        # import -> ImportError
    assert run(camera_bag["mcap"], tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "reading ROS 2 bags needs the rosbags package" in err
    assert "pip install 'rosbags==0.11.9'" in err and not (tmp_path / "out").exists()


def test_out_bag_holds_the_results_as_aue_msgs_with_the_source_stamps(camera_bag, tmp_path,
                                                                      capsys):
    pytest.importorskip("aue_msgs", reason="aue_msgs is not built: --out-bag NOT tested")
    from rosbags.highlevel import AnyReader

    out_bag = tmp_path / "results_bag"
    assert run(camera_bag["sqlite3"], tmp_path / "out", "--topic", "/camera/image_raw",
               "--out-bag", str(out_bag)) == 0
    assert "wrote 5 /faces, 5 /emotion, 5 /action_units messages" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "results_bag"]  # no staging
    lines = read_jsonl(tmp_path / "out" / "results.jsonl")
    # Read back with nothing but the definitions the bag carries.
    with AnyReader([out_bag]) as reader:
        assert {c.topic: (c.msgtype, c.msgcount) for c in reader.connections} == {
            "/faces": ("aue_msgs/msg/FaceArray", 5), "/emotion": ("aue_msgs/msg/Emotion", 5),
            "/action_units": ("aue_msgs/msg/ActionUnits", 5)}
        got = {}
        for conn, bag_time_ns, raw in reader.messages():
            got.setdefault(conn.topic, []).append((bag_time_ns,
                                                   reader.deserialize(raw, conn.msgtype)))
    for topic, messages in got.items():
        assert [t for t, _ in messages] == [T0_NS + i * PERIOD_NS for i in range(5)], topic
        assert [{"sec": m.header.stamp.sec, "nanosec": m.header.stamp.nanosec}
                for _, m in messages] == [expected_stamp(i) for i in range(5)], topic
        assert {m.header.frame_id for _, m in messages} == {"head_camera_optical_frame"}
    for line, (_, faces), (_, emotion), (_, aus) in zip(lines, got["/faces"], got["/emotion"],
                                                        got["/action_units"]):
        face = line["faces"][0]
        assert (faces.image_width, faces.image_height) == (line["width"], line["height"])
        assert len(faces.faces) == 1 and faces.primary_face_id == face["id"] == emotion.face_id
        roi = faces.faces[0].roi
        assert [roi.x_offset, roi.y_offset] == pytest.approx(face["box"][:2], abs=1.0)
        assert emotion.label == face["emotion"]
        assert list(aus.names) == list(face["au_probs"])
        np.testing.assert_allclose(aus.probabilities, list(face["au_probs"].values()),
                                   atol=1e-4)
    assert run(camera_bag["sqlite3"], tmp_path / "again", "--topic", "/camera/image_raw",
               "--out-bag", str(out_bag)) == 2
    assert f"--out-bag {out_bag} exists" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_out_bag_of_a_failed_run_leaves_nothing(camera_bag, tmp_path, monkeypatch):
    pytest.importorskip("aue_msgs", reason="aue_msgs is not built: --out-bag NOT tested")
    from aue_edge.edge.pipeline import Pipeline, PipelineConfig
    from aue_edge.edge.run import run_source

    with Pipeline(PipelineConfig()) as pipeline:
        process, calls = pipeline.process, []

        def failing(*args, **kwargs):       # an unexpected error on the third frame
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("disk on fire")
            return process(*args, **kwargs)

        monkeypatch.setattr(pipeline, "process", failing)
        with pytest.raises(RuntimeError, match="disk on fire"):
            run_source(pipeline, str(camera_bag["mcap"]), tmp_path / "out", progress=False,
                       topic="/camera/image_raw", out_bag=tmp_path / "results_bag")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no bag, no staging folder
