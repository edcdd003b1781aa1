"""The package layout: one import path per module, one-way flow between the stages, and a wheel
that installs the same package the checkout imports (with the ament share files beside it)."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# stage -> stages it may import at module level (its own is always allowed). The flow is
# train -> calibration -> edge -> ros_nodes; core and data serve every stage; nothing imports
# the torch stage (train), the benchmarks or the ROS glue from below.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "train": {"core", "data", "edge"},
    "calibration": {"core", "data", "edge"},
    "edge": {"core"},
    "ros_nodes": {"core", "edge"},
    "benchmarks": {"core", "edge", "ros_nodes"},
}
# Imported inside the function that needs it: `aue doctor` runs a short engine benchmark on the
# Jetson; `aue run --out-bag` writes aue_msgs messages with the ROS glue's converters.
LAZY_EXCEPTIONS = {("aue_edge/edge/doctor.py", "benchmarks"), ("aue_edge/edge/run.py", "ros_nodes")}


def _imports(path: Path):
    """(imported aue_edge sub-package, at module level?) for each import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "aue_edge" and len(parts) > 1:
                yield parts[1], id(node) in top_level


def test_stages_import_only_upstream(repo_root):
    problems = []
    for stage, allowed in ALLOWED.items():
        for path in sorted((repo_root / "aue_edge" / stage).rglob("*.py")):
            relative = path.relative_to(repo_root).as_posix()
            for imported, module_level in _imports(path):
                if imported == stage or imported in allowed:
                    continue
                if (relative, imported) in LAZY_EXCEPTIONS and not module_level:
                    continue
                problems.append(f"{relative} imports aue_edge.{imported}")
    assert not problems, "imports against the flow:\n" + "\n".join(problems)


def test_layout_check_catches_an_import_against_the_flow(tmp_path, monkeypatch, repo_root):
    """The check above is not vacuous: an edge module importing the torch stage is reported."""
    fake_root = tmp_path / "repo"
    for stage in ALLOWED:
        (fake_root / "aue_edge" / stage).mkdir(parents=True)
    (fake_root / "aue_edge" / "edge" / "bad.py").write_text("from aue_edge.train import x\n")
    with pytest.raises(AssertionError, match="aue_edge/edge/bad.py imports aue_edge.train"):
        test_stages_import_only_upstream(fake_root)


def test_every_package_folder_is_a_real_subpackage(repo_root):
    """Every folder of Python modules under aue_edge/ has an __init__.py, so ``aue_edge.x.y``
    is ``aue_edge/x/y.py`` for the interpreter, IDEs and type checkers alike."""
    missing = sorted({path.parent.relative_to(repo_root).as_posix()
                      for path in (repo_root / "aue_edge").rglob("*.py")
                      if not (path.parent / "__init__.py").is_file()
                      and "samples" not in path.parts})
    assert not missing, f"folders of modules without __init__.py: {missing}"


def _tracked_copy(repo_root: Path, dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo_root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if name.startswith(("aue_msgs/", "tests/", "docs/")) or not (repo_root / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, target)
    return dest


@pytest.mark.slow
def test_wheel_installs_the_package_and_share_files(tmp_path, repo_root):
    """``pip install .`` from a checkout with stray __pycache__ folders in config/ and launch/
    (they broke the old glob) gives the whole package plus the ament share files, and the
    installed package finds its share files and models without the checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the tracked files")
    source = _tracked_copy(repo_root, tmp_path / "src")
    for folder in ("config", "launch"):
        (source / folder / "__pycache__").mkdir()
        (source / folder / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    wheel_dir = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(wheel_dir), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = wheel_dir.glob("aue_edge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(repo_root).as_posix()
               for p in (repo_root / "aue_edge").rglob("*.py") if "samples" not in p.parts}
    assert modules - names == set(), f"modules missing from the wheel: {modules - names}"
    data = {name.split(".data/data/", 1)[1] for name in names if ".data/data/" in name}
    for name in ("share/aue_edge/package.xml", "share/aue_edge/config/perception.yaml",
                 "share/aue_edge/config/calibration.yaml", "share/aue_edge/launch/aue.launch.py",
                 "lib/aue_edge/perception_node",
                 "share/ament_index/resource_index/packages/aue_edge"):
        assert name in data, f"{name} missing from the wheel's data files: {sorted(data)}"
    assert not [name for name in names if "__pycache__" in name]
    assert "aue_edge/edge/models/aue_crl/card.json" in names

    # Installed like pip would (package in site-packages, data files under the prefix), run
    # from a folder that is not the checkout: the package must not find the checkout.
    prefix = tmp_path / "prefix"
    site = prefix / "site"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if ".data/data/" in name:
                target = prefix / name.split(".data/data/", 1)[1]
            else:
                target = site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    script = ("import aue_edge.core.paths as p, aue_edge.calibration.config as c, "
              "aue_edge.edge.pipeline as e\n"
              "assert p.source_checkout() is None, p.source_checkout()\n"
              "print(p.share_file('config/calibration.yaml'))\n"
              "print(e.DEFAULT_MODEL_DIR)\n"
              "assert c.load_config().target == 'tensorrt'\n")
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(prefix))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    share_line, model_line = proc.stdout.split("\n")[:2]
    # <sys.prefix>/share/aue_edge (a pip install) or the AMENT_PREFIX_PATH one, never the checkout
    assert Path(share_line).parts[-4:] == ("share", "aue_edge", "config", "calibration.yaml")
    assert repo_root not in Path(share_line).parents
    assert Path(model_line).is_relative_to(site)


def test_python_m_aue_edge_runs_from_the_repository_root(repo_root):
    """The checkout's aue_edge/ folder is the whole package: ``python -m aue_edge`` works with
    the repository root as working directory (it used to shadow the installed package)."""
    proc = subprocess.run([sys.executable, "-m", "aue_edge", "--version"], cwd=repo_root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "aue_edge" in proc.stdout, proc.stderr
