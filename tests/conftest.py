"""Fixtures shared by the test suite: real data locations and real face images."""
from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    """The real FER+ data set in its published layout (``../shared/data/ferplus``)."""
    root = Path(os.environ.get("AUE_FERPLUS_ROOT", SHARED / "data" / "ferplus"))
    if not (root / "FER2013Train" / "label.csv").is_file():
        pytest.fail(f"FER+ not found at {root}: the tests use the real data set; set "
                    f"AUE_FERPLUS_ROOT or place it at ../shared/data/ferplus")
    return root


@pytest.fixture(scope="session")
def ckplus_root() -> Path:
    """The CK+ peak frames with FACS codes (``../shared/data/ckplus``): real AU labels."""
    root = Path(os.environ.get("AUE_CKPLUS_ROOT", SHARED / "data" / "ckplus"))
    if not (root / "labels.csv").is_file():
        pytest.fail(f"CK+ not found at {root}: the tests use the real faces; set "
                    f"AUE_CKPLUS_ROOT or place them at ../shared/data/ckplus")
    return root


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real, public-domain face photo (scikit-image's astronaut, Eileen Collins), BGR uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture()
def standin_model(tmp_path) -> Path:
    """The test stand-in classifier (``tests/helpers/standin_model.py``, not the product's
    model) in ``tmp_path``: the path of its ``model.onnx``, ``card.json`` beside it."""
    from helpers.standin_model import build_standin_model

    return build_standin_model(tmp_path)


@pytest.fixture(scope="module")
def ros_env():
    """A private ROS graph for the test module: random domain, localhost only, the shared-memory
    Fast DDS profile; set in this process too (its rclpy context reads them at init)."""
    values = {"ROS_DOMAIN_ID": str(random.randint(1, 100)),
              "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
              "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml"),
              "PYTHONUNBUFFERED": "1"}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    yield dict(os.environ)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def context(ros_env):
    """An rclpy context on :func:`ros_env`'s graph (rclpy imported here: the runtime test venvs
    have no ROS)."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope="session")
def packed_small(ferplus_root, tmp_path_factory):
    """64 real FER+ valid images as 'train' and 32 test images as 'valid', packed once so the
    training tests do not re-read the PNG folders (the reader has its own tests)."""
    from aue_edge.train.arrays import load_split_arrays, pack_arrays
    from aue_edge.train.config import DataConfig

    data = DataConfig(root=str(ferplus_root))
    splits = {"train": load_split_arrays(data, "valid", limit=64, progress=False),
              "valid": load_split_arrays(data, "test", limit=32, progress=False)}
    return pack_arrays(tmp_path_factory.mktemp("packed") / "small.npz", splits, compress=False)


def _check_documented_defaults(path: Path, defaults: Mapping, section: tuple = (),
                               loaded: Mapping | None = None, also_known: tuple = ()) -> None:
    """A shipped config file shows the code's defaults: every key of ``defaults`` is in the file
    (under the nested keys ``section``) with that value, and the file has no other key except
    ``also_known`` ones. ``loaded``: the file's values as the code loaded them (YAML lists
    become tuples there); by default the YAML values themselves."""
    import yaml

    shown = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for key in section:
        shown = shown[key]
    values = shown if loaded is None else {key: loaded[key] for key in shown}
    unknown = sorted(set(values) - set(defaults) - set(also_known))
    missing = sorted(set(defaults) - set(values))
    differ = {key: (values[key], defaults[key]) for key in defaults
              if key in values and values[key] != defaults[key]}
    assert not (unknown or missing or differ), (
        f"{path}: keys the code does not know {unknown}; defaults the file does not show "
        f"{missing}; values that differ (file, code): {differ}")


@pytest.fixture(scope="session")
def check_documented_defaults():
    """The check that a shipped config file (config/*.yaml) shows the code's defaults."""
    return _check_documented_defaults
