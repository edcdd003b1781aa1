"""The five configs (pipeline, calibration, AUE-CRL training, AU-detector training, benchmarks)
load through one loader (aue_edge/core/config_files.py load_dataclass): a value of the wrong type is a
ConfigError naming file:line and the dotted field, never a TypeError from deep inside a run."""
from __future__ import annotations

import pytest

from aue_edge.benchmarks.config import BenchConfig
from aue_edge.calibration.config import load_config as load_calibration_config
from aue_edge.core.errors import ConfigError
from aue_edge.edge.pipeline import PipelineConfig
from aue_edge.train.au.config import load_au_config
from aue_edge.train.config import load_config as load_training_config

CASES = {
    "pipeline": (PipelineConfig.from_yaml, "backend: ort\nmax_faces: five\n",
                 r"bad\.yaml:2: field 'max_faces': expected an integer or null, found 'five'"),
    "calibration": (load_calibration_config, "method: entropy\nnum_bins: 2048.5\n",
                    r"bad\.yaml:2: field 'num_bins': expected an integer, found 2048\.5"),
    "training": (load_training_config,
                 "model: {name: aue_crl_cpu_tiny}\ndata: {root: x}\naue_crl:\n  stage1:\n"
                 "    lr: 0.1\n    epochs: ten\n",
                 r"bad\.yaml:6: field 'aue_crl\.stage1\.epochs': expected an integer, found "
                 r"'ten'"),
    "au training": (load_au_config,
                    "model: {name: lp_net_tiny}\nlp_net:\n  stages:\n"
                    "    - {stage: 1, epochs: 1, lr_stem: 1.0e-3, lr_head: 1.0e-3}\n"
                    "    - stage: 2\n      epochs: 1\n      lr_stem: fast\n      lr_head: 1\n",
                    r"bad\.yaml:7: field 'lp_net\.stages\[1\]\.lr_stem': expected a number, "
                    r"found 'fast'"),
    "benchmarks": (BenchConfig.load, "rounds: 10\nbatches: [1, two]\n",
                   r"bad\.yaml:2: field 'batches\[1\]': expected an integer, found 'two'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_type_names_file_line_and_field(tmp_path, name):
    load, text, message = CASES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load(path)


def test_training_overrides_are_checked_and_named_as_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: {name: aue_crl_cpu_tiny}\ndata: {root: x}\n"
                    "aue_crl: {stages: [1], stage1: {epochs: 1}}\n", encoding="utf-8")
    assert load_training_config(path, {"aue_crl.stage1.epochs": 4}).stage1.epochs == 4
    with pytest.raises(ConfigError, match=r"override: field 'aue_crl\.stage1\.epochs': expected "
                                          r"an integer, found 'ten'"):
        load_training_config(path, {"aue_crl.stage1.epochs": "ten"})
    with pytest.raises(ConfigError, match=r"override: field 'run\.amp': expected true or false"):
        load_au_config({"model": {"name": "lp_net_tiny"}}, {"run.amp": "yes"})
