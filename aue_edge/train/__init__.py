"""Host-side training (PyTorch): the four papers' models, trainers, metrics and ONNX export.
Nothing downstream (calibration, edge, ros_nodes) imports it: the torch-free data set readers and
FACS knowledge they share with calibration are in :mod:`aue_edge.data`.
"""
