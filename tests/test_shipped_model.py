"""The shipped models: what a robot gets. The default AUE-CRL (``aue_edge/edge/models/aue_crl/``)
and the fast profile's student distilled from it (``aue_edge/edge/models/aue_student/``). Each
card carries the per-AU thresholds and its CK+ cross-validation, and each AU output carries
information on faces it never saw: the smiling astronaut gets AU6 + AU12, and AU12 ranks FER+
test smiles above neutral faces. (That their files hold no construct TensorRT rejects is
tests/test_trt_lint.py's job.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aue_edge.edge.model_card import ModelCard, card_from_onnx
from aue_edge.edge.pipeline import Pipeline
from aue_edge.train.metrics import roc_auc

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "aue_edge" / "edge" / "models"
MODEL_DIRS = [pytest.param(MODELS / name, id=name) for name in ("aue_crl", "aue_student")]
FILES = ("model.onnx", "model.int8.onnx", "model.int8.ort.onnx")


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_every_file_carries_the_same_labels_and_thresholds(model_dir, name):
    card = card_from_onnx(model_dir / name)
    reference = ModelCard.load(model_dir / "card.json")
    assert card.outputs.au_names == reference.outputs.au_names
    assert card.outputs.au_thresholds == reference.outputs.au_thresholds
    assert set(card.outputs.au_thresholds) == set(card.outputs.au_names)


@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_card_records_ckplus_training_and_cross_validation(model_dir):
    card = ModelCard.load(model_dir / "card.json")
    assert len(card.training["ckplus"]["subjects"]) == 79
    cv = card.metrics["ckplus_cv"]
    # The AU output beats the zero-parameter knowledge read-out emotion_probs @ W.
    assert cv["au"]["model"]["mean_f1"] > cv["au"]["knowledge"]["mean_f1"]
    assert cv["au"]["model"]["mean_auc"] > cv["au"]["knowledge"]["mean_auc"]


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.ort.onnx"])
@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_a_smile_activates_au6_and_au12(astronaut_bgr, model_dir, name):
    with Pipeline.from_model_dir(model_dir, model_file=name, smoothing="none",
                                 num_threads=1) as pipeline:
        face = pipeline.process(astronaut_bgr, 0.0).faces[0]
        active = {n for n, on in zip(pipeline.au_names, face.au_active) if on}
    assert face.emotion_label == "happiness"
    assert {"AU6", "AU12"} <= active, active
    assert not active & {"AU4", "AU9", "AU15"}, active  # brow lowerer, nose wrinkler, frown


@pytest.mark.parametrize("model_dir", MODEL_DIRS)
def test_au12_ranks_ferplus_test_smiles_above_neutral_faces(ferplus_root, model_dir):
    """FER+ test faces were never trained on; AU12 (lip corner puller) must separate happy
    from neutral ones far better than chance (a constant output scores 0.5)."""
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.edge.preprocess import to_model_input
    from aue_edge.data import get_dataset

    data = get_dataset("ferplus", ferplus_root, "test")
    images, labels, _, _ = data.load_arrays(progress=False)
    keep = np.isin(labels, [0, 1])  # neutral, happiness
    images, labels = images[keep][:600], labels[keep][:600]
    card = ModelCard.load(model_dir / "card.json")
    with OrtBackend(model_dir / "model.onnx", num_threads=1) as backend:
        au = backend.infer({"image": to_model_input(images, card.input)})["au_probs"]
    auc = roc_auc(labels == 1, au[:, card.outputs.au_names.index("AU12")])
    assert auc > 0.9, auc
