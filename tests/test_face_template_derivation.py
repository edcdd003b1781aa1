"""The template derivation script on a real FER+ sample: counts, output files, agreement."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from aue_edge.core.errors import DatasetError
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.train import derive_alignment_template as derive


def test_reader_keeps_every_face_row_of_the_real_label_file(ferplus_root):
    split = ferplus_root / "FER2013Test"
    with (split / "label.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    paths, not_faces = derive.read_ferplus_faces(split)
    assert len(paths) + not_faces == len(rows)
    assert paths[0].name == rows[0][0] and paths[0].is_file()


def test_small_sample_reproduces_the_committed_template(ferplus_root, tmp_path):
    out = tmp_path / "template"
    assert derive.main(["--ferplus-root", str(ferplus_root), "--max-images", "150",
                        "--out", str(out)]) == 0
    result = json.loads((out / "template.json").read_text())
    assert (out / "template.png").stat().st_size > 0
    assert result["images"] == 150
    assert result["detections_used"] + result["images_without_face"] == 150
    assert result["detections_used"] >= 140
    # 150 images vs the full split: the mean moves by well under the per-point spread.
    np.testing.assert_allclose(result["template_5pt"], FERPLUS_TEMPLATE_5PT, atol=0.02)


def test_malformed_label_file_names_file_and_line(tmp_path):
    split = tmp_path / "FER2013Train"
    split.mkdir()
    (split / "label.csv").write_text('a.png,"(0, 0, 48, 48)",1,0,0,0,0,0,0,0,0,0\n'
                                     'b.png,"(0, 0, 48, 48)",1,x,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"label.csv:2: vote counts"):
        derive.read_ferplus_faces(split)
    with pytest.raises(DatasetError, match="does not exist"):
        derive.read_ferplus_faces(tmp_path / "missing")
