"""Explicit-quantisation ONNX writer: QuantizeLinear/DequantizeLinear pairs from our ranges.

Output of the calibration flow for TensorRT 10+ (and ONNX Runtime CPU): ``model.int8.onnx``.
Placement: the inputs of the weighted operators (Conv, ConvTranspose, Gemm, MatMul) are
quantised (placement ``inputs``, the default: TensorRT's recommendation for explicit
quantisation; TensorRT fuses the Q/DQ pairs into int8 kernels). With placement
``inputs_outputs`` each quantised Conv's output gets a Q/DQ pair too: ONNX Runtime's CPU
provider then runs the convolution in int8 (QLinearConv: 1.1-2x faster than FP32 on the
ResNet-18 AUE-CRL variants at 112 px, whereas ``inputs`` alone runs about 1.4x slower than
FP32 there), at an accuracy cost measured on AUE-CRL (docs/calibration.md).

- Weights: symmetric int8 per channel, stored as int8 initializers with a DequantizeLinear
  (zero point 0, range [-127, 127]); axis 0 for Conv (M, C/g, kh, kw), Gemm B: axis 0 with
  ``transB=1`` (N, K) else axis 1 (K, N), MatMul constant 2-D B (K, N): axis 1. ConvTranspose
  (C, M/g, kh, kw) gets axis 0, its INPUT channels, on every TensorRT target: TensorRT's INT8
  deconvolution kernels assume per-input-channel weight scales and do not support
  per-output-channel ones (NVIDIA/TensorRT#2380, #1694; NVIDIA's quantization toolkits use axis
  0), and no release note of 8.6 or 10.x says otherwise. A batched MatMul weight (G, K, N) gets
  one scale per tensor: DequantizeLinear has a single axis, ONNX Runtime's int8 MatMul kernels
  only take per-column scales of a 2-D B, and per-tensor is the form TensorRT accepts for any
  weight. The report lists these nodes.
- Residual joins: an Add of a Conv output and another activation gets a Q/DQ pair on that
  other (skip) input, one on the identity branch if both are Conv outputs (input 1), so that
  TensorRT fuses the Add into the INT8 convolution (TensorRT Developer Guide, Q/DQ layer
  placement: quantize residual inputs; NVIDIA's pytorch-quantization ResNet does the same).
- Activations: one symmetric int8 Q/DQ pair per tensor (scale = amax / 127, zero point 0),
  shared by every quantised consumer; unquantised consumers keep the float tensor.
- Biases stay float: TensorRT's ONNX parser rejects an int32 bias DequantizeLinear.
- The opset is kept (17 stays 17: TensorRT 8.5 on JetPack 5 reads it); per-channel
  DequantizeLinear needs opset >= 13.
- The graph is otherwise unchanged: no ONNX Runtime optimisation is applied or saved.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from aue_edge.calibration.config import QDQ_PLACEMENTS
from aue_edge.calibration.graph import activation_tensors, opset_version
from aue_edge.core.errors import CalibrationError, ModelFileError

MIN_OPSET = 13


@dataclass(frozen=True)
class QuantizedNode:
    """One weighted node that gets int8 inputs."""

    node_index: int
    name: str
    op_type: str
    activation_inputs: tuple[int, ...]      # input positions fed through a Q/DQ pair
    weight_input: int | None                # input position of a constant weight
    weight_axis: int | None                 # per-channel axis, None = per-tensor


@dataclass
class QuantizationPlan:
    quantized: list[QuantizedNode] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (node, why)
    per_tensor_weights: list[str] = field(default_factory=list)    # nodes without per-channel
    # Outputs of quantised Conv nodes that get a Q/DQ pair too (placement "inputs_outputs").
    quantized_outputs: list[str] = field(default_factory=list)
    # Residual Add nodes: (node index, input position of the skip branch) that gets a Q/DQ pair.
    residual_inputs: list[tuple[int, int]] = field(default_factory=list)

    def activation_tensors(self, model: onnx.ModelProto) -> list[str]:
        """The tensors that need a calibrated range, in graph order, each once."""
        names: list[str] = []
        for entry in self.quantized:
            for position in entry.activation_inputs:
                tensor = model.graph.node[entry.node_index].input[position]
                if tensor not in names:
                    names.append(tensor)
        for index, position in self.residual_inputs:
            tensor = model.graph.node[index].input[position]
            if tensor not in names:
                names.append(tensor)
        names += [t for t in self.quantized_outputs if t not in names]
        return names


def node_label(node: onnx.NodeProto) -> str:
    """How reports and ``keep_fp32`` name a node: its name, else its first output, else its op."""
    return node.name or (node.output[0] if node.output else node.op_type)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(onnx.helper.get_attribute_value(attr))
    return default


def weight_axis(node: onnx.NodeProto, weight_rank: int) -> int | None:
    """The per-channel quantization axis of ``node``'s weight (None: per tensor only)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 0  # input channels: what TensorRT's INT8 deconvolution takes (module docstring)
    if node.op_type == "Gemm":
        return 0 if _attribute(node, "transB", 0) else 1
    if node.op_type == "MatMul":
        return 1 if weight_rank == 2 else None
    return None


def plan_quantization(model: onnx.ModelProto, op_types: tuple[str, ...],
                      keep_fp32: tuple[str, ...] = (), placement: str = "inputs"
                      ) -> QuantizationPlan:
    """Decide which nodes get Q/DQ inputs. ``keep_fp32`` holds node names or output tensors.

    ``placement``: ``inputs`` quantises the inputs of weighted nodes (TensorRT's recommended
    minimum); ``inputs_outputs`` also quantises each quantised Conv's output, which lets ONNX
    Runtime's CPU kernels run the convolution itself in int8 (QLinearConv) instead of
    dequantising around a float convolution; TensorRT fuses the extra pair into the
    convolution's int8 output.
    """
    if placement not in QDQ_PLACEMENTS:
        raise CalibrationError(f"Q/DQ placement must be one of {QDQ_PLACEMENTS}, got "
                               f"{placement!r}")
    opset = opset_version(model)
    if opset < MIN_OPSET:
        raise ModelFileError(f"the model uses opset {opset}; per-channel int8 weights need "
                             f"DequantizeLinear with an axis (opset >= {MIN_OPSET}); re-export "
                             f"with --opset 17")
    graph = model.graph
    labels = {}
    for node in graph.node:
        labels[node_label(node)] = node
        for out in node.output:
            labels.setdefault(out, node)
    unknown = [name for name in keep_fp32 if name not in labels]
    if unknown:
        hints = {name: difflib.get_close_matches(name, list(labels), n=3) for name in unknown}
        raise CalibrationError(f"--keep-fp32: no node or tensor named {unknown} in the model; "
                               f"close matches: {hints}. Names are ONNX node names (see "
                               f"'per_tensor' in a calibration report or Netron)")
    keep_nodes = {id(labels[name]) for name in keep_fp32}
    initializers = {init.name: init for init in graph.initializer}
    activations = set(activation_tensors(model))
    plan = QuantizationPlan()
    for index, node in enumerate(graph.node):
        if node.op_type not in op_types:
            continue
        label = node_label(node)
        if id(node) in keep_nodes:
            plan.kept_fp32.append(label)
            continue
        act_inputs = tuple(i for i, name in enumerate(node.input[:2]) if name in activations)
        if node.op_type == "Gemm" and _attribute(node, "transA", 0):
            plan.skipped.append((label, "Gemm with transA=1 is left in float"))
            continue
        weight_input, axis = None, None
        if len(node.input) > 1 and node.input[1] in initializers:
            weight = initializers[node.input[1]]
            if weight.data_type != onnx.TensorProto.FLOAT:
                plan.skipped.append((label, f"weight {node.input[1]!r} is not float32"))
                continue
            weight_input = 1
            axis = weight_axis(node, len(weight.dims))
            if axis is None:
                plan.per_tensor_weights.append(label)
        elif len(node.input) > 1 and node.input[1] not in activations:
            plan.skipped.append((label, f"weight {node.input[1]!r} is neither an initializer nor "
                                        f"computed from the input (e.g. a Constant node): left "
                                        f"in float"))
            continue
        if not act_inputs:
            plan.skipped.append((label, "no input is computed from the model input"))
            continue
        plan.quantized.append(QuantizedNode(index, label, node.op_type, act_inputs,
                                            weight_input, axis))
        if placement == "inputs_outputs" and node.op_type == "Conv":
            plan.quantized_outputs.append(node.output[0])
    plan.residual_inputs = _residual_inputs(graph, activations, keep_nodes)
    return plan


def _residual_inputs(graph: onnx.GraphProto, activations: set[str], keep_nodes: set[int]
                     ) -> list[tuple[int, int]]:
    """(node index, skip-input position) of each residual Add: both inputs computed from the
    model input, at least one of them straight out of a Conv (module docstring)."""
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Add" or len(node.input) != 2 or id(node) in keep_nodes or \
                not all(name in activations for name in node.input):
            continue
        from_conv = [producers.get(name) is not None and producers[name].op_type == "Conv"
                     for name in node.input]
        if any(from_conv):
            found.append((index, 0 if from_conv == [False, True] else 1))
    return found


def quantize_weight(weight: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (range [-127, 127]) per channel along ``axis`` (per tensor if None).

    Returns ``(int8 weights, float32 scales)``; a channel of zeros gets scale 1.
    """
    weight = np.asarray(weight, dtype=np.float32)
    if axis is None:
        amax = np.abs(weight).max(keepdims=True).reshape(1)
        shape = ()
    else:
        moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
        amax = np.abs(moved).max(axis=1)
        shape = [1] * weight.ndim
        shape[axis] = weight.shape[axis]
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    broadcast = scale.reshape(shape) if axis is not None else scale[0]
    quantized = np.clip(np.round(weight / broadcast), -127, 127).astype(np.int8)
    return quantized, (scale if axis is not None else scale.reshape(()))


class _Names:
    """Unique new tensor/node names derived from existing ones."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.used = {init.name for init in model.graph.initializer}
        for node in model.graph.node:
            self.used.update(node.input)
            self.used.update(node.output)
            self.used.add(node.name)
        self.used.update(vi.name for vi in model.graph.input)

    def new(self, base: str) -> str:
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


def insert_qdq(model: onnx.ModelProto, plan: QuantizationPlan,
               amax_by_tensor: dict[str, float]) -> onnx.ModelProto:
    """A copy of ``model`` with Q/DQ inputs on the planned nodes, ranges from ``amax_by_tensor``."""
    missing = [t for t in plan.activation_tensors(model) if t not in amax_by_tensor]
    if missing:
        raise CalibrationError(f"no calibrated range for activation tensors {missing[:5]} "
                               f"({len(missing)} missing)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = _Names(out)
    initializers = {init.name: init for init in graph.initializer}
    by_index = {entry.node_index: entry for entry in plan.quantized}
    residual = {}
    for index, position in plan.residual_inputs:
        residual.setdefault(index, set()).add(position)
    activation_dq: dict[str, str] = {}
    weight_dq: dict[str, str] = {}
    new_initializers: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []

    def dequantized_activation(tensor: str) -> str:
        """The DQ output standing for ``tensor``; its Q/DQ pair goes just before the first
        consumer, so the graph stays topologically sorted."""
        if tensor not in activation_dq:
            amax = float(amax_by_tensor[tensor])
            if not np.isfinite(amax) or amax <= 0:
                raise CalibrationError(f"range of {tensor!r} is {amax}; expected a positive "
                                       f"finite amax")
            scale = names.new(f"{tensor}_scale")
            zero = names.new(f"{tensor}_zero_point")
            quantized = names.new(f"{tensor}_quantized")
            dequantized = names.new(f"{tensor}_dequantized")
            new_initializers.extend([
                numpy_helper.from_array(np.array(amax / 127.0, np.float32), scale),
                numpy_helper.from_array(np.array(0, np.int8), zero)])
            new_nodes.extend([
                onnx.helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantized],
                                      name=names.new(f"{tensor}_Quantize")),
                onnx.helper.make_node("DequantizeLinear", [quantized, scale, zero],
                                      [dequantized], name=names.new(f"{tensor}_Dequantize"))])
            activation_dq[tensor] = dequantized
        return activation_dq[tensor]

    quantized_outputs = set(plan.quantized_outputs)
    for index, node in enumerate(graph.node):
        entry = by_index.get(index)
        # Every reader of a quantised Conv output, and the planned inputs of weighted nodes.
        positions = {i for i, tensor in enumerate(node.input) if tensor in quantized_outputs}
        if entry is not None:
            positions.update(entry.activation_inputs)
        positions.update(residual.get(index, ()))
        for position in sorted(positions):
            node.input[position] = dequantized_activation(node.input[position])
        if entry is not None and entry.weight_input is not None:
            weight_name = node.input[entry.weight_input]
            key = f"{weight_name}|{entry.weight_axis}"
            if key not in weight_dq:
                values = numpy_helper.to_array(initializers[weight_name])
                q_values, scales = quantize_weight(values, entry.weight_axis)
                q_name = names.new(f"{weight_name}_int8")
                scale = names.new(f"{weight_name}_scale")
                zero = names.new(f"{weight_name}_zero_point")
                dequantized = names.new(f"{weight_name}_dequantized")
                new_initializers += [
                    numpy_helper.from_array(q_values, q_name),
                    numpy_helper.from_array(scales, scale),
                    numpy_helper.from_array(np.zeros(scales.shape, np.int8), zero)]
                attrs = {} if entry.weight_axis is None else {"axis": entry.weight_axis}
                new_nodes.append(onnx.helper.make_node(
                    "DequantizeLinear", [q_name, scale, zero], [dequantized],
                    name=names.new(f"{weight_name}_Dequantize"), **attrs))
                weight_dq[key] = dequantized
            node.input[entry.weight_input] = weight_dq[key]
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_initializers)
    # Float weights now only reachable through their int8 copies are dropped.
    still_used = {name for node in graph.node for name in node.input}
    still_used.update(o.name for o in graph.output)
    kept = [init for init in graph.initializer if init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    check_qdq_model(out, "the Q/DQ model")
    return out


def check_qdq_model(model: onnx.ModelProto, what: str) -> None:
    """Run ONNX's checker on a Q/DQ model this stage wrote; ``what`` names it in the error."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise CalibrationError(f"{what} failed ONNX's checker: {exc}") from None


def inspect_qdq(model: onnx.ModelProto) -> dict:
    """Counts of a Q/DQ model for the calibration report (Q and DQ nodes, weight DQs and how
    many are per channel, quantised weighted nodes, opset). Whether TensorRT accepts the model
    is the TensorRT lint's job (``aue_edge/edge/trt_lint.py``)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "weight_dq": 0,
              "weight_dq_per_channel": 0, "quantized_nodes": 0}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op_type] += 1
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers and \
                initializers[node.input[0]].data_type == onnx.TensorProto.INT8:
            counts["weight_dq"] += 1
            if numpy_helper.to_array(initializers[node.input[1]]).ndim == 1:
                counts["weight_dq_per_channel"] += 1
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and any(
                producers.get(name) is not None and
                producers[name].op_type == "DequantizeLinear" for name in node.input[:2]):
            counts["quantized_nodes"] += 1
    counts["opset"] = opset_version(model)
    return counts
