"""``aue evaluate`` and ``aue data`` on bad input: a model that gives NaN, a negative --limit,
a FER+ image of the wrong size. Real FER+ images (../shared), real ONNX Runtime, the test
stand-in model of tests/helpers (not the product's model)."""
from __future__ import annotations

import cv2
import numpy as np
from helpers.standin_model import build_standin_model

from aue_edge.cli import main as aue_main


def _evaluate(model, ferplus_root, *extra):
    return aue_main(["evaluate", str(model), "--dataset", "ferplus", "--root",
                     str(ferplus_root), "--split", "test", "--threads", "1", *extra])


def test_evaluate_refuses_to_score_non_finite_outputs(tmp_path, ferplus_root, capsys):
    model = build_standin_model(tmp_path / "nan", non_finite="always")
    code = _evaluate(model, ferplus_root, "--limit", "16", "--json")
    out, err = capsys.readouterr()
    assert code == 2 and "accuracy" not in out, out
    assert "16 of 16 images" in err and "non-finite" in err, err


def test_evaluate_limit_must_not_be_negative(tmp_path, ferplus_root, capsys):
    model = build_standin_model(tmp_path / "ok")
    code = _evaluate(model, ferplus_root, "--limit", "-5", "--json")
    out, err = capsys.readouterr()
    assert code == 2 and "--limit must be >= 0" in err and "accuracy" not in out, (out, err)


def test_data_decode_all_refuses_what_evaluate_refuses(tmp_path, ferplus_root, capsys):
    """300x200 images in a FER+ split: --decode-all reports them, as loading for evaluate
    does (FER+ images are 48x48)."""
    split = tmp_path / "ferplus" / "FER2013Test"
    split.mkdir(parents=True)
    rows = (ferplus_root / "FER2013Test" / "label.csv").read_text().splitlines()[:3]
    (split / "label.csv").write_text("\n".join(rows) + "\n")
    names = [row.split(",")[0] for row in rows]
    for name in names:
        cv2.imwrite(str(split / name), np.full((200, 300), 128, np.uint8))
    code = aue_main(["data", "ferplus", str(tmp_path / "ferplus"), "--split", "test",
                     "--decode-all"])
    err = capsys.readouterr().err
    assert code == 2 and "is 300x200" in err and "48x48" in err, err
