"""TensorRT-compatibility lint of an ONNX file, without TensorRT.

Run by ``aue export`` (the FP32 model), ``aue calibrate`` (the model it reads and the Q/DQ
model it writes) and ``aue build`` (before TensorRT is touched), and by a test over every
shipped model. Each rule is one documented restriction of TensorRT's ONNX parser, of explicit
quantization or of the DLA; every :class:`Finding` cites where the rule is written down.

A finding ``breaks`` the TensorRT targets (``aue_edge/edge/trt_targets.py``: 8.5, 8.6, 10.x) whose
parser or builder would reject the model; a finding that breaks none is advice (a layer that
falls back to the GPU, a missed INT8 fusion). Callers stop on findings that break the target
they build for (:func:`raise_for_targets`) and print the rest.

What this lint cannot know: builder-time failures that depend on the GPU (no INT8 kernel for a
fused layer) and anything in a TensorRT release newer than these tables. docs/jetson.md lists
the rules with their sources.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from aue_edge.core.errors import ModelFileError
from aue_edge.edge.trt_targets import TARGET_NAMES, TARGETS

ALL_TARGETS = TARGET_NAMES
TRT8_TARGETS = ("8.5", "8.6")

# Where each rule is documented (cited in every finding and in docs/jetson.md).
SRC_OPERATORS_85 = ("onnx-tensorrt release/8.5-GA docs/operators.md (support matrix; "
                    "TensorRT 8.5 and 8.6 parse opsets <= 17)")
SRC_OPERATORS_10 = "onnx-tensorrt release/10.x docs/operators.md (opsets 9 to 20)"
SRC_IF = ("onnx-tensorrt docs/operators.md, If: branch outputs must have broadcastable shapes "
          "(8.5) / the same rank (10.x); NVIDIA/TensorRT#1650, #1731")
SRC_CONST_INPUT = ("onnx-tensorrt docs/operators.md: Squeeze/Slice `axes`, CumSum `axis`, TopK "
                   "`K` must be initializers, Unsqueeze `axes` a constant tensor")
SRC_LRN = "TensorRT API, ILRNLayer::setWindowSize: the window must be odd, in [1, 15]"
SRC_QDQ = ("onnx-tensorrt QuantDequantLinearHelper (8.x): 3 inputs required, 'Non-zero zero "
           "point is not supported'; docs/operators.md: Q/DQ are INT8 with zero point 0")
SRC_BIAS = ("onnx-tensorrt docs/operators.md: DequantizeLinear input INT8 only (an int32 bias "
            "DequantizeLinear is rejected)")
SRC_SCALE = ("onnx-tensorrt docs/operators.md: QuantizeLinear FP32/FP16; scales must be "
             "constants (TensorRT Developer Guide, explicit quantization)")
SRC_SHAPE_QDQ = ("onnx-tensorrt docs/operators.md: Q/DQ take FP32/FP16 data, shape tensors are "
                 "INT32/INT64")
SRC_WEIGHT_AXIS = ("TensorRT Developer Guide, explicit quantization: per-channel weight scales "
                   "on the output-channel axis (Conv K axis 0)")
SRC_DECONV_AXIS = ("NVIDIA/TensorRT#2380 ('we don't support per-output-channel quant for "
                   "ConvTranspose'; kernels assume per-input-channel, axis 0) and #1694")
SRC_RESIDUAL = ("TensorRT Developer Guide, Q/DQ layer-placement recommendations: quantize the "
                "residual input of an elementwise Add so Conv+Add fuses in INT8")
SRC_DLA_OPS = ("NVIDIA/Deep-Learning-Accelerator-SW operators/README.md (Orin DLA support "
               "through TensorRT 8.5/8.6)")
SRC_DLA_QDQ = ("NVIDIA/Deep-Learning-Accelerator-SW operators/README.md: Q/DQ on DLA only "
               "by collapsing them into implicit INT8 scales (no explicit quantization)")

# ONNX operators TensorRT 8.5's parser supports ("Y" rows of its docs/operators.md).
SUPPORTED_OPS_85 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Operators Orin's DLA runs natively through TensorRT 8.5/8.6 ("Native"; Shape and
# ConstantOfShape are resolved at build time, Constant is folded into its consumer).
DLA_NATIVE_OPS = frozenset("""
Abs Add AveragePool BatchNormalization Clip Concat Constant ConstantOfShape Conv ConvTranspose
Equal Gemm LeakyRelu LRN MatMul Max MaxPool Mul PRelu Relu Reshape Resize Shape Sigmoid Slice
Softmax Sub Sum Tanh Transpose Upsample
""".split())
# Inputs that must be build-time constants: op -> {input position: what it is}.
CONSTANT_INPUTS = {"Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "Slice": {3: "axes"},
                   "CumSum": {1: "axis"}, "TopK": {1: "K"}}
# Inputs read as shape tensors: a Q/DQ output must not feed them.
SHAPE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,),
                "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3), "Range": (0, 1, 2),
                "Squeeze": (1,), "Unsqueeze": (1,), "OneHot": (1,), "TopK": (1,)}
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INTEGER_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


@dataclass(frozen=True)
class Finding:
    """One rule a model breaks (or advice), with the node, the targets it breaks and the
    source of the rule."""

    rule: str
    node: str
    message: str
    source: str
    breaks: tuple[str, ...] = ()

    def line(self, targets: tuple[str, ...] = ALL_TARGETS) -> str:
        hit = [t for t in self.breaks if t in targets]
        level = f"breaks TensorRT {', '.join(hit)}" if hit else "advice"
        return f"[{self.rule}] {self.node}: {self.message} ({level}; rule: {self.source})"


class TrtLintError(ModelFileError):
    """A model TensorRT would reject; the message lists every breaking finding."""


def _label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


class _Graph:
    """Lookups the rules share."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:  # typed branch outputs for the If rule; the graph is otherwise the same
            model = onnx.shape_inference.infer_shapes(model)
        except onnx.shape_inference.InferenceError:
            pass
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.producers = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.nodes:
            for position, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, position))
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in (*graph.value_info, *graph.input, *graph.output)}
        self.types.update({init.name: init.data_type for init in graph.initializer})
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in ("", "ai.onnx")), 0)

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a build-time constant (initializer or Constant node, through
        Identity), else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            return self.constant_value(node.input[0])
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def is_constant(self, name: str) -> bool:
        return self.constant_value(name) is not None

    def is_integer(self, name: str) -> bool:
        """True for an integer tensor (shape arithmetic), as shape inference types it."""
        return self.types.get(name) in INTEGER_TYPES


def _rank(value_info) -> int | None:
    tensor_type = value_info.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def lint_model(model: onnx.ModelProto, dla: bool = False, gpu_fallback: bool = True
               ) -> list[Finding]:
    """Every finding of ``model`` for all targets (see :class:`Finding`); ``dla`` adds the DLA
    rules (``gpu_fallback``: unsupported layers go to the GPU instead of failing)."""
    g = _Graph(model)
    findings: list[Finding] = []
    add = findings.append

    # ---- opset
    too_new = tuple(t for t in ALL_TARGETS if g.opset > TARGETS[t].max_opset)
    if too_new:
        add(Finding("opset", "model", f"opset {g.opset}; TensorRT {', '.join(too_new)} parses "
                    f"opsets up to {min(TARGETS[t].max_opset for t in too_new)}: re-export "
                    f"with 'aue export --opset 17'", f"{SRC_OPERATORS_85}; {SRC_OPERATORS_10}",
                    too_new))

    for node in g.nodes:
        label = _label(node)
        op = node.op_type
        # ---- operators the parser does not know
        if node.domain not in ("", "ai.onnx"):
            add(Finding("unsupported-op", label, f"{node.domain}.{op} is not an ONNX operator "
                        f"TensorRT's parser imports (it would need a plugin)", SRC_OPERATORS_85,
                        ALL_TARGETS))
            continue
        if op not in SUPPORTED_OPS_85:
            add(Finding("unsupported-op", label, f"{op} is not in TensorRT 8.5's ONNX support "
                        f"matrix (check the 8.6/10.x matrix before relying on it)",
                        SRC_OPERATORS_85, ("8.5",)))
        # ---- If: branches of different rank, with a run-time condition
        if op == "If" and not g.is_constant(node.input[0]):
            branches = {a.name: a.g for a in node.attribute}
            ranks = [tuple(_rank(o) for o in branches[name].output)
                     for name in ("then_branch", "else_branch")]
            if None in ranks[0] + ranks[1]:
                add(Finding("if-branch-rank", label, f"If with a run-time condition whose branch "
                            f"ranks shape inference cannot tell (then {ranks[0]}, else "
                            f"{ranks[1]}): check that they match, or constant-fold the "
                            f"condition", SRC_IF))
            elif ranks[0] != ranks[1]:
                add(Finding("if-branch-rank", label, f"If with a run-time condition whose "
                            f"branches return different ranks (then {ranks[0]}, else "
                            f"{ranks[1]}): write the model with static ranks, or constant-fold "
                            f"the condition (polygraphy surgeon sanitize --fold-constants)",
                            SRC_IF, ALL_TARGETS))
        # ---- inputs that must be constants
        for position, what in CONSTANT_INPUTS.get(op, {}).items():
            if g.opset >= 13 or op not in ("Squeeze", "Unsqueeze"):
                if len(node.input) > position and node.input[position] and \
                        not g.is_constant(node.input[position]):
                    add(Finding("constant-input", label, f"{op} `{what}` is computed at run "
                                f"time ({node.input[position]!r}); TensorRT needs it as a "
                                f"constant: constant-fold the export", SRC_CONST_INPUT,
                                ALL_TARGETS))
        # ---- LRN window
        if op == "LRN":
            size = int(_attr(node, "size", 0))
            if size % 2 == 0 or not 1 <= size <= 15:
                add(Finding("lrn-window", label, f"LRN size {size}; TensorRT needs an odd "
                            f"window in [1, 15]", SRC_LRN, ALL_TARGETS))
        if dla and op not in DLA_NATIVE_OPS and op not in ("QuantizeLinear",
                                                           "DequantizeLinear"):
            add(Finding("dla-unsupported-op", label, f"{op} does not run on the DLA"
                        + (": it falls back to the GPU (slower, extra copies)" if gpu_fallback
                           else " and --no-gpu-fallback is set"), SRC_DLA_OPS,
                        () if gpu_fallback else ALL_TARGETS))

    findings += _qdq_findings(g, dla)
    return findings


def _qdq_findings(g: _Graph, dla: bool) -> list[Finding]:
    findings: list[Finding] = []
    add = findings.append
    qdq = [n for n in g.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return findings
    if dla:
        add(Finding("dla-explicit-quantization", "model", f"{len(qdq)} Q/DQ nodes: TensorRT "
                    f"8.x runs explicit quantization on the GPU only; for the DLA build the FP32 "
                    f"model with its calibration cache (implicit INT8)", SRC_DLA_QDQ,
                    TRT8_TARGETS))
    for node in qdq:
        label = _label(node)
        if len(node.input) < 3 or not node.input[2]:
            add(Finding("qdq-zero-point", label, "no zero point (it defaults to uint8); write an "
                        "int8 zero point of 0", SRC_QDQ, TRT8_TARGETS))
        else:
            zero = g.constant_value(node.input[2])
            zero_type = g.initializers[node.input[2]].data_type \
                if node.input[2] in g.initializers else None
            if zero is None:
                add(Finding("qdq-zero-point", label, "zero point is not a constant", SRC_QDQ,
                            ALL_TARGETS))
            elif (zero_type is not None and zero_type != onnx.TensorProto.INT8) or \
                    zero.dtype != np.int8:
                add(Finding("qdq-zero-point", label, f"zero point is {zero.dtype}, TensorRT "
                            f"quantizes to int8 (symmetric)", SRC_QDQ, ALL_TARGETS))
            elif np.any(zero != 0):
                add(Finding("qdq-zero-point", label, "non-zero zero point (asymmetric); "
                            "TensorRT needs symmetric int8", SRC_QDQ, ALL_TARGETS))
        scale = g.constant_value(node.input[1])
        if scale is None:
            add(Finding("qdq-scale", label, "scale is computed at run time; TensorRT needs a "
                        "constant scale", SRC_SCALE, ALL_TARGETS))
        elif scale.dtype != np.float32:
            add(Finding("qdq-scale", label, f"scale is {scale.dtype}; TensorRT 8.x takes "
                        f"float32 scales", SRC_SCALE, TRT8_TARGETS))
        elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            add(Finding("qdq-scale", label, "scale has zero, negative or non-finite values",
                        SRC_SCALE, ALL_TARGETS))
        if node.op_type == "DequantizeLinear" and node.input[0] in g.initializers and \
                g.initializers[node.input[0]].data_type == onnx.TensorProto.INT32:
            add(Finding("int32-bias-dq", label, "int32 DequantizeLinear (a quantized bias); "
                        "re-quantize with biases left in float (QuantizeBias: False)", SRC_BIAS,
                        ALL_TARGETS))
        if (node.input[0] not in g.initializers and g.is_integer(node.input[0])) or any(
                position in SHAPE_INPUTS.get(consumer.op_type, ())
                for consumer, position in g.consumers.get(node.output[0], [])):
            add(Finding("shape-tensor-qdq", label, "Q/DQ on a shape tensor; quantize only "
                        "float activations and weights", SRC_SHAPE_QDQ, ALL_TARGETS))
    findings += _weight_axis_findings(g)
    findings += _residual_findings(g)
    return findings


def _weight_axis_findings(g: _Graph) -> list[Finding]:
    findings = []
    for node in g.nodes:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = g.producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in g.initializers:
            continue
        scale = g.constant_value(dq.input[1])
        if scale is None or scale.ndim == 0 or scale.size == 1:
            continue  # per-tensor: accepted for every weight
        axis = int(_attr(dq, "axis", 1))
        rank = len(g.initializers[dq.input[0]].dims)
        axis = axis + rank if axis < 0 else axis
        label = _label(node)
        if node.op_type == "ConvTranspose":
            if axis != 0:
                findings.append(Finding(
                    "deconv-weight-axis", label, f"ConvTranspose weight quantized per channel "
                    f"on axis {axis}; TensorRT's INT8 deconvolution takes axis-0 (input-channel) "
                    f"scales: recalibrate with this 'aue calibrate'", SRC_DECONV_AXIS,
                    TRT8_TARGETS))
            continue
        expected = {"Conv": 0, "Gemm": 0 if _attr(node, "transB", 0) else 1,
                    "MatMul": rank - 1}[node.op_type]
        if axis != expected:
            findings.append(Finding(
                "weight-axis", label, f"{node.op_type} weight quantized per channel on axis "
                f"{axis}; TensorRT expects the output-channel axis {expected}",
                SRC_WEIGHT_AXIS, ALL_TARGETS))
    return findings


def _residual_findings(g: _Graph) -> list[Finding]:
    """Advice: a residual Add (Conv output + another activation) whose skip input has no Q/DQ,
    so TensorRT cannot fuse the Add into the INT8 convolution."""
    findings = []
    for node in g.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        producers = [g.producers.get(name) for name in node.input]
        if any(p is None for p in producers) or any(g.is_constant(n) for n in node.input):
            continue
        if not any(p.op_type == "Conv" for p in producers):
            continue
        if not any(p.op_type == "DequantizeLinear" for p in producers):
            findings.append(Finding(
                "residual-qdq", _label(node), "residual Add without Q/DQ on its skip input: "
                "TensorRT keeps the Add out of the INT8 convolution", SRC_RESIDUAL))
    return findings


def breaking(findings: list[Finding], targets: tuple[str, ...]) -> list[Finding]:
    return [f for f in findings if any(t in targets for t in f.breaks)]


def raise_for_targets(findings: list[Finding], targets: tuple[str, ...], what: str,
                      hint: str = "") -> list[Finding]:
    """Raise :class:`TrtLintError` listing the findings that break any of ``targets``;
    return the others (to print as warnings)."""
    bad = breaking(findings, targets)
    if bad:
        lines = "\n  ".join(f.line(targets) for f in bad)
        raise TrtLintError(f"{what} would fail on TensorRT {', '.join(targets)} "
                           f"({len(bad)} finding(s)):\n  {lines}" + (f"\n{hint}" if hint else ""))
    return [f for f in findings if f not in bad]


def lint_file(path, dla: bool = False, gpu_fallback: bool = True) -> list[Finding]:
    """:func:`lint_model` of an ONNX file (weights not needed: read without external data)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError / its own types
        raise ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                             f"{exc})") from None
    return lint_model(model, dla=dla, gpu_fallback=gpu_fallback)
