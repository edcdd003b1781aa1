"""Distributed training as a user starts it: ``torchrun --nproc_per_node=2 -m aue_edge.cli
train CONFIG`` (DDP, Gloo on the CPU), 2 processes on real FER+ images, against the
single-process trainer. Tiny model; the sharding of the batches is checked without processes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from aue_edge.train import trainer
from aue_edge.train.config import load_config
from aue_edge.train.distributed import DistInfo
from aue_edge.train.loop import iterate_batches
from aue_edge.train.runtime import load_checkpoint, read_checkpoint

torch.set_num_threads(1)  # the host is shared; more threads only spin

NO_AUGMENT = {"flip_prob": 0.0, "max_rotation_deg": 0.0, "max_shift_frac": 0.0,
              "scale_min": 1.0, "scale_max": 1.0, "erase_prob": 0.0}


def write_config(path, packed, out_dir):
    raw = {"model": {"name": "aue_crl_cpu_tiny"}, "data": {"packed": str(packed)},
           "run": {"batch_size": 32, "eval_batch_size": 64, "device": "cpu", "num_threads": 1,
                   "out_dir": str(out_dir)},
           "augment": NO_AUGMENT,
           "aue_crl": {"stage1": {"epochs": 1, "lr": 0.05}, "stage2": {"epochs": 1, "lr": 0.01},
                       "stage3": {"epochs": 1, "lr": 0.05}}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    """The documented command, 2 processes; --standalone picks a free rendezvous port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "aue_edge.cli", "train", *args, "--no-progress"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(packed_small, tmp_path_factory):
    """Stages 1-3 of the tiny config trained by two DDP processes."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = write_config(tmp / "tiny.yaml", packed_small, tmp / "run")
    proc = torchrun(str(config), cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, config, proc.stdout


def test_torchrun_trains_three_stages_and_rank0_alone_reports(ddp_run):
    tmp, _config, stdout = ddp_run
    out = tmp / "run"
    for stage in (1, 2, 3):
        # one line per epoch: rank 1 neither prints nor writes (both sit in the same branch)
        assert stdout.count(f"stage{stage} epoch 1/1:") == 1, stdout
        assert (out / f"stage{stage}_best.pt").is_file()
        assert (out / f"stage{stage}_last.pt").is_file()
    assert stdout.count("done in ") == 1 and stdout.count("M parameters") == 1
    report = json.loads((out / "training_report.json").read_text())
    assert report["train_images"] == 64 and report["validation"]["num_images"] == 32
    assert set(report["stages"]["stage2"]["history"][0]["train"]) == {"au", "prior"}
    model, payload = load_checkpoint(out / "model.pt", expected_model="aue_crl_cpu_tiny")
    assert payload["final_logits"] == "fused_logits"
    assert not torch.equal(model.prior_weight, model.prior_init)   # stage 2 trained W


def test_ddp_matches_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    """With no batch statistics in play (stage 3 of the no-attention ablation: every BatchNorm
    frozen in eval mode, no augmentation), two processes at 16 images each are one process at
    32: same weights after the epoch, same (all-reduced) training loss, same validation."""
    tmp, config, _ = ddp_run
    start = tmp / "run" / "stage2_best.pt"
    flags = ["--stage", "3", "--init", str(start), "--set", "model.kwargs.attention=mean"]
    proc = torchrun(str(config), *flags, "--out-dir", str(tmp_path / "ddp"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single_cfg = load_config(config, {"aue_crl.stages": [3], "run.out_dir": str(tmp_path / "one"),
                                      "model.kwargs.attention": "mean"})
    single = trainer.train(single_cfg, init_checkpoint=str(start), progress=False)

    ddp = json.loads((tmp_path / "ddp" / "training_report.json").read_text())
    one, two = single["stages"]["stage3"]["history"][0], ddp["stages"]["stage3"]["history"][0]
    # rank 0 alone saw half of each batch: its own loss would differ from the batch's
    assert two["train"]["ce"] == pytest.approx(one["train"]["ce"], abs=1e-6)
    for key in ("accuracy", "mean_class_accuracy"):
        assert two["val"][key] == pytest.approx(one["val"][key], abs=1e-6)
    before = read_checkpoint(start)["state_dict"]
    a = read_checkpoint(tmp_path / "ddp" / "model.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "one" / "model.pt")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert (b["fused_head.weight"] - before["fused_head.weight"]).abs().max() > 1e-3
    # the ablation's attention modules get no gradient, so no weight decay, in either run
    assert torch.equal(a["fuse_expr.1.weight"], before["fuse_expr.1.weight"])


def test_batch_size_must_split_evenly_over_the_processes(ddp_run, tmp_path):
    _tmp, config, _ = ddp_run
    proc = torchrun(str(config), "--batch-size", "31", "--out-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode != 0
    assert "batch_size 31 is the batch over all 2 processes" in proc.stderr
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("num_items,world", [(40, 2), (43, 2), (48, 4)])
def test_rank_shards_cover_each_batch_exactly_once(num_items, world):
    batch, device = 8, torch.device("cpu")
    single = list(iterate_batches(num_items, batch, torch.Generator().manual_seed(3),
                                          device))
    shards = [list(iterate_batches(num_items, batch, torch.Generator().manual_seed(3),
                                           device, DistInfo(rank, world)))
              for rank in range(world)]
    assert all(len(s) == len(single) == num_items // batch for s in shards)
    for step, whole in enumerate(single):
        parts = [s[step] for s in shards]
        assert all(len(p) == batch // world for p in parts)
        torch.testing.assert_close(torch.cat(parts), whole)   # rank order = batch order
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen) == len(set(seen.tolist())) == num_items - num_items % batch
