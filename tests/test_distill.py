"""Distillation of the student model from an exported AUE-CRL teacher (``aue train`` with a
student config): real FER+ and CK+ faces, the shipped AUE-CRL model as teacher, CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from aue_edge.cli import main as aue_main
from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.edge.model_card import find_card
from aue_edge.train import distill
from aue_edge.train.runtime import read_checkpoint

torch.set_num_threads(1)  # the host is shared; more threads only spin


def write_config(path, packed, out_dir, ckplus_root, teacher, **distill_keys) -> str:
    raw = {"model": {"name": "student_s48", "kwargs": {"widths": [8, 16, 16, 32]}},
           "data": {"packed": str(packed), "ckplus_root": str(ckplus_root), "ckplus_fold": 0},
           "run": {"batch_size": 32, "eval_batch_size": 64, "device": "cpu",
                   "out_dir": str(out_dir)},
           "distill": {"teacher": str(teacher), "epochs": 3, "lr": 0.01, **distill_keys}}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def teacher(repo_root):
    return repo_root / "aue_edge" / "edge" / "models" / "aue_crl" / "model.onnx"


@pytest.fixture(scope="module")
def distilled(packed_small, ckplus_root, teacher, tmp_path_factory):
    """A tiny student trained through ``aue train`` and exported through ``aue export``."""
    tmp = tmp_path_factory.mktemp("student")
    config = write_config(tmp / "student.yaml", packed_small, tmp / "run", ckplus_root, teacher)
    assert aue_main(["train", config, "--no-progress"]) == 0
    assert aue_main(["export", str(tmp / "run" / "model.pt"), "--out", str(tmp / "onnx")]) == 0
    return tmp


def test_student_run_writes_model_card_and_report(distilled, teacher):
    run = distilled / "run"
    report = json.loads((run / "training_report.json").read_text())
    assert report["ckplus_images"] > 500 and report["train_images"] == 64
    payload = read_checkpoint(run / "model.pt")
    card = payload["card"]
    assert card["input"]["size_px"] == [48, 48]
    teacher_card = find_card(teacher)
    assert card["au_names"] == list(teacher_card.outputs.au_names)
    assert card["emotion_labels"] == list(teacher_card.outputs.emotion_labels)
    # the student's CK+ subjects and its teacher's: aue evaluate refuses to score it on them
    seen = set(card["training"]["ckplus"]["subjects"])
    assert set(teacher_card.training["ckplus"]["subjects"]) <= seen
    assert card["training"]["distillation"]["teacher_model"] == teacher_card.model_name
    assert set(card["au_thresholds"]) and all(0.05 <= t <= 0.95
                                              for t in card["au_thresholds"].values())
    assert (run / distill.TARGETS_FILE).is_file()
    # the teacher's W travels with the student: its knowledge read-out baseline
    assert np.asarray(card["knowledge_prior"]).shape == (8, len(card["au_names"]))


def test_the_student_learns_the_teacher(distilled):
    """The KL term to the teacher and the AU BCE fall over the epochs on real faces."""
    history = json.loads((distilled / "run" / "training_report.json").read_text())["history"]
    first, last = history[0]["train"], history[-1]["train"]
    assert last["kd"] < 0.9 * first["kd"]
    assert last["au"] < 0.9 * first["au"]


def test_exported_student_runs_in_the_pipeline(distilled, astronaut_bgr):
    from aue_edge import Pipeline

    card = find_card(distilled / "onnx" / "model.onnx")
    assert card.input.size_px == (48, 48)
    assert card.outputs.au_probs == "au_probs" and card.outputs.au_thresholds
    assert np.asarray(card.architecture["knowledge_prior"]).shape == (8, 17)
    with Pipeline.from_model_dir(distilled / "onnx") as pipeline:
        result = pipeline.process(astronaut_bgr)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.emotion_probs.shape == (8,) and abs(float(face.emotion_probs.sum()) - 1) < 1e-4
    assert face.au_probs.shape == (len(card.outputs.au_names),)


def test_fold_student_refuses_a_teacher_that_saw_the_fold(packed_small, ckplus_root, teacher,
                                                          tmp_path):
    """The shipped AUE-CRL trained on every CK+ subject: a fold-1 student learning from it
    would be scored on faces its teacher saw."""
    config = write_config(tmp_path / "s.yaml", packed_small, tmp_path / "run", ckplus_root,
                          teacher)
    cfg = distill.load_distill_config(config, {"data.ckplus_fold": 1})
    with pytest.raises(ModelFileError, match="teacher .* CK\\+ subjects of fold 1"):
        distill.train(cfg, progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_teacher_outputs_are_cached_per_teacher_and_faces(tmp_path):
    faces = np.zeros((4, 48, 48), np.uint8)
    calls = []

    def predictor():
        def predict(batch):
            calls.append(len(batch))
            return np.full((len(batch), 8), 0.125, np.float32), np.zeros((len(batch), 2))

        card = type("Card", (), {"input": _input_spec()})()
        return card, predict, lambda: None

    first = distill._teacher_targets(predictor(), "a", faces, tmp_path, 2, False)
    again = distill._teacher_targets(predictor(), "a", faces, tmp_path, 2, False)
    assert calls == [2, 2] and np.array_equal(first[0], again[0])
    distill._teacher_targets(predictor(), "b", faces, tmp_path, 2, False)  # another teacher
    distill._teacher_targets(predictor(), "b", faces[:3], tmp_path, 2, False)  # other faces
    assert calls == [2, 2, 2, 2, 2, 1]
    (tmp_path / distill.TARGETS_FILE).write_bytes(b"PK\x03\x04 cut off")  # a corrupt cache
    emotion, _ = distill._teacher_targets(predictor(), "b", faces[:3], tmp_path, 2, False)
    assert calls == [2, 2, 2, 2, 2, 1, 2, 1] and emotion.shape == (3, 8)
    assert distill._teacher_targets(predictor(), "b", faces[:3], tmp_path, 2, False)[0].shape \
        == (3, 8) and len(calls) == 8  # rewritten whole


def _input_spec():
    from aue_edge.edge.model_card import InputSpec

    return InputSpec(name="image", size_px=(48, 48), color="gray3", mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("keys, message", [
    ({"distill.teacher": ""}, "distill.teacher is needed"),
    ({"distill.kd_weight": 1.5}, "kd_weight must be in \\[0, 1\\]"),
    ({"distill.temperature": 0}, "temperature must be > 0"),
    ({"data.ckplus_fold": 4}, "ckplus_fold must be 0"),
    ({"stage1.epochs": 3}, "unknown section"),
    ({"model.kwargs.widths": [8]}, "widths must be two or more"),
])
def test_config_errors_name_the_problem(packed_small, ckplus_root, teacher, tmp_path, keys,
                                        message):
    config = write_config(tmp_path / "s.yaml", packed_small, tmp_path / "run", ckplus_root,
                          teacher)
    with pytest.raises(ConfigError, match=message):
        cfg = distill.load_distill_config(config, keys)
        distill.train(cfg, progress=False)


def test_missing_teacher_and_refused_flags(packed_small, ckplus_root, tmp_path, capsys):
    config = write_config(tmp_path / "s.yaml", packed_small, tmp_path / "run", ckplus_root,
                          tmp_path / "nowhere.onnx")
    assert aue_main(["train", config, "--no-progress"]) != 0
    assert "distill.teacher" in capsys.readouterr().err
    assert aue_main(["train", config, "--init", "x.pt"]) != 0
    assert "--init: not for a student model" in capsys.readouterr().err
