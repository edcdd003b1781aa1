"""AU detectors end to end on real data: FER+ images with pseudo AU labels through the stage
trainers (loss decreases), BP4D/DISFA fixtures through the readers (3 folds, F1-frame report),
ONNX export with the model card and torch-vs-ONNX Runtime parity, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import ConfigError
from aue_edge.edge.model_card import find_card
from aue_edge.train.au.run import au_flag_overrides, train_from_config
from aue_edge.train.run_config import cli_overrides, config_family, read_config_family
from aue_edge.train.runtime import load_checkpoint, read_checkpoint

torch.set_num_threads(1)
FAMILIES = ("lp_net", "gtle_net", "kdsrl")
NO_AUGMENT = {f"augment.{k}": v for k, v in {
    "flip_prob": 0.0, "max_rotation_deg": 0.0, "max_shift_frac": 0.0, "scale_min": 1.0,
    "scale_max": 1.0, "erase_prob": 0.0}.items()}


def _tiny(repo_root: Path, family: str, out_dir: Path, ferplus_root: Path, **extra) -> dict:
    overrides = {"run.out_dir": str(out_dir), "run.progress": False,
                 "data.root": str(ferplus_root), **extra}
    return train_from_config(repo_root / "aue_edge" / "train" / "configs" / f"{family}_tiny.yaml",
                             overrides=overrides)


@pytest.fixture(scope="module")
def ferplus_runs(repo_root, ferplus_root, tmp_path_factory):
    """Each family's tiny config trained once on real FER+ images (pseudo AU labels)."""
    out = tmp_path_factory.mktemp("au_runs")
    return {f: (_tiny(repo_root, f, out / f, ferplus_root), out / f) for f in FAMILIES}


def test_lp_net_trained_to_stage_2_exports_and_scores_stage_2(repo_root, ferplus_root,
                                                              tmp_path):
    """The stage an LP-Net was trained to travels in the checkpoint (model_stage), not in the
    model: its export runs L-Net without the untrained P-Net and takes no landmarks input."""
    from aue_edge.train.au.export import export_au_checkpoint

    stages = [{"stage": 1, "epochs": 1, "lr_stem": 1e-3, "lr_head": 1e-3},
              {"stage": 2, "epochs": 1, "lr_stem": 5e-4, "lr_head": 1e-3}]
    _tiny(repo_root, "lp_net", tmp_path, ferplus_root, **{"lp_net.stages": stages},
          **{"data.max_train_images": 16, "data.max_eval_images": 8})
    model, payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["model_stage"] == 2
    path = export_au_checkpoint(tmp_path / "model.pt", tmp_path / "onnx")
    assert find_card(path).extra_inputs == {}
    image = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with OrtBackend(path) as backend:
        assert [i.name for i in backend.inputs] == ["image"]
        got = backend.infer({"image": image})["au_probs"]
    with torch.no_grad():
        ref = torch.sigmoid(model.eval()(torch.from_numpy(image), stage=2)["au_logits"])
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_loss_decreases_on_real_ferplus_images(repo_root, ferplus_root, tmp_path, family):
    # one fixed batch of 16 real FER+ images, no augmentation, several steps: the trained
    # objective (LP-Net stage 3, GTLE-Net BCE + reconstruction, KDSRL classifiers) must drop
    steps = {"lp_net": {"lp_net.stages": [{"stage": 3, "epochs": 10, "lr_stem": 1e-3,
                                           "lr_head": 1e-3, "lr_pnet": 1e-3}]},
             "gtle_net": {"gtle_net.gee_epochs": 0, "gtle_net.epochs": 10},
             "kdsrl": {"kdsrl.ssl_epochs": 0, "kdsrl.classify_mode": "finetune",
                       "kdsrl.classify_epochs": 10}}[family]
    if family == "lp_net":
        steps["lp_net.selective_learning"] = False   # SL re-draws its sub-sample every step
    report = _tiny(repo_root, family, tmp_path, ferplus_root, **steps, **NO_AUGMENT,
                   **{"data.max_train_images": 16, "data.max_eval_images": 8})
    history = json.loads((tmp_path / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert report["train"]["num_images"] == 16


def test_ferplus_runs_write_checkpoint_history_and_pseudo_f1(ferplus_runs):
    for family, (report, out) in ferplus_runs.items():
        payload = read_checkpoint(out / "model.pt")
        assert payload["au_names"] == report["au_names"] and len(report["au_names"]) == 17
        assert payload["pseudo_labels"] is True
        assert 0.0 <= report["pseudo_mean_f1_pct"] <= 100.0
        assert 0.0 < report["all_positive_mean_f1_pct"] <= 100.0
        stages = {h["stage"] for h in json.loads((out / "history.json").read_text())}
        expected = {"lp_net": {"stage1", "stage2", "stage3"}, "gtle_net": {"gee", "au"},
                    "kdsrl": {"ssl", "classify_frozen"}}[family]
        assert expected <= stages, (family, stages)
        assert (out / "loss_curve.png").stat().st_size > 1000
    # GEE pre-training saw real vote triplets, and their counts are reported
    gee = [h for h in json.loads((ferplus_runs["gtle_net"][1] / "history.json").read_text())
           if "triplet_stats" in h]
    assert gee and gee[0]["triplet_stats"]["kept"] >= 64


def test_kdsrl_frozen_mode_leaves_the_encoder_untouched(ferplus_runs):
    out = ferplus_runs["kdsrl"][1]
    after_ssl = read_checkpoint(out / "stages" / "0_ssl.pt")["state_dict"]
    final = read_checkpoint(out / "model.pt")["state_dict"]
    encoder = [k for k in final if k.startswith("encoder.")]
    assert encoder and all(torch.equal(after_ssl[k], final[k]) for k in encoder)
    heads = [k for k in final if k.startswith("classifiers.") and k.endswith("weight")]
    assert any(not torch.equal(after_ssl[k], final[k]) for k in heads)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_card_and_ort_parity(ferplus_runs, tmp_path, family):
    from aue_edge.edge.face.landmarks import mean_shape_68
    from aue_edge.train.au.export import export_au_checkpoint

    checkpoint = ferplus_runs[family][1] / "model.pt"
    path = export_au_checkpoint(checkpoint, tmp_path)
    card = find_card(path)
    model, _payload = load_checkpoint(checkpoint)
    assert card.outputs.au_probs == "au_probs" and card.outputs.emotion_probs is None
    assert card.outputs.au_names == tuple(model.au_names)
    assert card.input.size_px == tuple(model.input_size_px) and card.input.color == "gray3"
    h, w = card.input.size_px
    rng = np.random.default_rng(0)
    feeds = {"image": rng.standard_normal((3, 3, h, w)).astype(np.float32)}   # dynamic batch 3
    if family == "lp_net":
        assert card.extra_inputs["landmarks"]["shape"] == ["batch", 68, 2]
        feeds["landmarks"] = (np.asarray(mean_shape_68(), dtype=np.float32)[None]
                              + 0.01 * rng.standard_normal((3, 68, 2)).astype(np.float32))
    else:
        assert card.extra_inputs == {}
    with OrtBackend(path) as backend:
        assert [i.name for i in backend.inputs] == list(feeds)
        got = backend.infer(feeds)["au_probs"]
    with torch.no_grad():
        out = model.eval()(*(torch.from_numpy(v) for v in feeds.values()))
    ref = torch.sigmoid(out["au_logits"]).numpy()
    assert got.shape == (3, len(card.outputs.au_names))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family,dataset,extra", [
    ("lp_net", "bp4d", {}),
    ("kdsrl", "disfa", {"kdsrl.classify_mode": "finetune"}),
])
def test_three_fold_training_on_au_fixtures(repo_root, ferplus_root, tmp_path, family, dataset,
                                            extra):
    from aue_edge.data.folds import BP4D_FOLDS, DISFA_FOLDS

    root = repo_root / "tests" / "fixtures" / "datasets" / dataset
    report = _tiny(repo_root, family, tmp_path, ferplus_root,
                   **{"data.dataset": dataset, "data.root": str(root), "model.au_set": dataset,
                      "run.batch_size": 4, **extra})
    assert set(report["folds"]) == {"fold1", "fold2", "fold3"}
    folds = BP4D_FOLDS if dataset == "bp4d" else DISFA_FOLDS
    for k, fold in enumerate(report["folds"].values(), start=1):
        assert fold["test"]["num_images"] > 0 and fold["train"]["num_images"] > 0
        # subject-exclusive: the test subjects are this fold's, none of them is trained on
        assert set(fold["test"]["subjects"]) <= set(folds[k - 1])
        assert not set(fold["test"]["subjects"]) & set(fold["train"]["subjects"])
        payload = read_checkpoint(tmp_path / f"fold{k}" / "model.pt")
        assert payload["pseudo_labels"] is False
        assert f"fold{k}/test" in payload["metrics"]["eval_source"]
    results = json.loads((tmp_path / "results.json").read_text())
    names = results["folds"]["fold1"]["au_names"]
    assert len(names) == (12 if dataset == "bp4d" else 8)
    assert all(0.0 <= v <= 100.0 for f in results["folds"].values() for v in f["f1_pct"])
    table = (tmp_path / "results.md").read_text()
    assert "| paper |" in table and "| mean |" in table
    assert (tmp_path / "f1_per_au.png").stat().st_size > 1000
    assert "threshold 0.5" in results["protocol"]


def test_resume_skips_finished_stages(repo_root, ferplus_root, ferplus_runs, tmp_path):
    import shutil

    src = ferplus_runs["lp_net"][1]
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    before = read_checkpoint(src / "model.pt")["state_dict"]
    _tiny(repo_root, "lp_net", tmp_path, ferplus_root, **{"run.resume": True})
    after = read_checkpoint(tmp_path / "model.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)   # nothing retrained


def test_cli_flags_map_onto_the_config(repo_root):
    overrides = cli_overrides(["lp_net.orthogonality_weight=0.5"], out_dir="x", root="r",
                              packed=None, device="cpu", seed=3, batch_size=None)
    assert overrides == {"lp_net.orthogonality_weight": 0.5, "run.out_dir": "x",
                         "data.root": "r", "run.device": "cpu", "run.seed": 3}
    assert au_flag_overrides(init="a.pt", resume=True, progress=False) == {
        "model.init_checkpoint": "a.pt", "run.resume": True, "run.progress": False}
    with pytest.raises(ConfigError, match="--stage"):
        au_flag_overrides(stages=[1])
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        cli_overrides(["run.batch_size"])
    assert read_config_family(repo_root / "aue_edge" / "train" / "configs" / "kdsrl_tiny.yaml") == "kdsrl"
    assert config_family({"model": {"name": "aue_crl_r18"}}, "x") == "aue_crl"
    with pytest.raises(ConfigError, match=r"names no trainable model.*registered models: .*'lp_net_tiny'"):
        config_family({"model": {"name": "lp_net_tiyn"}}, "x")


@pytest.mark.parametrize("artifact", ["checkpoint", "onnx"])
def test_ferplus_model_scored_on_bp4d_fixture(repo_root, ferplus_runs, tmp_path, artifact):
    from aue_edge.train.au.export import export_au_checkpoint
    from aue_edge.train.au.run import evaluate_au_detector

    checkpoint = ferplus_runs["lp_net"][1] / "model.pt"
    model_path = (checkpoint if artifact == "checkpoint"
                  else export_au_checkpoint(checkpoint, tmp_path / "onnx"))
    result = evaluate_au_detector(model_path, "bp4d",
                                  repo_root / "tests" / "fixtures" / "datasets" / "bp4d",
                                  tmp_path / "eval", progress=False)
    # AUE-CRL's 17 AUs and BP4D's 12 share 11 (BP4D's AU14 is not in AUE-CRL's list)
    assert len(result["au_names"]) == 11 and "AU14" not in result["au_names"]
    assert result["num_frames"] == 9       # all three fixture subjects, every fold
    assert 0.0 <= result["mean_f1_pct"] <= 100.0
    assert (tmp_path / "eval" / "results.md").is_file()


@pytest.mark.parametrize("family", ["lp_net", "kdsrl"])
def test_exported_detector_replaces_the_edge_au_output(ferplus_runs, tmp_path, astronaut_bgr,
                                                       family):
    # the edge pipeline's au_model_dir: the AU output now comes from this detector (LP-Net
    # also gets the 68 landmarks it declares in its card)
    from aue_edge.edge.pipeline import Pipeline, PipelineConfig
    from aue_edge.train.au.export import export_au_checkpoint

    export_au_checkpoint(ferplus_runs[family][1] / "model.pt", tmp_path)
    with Pipeline(PipelineConfig(au_model_dir=str(tmp_path), num_threads=1)) as pipeline:
        assert pipeline.au_names == tuple(ferplus_runs[family][0]["au_names"])
        result = pipeline.process(astronaut_bgr, timestamp_s=0.0)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.au_probs.shape == (17,) and np.all((face.au_probs > 0) & (face.au_probs < 1))
    assert face.emotion_probs is not None          # the emotion output still comes from AUE-CRL


def test_gtle_frozen_parts_keep_their_weights(repo_root, ferplus_root, tmp_path):
    # mask_optimizer: frozen (the paper keeps E_m out of Adam) and freeze_gee: only the
    # attention features, decoder and classifiers learn
    from aue_edge.data.knowledge import AUECRL_AUS
    from aue_edge.train.models import create_model
    from aue_edge.train.runtime import seed_everything

    _tiny(repo_root, "gtle_net", tmp_path, ferplus_root,
          **{"gtle_net.gee_epochs": 0, "gtle_net.mask_optimizer": "frozen",
             "gtle_net.freeze_gee": True, "data.max_train_images": 32})
    seed_everything(0)                       # the run builds its model right after this seed
    initial = dict(create_model("gtle_net_tiny", au_names=list(AUECRL_AUS)).named_parameters())
    final = read_checkpoint(tmp_path / "model.pt")["state_dict"]
    frozen = [k for k in initial if k.startswith(("gee.", "embed.", "em_up.", "em_head."))]
    trained = [k for k in initial if k.startswith(("classifiers.", "ea_heads.", "decoder."))]
    assert frozen and all(torch.equal(initial[k].detach(), final[k]) for k in frozen)
    assert any(not torch.equal(initial[k].detach(), final[k]) for k in trained)


@pytest.fixture(scope="module")
def ckplus_run(repo_root, ckplus_root, tmp_path_factory):
    """A tiny KDSRL trained on real CK+ FACS codes: 3 subject-exclusive folds + every subject."""
    out = tmp_path_factory.mktemp("au_ckplus")
    config = {"model": {"name": "kdsrl_tiny", "au_set": "auecrl"},
              "data": {"dataset": "ckplus", "root": str(ckplus_root), "train_all": True,
                       "ckplus_reference": str(repo_root / "aue_edge" / "edge" / "models" / "aue_crl"
                                               / "ckplus_cv_evaluation.json")},
              "run": {"out_dir": str(out), "batch_size": 16, "max_steps_per_epoch": 3,
                      "progress": False},
              "kdsrl": {"ssl_epochs": 0, "classify_mode": "finetune", "classify_epochs": 1}}
    return train_from_config(config), out


@pytest.mark.slow
def test_ckplus_cv_scores_beside_constant_and_default_model(ckplus_run, ckplus_root):
    from aue_edge.data.ckplus import CKPLUS_AUS, CkPlus
    from aue_edge.data.folds import CKPLUS_FOLDS
    from aue_edge.train.metrics import binary_f1

    report, out = ckplus_run
    cv = json.loads((out / "ckplus_cv.json").read_text())
    assert cv["au_names"] == report["ckplus_cv"]["au_names"]
    assert cv["num_images"] == 648 and cv["num_subjects"] == 79
    assert len(cv["au_names"]) == 17
    for k in (1, 2, 3):
        fold = report["folds"][f"fold{k}"]
        assert set(fold["test"]["subjects"]) == set(CKPLUS_FOLDS[k - 1])
        assert not set(fold["train"]["subjects"]) & set(CKPLUS_FOLDS[k - 1])
    # the constant column is the F1 of calling the AU present on every face, AUC 0.5
    y12 = CkPlus(ckplus_root, "all").au_matrix()[:, CKPLUS_AUS.index("AU12")] == 1
    constant = cv["au"]["constant"]["per_au"]["AU12"]
    assert constant["f1"] == pytest.approx(binary_f1(y12, np.ones(len(y12), bool)))
    assert constant["auc"] == 0.5
    model = cv["au"]["model"]
    assert set(model["per_au"]["AU12"]) == {"f1", "auc", "f1_fitted"}
    assert 0.0 <= model["mean_f1"] <= 1.0 and 0.0 <= model["mean_auc"] <= 1.0
    ref = cv["reference"]["au"]
    assert ref["model"]["mean_f1"] == pytest.approx(0.664, abs=0.01)   # the shipped CV numbers
    assert {"knowledge", "constant", "stacked"} <= set(ref)
    assert (out / "ckplus_au_f1_auc.png").stat().st_size > 5000


@pytest.mark.slow
def test_ckplus_models_carry_subjects_and_thresholds_into_the_card(ckplus_run, tmp_path):
    from aue_edge.train.au.export import export_au_checkpoint
    from aue_edge.data.folds import CKPLUS_FOLDS

    report, out = ckplus_run
    fold1 = read_checkpoint(out / "fold1" / "model.pt")
    assert set(fold1["ckplus"]["subjects"]) == set(CKPLUS_FOLDS[1] + CKPLUS_FOLDS[2])
    assert fold1["au_thresholds"] and set(fold1["au_thresholds"]) <= set(fold1["au_names"])
    assert all(0.05 <= t <= 0.95 for t in fold1["au_thresholds"].values())
    # the model trained on every subject takes its thresholds from the out-of-fold predictions
    everything = read_checkpoint(out / "all" / "model.pt")
    assert len(everything["ckplus"]["subjects"]) == 79
    assert everything["au_thresholds"] == report["ckplus_cv"]["oof_thresholds"]
    from aue_edge.train.cli import card_metrics

    cv = json.loads((out / "ckplus_cv.json").read_text())
    card = find_card(export_au_checkpoint(out / "all" / "model.pt", tmp_path / "export",
                                          metrics=card_metrics(cv, "ckplus_cv.json")))
    assert card.outputs.au_thresholds == everything["au_thresholds"]
    recorded = card.metrics["ckplus_cv"]
    assert recorded["au"]["model"]["mean_auc"] == round(cv["au"]["model"]["mean_auc"], 4)
    assert recorded["default_model"]["mean_f1"] == pytest.approx(0.664, abs=0.01)
    assert len(card.training["ckplus"]["subjects"]) == 79


def test_ckplus_reference_must_match_the_images_and_folds(tmp_path):
    from aue_edge.core.errors import DatasetError
    from aue_edge.train.ckplus_eval import au_detector_cv_report

    from aue_edge.data.folds import CKPLUS_FOLDS

    subjects = [s for fold in CKPLUS_FOLDS for s in fold]
    y = np.zeros((len(subjects), 1), bool)
    y[::2] = True
    sequences = [f"{s}_001" for s in subjects]
    probs = {k: np.full((len(subjects), 1), 0.7) for k in (1, 2, 3)}
    wrong = tmp_path / "ref.json"
    wrong.write_text(json.dumps({"dataset": "ckplus", "folds": [1], "num_images": 79}))
    with pytest.raises(DatasetError, match=r"not a 3-fold CK\+ evaluation"):
        au_detector_cv_report(y, subjects, sequences, probs, ["AU12"], "m", wrong)
    with pytest.raises(DatasetError, match="cannot be read"):
        au_detector_cv_report(y, subjects, sequences, probs, ["AU12"], "m", tmp_path / "no")
    with pytest.raises(DatasetError, match="all 3 fold models"):
        au_detector_cv_report(y, subjects, sequences, {1: probs[1]}, ["AU12"], "m")


@pytest.mark.slow
def test_int8_calibrated_ckplus_detector_is_the_pipelines_au_source(ckplus_run, ferplus_root,
                                                                    tmp_path, astronaut_bgr):
    # what a user does with a detector trained on CK+: export, calibrate for ONNX Runtime's
    # INT8 kernels, run it as au_model_dir; its card's per-AU thresholds are the ones applied
    from aue_edge.cli import main as aue
    from aue_edge.edge.pipeline import Pipeline, PipelineConfig
    from aue_edge.train.au.export import export_au_checkpoint

    _report, out = ckplus_run
    onnx_path = export_au_checkpoint(out / "all" / "model.pt", tmp_path)
    assert aue(["calibrate", str(onnx_path), "--dataset", "ferplus", "--root", str(ferplus_root),
                "--num-images", "32", "--min-images", "32", "--eval-split", "valid",
                "--eval-images", "16",
                "--snr-images", "8", "--num-threads", "1", "--target", "ort-cpu", "--out",
                str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "model.int8.ort.onnx").is_file()
    card = find_card(onnx_path)
    with Pipeline(PipelineConfig(au_model_dir=str(tmp_path), au_model_file="model.int8.ort.onnx",
                                 num_threads=1)) as pipeline:
        assert pipeline.au_names == card.outputs.au_names
        np.testing.assert_allclose(pipeline.au_thresholds, card.outputs.thresholds(), atol=1e-6)
        result = pipeline.process(astronaut_bgr, timestamp_s=0.0)
    face = result.faces[0]
    assert face.au_probs.shape == (17,) and np.isfinite(face.au_probs).all()
    assert face.emotion_probs is not None


@pytest.mark.slow
def test_evaluate_ckplus_on_a_detector_points_to_its_cv_run(ckplus_run, ckplus_root, tmp_path):
    from aue_edge.core.errors import ModelFileError
    from aue_edge.train.au.export import export_au_checkpoint
    from aue_edge.train.ckplus_eval import evaluate_ckplus

    checkpoint = ckplus_run[1] / "fold1" / "model.pt"
    onnx_path = export_au_checkpoint(checkpoint, tmp_path)
    for model in (onnx_path, checkpoint):
        with pytest.raises(ModelFileError, match="AU detector.*ckplus_cv.json"):
            evaluate_ckplus([model], ckplus_root, fold=1, progress=False)


@pytest.mark.slow
def test_ckplus_cv_refuses_a_start_checkpoint_that_saw_a_held_out_fold(ckplus_run, ckplus_root,
                                                                      tmp_path):
    from aue_edge.core.errors import ModelFileError

    config = {"model": {"name": "kdsrl_tiny", "au_set": "auecrl",
                        "init_checkpoint": str(ckplus_run[1] / "all" / "model.pt")},
              "data": {"dataset": "ckplus", "root": str(ckplus_root)},
              "run": {"out_dir": str(tmp_path), "progress": False},
              "kdsrl": {"ssl_epochs": 0, "classify_epochs": 1}}
    with pytest.raises(ModelFileError, match="trained on 27 CK\\+ subjects of fold 1"):
        train_from_config(config)
    assert not (tmp_path / "fold1").exists()


def test_detector_cv_scores_each_fold_model_on_its_own_fold_only():
    # fold model k is perfect on fold k and inverted on the other folds: pooled test scores are
    # perfect, and thresholds fitted on the (inverted) training folds fall back to calling
    # every face positive, the constant predictor's F1
    from aue_edge.train.ckplus_eval import au_detector_cv_report
    from aue_edge.data.folds import CKPLUS_FOLDS

    subjects = [s for fold in CKPLUS_FOLDS for s in fold for _ in range(2)]
    y = (np.arange(len(subjects)) % 3 == 0)[:, None]
    sequences = [f"{s}_{i % 2}" for i, s in enumerate(subjects)]
    probs = {}
    for k in (1, 2, 3):
        test = np.isin(subjects, CKPLUS_FOLDS[k - 1])[:, None]
        probs[k] = np.where(test, np.where(y, 0.9, 0.1), np.where(y, 0.1, 0.9))
    result = au_detector_cv_report(y, subjects, sequences, probs, ["AU12"], "m")
    model = result["au"]["model"]["per_au"]["AU12"]
    assert model["f1"] == 1.0 and model["auc"] == 1.0
    constant = result["au"]["constant"]["per_au"]["AU12"]
    assert model["f1_fitted"] == pytest.approx(constant["f1"], abs=1e-3) and constant["f1"] < 0.6
    assert constant["auc"] == 0.5


@pytest.mark.slow
def test_a_detector_with_a_landmarks_input_calibrates(ferplus_runs, ferplus_root, tmp_path):
    # LP-Net's P-Net input: calibration feeds it what the pipeline feeds by default (the mean
    # shape in the aligned crop), for both targets
    from aue_edge.cli import main as aue
    from aue_edge.train.au.export import export_au_checkpoint

    onnx_path = export_au_checkpoint(ferplus_runs["lp_net"][1] / "model.pt", tmp_path)
    assert "landmarks" in find_card(onnx_path).extra_inputs
    for target in ("tensorrt", "ort-cpu"):
        assert aue(["calibrate", str(onnx_path), "--dataset", "ferplus", "--root",
                    str(ferplus_root), "--num-images", "32", "--min-images", "32",
                    "--eval-split", "valid", "--eval-images", "16", "--snr-images", "8",
                    "--num-threads", "1", "--target", target, "--out", str(tmp_path),
                    "--no-progress"]) == 0
    report = json.loads((tmp_path / "calibration_report.ort.json").read_text())
    assert report["evaluation"]["num_images"] == 16
    assert 0.5 < report["evaluation"]["au_active_agreement"] <= 1.0


@pytest.mark.slow
def test_bench_times_the_pipeline_with_and_without_a_detector(ckplus_run, repo_root, tmp_path):
    import subprocess
    import sys

    from aue_edge.benchmarks.report import load_run
    from aue_edge.train.au.export import export_au_checkpoint

    export_au_checkpoint(ckplus_run[1] / "all" / "model.pt", tmp_path / "detector")
    proc = subprocess.run([sys.executable, "-m", "aue_edge", "bench", "--smoke", "--groups",
                           "end_to_end", "--backends", "ort", "--precisions", "fp32",
                           "--model-dir", str(repo_root / "aue_edge" / "edge" / "models" / "aue_crl"),
                           "--au-model", str(tmp_path / "detector"), "--threads", "1",
                           "--out", str(tmp_path), "--name", "au", "--no-report"],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    names = {c.name for c in load_run(tmp_path / "au.json").cases}
    for faces in ("1face", "5faces"):
        assert f"bench_pipeline[aue_crl-ort-fp32-{faces}]" in names
        assert f"bench_pipeline_with_au_detector[aue_crl-ort-fp32-{faces}]" in names
