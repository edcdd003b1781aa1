"""Host-side training (PyTorch): FACS knowledge, data set readers, the four papers' models,
trainers, metrics and ONNX export. Nothing downstream (calibration, edge, ros_nodes) imports it.
"""
