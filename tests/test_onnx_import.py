"""``aue import-onnx``: the shipped AUE-CRL model.onnx back into a training checkpoint, exact
against ONNX Runtime on real faces; files that are not AUE-CRL exports are refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from aue_edge.cli import main as aue_main
from aue_edge.core.errors import ModelFileError
from aue_edge.edge.model_card import card_from_onnx, embed_card_in_onnx
from aue_edge.edge.preprocess import to_model_input
from aue_edge.train.onnx_import import checkpoint_from_onnx
from aue_edge.train.runtime import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "aue_edge" / "edge" / "models" / "aue_crl" / "model.onnx"
YUNET = REPO.parent / "shared" / "models" / "yunet" / "face_detection_yunet.onnx"


def test_import_is_exact_on_real_faces(tmp_path, ferplus_root):
    import cv2

    faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in
                      sorted((ferplus_root / "FER2013Test").glob("*.png"))[:16]])
    card = card_from_onnx(SHIPPED)
    batch = to_model_input(faces, card.input)
    report = checkpoint_from_onnx(SHIPPED, tmp_path / "model.pt", check_images=batch)
    assert max(report["max_abs_diff_vs_onnxruntime"].values()) < 1e-4
    model, payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["model_name"] == card.model_name
    assert payload["card"]["emotion_labels"] == list(card.outputs.emotion_labels)
    # The stage-1 head is the f_e part of the fused head; training can continue from here.
    e = model.cfg.expr_channels
    assert torch.equal(model.expr_head.weight, model.fused_head.weight[:, :e])
    torch.testing.assert_close(model.prior_weight,
                               torch.tensor(card.architecture["learned_prior_weight"]))


def test_files_that_are_not_aue_crl_exports_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no model card"):
        checkpoint_from_onnx(YUNET, tmp_path / "x.pt")
    proto = onnx.load(str(SHIPPED))
    embed_card_in_onnx(proto, card_from_onnx(SHIPPED).replace(
        architecture={"name": "lp_net", "config": {}}))
    onnx.save(proto, str(tmp_path / "other.onnx"))
    with pytest.raises(ModelFileError, match="only AUE-CRL exports"):
        checkpoint_from_onnx(tmp_path / "other.onnx", tmp_path / "x.pt")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="cannot be read as ONNX"):
        checkpoint_from_onnx(tmp_path / "bad.onnx", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_aue_import_onnx_command(tmp_path, capsys):
    assert aue_main(["import-onnx", str(SHIPPED), "--out", str(tmp_path / "m.pt")]) == 0
    assert "largest output difference" in capsys.readouterr().out
    assert (tmp_path / "m.pt").is_file()
