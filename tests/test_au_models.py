"""LP-Net, GTLE-Net and KDSRL: registry names, the papers' sizes, forward shapes, stage logic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aue_edge.core.errors import ConfigError
from aue_edge.data.knowledge import AUECRL_AUS, BP4D_AUS, DISFA_AUS
from aue_edge.train.models import create_model, list_models

torch.set_num_threads(1)
AU_MODELS = ("lp_net", "lp_net_r18_112", "lp_net_tiny", "gtle_net", "gtle_net_r18_128",
             "gtle_net_tiny", "kdsrl", "kdsrl_r18_112", "kdsrl_tiny")


def test_every_au_detector_is_registered():
    from aue_edge.train.models import aue_crl, gtle_net, kdsrl, lp_net, model_family, student

    assert set(AU_MODELS) <= set(list_models())
    # one registration style: the registry is exactly the families' VARIANTS tables
    tables = {"aue_crl": aue_crl, "lp_net": lp_net, "gtle_net": gtle_net, "kdsrl": kdsrl,
              "student": student}
    assert sorted(n for m in tables.values() for n in m.VARIANTS) == list_models()
    for family, module in tables.items():
        assert {model_family(n) for n in module.VARIANTS} == {family}
    assert create_model("lp_net_tiny").config == create_model("lp_net", **lp_net.VARIANTS[
        "lp_net_tiny"]).config
    with pytest.raises(ConfigError, match=r"unknown model 'lp_net_tiyn'; registered models: \["):
        create_model("lp_net_tiyn")


def test_paper_configurations_have_the_published_shapes():
    lp = create_model("lp_net")
    assert lp.num_local == 49 and lp.stem.channels == 512            # ResNet-34, 7x7 at 224
    assert len(lp.lstms) == len(BP4D_AUS)
    assert lp.pnet_hidden[0].in_features == 136 and lp.pnet_hidden[2].out_features == 512
    gtle = create_model("gtle_net")
    assert gtle.embed.out_features == 16 and gtle.input_size_px == (256, 256)
    assert gtle.gee.resnet.feature_sizes((256, 256))[2] == (16, 16)  # h: the 16x16 stage
    assert gtle.em_head.out_channels == len(BP4D_AUS) + 1           # N AU masks + background
    convs = [m for m in gtle.classifiers[0].features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (ch, (7, 7), (2, 2)) for ch in (16, 32, 64, 128, 256)]
    kd = create_model("kdsrl")
    assert kd.encoder.channels == 1024 and kd.feature_size == (14, 14)
    assert kd.area_dim == 4096 and kd.projector[0].in_features == 4096
    assert kd.projector[0].out_features == 2048 and kd.projector[3].out_features == 128
    assert len(kd.predictors) == 26 and kd.predictors[0][0].out_features == 1024


def test_tiny_forward_shapes_and_probabilities():
    x = torch.randn(2, 3, 64, 64)
    lp = create_model("lp_net_tiny", au_names=list(AUECRL_AUS)).eval()
    lm = torch.as_tensor(np.tile(_mean_shape(), (2, 1, 1)))
    out = lp(x, lm)
    assert out["au_logits"].shape == (2, 17)
    assert out["appearance_features"].shape == out["shape_features"].shape
    gtle = create_model("gtle_net_tiny", au_names=list(DISFA_AUS)).eval()
    image = torch.randn(2, 3, 32, 32)
    out = gtle(image)
    assert out["au_logits"].shape == (2, 8) and out["au_masks"].shape == (2, 9, 32, 32)
    target = gtle.reconstruction_target(image)
    assert out["reconstruction"].shape == target.shape == (2, 3, 32, 32)
    assert target.min() >= 0 and target.max() <= 1 and target.std() > 0.1
    assert torch.allclose(out["expr_embedding"].norm(dim=1), torch.ones(2), atol=1e-5)
    kd = create_model("kdsrl_tiny").eval()
    assert kd(x)["au_logits"].shape == (2, 12)
    z, preds = kd.ssl_forward(x)
    assert z.shape == (2, 8, 16) and sum(len(p) for p in preds.values()) == 26


def test_every_family_returns_the_documented_output_keys():
    from aue_edge.train.models.outputs import OUTPUT_KEYS

    lm = torch.as_tensor(np.tile(_mean_shape(), (2, 1, 1)))
    runs = {"aue_crl_cpu_tiny": [((torch.randn(2, 3, 64, 64),), {"stage": k}) for k in (1, 2, 3)],
            "lp_net_tiny": [((torch.randn(2, 3, 64, 64), lm), {"stage": k}) for k in (1, 2, 3)],
            "gtle_net_tiny": [((torch.randn(2, 3, 32, 32),), {})],
            "kdsrl_tiny": [((torch.randn(2, 3, 64, 64),), {})]}
    for name, calls in runs.items():
        model = create_model(name).eval()
        for args, kwargs in calls:
            with torch.no_grad():
                out = model(*args, **kwargs)
                head = model.forward_head(model.forward_features(*args[:1]), *args[1:],
                                          **kwargs)
            assert set(out) <= set(OUTPUT_KEYS), (name, kwargs, set(out) - set(OUTPUT_KEYS))
            assert set(head) == set(out), (name, kwargs)
            if kwargs.get("stage", 2) >= 2:
                assert out["au_logits"].shape == (2, len(model.config["au_names"])), name


def test_lp_net_stages_select_the_head():
    from aue_edge.train.au.export import AuDetectorGraph

    lp = create_model("lp_net_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = lp(x, stage=1)
        assert torch.allclose(out["au_logits"], lp.fc(out["appearance_features"]), atol=1e-6)
        assert torch.equal(lp.forward_head(lp.forward_features(x), stage=1)["au_logits"],
                           out["au_logits"])
        with pytest.raises(ConfigError, match="needs a landmarks input"):
            lp(x)       # the default is the last stage: P-Net
        # the export graph of an LP-Net trained to stage 2 runs L-Net and takes no landmarks
        graph = AuDetectorGraph(lp, stage=2)
        assert graph.input_names == ("image",) and not lp.needs_landmarks(2)
        assert torch.equal(graph(x), torch.sigmoid(lp(x, stage=2)["au_logits"]))
        assert AuDetectorGraph(lp).input_names == ("image", "landmarks")
    no_pnet = create_model("lp_net_tiny", use_pnet=False)
    assert not no_pnet.needs_landmarks()
    with pytest.raises(ConfigError, match="use_pnet=False"):
        no_pnet(x, stage=3)


def test_kdsrl_groups_cover_every_au_in_order():
    kd = create_model("kdsrl_tiny", au_names=list(AUECRL_AUS))
    grouped = sorted(au for _areas, aus in kd.groups for au in aus)
    assert grouped == sorted(AUECRL_AUS)
    # the gather puts group outputs back into au_names order: check with per-group constants
    with torch.no_grad():
        for (_areas, aus), clf in zip(kd.groups, kd.classifiers):
            clf[-1].weight.zero_()
            clf[-1].bias.copy_(torch.tensor([float(AUECRL_AUS.index(a)) for a in aus]))
    logits = kd.eval()(torch.randn(2, 3, 64, 64))["au_logits"]
    assert torch.equal(logits[0], torch.arange(17, dtype=torch.float32))
    boxes = np.array(kd.config["fixed_boxes"])
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert boxes.min() >= 0 and boxes.max() <= 64


def test_bad_model_options_are_clear():
    with pytest.raises(ConfigError, match="scan_order"):
        create_model("lp_net_tiny", scan_order="spiral")
    with pytest.raises(ConfigError, match="5 values"):
        create_model("gtle_net_tiny", classifier_channels=[4, 4])
    with pytest.raises(ConfigError, match="fixed_boxes"):
        create_model("kdsrl_tiny", fixed_boxes=[[0, 0, 1, 1]])


def _mean_shape() -> np.ndarray:
    from aue_edge.edge.face.landmarks import mean_shape_68

    return np.asarray(mean_shape_68(), dtype=np.float32)


def test_pnet_shape_feature_is_linear_and_a_bias_under_the_mean_shape():
    from aue_edge.edge.face.landmarks import mean_shape_68

    model = create_model("lp_net_tiny", au_names=["AU1", "AU12"]).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 64, generator=g)
    shape = torch.as_tensor(mean_shape_68(), dtype=torch.float32)[None].expand(4, -1, -1)
    moved = shape + 0.02 * torch.randn(4, 68, 2, generator=g)
    with torch.no_grad():
        out = model(images, moved)
        same = model(images, shape)
    # f_s is linear (no ReLU at its end): it takes negative values, so L_r is not met by zeros
    assert (out["shape_features"] < 0).any()
    # with the mean shape for every face (no landmark provider), P-Net adds the same per-AU
    # term to every image: a learned bias, which docs/au_detectors.md states
    with torch.no_grad():
        no_pnet = model(images, stage=2)["au_logits"]
    bias = same["au_logits"] - no_pnet
    assert torch.allclose(bias, bias[:1].expand_as(bias), atol=1e-5)
    with torch.no_grad():
        varied = model(images, moved)["au_logits"] - no_pnet
    assert not torch.allclose(varied, varied[:1].expand_as(varied), atol=1e-4)


def test_gtle_parts_outside_the_gee_start_from_kaiming_init():
    model = create_model("gtle_net_tiny", au_names=["AU1", "AU12"])
    conv = model.classifiers[0].features[3]          # a 7x7 conv of g^i, not the first layer
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert float(conv.weight.detach().std()) == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.2)
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in model.ea_heads.modules()
               if isinstance(m, torch.nn.Conv2d))
