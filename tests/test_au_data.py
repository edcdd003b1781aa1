"""AU-detector data pieces: FER+ vote triplets, pseudo AU targets, RoIAlign, landmark
normalisation, F1-frame + report, config validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aue_edge.core.errors import ConfigError, DatasetError
from aue_edge.train.au.evaluate import f1_frame, results_table, write_report
from aue_edge.train.au.targets import pseudo_au_targets
from aue_edge.train.au.triplets import build_triplets, total_variation
from aue_edge.data.knowledge import AUECRL_AUS, FERPLUS_LABELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ferplus_valid_votes(ferplus_root):
    from aue_edge.data.ferplus import FerPlus

    dataset = FerPlus(ferplus_root, "valid", label_mode="probability")
    return np.stack([dataset[i].label_probs for i in range(400)])


def test_triplets_follow_the_documented_rule_on_real_votes(ferplus_valid_votes):
    probs = ferplus_valid_votes
    triplets, stats = build_triplets(probs, 200, max_pair_distance=0.2, min_gap=0.3, seed=1)
    assert triplets.shape == (200, 3) and stats.kept >= 200
    assert stats.drawn == stats.kept + stats.rejected_pair_too_far + stats.rejected_ambiguous
    a, p, n = (probs[triplets[:, i]] for i in range(3))
    d_ap, d_an, d_pn = total_variation(a, p), total_variation(a, n), total_variation(p, n)
    assert np.all(d_ap <= 0.2 + 1e-9)
    assert np.all(d_an >= d_ap + 0.3 - 1e-9) and np.all(d_pn >= d_ap + 0.3 - 1e-9)
    # same seed, same triplets
    again, _ = build_triplets(probs, 200, 0.2, 0.3, seed=1)
    assert np.array_equal(triplets, again)


def test_triplets_refuse_bad_input_and_impossible_rules(ferplus_valid_votes):
    with pytest.raises(DatasetError, match="sums to"):
        build_triplets(ferplus_valid_votes * 2, 10)
    # five images voted identically: every triple is ambiguous (no odd one out)
    with pytest.raises(DatasetError, match=r"only 0 of 10 unambiguous triplets"):
        build_triplets(np.tile(ferplus_valid_votes[:1], (5, 1)), 10, max_draws_factor=2)


def test_pseudo_targets_are_one_hot_times_clamped_prior():
    labels = np.array([FERPLUS_LABELS.index("happiness"), FERPLUS_LABELS.index("neutral")])
    targets = pseudo_au_targets(labels, None, FERPLUS_LABELS, AUECRL_AUS, "majority")
    happy = dict(zip(AUECRL_AUS, targets[0]))
    assert happy["AU6"] == happy["AU12"] == pytest.approx(1.0)      # primary
    assert happy["AU7"] == happy["AU25"] == pytest.approx(0.5)      # secondary
    assert happy["AU1"] == pytest.approx(0.1)                      # other
    assert np.allclose(targets[1], 0.1)                             # neutral: all "other"
    probs = np.zeros((1, 8), dtype=np.float32)
    probs[0, FERPLUS_LABELS.index("happiness")] = 0.5
    probs[0, FERPLUS_LABELS.index("neutral")] = 0.5
    soft = pseudo_au_targets(None, probs, FERPLUS_LABELS, AUECRL_AUS, "soft")
    assert np.allclose(soft[0], 0.5 * targets[0] + 0.5 * targets[1])
    with pytest.raises(DatasetError, match="outside"):
        pseudo_au_targets(np.array([9]), None, FERPLUS_LABELS, AUECRL_AUS, "majority")


def test_roi_align_weights_are_exact_on_a_linear_map():
    from aue_edge.train.models.kdsrl import roi_align_weights

    h = w = 8
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    fmap = (2 * xs + 3 * ys + 1).reshape(1, h * w)          # one channel, linear in x and y
    boxes = torch.tensor([[[8.0, 12.0, 40.0, 36.0], [20.0, 20.0, 28.0, 52.0]]])  # input px
    scale, roi = 1 / 8, 2                                      # a stride-8 feature map
    weights = roi_align_weights(boxes, (h, w), scale, roi_size=roi, sampling_ratio=2)
    pooled = (weights @ fmap.t()).reshape(2, roi, roi)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 2 * roi * roi))
    for r, (x1, y1, x2, y2) in enumerate(boxes[0].tolist()):
        bx, by = (x2 - x1) * scale / roi, (y2 - y1) * scale / roi
        for i in range(roi):
            for j in range(roi):
                cy = y1 * scale - 0.5 + (i + 0.5) * by      # bin centre, aligned=True
                cx = x1 * scale - 0.5 + (j + 0.5) * bx
                assert pooled[r, i, j].item() == pytest.approx(2 * cx + 3 * cy + 1, abs=1e-4)


def test_landmark_normalisation_is_similarity_invariant():
    from aue_edge.edge.face.landmarks import mean_shape_68
    from aue_edge.train.models.lp_net import normalize_landmarks

    shape = torch.as_tensor(mean_shape_68(), dtype=torch.float32)[None]
    ref = normalize_landmarks(shape, (112, 112)).view(68, 2)
    eyes_a, eyes_b = ref[36:42].mean(0), ref[42:48].mean(0)
    assert torch.allclose(eyes_a, torch.tensor([-0.5, 0.0]), atol=1e-5)
    assert torch.allclose(eyes_b, torch.tensor([0.5, 0.0]), atol=1e-5)
    angle = np.deg2rad(17.0)
    rot = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]],
                       dtype=torch.float32)
    moved = (shape - 0.5) @ rot.t() * 0.7 + torch.tensor([0.55, 0.45])
    assert torch.allclose(normalize_landmarks(moved, (112, 112)).view(68, 2), ref, atol=1e-4)


def test_f1_frame_by_hand_and_report(tmp_path):
    labels = np.array([[1, 0], [1, 1], [0, -1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.9], [0.1, 0.3]])
    scores = f1_frame(probs, labels, ("AU1", "AU2"))
    # AU1: TP 1, FN 1, FP 1 -> P = R = 0.5 -> F1 50; AU2 (row 3 unknown): TP 1, FN 1 -> 66.7
    assert scores.f1_pct[0] == pytest.approx(50.0)
    assert scores.f1_pct[1] == pytest.approx(66.667, abs=1e-3)
    assert scores.unknown == (0, 1) and scores.positives == (2, 2)
    table = results_table({"fold1": scores, "fold2": scores}, {"AU1": 40.0, "AU2": 60.0})
    assert "| mean | 50.0 | 66.7 | 58.3 |" in table and "| paper | 40.0 | 60.0 | 50.0 |" in table
    files = write_report(tmp_path, {"fold1": scores}, "lp_net", "bp4d")
    payload = json.loads(files["json"].read_text())
    assert payload["mean_f1_pct"] == pytest.approx(58.333, abs=1e-2)
    assert files["plot"].stat().st_size > 1000
    with pytest.raises(ConfigError, match="threshold"):
        f1_frame(probs, labels, ("AU1", "AU2"), threshold=1.0)


def test_config_errors_name_the_file_and_key(tmp_path):
    from aue_edge.train.au.config import load_au_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: lp_net_tiny}\nrun: {batch_sise: 4}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: unknown field 'run\.batch_sise' \(did "
                                          r"you mean 'batch_size'\?\)"):
        load_au_config(bad)
    bad.write_text("model: {name: lp_net_tiny}\nlp_net:\n  stages:\n"
                   "    - {stage: 3, epochs: 1, lr_stem: 1.0e-3, lr_head: 1.0e-3}\n"
                   "    - {stage: 1, epochs: 1, lr_stem: 1.0e-3, lr_head: 1.0e-3}\n")
    with pytest.raises(ConfigError, match="increasing stage numbers"):
        load_au_config(bad)
    bad.write_text("model: {name: kdsrl_tiny}\nlp_net: {}\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['lp_net'\]"):
        load_au_config(bad)
    with pytest.raises(ConfigError, match="not an AU detector"):
        load_au_config({"model": {"name": "aue_crl"}})
    cfg = load_au_config({"model": {"name": "gtle_net_tiny"}},
                         {"run.batch_size": 4, "model.kwargs.embedding_dim": 8})
    assert cfg.run.batch_size == 4 and cfg.model.kwargs == {"embedding_dim": 8}


class _Frames:
    """A reader-shaped list of full frames (what Bp4d/Disfa return), for face_crop="detect"."""

    name, split, au_names = "frames", "test", ("AU1", "AU2")

    def __init__(self, frames):
        self.frames = frames

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        from aue_edge.data.base import Sample

        return Sample(image=self.frames[i], label=None, label_probs=None,
                      aus=np.array([1, -1], dtype=np.int8), subject=f"S{i}", landmarks=None,
                      path=f"frame{i}")


def test_full_frames_are_detected_aligned_and_faceless_frames_counted(astronaut_bgr):
    from aue_edge.train.au.data import au_dataset_arrays

    blank = np.full((240, 320, 3), 127, dtype=np.uint8)
    arrays = au_dataset_arrays(_Frames([astronaut_bgr, blank]), ("AU2",), 64,
                               face_crop="detect", progress=False)
    assert arrays.images.shape == (1, 64, 64) and arrays.dropped == {"no face detected": 1}
    assert arrays.targets.tolist() == [[-1.0]] and arrays.subjects == ["S0"]
    # the aligned crop is a face, not the flat background: it has contrast
    assert arrays.images[0].std() > 20
    with pytest.raises(ConfigError, match="does not label"):
        au_dataset_arrays(_Frames([blank]), ("AU4",), 64, progress=False)


def test_augmentation_moves_the_area_boxes_with_the_face():
    # a bright rectangle is the "area"; after a random flip + rotation + shift its box must be
    # where the rectangle went (KDSRL's classifiers read RoIs at these boxes)
    from aue_edge.train.augment import AugmentConfig, GpuAugment

    cfg = AugmentConfig(flip_prob=0.5, max_rotation_deg=20.0, max_shift_frac=0.1,
                        erase_prob=0.0)
    augment = GpuAugment(cfg, (64, 64), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    images = torch.zeros(8, 64, 64, dtype=torch.uint8)
    images[:, 10:20, 40:56] = 255
    boxes = torch.tensor([[[40.0, 10.0, 56.0, 20.0]]]).expand(8, -1, -1)
    torch.manual_seed(0)
    x, moved = augment(images, boxes=boxes)
    flipped = 0
    for i in range(8):
        ys, xs = np.nonzero(x[i, 0].numpy() > 0.5)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        assert np.abs(moved[i, 0].numpy() - found).max() < 2.5, (moved[i], found)
        flipped += found[0] < 32
    assert 0 < flipped < 8      # both flipped and unflipped images were checked
