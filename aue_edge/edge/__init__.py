"""Edge runtime: face detection, alignment, inference backends and the per-frame pipeline.

This stage runs on the robot and never imports torch. It reads an ONNX model (or a TensorRT
engine) plus the model card written by ``aue export`` / ``aue calibrate``.
"""
