"""INT8 calibration: FP32 ONNX + real faces -> TensorRT cache, Q/DQ ONNX, accuracy report.

Stage between training and the edge (train -> **calibration** -> edge). numpy + ONNX Runtime;
no torch and nothing from ``aue_edge.train``: faces come through the torch-free readers of
:mod:`aue_edge.data`.

- :mod:`~aue_edge.calibration.stats`: streaming |x| histograms per tensor;
- :mod:`~aue_edge.calibration.calibrators`: minmax, percentile and TensorRT's entropy search;
- :mod:`~aue_edge.edge.trt_cache` (edge stage, shared with ``aue build``): TensorRT
  implicit-INT8 cache writer/reader;
- :mod:`~aue_edge.calibration.qdq`: explicit Q/DQ ONNX writer and its rule checker;
- :mod:`~aue_edge.calibration.sources`: calibration/held-out faces and the record of them;
- :mod:`~aue_edge.calibration.calibrate`: one whole run (``calibrate``), behind ``aue calibrate``
  (:mod:`~aue_edge.calibration.cli`).

See docs/calibration.md.
"""
