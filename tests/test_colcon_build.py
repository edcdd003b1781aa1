"""``colcon build`` of the two ROS 2 packages, then the perception node from the install.

A temporary colcon workspace links the repository (``src/aue_edge``, ament_python) and its
``aue_msgs/`` folder (``src/aue_msgs``, ament_cmake + rosidl) into ``src/``, as a ROS user
does with a clone. colcon does not look inside a package for more packages, so ``aue_msgs``
needs its own entry. Every shell starts from a fresh environment (no ROS or Python variables
of this test process). The venv that holds the ROS 2 wheels is the underlay, the way
``/opt/ros/<distro>/setup.bash`` is one on a native install: ``source .venv/bin/activate;
export AMENT_PREFIX_PATH=$VIRTUAL_ENV``. Then ``colcon build`` (the default isolated layout,
install/<package>/) and, in a new shell, ``source install/setup.bash``.

Checked: the ament index markers and share files (package.xml, config/, launch/, the .msg
files) are installed, ``get_package_share_directory`` finds them in the sourced environment,
``aue_edge`` and ``aue_msgs`` are imported from the workspace (not from the venv, where the
project is also installed), and the perception node, started as ``ros2 run aue_edge
perception_node`` starts it (``<package prefix>/lib/aue_edge/perception_node``), answers a
real face with the model installed in the workspace. The repository gets no build/, install/
or log/ folder: nothing in it may change during the build.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 from PyPI) is not installed: the "
                                            "colcon build test was NOT run")
pytest.importorskip("colcon_ros", reason="colcon is not installed (pip install -r "
                                         "requirements.txt): the colcon build test was NOT run")

from rclpy.context import Context  # noqa: E402

from aue_edge.edge.model_card import ModelCard  # noqa: E402
from aue_edge.ros_nodes.demo import join_ros_domain, leave_ros_domain, stop  # noqa: E402
from aue_edge.ros_nodes.probe import PerceptionProbe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ACTIVATE = Path(sys.prefix) / "bin" / "activate"
# What /opt/ros/<distro>/setup.bash is on a native install: the venv with the ROS 2 wheels.
UNDERLAY = f'source {shlex.quote(str(ACTIVATE))}\nexport AMENT_PREFIX_PATH="$VIRTUAL_ENV"\n'
PYTHON_SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
NODES = ("perception_node", "image_source", "emotion_listener")
MESSAGES = ("ActionUnits", "Emotion", "Face", "FaceArray")
START_TIMEOUT_S = 60.0


def _fresh_env(**extra: str) -> dict[str, str]:
    """A new login shell's environment: none of this process's ROS, Python or make variables."""
    keep = ("HOME", "USER", "PATH", "LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(extra)
    return env


def _bash(script: str, cwd: Path, env: dict[str, str], log_path: Path,
          timeout_s: float) -> subprocess.CompletedProcess:
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env,
                              stdout=log, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout_s)


def _changed_since(root: Path, since: float) -> list[str]:
    """Files and folders under ``root`` (but .git and the venvs) created or modified since."""
    changed = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git" and not d.startswith(".venv")]
        for name in dirs + files:
            path = Path(folder) / name
            if path.lstat().st_mtime >= since:
                changed.append(str(path.relative_to(root)))
    return changed


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    assert ACTIVATE.is_file(), (f"{sys.prefix} is not a venv ({ACTIVATE} missing): run the "
                                f"tests with the project's venv (make setup; .venv/bin/python)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "aue_edge").symlink_to(REPO, target_is_directory=True)
    (ws / "src" / "aue_msgs").symlink_to(REPO / "aue_msgs", target_is_directory=True)
    started = time.time()
    result = _bash(UNDERLAY + "colcon build\n", ws,
                   _fresh_env(), ws / "colcon_build.log", timeout_s=900)
    elapsed_s = time.time() - started
    output = (ws / "colcon_build.log").read_text()
    assert result.returncode == 0, f"colcon build failed ({result.returncode}):\n{output[-6000:]}"
    print(f"colcon build of aue_msgs + aue_edge: {elapsed_s:.0f} s")
    assert _changed_since(REPO, started - 1.0) == [], "colcon build wrote into the repository"
    assert {p.name for p in (ws / "install").iterdir() if p.is_dir()} == {"aue_msgs",
                                                                         "aue_edge"}
    return ws


def test_colcon_installs_both_packages_where_ament_expects_them(workspace):
    install = workspace / "install"
    index = "share/ament_index/resource_index"
    for package in ("aue_msgs", "aue_edge"):
        assert (install / package / index / "packages" / package).is_file(), package
    interfaces = (install / "aue_msgs" / index / "rosidl_interfaces" / "aue_msgs").read_text()
    assert {f"msg/{m}.msg" for m in MESSAGES} <= set(interfaces.split())
    for message in MESSAGES:
        assert (install / "aue_msgs/share/aue_msgs/msg" / f"{message}.msg").read_bytes() == \
            (REPO / "aue_msgs/msg" / f"{message}.msg").read_bytes()
    share = install / "aue_edge/share/aue_edge"
    assert (share / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()
    for folder in ("config", "launch"):
        shipped = sorted(p.name for p in (REPO / folder).iterdir())
        assert sorted(p.name for p in (share / folder).iterdir()) == shipped, folder
        for name in shipped:
            assert (share / folder / name).read_bytes() == (REPO / folder / name).read_bytes()
    for node in NODES:
        assert os.access(install / "aue_edge/lib/aue_edge" / node, os.X_OK), node

    # A new shell: underlay, then the workspace, as a user does before `ros2 run`.
    probe_script = """
import json, shutil
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
import aue_edge, aue_msgs
import aue_edge.edge.pipeline, aue_edge.ros_nodes.perception_node
from aue_msgs.msg import Face, FaceArray
msg = FaceArray(image_width=640, image_height=480, primary_face_id=3,
                faces=[Face(id=3, detection_score=0.9)])
back = deserialize_message(serialize_message(msg), FaceArray)
print(json.dumps({
    "aue_edge": [m.__file__ for m in (aue_edge, aue_edge.edge.pipeline,
                                      aue_edge.ros_nodes.perception_node)],
    "aue_msgs": aue_msgs.__file__,
    "share": {p: get_package_share_directory(p) for p in ("aue_edge", "aue_msgs", "std_msgs")},
    "prefix": get_package_prefix("aue_edge"),
    "console_script": shutil.which("aue-perception"),
    "round_trip": [back.image_width, back.primary_face_id, back.faces[0].id],
}))
"""
    script = (UNDERLAY + "source install/setup.bash\n"
              f"python3 -c {shlex.quote(probe_script)}\naue-perception --help\n")
    log_path = workspace / "sourced.log"
    result = _bash(script, workspace, _fresh_env(), log_path, timeout_s=120)
    output = log_path.read_text()
    assert result.returncode == 0, output
    found = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    site = install.resolve()
    for module_file in found["aue_edge"]:   # the stages too, not only the top package
        assert Path(module_file).is_relative_to(site / "aue_edge" / PYTHON_SITE), module_file
    assert Path(found["aue_msgs"]).is_relative_to(site / "aue_msgs" / PYTHON_SITE)
    assert found["share"]["aue_edge"] == str(site / "aue_edge/share/aue_edge")
    assert found["share"]["aue_msgs"] == str(site / "aue_msgs/share/aue_msgs")
    # The underlay stays reachable through the workspace's setup.bash.
    assert found["share"]["std_msgs"] == str(Path(sys.prefix) / "share/std_msgs")
    assert found["prefix"] == str(site / "aue_edge")
    assert found["console_script"] == str(site / "aue_edge/bin/aue-perception")
    assert found["round_trip"] == [640, 3, 3]
    assert "usage:" in output and "--model-dir" in output


def test_perception_node_from_the_install_answers_a_real_face(workspace, astronaut_bgr):
    install = (workspace / "install").resolve()
    share = install / "aue_edge/share/aue_edge"
    ros = {"ROS_DOMAIN_ID": str(random.randint(1, 100)),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "FASTDDS_DEFAULT_PROFILES_FILE": str(share / "config/fastdds_shm.xml")}
    # `ros2 run aue_edge perception_node`: <prefix of aue_edge>/lib/aue_edge/perception_node.
    run = ('exec "$(python3 -c \'from ament_index_python.packages import get_package_prefix; '
           'print(get_package_prefix("aue_edge"))\')/lib/aue_edge/perception_node" '
           '--ros-args -p num_threads:=1 -p diagnostics_period_s:=0.5\n')
    log_path = workspace / "perception_node.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            ["bash", "-e", "-c", UNDERLAY + "source install/setup.bash\n" + run],
            cwd=workspace, env=_fresh_env(PYTHONUNBUFFERED="1", **ros), stdout=log,
            stderr=subprocess.STDOUT, text=True)
    saved = join_ros_domain(ros)
    context = Context()
    rclpy.init(context=context)
    probe = PerceptionProbe(context=context)
    try:
        if not (probe.wait_for_node(START_TIMEOUT_S)
                and probe.warm_up(astronaut_bgr, timeout_s=START_TIMEOUT_S)):
            pytest.fail(f"the perception node from {install} did not come up in "
                        f"{START_TIMEOUT_S:g} s (exit status {process.poll()}); log:\n"
                        f"{log_path.read_text()}")
        stamp = probe.publish_frame(astronaut_bgr, frame_id="head_camera_optical_frame")
        faces = probe.wait_reply("faces", stamp, timeout_s=10.0)
        emotion = probe.wait_reply("emotion", stamp, timeout_s=10.0)
        assert faces is not None and emotion is not None, log_path.read_text()
        assert faces.header.frame_id == emotion.header.frame_id == "head_camera_optical_frame"
        assert len(faces.faces) == 1
        face = faces.faces[0]
        # The astronaut's face is in the upper middle of the 512x512 photo.
        assert 120 < face.roi.x_offset + face.roi.width / 2 < 320
        assert 40 < face.roi.y_offset + face.roi.height / 2 < 240
        assert faces.primary_face_id == face.id == emotion.face_id
        assert probe.spin_until(lambda: "model_file" in (probe.latest_diagnostics() or {}),
                                timeout_s=10.0), "no /diagnostics from the node"
        model_file = Path(probe.latest_diagnostics()["model_file"])
        # The model (and so the node's code) came from the workspace's install, not the repo.
        assert model_file.is_relative_to(install / "aue_edge" / PYTHON_SITE / "aue_edge/edge"
                                         / "models"), model_file
        card = ModelCard.load(model_file.parent / "card.json")
        assert list(emotion.label_names) == list(card.outputs.emotion_labels)
        assert emotion.label in card.outputs.emotion_labels
    finally:
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        leave_ros_domain(saved)
        returncode = stop(process, "perception_node")
    assert returncode == 0, f"exit status {returncode} after SIGINT:\n{log_path.read_text()}"
