"""aue_edge: facial emotion and action-unit recognition from training to a robot.

Stages (one direction of flow, a file on disk between each):
``aue_edge.train`` (PyTorch, host) -> ``aue_edge.calibration`` (INT8) ->
``aue_edge.edge`` (no torch: detection, alignment, ONNX Runtime / TensorRT) ->
``aue_edge.ros_nodes`` (rclpy glue).
"""

__version__ = "0.1.0"
