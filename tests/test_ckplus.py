"""CK+ (real FACS codes): the reader, its subject-exclusive folds, the AU metrics, and
``aue evaluate --dataset ckplus`` with its baselines, on the real faces in ../shared."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aue_edge.cli import main as aue_main
from aue_edge.core.errors import DatasetError, ModelCardError, ModelFileError
from aue_edge.edge.model_card import ModelCard, card_from_onnx, embed_card_in_onnx
from aue_edge.train.ckplus_eval import evaluate_ckplus, fit_logistic
from aue_edge.data import get_dataset
from aue_edge.data.ckplus import CKPLUS_AUS, CKPLUS_LABELS, CkPlus
from aue_edge.data.folds import CKPLUS_FOLDS
from aue_edge.train.metrics import au_pseudo_label_stats, best_f1_threshold, roc_auc

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "aue_edge" / "edge" / "models" / "aue_crl"


def test_reader_counts_match_provenance(ckplus_root):
    data = CkPlus(ckplus_root, "all")
    assert len(data) == 648
    assert len(set(data.sequences)) == 216 and len(set(data.subjects)) == 79
    aus = data.au_matrix()
    seq = np.array(data.sequences)
    positives = {n: len(set(seq[aus[:, CKPLUS_AUS.index(n)] == 1])) for n in CKPLUS_AUS}
    # PROVENANCE.md: positive sequences per AU.
    assert positives["AU1"] == 85 and positives["AU12"] == 57 and positives["AU25"] == 121
    assert positives["AU10"] == 10 and positives["AU26"] == 10
    assert set(CKPLUS_LABELS) <= {"anger", "contempt", "disgust", "fear", "happiness",
                                  "sadness", "surprise"}
    images, labels, probs, _ = data.load_arrays(progress=False)
    assert images.shape == (648, 48, 48) and images.dtype == np.uint8
    assert (probs.argmax(1) == labels).all()


def test_folds_are_subject_exclusive_and_cover_every_subject(ckplus_root):
    everyone = set(CkPlus(ckplus_root, "all").subjects)
    flat = [s for fold in CKPLUS_FOLDS for s in fold]
    assert len(flat) == len(set(flat)) and set(flat) == everyone
    for k in (1, 2, 3):
        test = get_dataset("ckplus", ckplus_root, "test", fold=k)
        train = get_dataset("ckplus", ckplus_root, "train", fold=k)
        assert not set(test.subjects) & set(train.subjects)
        assert not set(test.sequences) & set(train.sequences)
        assert len(test) + len(train) == 648
        assert set(test.targets) == set(range(7))  # every emotion in every test fold


def test_bad_label_files_name_the_problem(ckplus_root, tmp_path):
    shutil.copytree(ckplus_root, tmp_path / "ck", ignore=shutil.ignore_patterns("*.png"))
    label_file = tmp_path / "ck" / "labels.csv"
    text = label_file.read_text()
    label_file.write_text(text.replace("image,subject", "img,subject", 1))
    with pytest.raises(DatasetError, match="expected the header"):
        CkPlus(tmp_path / "ck")
    label_file.write_text(text.replace(",4 7 17 23 24\n", ",4 7 17 99\n", 1))
    with pytest.raises(DatasetError, match="AU '99'"):
        CkPlus(tmp_path / "ck")
    label_file.write_text(text)
    with pytest.raises(DatasetError, match="does not exist"):
        CkPlus(tmp_path / "ck")  # the PNGs were not copied
    with pytest.raises(DatasetError, match="fold"):
        CkPlus(ckplus_root, "test", fold=4)


def test_auc_and_threshold_metrics():
    y = np.array([0, 0, 1, 1, 0, 1], bool)
    assert roc_auc(y, np.full(6, 0.3)) == 0.5           # a constant carries no ranking
    assert roc_auc(y, y.astype(float)) == 1.0
    assert roc_auc(y, -y.astype(float)) == 0.0
    assert np.isnan(roc_auc(np.zeros(4, bool), np.arange(4)))
    t = best_f1_threshold(y, np.array([0.1, 0.2, 0.7, 0.8, 0.3, 0.9]))
    assert 0.3 < t < 0.7
    # Pseudo-label statistics: a constant AU output gets AUC 0.5 where MAE/agreement looked fine.
    pseudo = np.tile([[0.9, 0.1], [0.1, 0.1]], (10, 1))
    const = au_pseudo_label_stats(np.full_like(pseudo, 0.2), pseudo, ("AU1", "AU2"))
    good = au_pseudo_label_stats(pseudo, pseudo, ("AU1", "AU2"))
    assert const["per_au"]["AU1"]["auc"] == 0.5 and good["per_au"]["AU1"]["auc"] == 1.0
    assert const["mean_std_prob"] == pytest.approx(0.0, abs=1e-12)


def test_logistic_read_out_fits_a_separable_rule():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    y = (x[:, 0] - x[:, 1] > 0).astype(float)
    assert ((fit_logistic(x, y)(x) > 0.5) == y).mean() > 0.95
    k = x.argmax(1)  # three classes split by linear boundaries
    probs = fit_logistic(x, k, classes=3)(x)
    assert probs.shape == (200, 3) and (probs.argmax(1) == k).mean() > 0.9


def copy_with_training(dst: Path, training_ckplus: dict | None) -> Path:
    """The shipped model.onnx at ``dst`` with its card's CK+ training record replaced."""
    import onnx

    proto = onnx.load(str(SHIPPED / "model.onnx"))
    card = card_from_onnx(SHIPPED / "model.onnx")
    training = {k: v for k, v in card.training.items() if k != "ckplus"}
    if training_ckplus is not None:
        training["ckplus"] = training_ckplus
    embed_card_in_onnx(proto, card.replace(training=training))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def cv_result(ckplus_root, tmp_path_factory):
    """The CK+ evaluation of a model that never saw CK+: the first shipped model's file layout
    with its CK+ training record removed (fold models are checked separately)."""
    out = tmp_path_factory.mktemp("ck_eval")
    model = copy_with_training(out / "model.onnx", None)
    return evaluate_ckplus([model], ckplus_root, out_dir=out / "report", progress=False), out


def test_evaluation_reports_every_baseline_subject_exclusively(cv_result):
    result, out = cv_result
    assert result["num_images"] == 648 and result["num_subjects"] == 79
    assert len(result["au_names"]) == 17
    au = result["au"]
    assert set(au) == {"model", "constant", "knowledge", "oracle", "stacked"}
    assert au["constant"]["mean_auc"] == 0.5
    # The knowledge read-out and the oracle carry information on real FACS codes.
    assert au["oracle"]["mean_auc"] > 0.75 and au["knowledge"]["mean_auc"] > 0.7
    assert au["stacked"]["mean_auc"] > au["constant"]["mean_auc"]
    assert 0 <= result["emotion_accuracy"]["model"] <= 1
    assert set(result["per_fold"]) == {"fold1", "fold2", "fold3"}
    saved = json.loads((out / "report" / "ckplus_evaluation.json").read_text())
    assert saved["au"]["model"]["mean_f1"] == au["model"]["mean_f1"]
    assert (out / "report" / "ckplus_au_f1_auc.png").stat().st_size > 10_000


def test_a_model_is_never_scored_on_ckplus_subjects_it_trained_on(ckplus_root, tmp_path):
    copy_with_training(tmp_path / "model.onnx",
                       {"fold_held_out": 2, "subjects": list(CKPLUS_FOLDS[0])})
    with pytest.raises(ModelFileError, match="trained on CK\\+ subjects of fold 1"):
        evaluate_ckplus([tmp_path / "model.onnx"], ckplus_root, progress=False)
    # The fold it did not train on is fine.
    result = evaluate_ckplus([tmp_path / "model.onnx"], ckplus_root, fold=2, progress=False)
    assert result["folds"] == [2] and result["num_subjects"] == len(CKPLUS_FOLDS[1])
    with pytest.raises(DatasetError, match="one model"):
        evaluate_ckplus([tmp_path / "model.onnx"] * 2, ckplus_root, progress=False)


def test_aue_evaluate_ckplus_command(cv_result, ckplus_root, capsys):
    _, out = cv_result
    code = aue_main(["evaluate", str(out / "model.onnx"), "--dataset", "ckplus", "--root",
                     str(ckplus_root), "--fold", "3", "--out-dir", str(out / "cli"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["folds"] == [3]
    assert (out / "cli" / "ckplus_evaluation.json").is_file()


def test_card_per_au_thresholds_are_validated():
    card = ModelCard.load(SHIPPED / "card.json")
    names = card.outputs.au_names
    changed = card.replace(outputs=card.outputs.__class__(
        **{**card.outputs.__dict__, "au_thresholds": {names[0]: 0.3}}))
    assert changed.outputs.thresholds()[0] == 0.3
    assert changed.outputs.thresholds()[1] == card.outputs.au_threshold
    with pytest.raises(ModelCardError, match="does not output"):
        card.replace(outputs=card.outputs.__class__(
            **{**card.outputs.__dict__, "au_thresholds": {"AU99": 0.3}}))
    with pytest.raises(ModelCardError, match="must lie in"):
        card.replace(outputs=card.outputs.__class__(
            **{**card.outputs.__dict__, "au_thresholds": {names[0]: 1.5}}))


def test_card_metrics_record_the_cv_result(cv_result):
    from aue_edge.core.errors import ConfigError
    from aue_edge.train.cli import card_metrics

    result, _ = cv_result
    cv = card_metrics(result, "cv.json")["ckplus_cv"]
    assert cv["au"]["knowledge"]["mean_auc"] == round(result["au"]["knowledge"]["mean_auc"], 4)
    assert cv["emotion_accuracy"] == result["emotion_accuracy"]
    with pytest.raises(ConfigError, match="not an 'aue evaluate --json' result"):
        card_metrics({"dataset": "ckplus"}, "bad.json")
