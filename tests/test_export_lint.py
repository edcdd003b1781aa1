"""``aue export`` runs the TensorRT lint on what it wrote and never replaces a good file with
one TensorRT would reject (needs torch: the train extra)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch (the train extra) is not installed: the "
                            "export was NOT executed")

from aue_edge.edge.model_card import ModelCard  # noqa: E402
from aue_edge.edge.trt_lint import TrtLintError, lint_file  # noqa: E402
from aue_edge.train.export import export_onnx  # noqa: E402

SHIPPED_CARD = Path(__file__).resolve().parents[1] / "aue_edge" / "edge" / "models" / "aue_crl" / "card.json"


class Tiny(torch.nn.Module):
    """Conv (+ torch's LocalResponseNorm, whose legacy export holds a Shape-conditioned If
    with a rank-4 and a rank-5 branch: the construct the first classifier release had)."""

    def __init__(self, torch_lrn: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.lrn = torch.nn.LocalResponseNorm(5) if torch_lrn else torch.nn.Identity()
        self.fc = torch.nn.Linear(4, 8)
        self.au = torch.nn.Linear(4, 21)

    def forward(self, image):
        feat = self.lrn(self.conv(image)).mean(dim=(2, 3))
        return self.fc(feat).softmax(dim=1), self.au(feat).sigmoid()


def test_export_that_tensorrt_would_reject_stops_and_keeps_the_old_file(tmp_path):
    card = ModelCard.load(SHIPPED_CARD)
    good = export_onnx(Tiny(torch_lrn=False).eval(), card, tmp_path)
    assert lint_file(good) == []
    before = good.read_bytes()
    with pytest.raises(TrtLintError, match=r"(?s)\[if-branch-rank\] /lrn/If.*then \(4,\), "
                                           r"else \(5,\).*operators.md"):
        export_onnx(Tiny(torch_lrn=True).eval(), card, tmp_path)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "model.onnx"]
