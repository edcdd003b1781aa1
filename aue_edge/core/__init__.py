"""Helpers every stage shares: typed errors, YAML config files with line numbers, checksums,
plotting, and where the package's share files are. No torch, OpenCV or ONNX Runtime here."""
