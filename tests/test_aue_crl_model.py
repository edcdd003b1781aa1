"""AUE-CRL network: shapes per stage, crops, variants, freezing, backbone weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.data.knowledge import AUECRL_AUS, FERPLUS_LABELS
from aue_edge.train.models import create_model, list_models
from aue_edge.train.models.aue_crl import VARIANTS
from aue_edge.train.models.resnet import ResNet, load_torchvision_state_dict

torch.set_num_threads(1)  # the host is shared; more threads only spin


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("aue_crl_cpu_tiny").eval()


def test_variants_are_registered():
    assert set(VARIANTS) <= set(list_models())


def test_forward_shapes_per_stage(tiny):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s1 = tiny(x, stage=1)
        s2 = tiny(x, stage=2)
        s3 = tiny(x)
    assert set(s1) == {"expr_features", "expr_logits", "emotion_logits"}
    assert s1["expr_logits"].shape == (2, len(FERPLUS_LABELS))
    assert s2["au_logits"].shape == (2, len(AUECRL_AUS))
    assert s2["au_features"].shape == (2, 17, 2 * tiny.cfg.crop_fc_dim)
    assert "attention" not in s2
    assert s3["attention"].shape == (2, 17)
    # Default: independent sigmoid gates; the paper's KCAUS softmax sums to 1 over the AUs.
    assert ((s3["attention"] > 0) & (s3["attention"] < 1)).all()
    paper = create_model("aue_crl_cpu_tiny", attention="kcaus").eval()
    with torch.no_grad():
        weights = paper(x, stage=3)["attention"]
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert s3["fused_logits"].shape == (2, 8)
    assert s3["emotion_logits"] is s3["fused_logits"]
    # The expression path is shared: stage 1 and stage 3 compute the same pred1.
    torch.testing.assert_close(s1["expr_logits"], s3["expr_logits"])
    # forward = forward_head(forward_features): the backbone maps feed every stage's head
    with torch.no_grad():
        feats = tiny.forward_features(x)
        head = tiny.forward_head(feats, stage=2)
    assert [f.shape[1] for f in feats] == [f.channels for f in tiny.backbone.feature_info]
    assert set(head) == set(s2)
    torch.testing.assert_close(head["au_logits"], s2["au_logits"])
    with pytest.raises(ConfigError, match="stage must be 1, 2 or 3"):
        tiny.forward_head(feats, stage=4)


def test_mean_attention_ablation_is_uniform():
    model = create_model("aue_crl_cpu_tiny", attention="mean").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    torch.testing.assert_close(out["attention"], torch.full((3, 17), 1 / 17))


def test_shipped_variant_geometry_and_crops():
    model = create_model("aue_crl_r18")
    cfg = model.cfg
    assert cfg.input_size_px == 112 and model.backbone.feature_sizes((112, 112)) == [
        (56, 56), (28, 28), (14, 14), (7, 7)]
    centres = np.asarray(cfg.crop_centres)
    assert centres.shape == (17, 2, 2)
    half, size = cfg.crop_size_px // 2, 56
    assert centres.min() >= half and centres.max() <= size - half
    # Eyebrow AUs sit above the mouth AUs in the aligned face.
    au = {name: centres[i] for i, name in enumerate(cfg.au_names)}
    assert au["AU1"][:, 1].max() < au["AU12"][:, 1].min()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params * 4 / 1e6 < 25  # FP32 ONNX stays within ~25 MB


def test_crop_pairs_mirror_onto_each_other():
    """Why flip augmentation is consistent with static crops (module docstring)."""
    model = create_model("aue_crl_r18")
    centres = np.asarray(model.cfg.crop_centres, dtype=float)
    size = 56
    names = model.cfg.au_names
    for au in ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU16",
               "AU20"):
        c0, c1 = centres[names.index(au)]
        mirrored = np.array([size - c0[0], c0[1]])
        assert np.abs(mirrored - c1).max() <= 2.0, (au, c0, c1)
    for au in ("AU17", "AU25", "AU26"):
        for c in centres[names.index(au)]:
            assert abs((size - c[0]) - c[0]) <= 2.0, (au, c)


def test_paper_variant_parameter_shapes():
    # ~480 M parameters: build on the meta device, shapes only, no memory.
    with torch.device("meta"):
        model = create_model("aue_crl_r101_paper")
    assert model.cfg.input_size_px == 224
    assert model.backbone.feature_sizes((224, 224)) == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert [f.channels for f in model.backbone.feature_info] == [256, 512, 1024, 2048]
    assert model.expr_reduce[0].weight.shape == (1024, 3840, 3, 3)
    assert model.crop_conv[0].weight.shape == (34 * 64, 64, 3, 3)   # 34 unshared 64->64 convs
    assert model.crop_fc.weight.shape == (34, 36864, 256)            # FC 24*24*64 -> 256 per crop
    assert model.fuse_au.weight.shape == (17, 512, 1024)
    assert model.fused_head.weight.shape == (8, 1024 + 512)


def test_baseline_has_expression_branch_only():
    model = create_model("aue_crl_baseline", input_size_px=64, width=0.25)
    assert not hasattr(model, "crop_fc")
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out["emotion_logits"].shape == (2, 8) and "au_logits" not in out
    with pytest.raises(ConfigError, match="stage 1 only"):
        model.stage_parameters(2)


def test_stage_freezing_routes_gradients(tiny):
    from aue_edge.train.config import StageConfig
    from aue_edge.train.trainer import _set_modes, _set_trainable

    model = create_model("aue_crl_cpu_tiny")
    for stage, key in ((2, "au_logits"), (3, "fused_logits")):
        model.zero_grad(set_to_none=True)
        trained = {id(p) for p in _set_trainable(model, stage, StageConfig())}
        _set_modes(model, stage, StageConfig())
        out = model(torch.randn(4, 3, 64, 64), stage=stage)
        loss = out[key].float().pow(2).mean()
        if stage == 2:
            loss = loss + model.prior_weight.sum()
        loss.backward()
        for name, p in model.named_parameters():
            if id(p) in trained and p.grad is None and stage == 3 and "expr_head" in name:
                continue
            if id(p) not in trained:
                assert p.grad is None, (stage, name)
        assert model.backbone.training is False and model.expr_reduce.training is False
        if stage == 2:
            assert model.crop_fc.weight.grad is not None and model.prior_weight.grad is not None
            assert model.crop_conv.training
        else:
            assert model.attention_fc.weight.grad is not None
            assert model.crop_conv.training is False  # frozen AU path: dropout/BN fixed


def test_bad_model_options():
    with pytest.raises(ConfigError, match="unknown AUE-CRL model option"):
        create_model("aue_crl_cpu_tiny", widht=0.5)
    with pytest.raises(ConfigError, match="multiple of"):
        create_model("aue_crl_cpu_tiny", input_size_px=72)
    with pytest.raises(ConfigError, match="crop_centres must have shape"):
        create_model("aue_crl_cpu_tiny", crop_centres=[[[16, 16], [16, 16]]])


def test_torchvision_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    source = ResNet(18, 1.0, "imagenet")
    state = dict(source.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    target = ResNet(18, 1.0, "small")
    assert load_torchvision_state_dict(target, path) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    with pytest.raises(ModelFileError, match="width 1.0"):
        load_torchvision_state_dict(ResNet(18, 0.5, "small"), path)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_torchvision_state_dict(target, tmp_path / "bad.pth")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_channel_lrn_equals_torch_local_response_norm(size):
    """The export-friendly LRN computes torch's LocalResponseNorm exactly, edges included."""
    from aue_edge.train.models.aue_crl import ChannelLRN

    x = torch.randn(2, 7, 5, 5) * 3
    torch.testing.assert_close(ChannelLRN(size)(x), torch.nn.LocalResponseNorm(size)(x),
                               rtol=1e-6, atol=1e-6)


def test_reset_stage_reinitialises_only_that_stage():
    model = create_model("aue_crl_cpu_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.prior_weight.add_(0.05)
    model.reset_stage(3)
    after = model.state_dict()
    assert not torch.equal(after["fuse_au.weight"], before["fuse_au.weight"])
    assert torch.equal(after["au_head.weight"], before["au_head.weight"])      # stage 2 kept
    assert torch.equal(after["backbone.conv1.weight"], before["backbone.conv1.weight"])
    model.reset_stage(2)
    assert not torch.equal(model.state_dict()["au_head.weight"], before["au_head.weight"])
    torch.testing.assert_close(model.prior_weight, model.prior_init)
