"""Training pipeline on real FER+ images: config, data arrays, three stages, checkpoints,
resume, bad checkpoints, ONNX export parity, ``aue evaluate`` JSON. Tiny model, CPU."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from aue_edge.cli import main as aue_main
from aue_edge.core.errors import ConfigError, DatasetError, ModelFileError
from aue_edge.edge.model_card import card_from_onnx
from aue_edge.edge.preprocess import to_model_input
from aue_edge.train import trainer
from aue_edge.train.arrays import SplitArrays, load_split_arrays, pack_arrays, read_packed
from aue_edge.train.augment import AugmentConfig, GpuAugment, preprocess
from aue_edge.train.config import (IMAGENET_MEAN, IMAGENET_STD, DataConfig, TrainConfig,
                                   config_from_dict, load_config)
from aue_edge.train.loop import predict_arrays
from aue_edge.train.run_config import apply_overrides
from aue_edge.train.metrics import au_pseudo_label_stats, classification_report
from aue_edge.train.runtime import load_checkpoint, read_checkpoint, save_checkpoint

torch.set_num_threads(1)  # the host is shared; more threads only spin


def tiny_config(packed, out_dir, overrides: dict | None = None) -> TrainConfig:
    """The tiny run; ``overrides``: dotted keys, as ``aue train --set`` gives them."""
    raw = {
        "model": {"name": "aue_crl_cpu_tiny"},
        "data": {"packed": str(packed)},
        "run": {"batch_size": 32, "eval_batch_size": 64, "device": "cpu", "out_dir": str(out_dir)},
        "aue_crl": {"stage1": {"epochs": 1, "lr": 0.05}, "stage2": {"epochs": 1, "lr": 0.01},
                    "stage3": {"epochs": 1, "lr": 0.01}},
    }
    return config_from_dict(apply_overrides(raw, overrides), "test")


@pytest.fixture(scope="module")
def trained(packed_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    report = trainer.train(tiny_config(packed_small, out), progress=False)
    return out, report


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from aue_edge.train.export import export_checkpoint

    out = tmp_path_factory.mktemp("tiny_onnx")
    return export_checkpoint(trained[0] / "model.pt", out)


def test_three_stages_write_checkpoints_and_report(trained):
    out, report = trained
    for stage in (1, 2, 3):
        assert (out / f"stage{stage}_best.pt").is_file()
        assert (out / f"stage{stage}_last.pt").is_file()
        assert len(report["stages"][f"stage{stage}"]["history"]) == 1
    saved = json.loads((out / "training_report.json").read_text())
    assert saved["validation"]["num_images"] == 32
    assert 0.0 <= saved["validation"]["accuracy"] <= 1.0
    model, payload = load_checkpoint(out / "model.pt", expected_model="aue_crl_cpu_tiny")
    assert payload["final_logits"] == "fused_logits"
    assert payload["card"]["input"]["size_px"] == [64, 64]
    assert payload["card"]["emotion_labels"][0] == "neutral"
    # W stayed in the prior's neighbourhood and was updated in stage 2.
    assert not torch.equal(model.prior_weight, model.prior_init)
    assert (model.prior_weight - model.prior_init).abs().max() < 0.2


def test_resume_continues_from_last_epoch(trained, packed_small, tmp_path):
    out, _ = trained
    for name in ("stage1_last.pt", "stage1_best.pt"):
        shutil.copy(out / name, tmp_path / name)
    first = read_checkpoint(tmp_path / "stage1_last.pt")["history"][0]
    cfg = tiny_config(packed_small, tmp_path, {"aue_crl.stages": [1],
                                               "aue_crl.stage1.epochs": 2})
    trainer.train(cfg, resume=True, progress=False)
    history = read_checkpoint(tmp_path / "stage1_last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first            # epoch 1 was not re-run


def test_loss_decreases_on_real_faces(packed_small):
    from aue_edge.train.models import create_model

    arrays = load_split_arrays(
        DataConfig(packed=str(packed_small)), "train", limit=32, progress=False)
    torch.manual_seed(0)
    model = create_model("aue_crl_cpu_tiny")
    x = preprocess(torch.from_numpy(arrays.images), (64, 64), IMAGENET_MEAN,
                   IMAGENET_STD)
    y = torch.from_numpy(arrays.labels)
    opt = torch.optim.SGD(model.stage_parameters(1), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x, stage=1)["expr_logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_bad_checkpoints_give_clear_errors(trained, tmp_path, ferplus_root):
    out, _ = trained
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((out / "model.pt").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt, truncated"):
        load_checkpoint(corrupt)
    # Another architecture's weights under this model's name.
    from aue_edge.train.models import create_model

    other = create_model("aue_crl_baseline", input_size_px=64, width=0.25)
    wrong = tmp_path / "wrong.pt"
    payload = read_checkpoint(out / "model.pt")
    save_checkpoint(wrong, other, "aue_crl_cpu_tiny")
    torch.save({**torch.load(wrong, weights_only=True),
                "model_config": payload["model_config"]}, wrong)
    with pytest.raises(ModelFileError, match="does not match"):
        load_checkpoint(wrong)
    with pytest.raises(ModelFileError, match="holds a 'aue_crl_cpu_tiny' model"):
        load_checkpoint(out / "model.pt", expected_model="aue_crl_r18")
    # A model trained for another label set cannot be scored on FER+.
    from aue_edge.data.knowledge import RAFDB_LABELS
    from aue_edge.train.evaluate import evaluate_model

    raf = create_model("aue_crl_cpu_tiny", emotion_labels=list(RAFDB_LABELS))
    raf_path = save_checkpoint(tmp_path / "raf.pt", raf, "aue_crl_cpu_tiny",
                               card=payload["card"] | {"emotion_labels": list(RAFDB_LABELS)})
    with pytest.raises(ModelFileError, match="predicts the labels"):
        evaluate_model(raf_path, root=str(ferplus_root), split="test", limit=8, progress=False)


def test_export_onnx_parity_dynamic_batch(trained, exported):
    import onnx
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend

    model, _ = load_checkpoint(trained[0] / "model.pt")
    model.eval()
    proto = onnx.load(str(exported))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    # Static ranks: no shape-dependent If (TensorRT's parser rejects its rank-4/rank-5
    # branches), no LRN op (TensorRT needs an odd window; ours is 2).
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"If", "LRN", "Pad"}, ops & {"If", "LRN", "Pad"}
    card = card_from_onnx(exported)
    assert card.input.size_px == (64, 64) and card.input.color == "gray3"
    assert card.outputs.au_names[0] == "AU1" and len(card.outputs.au_names) == 17
    assert len(card.alignment.template_5pt) == 5
    assert (exported.parent / "card.json").is_file()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        emotion, au = model.export_module()(x)
    with OrtBackend(exported, num_threads=1) as backend:
        out = backend.infer({"image": x.numpy()})
    np.testing.assert_allclose(out["emotion_probs"], emotion.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out["au_probs"], au.numpy(), rtol=1e-3, atol=1e-4)
    assert out["emotion_probs"].shape == (3, 8) and out["au_probs"].shape == (3, 17)


def test_aue_evaluate_json_checkpoint_and_onnx(trained, exported, ferplus_root, capsys,
                                               tmp_path):
    results = {}
    for name, path in (("pt", trained[0] / "model.pt"), ("onnx", exported)):
        code = aue_main(["evaluate", str(path), "--dataset", "ferplus", "--root",
                         str(ferplus_root), "--split", "test", "--limit", "64", "--json",
                         "--threads", "1", "--confusion-png", str(tmp_path / f"{name}.png")])
        assert code == 0
        results[name] = json.loads(capsys.readouterr().out)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    for result in results.values():
        assert result["num_images"] == 64
        au_stats = result["au_pseudo_label_stats"]
        assert au_stats["num_images"] == 64 and len(au_stats["per_au"]) == 17
        assert 0.0 <= au_stats["mean_agreement"] <= 1.0
        assert {"accuracy", "mean_class_accuracy", "per_class"} <= set(result)
        assert sum(c["support"] for c in result["per_class"].values()) == 64
    # Same preprocessing, same weights: torch and ONNX Runtime agree image by image.
    cm_pt = np.array(results["pt"]["confusion_matrix"])
    cm_onnx = np.array(results["onnx"]["confusion_matrix"])
    assert np.abs(cm_pt - cm_onnx).sum() <= 2


def test_preprocess_matches_edge_to_model_input(packed_small):
    arrays = load_split_arrays(DataConfig(packed=str(packed_small)), "train",
                                       limit=16, progress=False)
    from aue_edge.edge.model_card import InputSpec

    spec = InputSpec(size_px=(112, 112), color="gray3", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD)
    edge = to_model_input(arrays.images, spec)
    ours = preprocess(torch.from_numpy(arrays.images), (112, 112), spec.mean, spec.std).numpy()
    one_level = 1 / 255 / min(spec.std)
    diff = np.abs(edge - ours)
    assert diff.max() <= one_level + 1e-5          # cv2 fixed point: at most one grey level
    assert diff.mean() < 0.25 * one_level
    # The augmentation with every random part switched off is the same resize.
    identity = AugmentConfig(flip_prob=0, max_rotation_deg=0, max_shift_frac=0, scale_min=1,
                             scale_max=1, erase_prob=0)
    warped = GpuAugment(identity, (112, 112), spec.mean, spec.std)(
        torch.from_numpy(arrays.images)).numpy()
    assert np.abs(warped - ours).max() <= one_level


def test_config_validation_names_the_problem(tmp_path, ferplus_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: aue_crl_cpu_tiny}\ndata: {root: x}\n"
                   "aue_crl: {stage1: {epochs: 1, lr: 0.1, lrr: 2}}\n")
    with pytest.raises(ConfigError,
                       match=r"bad\.yaml:3: unknown field 'aue_crl\.stage1\.lrr' \(did you "
                             r"mean 'lr'\?\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"bad.yaml: run: unknown key\(s\) \['epochs'\]"):
        load_config(bad, {"run.epochs": 3})
    with pytest.raises(ConfigError, match=r"moved: stage2 -> aue_crl.stage2\)"):
        load_config(bad, {"stage2.epochs": 3})
    bad.write_text("model: {name: aue_crl_cpu_tiny}\ndata: {root: x}\naue_crl: {stages: [3, 1]}\n")
    with pytest.raises(ConfigError, match="aue_crl.stages must be an increasing subset"):
        load_config(bad)
    good = load_config("aue_edge/train/configs/aue_crl_r18_ferplus.yaml",
                       {"aue_crl.stage1.epochs": 3, "data.root": str(ferplus_root)})
    assert good.stage1.epochs == 3 and good.stage3.pair_variant == "paper"
    # The layout before the AU detectors' (model: NAME, run and stage keys at the top): a
    # message that says where each key went.
    bad.write_text("model: aue_crl_cpu_tiny\ndata: {root: x}\nstage1: {epochs: 1}\n"
                   "batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"old AUE-CRL layout.*aue_crl: \{stages, input, "
                                          r"stage1.*batch_size -> run.batch_size"):
        load_config(bad, {"stage1.epochs": 2})


def test_every_shipped_config_loads(repo_root):
    """Every YAML under aue_edge/train/configs/ loads with its trainer's loader, picked by the family of
    model.name (the way aue train dispatches)."""
    from aue_edge.train.au.config import load_au_config
    from aue_edge.train.distill import load_distill_config
    from aue_edge.train.run_config import read_config_family

    families = {}
    for path in sorted((repo_root / "aue_edge" / "train" / "configs").glob("*.yaml")):
        family = read_config_family(path)
        if family == "aue_crl":
            assert load_config(path).model.startswith("aue_crl")
        elif family == "student":
            assert load_distill_config(path).model.startswith("student")
        else:
            assert load_au_config(path).model.family == family
        families[path.name] = family
    assert set(families.values()) == {"aue_crl", "lp_net", "gtle_net", "kdsrl", "student"}
    assert len(families) == 24


def test_packed_arrays_round_trip_and_errors(packed_small, tmp_path):
    data = DataConfig(packed=str(packed_small))
    arrays = load_split_arrays(data, "valid", limit=20, progress=False)
    empty = SplitArrays(arrays.images[:0], arrays.labels[:0], arrays.probs[:0], [],
                                arrays.label_names, arrays.source)
    path = pack_arrays(tmp_path / "p.npz.xz", {"test": arrays, "empty": empty})
    back = read_packed(path, "test")
    np.testing.assert_array_equal(back.images, arrays.images)
    np.testing.assert_array_equal(back.labels, arrays.labels)
    assert back.names == arrays.names and back.label_names == arrays.label_names
    packed = DataConfig(packed=str(path))
    with pytest.raises(DatasetError, match="holds no images"):
        load_split_arrays(packed, "empty")
    with pytest.raises(DatasetError, match="not 'train'"):
        load_split_arrays(packed, "train")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="not a packed arrays file"):
        read_packed(tmp_path / "junk.npz", "test")


def test_classification_report_by_hand():
    labels = ("a", "b", "c")
    rep = classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), labels)
    assert rep["accuracy"] == 0.75
    assert rep["mean_class_accuracy"] == pytest.approx(0.75)   # (0.5 + 1.0) / 2; c has none
    assert rep["classes_without_images"] == ["c"]
    assert rep["per_class"]["b"] == {"support": 2, "accuracy": 1.0, "precision": 2 / 3}
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    with pytest.raises(DatasetError):
        classification_report(np.array([], dtype=int), np.array([], dtype=int), labels)


@pytest.mark.slow
def test_export_opset18_dynamo(trained, tmp_path):
    import onnx
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.train.export import export_checkpoint

    path = export_checkpoint(trained[0] / "model.pt", tmp_path, opset=18)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    assert not list(tmp_path.glob("*.data"))               # weights inside the file
    model, _ = load_checkpoint(trained[0] / "model.pt")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        emotion, _au = model.eval().export_module()(x)
    with OrtBackend(path, num_threads=1) as backend:
        out = backend.infer({"image": x.numpy()})
    np.testing.assert_allclose(out["emotion_probs"], emotion.numpy(), rtol=1e-3, atol=1e-4)
    assert card_from_onnx(path).provenance["opset"] == 18


def test_init_from_stage1_with_ablation_option(trained, packed_small, tmp_path):
    """Stages 2-3 from a stage-1 checkpoint, with the no-attention switch (Table IV row)."""
    out, _ = trained
    cfg = tiny_config(packed_small, tmp_path, {"aue_crl.stages": [2, 3],
                                               "model.kwargs.attention": "mean"})
    trainer.train(cfg, init_checkpoint=str(out / "stage1_best.pt"), progress=False)
    model, payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["model_config"]["attention"] == "mean"
    start = read_checkpoint(out / "stage1_best.pt")["state_dict"]
    # Stage 1's weights are frozen in stages 2 and 3.
    torch.testing.assert_close(model.state_dict()["backbone.layer4.1.conv2.weight"],
                               start["backbone.layer4.1.conv2.weight"])
    bad = tiny_config(packed_small, tmp_path / "bad", {"aue_crl.stages": [2, 3],
                                                       "model.kwargs.crop_fc_dim": 8})
    with pytest.raises(ModelFileError, match="does not fit"):
        trainer.train(bad, init_checkpoint=str(out / "stage1_best.pt"), progress=False)


def test_stage2_au_output_learns_and_depends_on_the_input(trained, packed_small, tmp_path):
    """The fixed stage 2 (BCE summed over AUs, AdamW) makes the AU output depend on the face:
    against the pseudo positives of its own training faces its AUC is far above the 0.5 that
    a constant output gets, and it spreads across images. The selection score is that AUC."""
    out, _ = trained
    cfg = tiny_config(packed_small, tmp_path, {
        "aue_crl.stages": [2], "aue_crl.stage2": {"epochs": 20, "lr": 0.005, "optimizer": "adamw",
                                                  "au_loss": "bce", "weight_decay": 0.0001}})
    report = trainer.train(cfg, init_checkpoint=str(out / "stage1_best.pt"), progress=False)
    history = report["stages"]["stage2"]["history"]
    assert history[-1]["score"] == history[-1]["val"]["mean_auc"]
    model, _ = load_checkpoint(tmp_path / "model.pt")
    model.load_state_dict(read_checkpoint(tmp_path / "stage2_last.pt")["state_dict"])
    arrays = read_packed(packed_small, "train")
    probs = torch.sigmoid(torch.from_numpy(predict_arrays(
        model, torch.from_numpy(arrays.images), (64, 64), IMAGENET_MEAN,
        IMAGENET_STD, 64, torch.device("cpu"), stage=2)["au_logits"])).numpy()
    from aue_edge.train.losses import pseudo_au_labels

    pseudo = pseudo_au_labels(torch.from_numpy(arrays.labels), model.prior_weight,
                              model.prior_low, model.prior_high).detach().numpy()
    stats = au_pseudo_label_stats(probs, pseudo, model.cfg.au_names)
    assert stats["mean_auc"] > 0.65  # a constant output scores 0.5
    assert stats["mean_std_prob"] > 0.02


def test_ckplus_supervision_records_subjects_and_fits_thresholds(trained, packed_small,
                                                                 tmp_path, ckplus_root):
    """CK+ faces of the training folds join stages 2-3: the card lists the subjects it saw
    (fold 2 held out) and carries per-AU thresholds fitted on them, which export keeps."""
    from aue_edge.data.folds import CKPLUS_FOLDS
    from aue_edge.train.export import export_checkpoint

    out, _ = trained
    cfg = tiny_config(packed_small, tmp_path, {
        "aue_crl.stages": [2, 3], "data.ckplus_root": str(ckplus_root), "data.ckplus_fold": 2,
        "aue_crl.stage2": {"epochs": 1, "lr": 0.003, "optimizer": "adamw", "au_loss": "bce"},
        "model.kwargs.attention": "sigmoid"})
    trainer.train(cfg, init_checkpoint=str(out / "stage1_best.pt"), progress=False)
    _, payload = load_checkpoint(tmp_path / "model.pt")
    seen = set(payload["card"]["training"]["ckplus"]["subjects"])
    assert seen == set(CKPLUS_FOLDS[0]) | set(CKPLUS_FOLDS[2])
    thresholds = payload["card"]["au_thresholds"]
    assert set(thresholds) <= set(payload["card"]["au_names"]) and len(thresholds) >= 10
    assert all(0.05 <= t <= 0.95 for t in thresholds.values())
    card = card_from_onnx(export_checkpoint(tmp_path / "model.pt", tmp_path / "onnx"))
    assert card.outputs.au_thresholds == thresholds
    assert card.training["ckplus"]["fold_held_out"] == 2
    with pytest.raises(ConfigError, match="ckplus_fold must be 0"):
        tiny_config(packed_small, tmp_path / "bad", {
            "aue_crl.stages": [2], "data.ckplus_root": str(ckplus_root), "data.ckplus_fold": 5})


def test_sigmoid_attention_trains_from_the_pred1_warm_start(trained):
    """With pred2 started from pred1, the f_a columns are small but not zero, so the gradient
    reaching the attention is not zero (it was exactly 0 with zeroed columns)."""
    model, _ = load_checkpoint(trained[0] / "model.pt", expected_model="aue_crl_cpu_tiny")
    model = type(model)(model.cfg.__class__(**{**model.cfg.__dict__, "attention": "sigmoid"}))
    model.init_fused_head_from_expr_head()
    e = model.cfg.expr_channels
    assert torch.equal(model.fused_head.weight[:, :e], model.expr_head.weight)
    assert model.fused_head.weight[:, e:].abs().max() > 0
    model.train()
    out = model(torch.randn(4, 3, 64, 64), stage=3)
    assert ((out["attention"] > 0) & (out["attention"] < 1)).all()  # independent gates
    torch.nn.functional.cross_entropy(out["fused_logits"], torch.tensor([0, 1, 2, 3])).backward()
    assert model.attention_fc.weight.grad.abs().sum() > 0


def test_fold_runs_refuse_weights_that_saw_the_held_out_fold(trained, packed_small, tmp_path,
                                                            ckplus_root):
    """A CK+ fold-k model started from weights trained on fold k's subjects would be scored on
    faces it saw: refused; the subjects a start checkpoint saw are carried into the new card."""
    from aue_edge.data.folds import CKPLUS_FOLDS

    out, _ = trained
    payload = read_checkpoint(out / "stage1_best.pt")
    card = dict(payload["card"])
    card["training"] = {**card["training"], "ckplus": {"subjects": list(CKPLUS_FOLDS[1][:3])}}
    model, _ = load_checkpoint(out / "stage1_best.pt")
    extra = {k: v for k, v in payload.items()
             if k not in ("format", "model_name", "model_config", "state_dict", "card")}
    save_checkpoint(tmp_path / "seen.pt", model, payload["model_name"], card=card, **extra)
    data = {"aue_crl.stages": [2], "data.ckplus_root": str(ckplus_root), "data.ckplus_fold": 2}
    cfg = tiny_config(packed_small, tmp_path / "fold2", data)
    with pytest.raises(ModelFileError, match="CK\\+ subjects of fold 2"):
        trainer.train(cfg, init_checkpoint=str(tmp_path / "seen.pt"), progress=False)
    cfg = tiny_config(packed_small, tmp_path / "fold1", {**data, "data.ckplus_fold": 1})
    trainer.train(cfg, init_checkpoint=str(tmp_path / "seen.pt"), progress=False)
    _, result = load_checkpoint(tmp_path / "fold1" / "model.pt")
    assert set(CKPLUS_FOLDS[1][:3]) <= set(result["card"]["training"]["ckplus"]["subjects"])
