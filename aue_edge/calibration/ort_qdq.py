"""ONNX Runtime CPU flavour of the INT8 model (``aue calibrate --target ort-cpu``).

Calibration flow, last step for a CPU robot: the project's own calibrated ranges (stats ->
calibrators) -> ``model.int8.ort.onnx``, the model ``aue run`` prefers on ONNX Runtime CPU.

Why a second INT8 file: ``model.int8.onnx`` (``qdq.py``) is TensorRT's explicit-quantisation
form, symmetric int8 Q/DQ on the inputs of weighted operators only. ONNX Runtime's CPU provider
runs that form with float convolutions between DequantizeLinear nodes, slower than FP32. Its
fast int8 kernels (QLinearConv, QGemm, MatMulInteger: uint8 activations x int8 weights) are
used only when a Conv/Gemm has Q/DQ on its inputs AND its output, which ONNX Runtime then fuses.

What this module writes, through ONNX Runtime's public ``quantize_static`` (QDQ format):

- activations: uint8, asymmetric, from the calibrator chosen for the run. The histograms hold
  |x| and the signed min/max (``stats.py``), so a tensor's range is its signed [min, max]
  clipped by the calibrator's threshold: ``[max(min, -amax), min(max, amax)]`` (after a ReLU
  that is ``[0, amax]``, i.e. the entropy threshold on all 256 levels). The ranges reach
  ``quantize_static`` as a calibration cache (``calibration_cache_path``, the JSON written by
  ``onnxruntime.quantization.calibrate.save_tensors_data``), so ONNX Runtime runs no
  calibration of its own and its (MinMax-like) Entropy option is never used;
- weights: int8 per output channel (``per_channel=True``) and, by default, ``reduce_range``
  (7-bit weights in [-64, 64]): x86 CPUs without VNNI (AVX2) sum uint8 x int8 products in
  saturating int16 pairs, which 7-bit weights keep from overflowing (the ONNX Runtime
  1.32 ``quantize_static`` guidance; ``ort_reduce_range: false`` on VNNI CPUs and ARM);
- placement by ONNX Runtime's QDQ quantizer: inputs and outputs of Conv/Gemm/MatMul, with a
  following Relu/Clip folded into the uint8 range of the output (removed) so QLinearConv fuses;
  biases as int32 (ONNX Runtime's kernels take them; this file is not for TensorRT);
- batched MatMuls (a constant weight of rank 3, e.g. AUE-CRL's crop/AU heads) stay float:
  ONNX Runtime 1.32 runs them in float between Q/DQ nodes anyway, and ONNX Runtime 1.19 (the
  last release for Python 3.8, JetPack 5) fuses them into a QLinearMatMul whose kernel refuses
  the per-channel zero point of a rank-3 weight ("weight zero point must be a scalar ...") and
  fails at the first inference.

The graph is never optimised by ONNX Runtime before it is saved (no ``quant_pre_process``
optimisation): the file holds standard ONNX Q/DQ nodes only, and ONNX Runtime fuses them when a
session loads it. :func:`inspect_ort_qdq` checks the result before it is written.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from aue_edge.calibration.qdq import check_qdq_model, node_label, weight_axis
from aue_edge.edge.model_card import INT8_ORT_MODEL_FILENAME
from aue_edge.calibration.stats import TensorHistogram
from aue_edge.core.errors import CalibrationError

ORT_PRECISION = "int8-qdq-ort"
# Activations that follow a quantised op and that ONNX Runtime's QDQ quantizer folds into the
# producer's uint8 output range (so the Conv output Q/DQ fuses into QLinearConv).
REMOVABLE_ACTIVATIONS = ("Relu", "Clip")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
UINT8_RANGE = (0, 255)


def asymmetric_ranges(histograms: dict[str, TensorHistogram], amax: dict[str, float]
                      ) -> dict[str, tuple[float, float]]:
    """``(rmin, rmax)`` of each tensor: its signed min/max clipped at the calibrator's ``amax``.

    Zero is always inside the range (an asymmetric quantiser must represent 0 exactly: padding,
    ReLU); a tensor never seen non-zero gets ``(0, amax)``.
    """
    ranges = {}
    for name, hist in histograms.items():
        threshold = float(amax[name])
        if hist.num_values == 0:
            ranges[name] = (0.0, threshold)
            continue
        low = min(max(float(hist.min), -threshold), 0.0)
        high = max(min(float(hist.max), threshold), 0.0)
        if high - low <= 0.0:
            high = threshold
        ranges[name] = (low, high)
    return ranges


@contextmanager
def _without_preprocess_warning() -> Iterator[None]:
    """quantize_static logs "consider pre-processing" twice; pre-processing would save an
    ORT-optimised graph, which this project never ships, so the advice is muted here only."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    drop = _Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def batched_matmuls(model: onnx.ModelProto) -> tuple[str, ...]:
    """Labels of MatMul nodes whose constant weight is not 2-D (left in float; module doc)."""
    initializers = {init.name: init for init in model.graph.initializer}
    return tuple(node_label(node) for node in model.graph.node
                 if node.op_type == "MatMul" and len(node.input) > 1
                 and node.input[1] in initializers and len(initializers[node.input[1]].dims) != 2)


def quantize_for_ort(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]],
                     op_types: tuple[str, ...], nodes_to_exclude: tuple[str, ...] = (),
                     reduce_range: bool = True) -> onnx.ModelProto:
    """The ORT-CPU Q/DQ model of ``model`` with the given activation ranges (module doc)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    source = onnx.ModelProto()
    source.CopyFrom(model)
    nodes_to_exclude = tuple(nodes_to_exclude) + batched_matmuls(source)
    # ORT's quantizer addresses nodes by name; give unnamed ones the label the plan uses.
    for node in source.graph.node:
        if not node.name:
            node.name = node_label(node)
    tensors = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(low, np.float32), highest=np.array(high, np.float32))
        for name, (low, high) in ranges.items()})
    with tempfile.TemporaryDirectory(prefix="aue_ort_qdq_") as tmp:
        cache = Path(tmp) / "ranges.json"
        output = Path(tmp) / INT8_ORT_MODEL_FILENAME
        save_tensors_data(tensors, cache)
        try:
            with _without_preprocess_warning():
                quantize_static(
                    source, str(output), calibration_data_reader=None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types) + list(REMOVABLE_ACTIVATIONS),
                    per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(nodes_to_exclude),
                    calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CalibrationError(
                f"ONNX Runtime's quantizer could not write the ort-cpu model: {exc}. A tensor "
                f"without a calibrated range is one not computed from the model input (e.g. a "
                f"Constant node output): keep the node reading it in FP32 with --keep-fp32, "
                f"or use --target tensorrt") from None
        quantized = onnx.load(str(output))
    # quantize_static tags its output; the card is re-embedded by the caller.
    kept = [p for p in quantized.metadata_props if p.key != "onnx.infer"]
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(kept)
    check_qdq_model(quantized, "the ort-cpu Q/DQ model")
    return quantized


def inspect_ort_qdq(model: onnx.ModelProto, reduce_range: bool = True) -> dict:
    """Facts about an ORT-CPU Q/DQ model, and every way it misses the form ONNX Runtime fuses.

    ``problems``: an activation Q/DQ whose zero point is not uint8 (or outside [0, 255]), a
    constant weight not int8, outside [-64, 64] with ``reduce_range``, or per tensor where a
    per-channel axis applies (Conv, Gemm), and no weighted node in the pattern ONNX Runtime
    fuses (DQ on activation and weight, a single QuantizeLinear reading the output), which
    would make the file as slow as the TensorRT form. Whether ONNX Runtime's kernels take a
    given node in that pattern (e.g. a batched MatMul weight) is only known once a session
    loads the file: ``tests/test_calibration_ort.py`` checks that every Conv becomes a
    QLinearConv. ``per_tensor_weights`` lists the nodes whose weight has a single scale.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weight_low, weight_high = (-64, 64) if reduce_range else (-128, 127)
    problems: list[str] = []
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "activation_qdq_uint8": 0,
              "weight_dq": 0, "weight_dq_per_channel": 0, "bias_dq_int32": 0,
              "quantized_nodes": 0, "output_quantized_nodes": 0}
    per_tensor_weights: list[str] = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op_type] += 1
        label = node_label(node)
        if node.input[0] in initializers:     # a constant: weight (int8) or bias (int32)
            values = numpy_helper.to_array(initializers[node.input[0]])
            if values.dtype == np.int32:
                counts["bias_dq_int32"] += 1
            elif values.dtype == np.int8:
                counts["weight_dq"] += 1
                scale = numpy_helper.to_array(initializers[node.input[1]])
                counts["weight_dq_per_channel"] += int(scale.ndim == 1 and scale.size > 1)
                if values.size and (values.min() < weight_low or values.max() > weight_high):
                    problems.append(f"{label}: int8 weight values in [{values.min()}, "
                                    f"{values.max()}], expected [{weight_low}, {weight_high}]"
                                    f"{' (reduce_range)' if reduce_range else ''}")
            else:
                problems.append(f"{label}: constant of type {values.dtype}, expected int8 "
                                f"weights or int32 biases")
            continue
        if len(node.input) < 3 or node.input[2] not in initializers:
            problems.append(f"{label}: activation Q/DQ without an explicit zero point")
            continue
        zero = numpy_helper.to_array(initializers[node.input[2]])
        if zero.dtype != np.uint8:
            problems.append(f"{label}: activation zero point is {zero.dtype}, expected uint8")
        elif np.any(zero < UINT8_RANGE[0]) or np.any(zero > UINT8_RANGE[1]):
            problems.append(f"{label}: zero point outside [0, 255]")
        elif node.op_type == "QuantizeLinear":
            counts["activation_qdq_uint8"] += 1
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        feeders = [producers.get(name) for name in node.input[:2]]
        if not feeders or feeders[0] is None or feeders[0].op_type != "DequantizeLinear":
            continue
        counts["quantized_nodes"] += 1
        weight_dq = feeders[1] if len(feeders) > 1 else None
        if weight_dq is not None and weight_dq.op_type == "DequantizeLinear" and \
                weight_dq.input[0] in initializers:
            rank = len(initializers[weight_dq.input[0]].dims)
            scale = numpy_helper.to_array(initializers[weight_dq.input[1]])
            if scale.size == 1:
                per_tensor_weights.append(node_label(node))
                if node.op_type in ("Conv", "Gemm") and weight_axis(node, rank) is not None \
                        and initializers[weight_dq.input[0]].dims[0] > 1:
                    problems.append(f"{node_label(node)}: weight is quantised per tensor, "
                                    f"expected per output channel")
        readers = consumers.get(node.output[0], [])
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
            counts["output_quantized_nodes"] += 1
    if counts["quantized_nodes"] and not counts["output_quantized_nodes"]:
        problems.append("no quantised Conv/Gemm/MatMul has a QuantizeLinear on its output: "
                        "ONNX Runtime would run every one of them in float")
    counts["per_tensor_weights"] = per_tensor_weights
    counts["problems"] = problems
    return counts
