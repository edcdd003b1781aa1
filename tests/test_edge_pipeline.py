"""Edge pipeline: config loading, model-file rule, detection -> alignment -> batched inference ->
tracking -> smoothing on real face images, with real ONNX Runtime.

The model here is the TEST STAND-IN of ``tests/helpers/standin_model.py`` (same I/O names and
card layout as the shipped AUE-CRL model; its outputs are a fixed linear function of the mean
pixel value), never the product's model: it lets the tests compute the exact expected output of
every face with numpy and so check batching, ordering, chunking and smoothing, independent of
training.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers.standin_model import (AUECRL_AUS, FERPLUS_LABELS, build_standin_model,
                                   expected_outputs)

from aue_edge.core.errors import ConfigError, InputImageError, ModelCardError, ModelFileError
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.face.yunet import YuNetDetector
from aue_edge.edge.backends.factory import find_model_card
from aue_edge.edge.model_card import ModelCard, embed_card_in_onnx
from aue_edge.edge.pipeline import (SHIPPED_MODELS_DIR, Pipeline, PipelineConfig,
                                    model_directory, resolve_model_file)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("standin")
    build_standin_model(directory)
    return directory


@pytest.fixture(scope="module")
def three_faces_bgr(astronaut_bgr) -> np.ndarray:
    """Three real faces in one frame: the astronaut at three scales, one mirrored."""
    canvas = np.full((420, 900, 3), 128, np.uint8)
    head = astronaut_bgr[20:240, 135:315]
    for (x, y), height, flip in (((20, 60), 300, False), ((340, 120), 220, True),
                                 ((600, 40), 260, False)):
        scaled = cv2.resize(head, (int(head.shape[1] * height / head.shape[0]), height))
        if flip:
            scaled = scaled[:, ::-1]
        canvas[y:y + scaled.shape[0], x:x + scaled.shape[1]] = scaled
    return canvas


def make_pipeline(model_dir: Path, **overrides) -> Pipeline:
    fields = {"smoothing": "none", "num_threads": 1, **overrides}
    return Pipeline.from_model_dir(model_dir, **fields)


# ---------------------------------------------------------------------------------- config
def test_shipped_yaml_documents_the_defaults(repo_root, check_documented_defaults):
    """config/pipeline.yaml must load and say exactly the dataclass defaults."""
    path = repo_root / "config" / "pipeline.yaml"
    check_documented_defaults(path, dataclasses.asdict(PipelineConfig()),
                              loaded=dataclasses.asdict(PipelineConfig.from_yaml(path)))


def test_fast_profile_runs_the_shipped_student_with_smaller_regions(repo_root, astronaut_bgr):
    """config/pipeline_fast.yaml: only what differs from the defaults; it opens the shipped
    student by name, whose card asks for 48 px faces, and finds the face in 96 px regions."""
    path = repo_root / "config" / "pipeline_fast.yaml"
    config = PipelineConfig.from_yaml(path)
    assert {k for k, v in dataclasses.asdict(config).items()
            if v != getattr(PipelineConfig(), k)} == {"model_dir", "detect_region_px",
                                                      "region_interval_frames"}
    with Pipeline(config) as pipeline:
        assert pipeline.model.path.parent == SHIPPED_MODELS_DIR / "aue_student"
        assert pipeline.card.input.size_px == (48, 48)
        assert pipeline.detector.region_side_px == 96
        results = [pipeline.process(astronaut_bgr, timestamp_s=i / 30) for i in range(3)]
    assert [len(r.faces) for r in results] == [1, 1, 1]
    with pytest.raises(ConfigError, match="detect_region_px: expected >= 32, found 16"):
        PipelineConfig(detect_region_px=16)


def test_model_dir_names_a_shipped_model_or_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_directory(None) == SHIPPED_MODELS_DIR / "aue_crl"
    assert model_directory("aue_student") == SHIPPED_MODELS_DIR / "aue_student"
    (tmp_path / "aue_student").mkdir()  # a folder of that name here wins over the shipped one
    assert model_directory("aue_student") == Path("aue_student")
    assert model_directory("models/aue_crl") == Path("models/aue_crl")  # a path stays a path
    with pytest.raises(ModelFileError, match="model directory no_such_model does not exist"):
        resolve_model_file("no_such_model", "auto", "ort")


def test_yaml_errors_name_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("backend: ort\nsmoothing: kalman\nema_alpha: 1.5\nort_providers: [cpu]\n")
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_yaml(path)
    text = str(err.value)
    assert "bad.yaml:2: field 'smoothing'" in text and "kalman" in text
    assert "bad.yaml:3: field 'ema_alpha'" in text
    assert "ort_providers" not in text  # a valid list next to invalid fields is not reported
    path.write_text("backend: ort\nbackedn: trt\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: unknown field 'backedn' \(did you mean "
                                          r"'backend'\?\)"):
        PipelineConfig.from_yaml(path)
    path.write_text("max_faces: true\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:1: field 'max_faces': expected an integer "
                                          r"or null, found True"):
        PipelineConfig.from_yaml(path)
    path.write_text("backend: [ort\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml(path)


def test_overrides_win_and_are_validated(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("smoothing: ema\nmax_faces: 3\nort_providers: [cpu]\n")
    config = PipelineConfig.from_yaml(path, smoothing="one_euro")
    assert config.smoothing == "one_euro" and config.max_faces == 3
    assert config.ort_providers == ("cpu",)
    with pytest.raises(ConfigError, match="override: field 'backend'"):
        config.replace(backend="tensorflow")


def test_model_file_rule_prefers_int8_onnx_and_names_what_it_looked_for(tmp_path):
    build_standin_model(tmp_path)
    assert resolve_model_file(tmp_path, "auto", "ort").name == "model.onnx"
    build_standin_model(tmp_path, file_name="model.int8.onnx")
    assert resolve_model_file(tmp_path, "auto", "ort").name == "model.int8.onnx"
    assert resolve_model_file(tmp_path, "model.onnx", "ort").name == "model.onnx"
    # one card.json (FP32) serves both files; the INT8 file's own embedded card must win
    int8 = onnx.load(str(tmp_path / "model.int8.onnx"))
    embed_card_in_onnx(int8, ModelCard.load(tmp_path / "card.json").replace(
        precision="int8-qdq"))
    onnx.save(int8, str(tmp_path / "model.int8.onnx"))
    assert find_model_card(tmp_path / "model.int8.onnx").precision == "int8-qdq"
    assert find_model_card(tmp_path / "model.onnx").precision == "fp32"
    with Pipeline.from_model_dir(tmp_path, num_threads=1) as pipeline:
        assert pipeline.model.path.name == "model.int8.onnx"
        assert pipeline.card.precision == "int8-qdq"
    with pytest.raises(ModelFileError, match="model.int8.engine, model.fp16.engine, model.engine"):
        resolve_model_file(tmp_path, "auto", "trt")
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_model_file(tmp_path / "nowhere", "auto", "ort")


# ---------------------------------------------------------------------------------- one frame
def test_one_real_face_matches_numpy_reference(model_dir, astronaut_bgr):
    with make_pipeline(model_dir) as pipeline:
        result = pipeline.process(astronaut_bgr, timestamp_s=0.0)
        detections = pipeline.detector.detect(astronaut_bgr)
        assert pipeline.emotion_labels == FERPLUS_LABELS and pipeline.au_names == AUECRL_AUS
    assert set(result.timings_ms) == {"detect", "align", "infer", "postprocess", "total"}
    assert all(v >= 0 for v in result.timings_ms.values())
    assert (result.width, result.height) == (512, 512) and len(result.faces) == 1
    face = result.faces[0]
    want_em, want_au = expected_outputs(astronaut_bgr, detections.landmarks5, pipeline.card)
    np.testing.assert_allclose(face.emotion_probs, want_em[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(face.au_probs, want_au[0], rtol=1e-4, atol=1e-5)
    assert face.emotion_label == FERPLUS_LABELS[int(np.argmax(want_em[0]))]
    np.testing.assert_array_equal(face.au_active, want_au[0] >= 0.5)
    # the face is where the astronaut's face is (YuNet box about x 178-268, y 63-176)
    assert 150 < face.box_xyxy[0] < 200 and 240 < face.box_xyxy[2] < 300
    line = face.to_json(FERPLUS_LABELS, AUECRL_AUS)
    assert abs(sum(line["emotion_probs"].values()) - 1.0) < 1e-3


def test_three_faces_one_batch_equal_chunked_batch_of_one(model_dir, three_faces_bgr, tmp_path):
    """A model with a fixed batch of 1 forces 3 inferences; results must equal the batched run
    and the per-face numpy reference, in detection order."""
    build_standin_model(tmp_path, batch=1)
    with make_pipeline(model_dir) as batched, make_pipeline(tmp_path) as chunked:
        assert chunked.model.batch_limit == 1 and batched.model.batch_limit is None
        a = batched.process(three_faces_bgr, 0.0)
        b = chunked.process(three_faces_bgr, 0.0)
        detections = batched.detector.detect(three_faces_bgr)
    assert len(a.faces) == len(b.faces) == 3
    assert len({f.track_id for f in a.faces}) == 3
    want_em, want_au = expected_outputs(three_faces_bgr, detections.landmarks5, batched.card)
    for k, (fa, fb) in enumerate(zip(a.faces, b.faces)):
        np.testing.assert_allclose(fa.emotion_probs, fb.emotion_probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fa.emotion_probs, want_em[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fb.au_probs, want_au[k], rtol=1e-4, atol=1e-5)


def test_ids_stable_while_moving_and_new_after_expiry(model_dir, astronaut_bgr):
    blank = np.full_like(astronaut_bgr, 127)
    with make_pipeline(model_dir, track_max_age_frames=2) as pipeline:
        ids = []
        for step in range(4):  # the face moves 6 px per frame
            shifted = np.roll(astronaut_bgr, 6 * step, axis=1)
            ids.append(pipeline.process(shifted, timestamp_s=step / 10).faces[0].track_id)
        assert ids == [ids[0]] * 4
        assert pipeline.process(blank, 0.4).faces == []           # 0 faces: handled
        assert pipeline.process(astronaut_bgr, 0.5).faces[0].track_id == ids[0]  # within age
        for k in range(3):                                         # gone longer than 2 frames
            pipeline.process(blank, 0.6 + k / 10)
        assert pipeline.process(astronaut_bgr, 1.0).faces[0].track_id != ids[0]


def test_ema_smoothing_per_track_and_reset_on_new_id(model_dir, astronaut_bgr):
    dark = (astronaut_bgr * 0.5).astype(np.uint8)
    # the model on every frame (infer_interval_frames 1): smoothing of fresh outputs
    with make_pipeline(model_dir, infer_interval_frames=1) as raw, make_pipeline(
            model_dir, smoothing="ema", ema_alpha=0.25, infer_interval_frames=1) as smooth:
        r0, s0 = raw.process(astronaut_bgr, 0.0), smooth.process(astronaut_bgr, 0.0)
        r1, s1 = raw.process(dark, 0.1), smooth.process(dark, 0.1)
    np.testing.assert_allclose(s0.faces[0].emotion_probs, r0.faces[0].emotion_probs, atol=1e-6)
    expected = 0.25 * r1.faces[0].emotion_probs + 0.75 * r0.faces[0].emotion_probs
    np.testing.assert_allclose(s1.faces[0].emotion_probs, expected, atol=1e-5)
    assert not np.allclose(r0.faces[0].emotion_probs, r1.faces[0].emotion_probs, atol=1e-3)
    assert abs(float(s1.faces[0].emotion_probs.sum()) - 1.0) < 1e-5


# ---------------------------------------------------------------------------------- bad input
def test_awkward_frames_are_handled_and_bad_ones_rejected(model_dir, astronaut_bgr):
    with make_pipeline(model_dir, max_faces=2) as pipeline:
        as16 = astronaut_bgr.astype(np.uint16) * 257
        assert len(pipeline.process(as16, 0.0).faces) == 1
        bgra = np.dstack([astronaut_bgr, np.full(astronaut_bgr.shape[:2], 255, np.uint8)])
        assert len(pipeline.process(bgra, 0.1).faces) == 1
        frame_4k = np.zeros((2160, 3840, 3), np.uint8)
        frame_4k[800:1312, 1600:2112] = astronaut_bgr
        result = pipeline.process(frame_4k, 0.2)
        assert (result.width, result.height) == (3840, 2160) and len(result.faces) == 1
        assert 1600 < result.faces[0].box_xyxy[0] < 2112
        for bad in (np.zeros((0, 0, 3), np.uint8), np.full((8, 8, 3), np.nan, np.float32),
                    np.zeros((4, 4, 4, 4), np.uint8)):
            with pytest.raises(InputImageError):
                pipeline.process(bad, 0.3)


def test_twenty_faces_and_max_faces(model_dir, astronaut_bgr):
    head = cv2.resize(astronaut_bgr[20:240, 135:315], (90, 110))
    grid = np.full((4 * 120, 5 * 100, 3), 128, np.uint8)
    for r in range(4):
        for c in range(5):
            grid[r * 120 + 5:r * 120 + 115, c * 100 + 5:c * 100 + 95] = head
    with make_pipeline(model_dir, max_faces=None) as pipeline:
        faces = pipeline.process(grid, 0.0).faces
    assert len(faces) == 20 and len({f.track_id for f in faces}) == 20
    assert all(f.emotion_probs.shape == (8,) and f.au_probs.shape == (17,) for f in faces)
    with make_pipeline(model_dir, max_faces=5) as pipeline:
        assert len(pipeline.process(grid, 0.0).faces) == 5


def test_missing_corrupt_and_mismatched_models(tmp_path, astronaut_bgr):
    with pytest.raises(ModelFileError, match="does not exist"):
        Pipeline.from_model_dir(tmp_path / "absent")
    corrupt = tmp_path / "corrupt"
    build_standin_model(corrupt)
    (corrupt / "model.onnx").write_bytes(b"\x08\x07not really onnx")
    with pytest.raises(ModelFileError, match="could not load"):
        Pipeline.from_model_dir(corrupt)
    no_card = tmp_path / "nocard"
    build_standin_model(no_card)
    (no_card / "card.json").unlink()
    with pytest.raises(ModelCardError, match="no model card"):
        Pipeline.from_model_dir(no_card)
    wrong_labels = tmp_path / "wrong"
    build_standin_model(wrong_labels, labels=FERPLUS_LABELS[:7])
    card = json.loads((wrong_labels / "card.json").read_text())
    card["outputs"]["emotion_labels"] = list(FERPLUS_LABELS)   # card says 8, model gives 7
    (wrong_labels / "card.json").write_text(json.dumps(card))
    # Checked when the model is loaded (a dry run), not at the first face.
    with pytest.raises(ModelCardError, match=r"outputs.emotion_labels lists 8 names.*"
                                             r"gives 7 values"):
        Pipeline.from_model_dir(wrong_labels)
    extra = tmp_path / "extra"
    build_standin_model(extra, extra_input="pose")
    with pytest.raises(ModelFileError, match=r"inputs \['pose'\] that the pipeline cannot feed"):
        Pipeline.from_model_dir(extra)


def test_au_model_replaces_the_au_output(model_dir, astronaut_bgr, tmp_path):
    """An AU-only model with its own input size, colour and AU list replaces the AU output."""
    bp4d = tuple(f"AU{n}" for n in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    build_standin_model(tmp_path, size_px=(96, 96), color="rgb", au_names=bp4d, au_only=True,
                        seed=7)
    with make_pipeline(model_dir, au_model_dir=str(tmp_path), au_threshold=0.3) as pipeline:
        assert pipeline.au_names == bp4d and pipeline.emotion_labels == FERPLUS_LABELS
        face = pipeline.process(astronaut_bgr, 0.0).faces[0]
        detections = pipeline.detector.detect(astronaut_bgr)
        _, want_au = expected_outputs(astronaut_bgr, detections.landmarks5,
                                      pipeline.au_model.card, seed=7)
    assert face.au_probs.shape == (12,) and face.emotion_probs.shape == (8,)
    np.testing.assert_allclose(face.au_probs, want_au[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(face.au_active, want_au[0] >= 0.3)


def test_per_au_thresholds_of_the_card_decide_active(model_dir, astronaut_bgr, tmp_path):
    """The card's per-AU thresholds (fitted in training) decide ``au_active``; the
    ``au_threshold`` setting replaces them all."""
    import dataclasses

    bp4d = tuple(f"AU{n}" for n in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    build_standin_model(tmp_path, size_px=(96, 96), color="rgb", au_names=bp4d, au_only=True,
                        seed=7)
    card = ModelCard.load(tmp_path / "card.json")
    with make_pipeline(model_dir, au_model_dir=str(tmp_path)) as pipeline:
        probs = pipeline.process(astronaut_bgr, 0.0).faces[0].au_probs
    # One threshold just below each AU's probability and one just above, alternating.
    thresholds = {a: float(np.clip(p + (-0.01 if i % 2 == 0 else 0.01), 0.01, 0.99))
                  for i, (a, p) in enumerate(zip(bp4d, probs))}
    card.replace(outputs=dataclasses.replace(card.outputs, au_thresholds=thresholds)).save(
        tmp_path / "card.json")
    with make_pipeline(model_dir, au_model_dir=str(tmp_path)) as pipeline:
        face = pipeline.process(astronaut_bgr, 0.0).faces[0]
        np.testing.assert_allclose(pipeline.au_thresholds, list(thresholds.values()), atol=1e-6)
    assert face.au_active.tolist() == [i % 2 == 0 for i in range(len(bp4d))]
    with make_pipeline(model_dir, au_model_dir=str(tmp_path), au_threshold=0.999) as pipeline:
        assert not pipeline.process(astronaut_bgr, 0.0).faces[0].au_active.any()


def test_close_is_idempotent_and_backend_refuses_after_close(model_dir, astronaut_bgr):
    pipeline = make_pipeline(model_dir)
    backend = pipeline.model.backend
    pipeline.close()
    pipeline.close()
    with pytest.raises(ModelFileError, match="closed"):
        backend.infer({"image": np.zeros((1, 3, 112, 112), np.float32)})


def test_au_model_with_landmarks_input_gets_mean_shape_points(model_dir, astronaut_bgr, tmp_path):
    """LP-Net-style AU model: its declared (N, 68, 2) 'landmarks' input receives the mean
    shape in crop fractions (the default provider), in every chunk."""
    from aue_edge.edge.face.landmarks import mean_shape_68

    build_standin_model(tmp_path, au_only=True, extra_input="landmarks", batch=1, seed=3)
    with make_pipeline(model_dir, au_model_dir=str(tmp_path)) as pipeline:
        assert pipeline.au_model.needs_landmarks and not pipeline.model.needs_landmarks
        faces = pipeline.process(np.concatenate([astronaut_bgr, astronaut_bgr], axis=1),
                                 0.0).faces
        detections = pipeline.detector.detect(np.concatenate([astronaut_bgr] * 2, axis=1))
    _, plain_au = expected_outputs(np.concatenate([astronaut_bgr] * 2, axis=1),
                                   detections.landmarks5, pipeline.au_model.card, seed=3)
    shift = float(mean_shape_68(FERPLUS_TEMPLATE_5PT).mean())
    want = 1.0 / (1.0 + np.exp(-(np.log(plain_au / (1 - plain_au)) + shift)))
    assert len(faces) == 2
    for face, expected in zip(faces, want):
        np.testing.assert_allclose(face.au_probs, expected, rtol=1e-4, atol=1e-5)


def _edit_card(directory: Path, edit) -> None:
    card = json.loads((directory / "card.json").read_text())
    edit(card)
    (directory / "card.json").write_text(json.dumps(card))


def _assert_card_edits_refused(tmp_path, cases) -> None:
    """Each ``name: (edit, message)``: a stand-in model whose card got ``edit`` is refused at
    load with ``message``."""
    for name, (edit, message) in cases.items():
        directory = tmp_path / name
        build_standin_model(directory)
        _edit_card(directory, edit)
        with pytest.raises(ModelCardError, match=message):
            Pipeline.from_model_dir(directory)


def test_a_card_that_does_not_match_its_model_fails_at_load(tmp_path):
    """Label and AU counts, input size and names are checked against the model when it is
    opened, with a dry run on a blank batch: never at the first face."""
    cases = {
        "au_count": (lambda c: c["outputs"].update(au_names=c["outputs"]["au_names"][:16]),
                     r"outputs.au_names lists 16 names.*gives 17 values"),
        "input_size": (lambda c: c["input"].update(size_px=[96, 96]),
                       r"input.size_px \[96, 96\].*model input 'image' is \(\'N\', 3, 112, 112\)"),
        "output_name": (lambda c: c["outputs"].update(au_probs="aus"),
                        r"outputs.au_probs 'aus' is not a model output"),
    }
    _assert_card_edits_refused(tmp_path, cases)
    # A model with dynamic height and width: only the dry run can tell (it runs the card's
    # size through it); this one accepts any size, so a 96 px card is fine.
    dynamic = tmp_path / "dynamic"
    model = onnx.load(str(build_standin_model(dynamic)))
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "HW"):
        dim.dim_param = name
    onnx.save(model, str(dynamic / "model.onnx"))
    _edit_card(dynamic, lambda c: c["input"].update(size_px=[96, 96]))
    with Pipeline.from_model_dir(dynamic, num_threads=1) as pipeline:
        assert pipeline.card.input.size_px == (96, 96)


def test_a_model_with_non_finite_outputs_is_refused_at_load(tmp_path):
    corrupted = tmp_path / "nan_weights"
    build_standin_model(corrupted, non_finite="always")
    with pytest.raises(ModelFileError, match=r"non-finite.*emotion_probs.*blank batch"):
        Pipeline.from_model_dir(corrupted)


def test_a_non_finite_output_at_run_time_is_an_error_for_that_frame(tmp_path, astronaut_bgr):
    from aue_edge.core.errors import InferenceError

    directory = tmp_path / "nan_on_faces"
    build_standin_model(directory, non_finite="on_faces")
    with make_pipeline(directory) as pipeline:     # the blank dry run is finite
        with pytest.raises(InferenceError, match=r"'emotion_probs' has non-finite values"):
            pipeline.process(astronaut_bgr, 0.0)
        # A frame without faces runs no inference and still gives a result.
        assert pipeline.process(np.full((240, 320, 3), 90, np.uint8), 0.1).faces == []


def test_cards_with_duplicate_names_or_a_degenerate_template_are_refused(tmp_path):
    """Both would give silently wrong results: a label that can never be told apart, or an
    alignment that cannot map a face onto the template."""
    cases = {
        "duplicate_labels": (lambda c: c["outputs"].update(
            emotion_labels=["neutral", "happiness", "happiness"] + c["outputs"][
                "emotion_labels"][3:]), r"emotion_labels has duplicates: \['happiness'\]"),
        "duplicate_aus": (lambda c: c["outputs"].update(
            au_names=["AU1"] + c["outputs"]["au_names"][:-1]), r"au_names has duplicates"),
        "points_on_a_line": (lambda c: c["alignment"].update(
            template_5pt=[[0.1 * i, 0.5] for i in range(1, 6)]),
            r"template_5pt is degenerate"),
        "repeated_point": (lambda c: c["alignment"].update(
            template_5pt=[[0.3, 0.4]] * 2 + c["alignment"]["template_5pt"][2:]),
            r"template_5pt is degenerate"),
    }
    _assert_card_edits_refused(tmp_path, cases)


# ---------------------------------------------------------------------------------- schedule
def spy_detector(pipeline: Pipeline) -> list[str]:
    """Record, per call, which detection the pipeline ran: 'frame' (whole frame) or 'regions'
    (tracked faces only); the real detector still does the work."""
    calls: list[str] = []
    detector = pipeline.detector
    whole, regions = detector.detect, detector.detect_regions

    def detect(frame):
        calls.append("frame")
        return whole(frame)

    def detect_regions(frame, boxes):
        calls.append("regions")
        return regions(frame, boxes)

    detector.detect, detector.detect_regions = detect, detect_regions
    return calls


def spy_model_batches(pipeline: Pipeline) -> list[int]:
    """Record the number of faces of every model call."""
    sizes: list[int] = []
    backend = pipeline.model.backend
    infer = backend.infer

    def counted(feeds):
        sizes.append(len(feeds[pipeline.card.input.name]))
        return infer(feeds)

    backend.infer = counted
    return sizes


def box_iou(a, b) -> float:
    from aue_edge.edge.tracking import iou_matrix

    return float(iou_matrix(a, b)[0, 0])


def test_tracked_faces_between_detections_and_new_faces_within_the_interval(
        model_dir, three_faces_bgr):
    """detect_interval_frames 4: the whole frame on frames 0 and 4, the tracked face alone in
    between (moving 5 px a frame), with the results of the face found there; two faces that
    enter on frame 2 appear on frame 4, the next whole-frame detection."""
    one_face = three_faces_bgr.copy()
    one_face[:, 330:] = 128
    frames = [np.roll(one_face, 5 * k, axis=1) for k in range(2)]
    frames += [np.roll(three_faces_bgr, 5 * k, axis=1) for k in range(2, 6)]
    with make_pipeline(model_dir, detect_interval_frames=4, infer_interval_frames=1) as pipeline:
        calls = spy_detector(pipeline)
        results = [pipeline.process(frame, timestamp_s=k / 30) for k, frame in enumerate(frames)]
        with YuNetDetector() as reference:
            whole = [reference.detect(frame) for frame in frames]
        card = pipeline.card
    assert calls == ["frame", "regions", "regions", "regions", "frame", "regions"]
    assert [len(r.faces) for r in results] == [1, 1, 1, 1, 3, 3]
    first_id = results[0].faces[0].track_id
    assert all(first_id in {f.track_id for f in r.faces} for r in results)
    assert len({f.track_id for f in results[5].faces}) == 3
    for result, found, frame in zip(results, whole, frames):
        for face in result.faces:
            # the face is where the whole-frame detector sees it ...
            assert max(box_iou(face.box_xyxy, box) for box in found.boxes_xyxy) > 0.8
            # ... and its outputs are the model's on the crop its own landmarks give
            want_em, want_au = expected_outputs(frame, face.landmarks5[None], card)
            np.testing.assert_allclose(face.emotion_probs, want_em[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(face.au_probs, want_au[0], rtol=1e-4, atol=1e-5)


def test_region_interval_extrapolates_moving_faces_between_region_runs(model_dir,
                                                                       three_faces_bgr):
    """region_interval_frames 2: the regions on every other frame; in between each face moves
    on at the speed of its last two detections (held after its first), close to where regions
    on every frame find it, and the model runs on the crop those landmarks give. A face that
    leaves stays one frame longer; a lost face means regions (and the whole frame) again."""
    frames = [np.roll(three_faces_bgr, 6 * k, axis=1) for k in range(7)]
    with make_pipeline(model_dir, detect_interval_frames=10) as every:
        found = [{f.track_id: f for f in every.process(frame, timestamp_s=k / 30).faces}
                 for k, frame in enumerate(frames)]
    with make_pipeline(model_dir, detect_interval_frames=10, region_interval_frames=2,
                       infer_interval_frames=1) as pipeline:
        calls = spy_detector(pipeline)
        results = [pipeline.process(frame, timestamp_s=k / 30) for k, frame in enumerate(frames)]
        card = pipeline.card
        assert calls == ["frame", "regions", "regions", "regions"]
        assert [len(r.faces) for r in results] == [3] * 7
        assert len({f.track_id for r in results for f in r.faces}) == 3
        for k in (3, 5):   # extrapolated from the detections two frames apart
            for face in results[k].faces:
                other = found[k][face.track_id]
                # as close as a region's face is to the whole frame's (test_face_yunet.py)
                assert box_iou(face.box_xyxy, other.box_xyxy) > 0.85
                eyes = np.linalg.norm(other.landmarks5[1] - other.landmarks5[0])
                assert np.abs(face.landmarks5 - other.landmarks5).max() < 0.15 * eyes
                # ... and closer than holding the last detection would be
                held = next(f for f in results[k - 1].faces if f.track_id == face.track_id)
                assert box_iou(face.box_xyxy, other.box_xyxy) > box_iou(held.box_xyxy,
                                                                          other.box_xyxy)
                want_em, _ = expected_outputs(frames[k], face.landmarks5[None], card)
                np.testing.assert_allclose(face.emotion_probs, want_em[0], rtol=1e-4,
                                           atol=1e-5)
        # frame 1 held the first detection: 6 px behind
        moved = results[1].faces[0].box_xyxy - results[0].faces[0].box_xyxy
        np.testing.assert_array_equal(moved, 0)
        blank = np.full_like(three_faces_bgr, 128)
        assert len(pipeline.process(blank, 7 / 30).faces) == 3   # extrapolated: one frame late
        assert pipeline.process(blank, 8 / 30).faces == []       # regions, then the whole frame
        assert calls[4:] == ["regions", "frame"]


def test_region_interval_goes_on_moving_the_faces_seen_while_another_is_lost(model_dir,
                                                                             three_faces_bgr):
    """region_interval_frames 2 with one of three faces hidden for a while: its loss costs one
    whole-frame detection; the two faces still seen keep the schedule (regions every other
    frame, moved on in between), and the hidden face is looked for in its region on the region
    frames and comes back with its ID."""
    hidden = three_faces_bgr.copy()
    hidden[100:360, 330:540] = 128   # the middle face
    frames = [three_faces_bgr] * 2 + [hidden] * 4 + [three_faces_bgr]
    with make_pipeline(model_dir, detect_interval_frames=10,
                       region_interval_frames=2) as pipeline:
        calls = spy_detector(pipeline)
        results = [pipeline.process(frame, timestamp_s=k / 30) for k, frame in enumerate(frames)]
    # frames 0-6: whole frame; moved on; regions miss a face -> whole frame; moved on; regions;
    # moved on; regions (the hidden face found again)
    assert calls == ["frame", "regions", "frame", "regions", "regions"]
    assert [len(r.faces) for r in results] == [3, 3, 2, 2, 2, 2, 3]
    assert {f.track_id for f in results[6].faces} == {f.track_id for f in results[0].faces}


def test_a_lost_face_or_nothing_tracked_means_whole_frame_detection(model_dir, astronaut_bgr):
    blank = np.full_like(astronaut_bgr, 127)
    with make_pipeline(model_dir, detect_interval_frames=10) as pipeline:
        calls = spy_detector(pipeline)
        assert len(pipeline.process(astronaut_bgr, 0.0).faces) == 1
        assert len(pipeline.process(astronaut_bgr, 0.1).faces) == 1
        assert calls == ["frame", "regions"]
        # the face is gone: its region is empty, so the whole frame is searched on that frame
        assert pipeline.process(blank, 0.2).faces == []
        assert calls[2:] == ["regions", "frame"]
        # nothing tracked: every frame is a whole-frame detection, so a face appears at once
        assert pipeline.process(blank, 0.3).faces == []
        assert len(pipeline.process(astronaut_bgr, 0.4).faces) == 1
        assert calls[4:] == ["frame", "frame"]
        pipeline.reset()   # an unrelated image next: whole frame again
        pipeline.process(astronaut_bgr, 0.5)
        assert calls[6:] == ["frame"]


def test_each_face_runs_every_k_frames_staggered_and_keeps_its_outputs(model_dir,
                                                                         three_faces_bgr):
    """infer_interval_frames 2 with three faces (IDs 1-3): all three on the first frame, then
    by ID parity, 2 and 1 faces on alternate frames; a face not run keeps the outputs of its
    last run, even when the frame changed."""
    dark = (three_faces_bgr * 0.6).astype(np.uint8)
    frames = [three_faces_bgr, three_faces_bgr, dark, dark, dark]
    with make_pipeline(model_dir, detect_interval_frames=1, infer_interval_frames=2) as pipeline:
        sizes = spy_model_batches(pipeline)
        results = [pipeline.process(frame, timestamp_s=k / 30) for k, frame in enumerate(frames)]
        calls = spy_detector(pipeline)
        pipeline.process(dark, 5 / 30)
        card = pipeline.card
    assert calls == ["frame"]      # detect_interval_frames 1: never regions
    assert sizes == [3, 2, 1, 2, 1, 2]
    assert sorted(f.track_id for f in results[0].faces) == [1, 2, 3]
    for k, result in enumerate(results):
        for face in result.faces:
            ran = k == 0 or (k + face.track_id) % 2 == 0
            source = frames[k] if ran else frames[k - 1]
            points = face.landmarks5 if ran else next(
                f.landmarks5 for f in results[k - 1].faces if f.track_id == face.track_id)
            want_em, want_au = expected_outputs(source, points[None], card)
            np.testing.assert_allclose(face.emotion_probs, want_em[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(face.au_probs, want_au[0], rtol=1e-4, atol=1e-5)
    # frame 2 (dark) kept face 1's bright-frame outputs: the hold is visible
    face1 = [next(f for f in r.faces if f.track_id == 1) for r in results]
    np.testing.assert_array_equal(face1[2].emotion_probs, face1[1].emotion_probs)
    assert not np.allclose(face1[3].emotion_probs, face1[2].emotion_probs, atol=1e-4)


def test_a_face_lost_for_a_moment_is_found_again_in_its_region(model_dir, three_faces_bgr):
    """Face 3 is covered on frames 2-3: its region finds nothing on frame 2, so the whole frame
    is searched (2 faces); on frame 3 the two seen faces are found in their regions and face 3's
    region is searched too; on frame 4 it is back, found there with its old ID."""
    covered = three_faces_bgr.copy()
    covered[:, 600:] = 128
    frames = [three_faces_bgr, three_faces_bgr, covered, covered, three_faces_bgr]
    with make_pipeline(model_dir, detect_interval_frames=10) as pipeline:
        calls = spy_detector(pipeline)
        results = [pipeline.process(frame, timestamp_s=k / 30) for k, frame in enumerate(frames)]
    assert calls == ["frame", "regions", "regions", "frame", "regions", "regions"]
    assert [len(r.faces) for r in results] == [3, 3, 2, 2, 3]
    ids = [sorted(f.track_id for f in r.faces) for r in results]
    assert ids[0] == ids[1] == ids[4] and len(set(ids[0]) - set(ids[2])) == 1


def test_every_frame_schedule_runs_the_whole_chain_on_every_frame(model_dir, three_faces_bgr):
    with make_pipeline(model_dir, detect_interval_frames=1, infer_interval_frames=1) as pipeline:
        calls, sizes = spy_detector(pipeline), spy_model_batches(pipeline)
        for k in range(4):
            assert len(pipeline.process(three_faces_bgr, k / 30).faces) == 3
    assert calls == ["frame"] * 4 and sizes == [3] * 4


def test_schedule_settings_are_validated(tmp_path):
    for field in ("detect_interval_frames", "infer_interval_frames"):
        for bad, message in ((0, "expected >= 1, found 0"), (-3, "expected >= 1"),
                             (2.5, "expected an integer"), ("5", "expected an integer"),
                             (True, "expected an integer"), (None, "expected an integer")):
            with pytest.raises(ConfigError, match=f"{field}.*{message}"):
                PipelineConfig().replace(**{field: bad})
    path = tmp_path / "p.yaml"
    path.write_text("max_faces: 3\ndetect_interval_frames: 0\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:2: field 'detect_interval_frames'"):
        PipelineConfig.from_yaml(path)
    assert PipelineConfig().replace(detect_interval_frames=30,
                                    infer_interval_frames=1).detect_interval_frames == 30
