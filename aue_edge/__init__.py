"""aue_edge: facial emotion and action-unit recognition from training to a robot.

Stages (one direction of flow, a file on disk between each):
``aue_edge.train`` (PyTorch, host) -> ``aue_edge.calibration`` (INT8) ->
``aue_edge.edge`` (no torch: detection, alignment, ONNX Runtime / TensorRT) ->
``aue_edge.ros_nodes`` (rclpy glue). Beside them: ``aue_edge.core`` (errors, config files,
checksums, plotting, share files) and ``aue_edge.data`` (torch-free data set readers and FACS
knowledge, read by training and calibration), and ``aue_edge.benchmarks``.

The Python API for programs that do not use ROS 2 (README, "Python API")::

    from aue_edge import Pipeline
    with Pipeline.from_model_dir() as pipeline:      # the shipped model, ONNX Runtime
        result = pipeline.process(frame_bgr)         # -> FrameResult with its FaceResults

The names below are imported on first use, so ``import aue_edge`` (every command line entry
point does it) loads neither OpenCV nor ONNX Runtime.
"""

__version__ = "0.1.0"

_API = {
    "Pipeline": "aue_edge.edge.pipeline",
    "PipelineConfig": "aue_edge.edge.pipeline",
    "FrameResult": "aue_edge.edge.results",
    "FaceResult": "aue_edge.edge.results",
    "ModelCard": "aue_edge.edge.model_card",
    "AueError": "aue_edge.core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'aue_edge' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
