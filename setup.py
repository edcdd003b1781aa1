"""ament_python package ``aue_edge``; also installs with ``pip install -e .`` or ``pip install .``.

The product's stages are sub-packages of ``aue_edge`` in the ``aue_edge/`` folder
(``aue_edge/train`` -> ``aue_edge/calibration`` -> ``aue_edge/edge`` -> ``aue_edge/ros_nodes``,
plus ``core``, ``data`` and ``benchmarks``), so every import is a path under ``aue_edge/`` and the
folder is the same package whether imported from the checkout or installed. ``config/`` and
``launch/`` sit beside ``package.xml`` as in any ament package and go to ``share/aue_edge``.
"""
from glob import glob
from os.path import isfile

from setuptools import find_packages, setup

PACKAGE = "aue_edge"


def _files(pattern: str) -> list:
    """Files (never folders such as ``__pycache__``) matching ``pattern``, sorted."""
    return sorted(path for path in glob(pattern) if isfile(path))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={
        f"{PACKAGE}.edge": ["models/*/*.onnx", "models/*/*.json", "models/*/*.cache",
                            "models/*/*.md", "samples/*"],
        f"{PACKAGE}.train": ["configs/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", _files("config/*")),
        (f"share/{PACKAGE}/launch", _files("launch/*")),
        # `ros2 run aue_edge <node>` looks in <prefix>/lib/aue_edge/; console scripts stay in bin/.
        (f"lib/{PACKAGE}", _files(f"{PACKAGE}/ros_nodes/bin/*")),
    ],
    # The runtime (edge, ros_nodes, aue run/build/bench/doctor) runs on Python 3.8 (JetPack 5)
    # and 3.10 (JetPack 6); training needs torch 2.13, i.e. Python >= 3.10 (the train extra).
    python_requires=">=3.8",
    # Runtime dependencies only: what a robot installs (TensorRT comes with JetPack).
    install_requires=[
        "numpy>=1.24",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "opencv-python-headless>=4.8,<5",
        "PyYAML>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        # PNG plots (aue run's latency.png, aue bench reports, calibration and training plots);
        # without it the runtime commands skip their plots with a note.
        "plots": ["matplotlib>=3.7"],
        # Host-side training and export (pin torch: an unpinned one pulls GBs of CUDA wheels).
        "train": ["torch==2.13.0", "onnxscript>=0.5", "scipy>=1.10", "matplotlib>=3.7"],
        # Jetson runtime: TensorRT ships with JetPack; pick one CUDA binding for its driver.
        # cuda-python 13.x needs driver >= 580 (not on JetPack 5/6), so it is excluded.
        # JetPack 6 (CUDA 12.2/12.6, Python 3.10): the 12.x line.
        "jetson": ["cuda-python>=12.2,<13"],
        # JetPack 5 (CUDA 11.4, Python 3.8): 11.8.2 is the last 11.x release with aarch64 cp38
        # wheels (later 11.8 releases need cuda-bindings 11.8, which has none).
        "jetson-jp5": ["cuda-python==11.8.2"],
        "jetson-pycuda": ["pycuda>=2022.1"],
        # Optional 68-point landmark providers. MediaPipe 0.10.21 is the last release bundling
        # Face Mesh and needs numpy<2 (its own venv); dlib's model is not for commercial use.
        "mediapipe": ["mediapipe==0.10.21", "numpy<2"],
        "dlib": ["dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "scikit-image>=0.21", "matplotlib>=3.7"],
        # Recorded ROS 2 bags (aue run --source BAG): an offline debugging input, not needed on
        # the robot; rosbags needs Python >= 3.10 (on 3.8 the bag reader says so).
        "bag": ["rosbags==0.11.9; python_version >= '3.10'"],
    },
    entry_points={
        "console_scripts": [
            "aue = aue_edge.cli:main",
            "aue-perception = aue_edge.ros_nodes.entry:perception",
            "aue-image-source = aue_edge.ros_nodes.entry:image_source",
            "aue-emotion-listener = aue_edge.ros_nodes.entry:emotion_listener",
        ],
    },
    zip_safe=False,
)
