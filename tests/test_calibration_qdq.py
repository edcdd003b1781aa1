"""Q/DQ writer: the output graph follows TensorRT's rules and runs in ONNX Runtime CPU.

The model is a small test graph built with onnx.helper (Conv, ConvTranspose, Gemm with
transB=1 and transB=0, MatMul with a constant weight), fed with real FER+ faces.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aue_edge.calibration.calibrators import minmax_threshold
from aue_edge.calibration.graph import activation_tensors, with_extra_outputs
from aue_edge.calibration.qdq import (inspect_qdq, insert_qdq, plan_quantization,
                                      quantize_weight)
from aue_edge.calibration.stats import StatsCollector
from aue_edge.core.errors import CalibrationError, ModelFileError
from aue_edge.edge.model_card import InputSpec
from aue_edge.edge.preprocess import to_model_input
from aue_edge.edge.trt_lint import lint_model

OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def build_test_graph(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)

    nodes = [
        helper.make_node("Conv", ["image", "w_conv", "b_conv"], ["conv"], name="conv",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("ConvTranspose", ["relu", "w_deconv"], ["deconv"], name="deconv",
                         strides=[2, 2]),
        helper.make_node("Relu", ["deconv"], ["relu2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["feat"], name="flatten"),
        helper.make_node("Gemm", ["feat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["emotion_probs"], name="softmax", axis=1),
        helper.make_node("MatMul", ["feat", "w_mm"], ["mm"], name="mm"),
        helper.make_node("Relu", ["mm"], ["mm_relu"], name="mm_relu"),
        helper.make_node("Gemm", ["mm_relu", "w_au", "b_au"], ["au_logits"], name="au_fc"),
        helper.make_node("Sigmoid", ["au_logits"], ["au_probs"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "calibration_test_graph",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 48, 48])],
        [helper.make_tensor_value_info("emotion_probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, ["N", 17])],
        [init("w_conv", 8, 3, 3, 3), init("b_conv", 8), init("w_deconv", 8, 4, 2, 2),
         init("w_fc", 8, 4), init("b_fc", 8), init("w_mm", 4, 5), init("w_au", 5, 17),
         init("b_au", 17)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def faces(ferplus_root) -> np.ndarray:
    import cv2

    paths = sorted((ferplus_root / "FER2013Test").glob("*.png"))[:24]
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    return to_model_input(images, InputSpec(size_px=(48, 48)))


def _run(model: onnx.ModelProto, batch: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": batch})))


def _minmax_ranges(model: onnx.ModelProto, batch: np.ndarray) -> dict[str, float]:
    names = activation_tensors(model)
    collector = StatsCollector(names, 2048)
    collector.update(_run(with_extra_outputs(model, names), batch), len(batch))
    return {n: minmax_threshold(h).amax for n, h in collector.histograms.items()}


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if tensor in n.output)


def test_activation_tensors_are_dynamic_floats_in_graph_order():
    model = build_test_graph()
    names = activation_tensors(model)
    assert names[0] == "image"
    assert names[:4] == ["image", "conv", "relu", "deconv"]
    assert "w_conv" not in names and "emotion_probs" in names


def test_qdq_graph_follows_tensorrt_rules_and_runs_in_ort(faces):
    model = build_test_graph()
    plan = plan_quantization(model, OPS)
    assert [q.name for q in plan.quantized] == ["conv", "deconv", "fc", "mm", "au_fc"]
    int8 = insert_qdq(model, plan, _minmax_ranges(model, faces))
    facts = inspect_qdq(int8)
    assert [f.line() for f in lint_model(int8)] == []
    assert facts["opset"] == 17 and int8.opset_import[0].version == 17
    assert facts["quantized_nodes"] == 5 and facts["weight_dq_per_channel"] == 5
    inits = {i.name: i for i in int8.graph.initializer}
    # ConvTranspose on its input channels (axis 0, NVIDIA/TensorRT#2380).
    expected_axes = {"conv": (0, 8), "deconv": (0, 8), "fc": (0, 8), "mm": (1, 5),
                     "au_fc": (1, 17)}
    for node in int8.graph.node:
        if node.name not in expected_axes:
            continue
        weight_dq = _producer(int8, node.input[1])
        assert weight_dq.op_type == "DequantizeLinear"
        axis = helper.get_attribute_value(weight_dq.attribute[0])
        assert (axis, inits[weight_dq.input[1]].dims[0]) == expected_axes[node.name]
        assert inits[weight_dq.input[0]].data_type == TensorProto.INT8
        activation_dq = _producer(int8, node.input[0])
        assert activation_dq.op_type == "DequantizeLinear"
        assert list(inits[activation_dq.input[1]].dims) == []  # per-tensor activation scale
        # Biases stay float, fed directly (no int32 DequantizeLinear).
        if len(node.input) > 2:
            assert inits[node.input[2]].data_type == TensorProto.FLOAT
    dq_types = {inits[n.input[0]].data_type for n in int8.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dq_types == {TensorProto.INT8}
    assert not any(i.name in ("w_conv", "w_fc") for i in int8.graph.initializer)
    ref, got = _run(model, faces), _run(int8, faces)
    np.testing.assert_allclose(got["emotion_probs"], ref["emotion_probs"], atol=0.03)
    np.testing.assert_allclose(got["au_probs"], ref["au_probs"], atol=0.03)
    assert np.mean(ref["emotion_probs"].argmax(1) == got["emotion_probs"].argmax(1)) >= 0.9


def test_inputs_outputs_placement_quantises_conv_outputs_for_every_reader(faces):
    model = build_test_graph()
    # A second Conv reading the first one directly: its input is a quantised output already.
    conv2_weight = numpy_helper.from_array(
        np.random.default_rng(1).standard_normal((4, 8, 1, 1)).astype(np.float32), "w_conv2")
    model.graph.initializer.append(conv2_weight)
    model.graph.node.insert(1, helper.make_node("Conv", ["conv", "w_conv2"], ["conv2"],
                                                name="conv2"))
    model.graph.output.append(helper.make_tensor_value_info("conv2", TensorProto.FLOAT,
                                                            ["N", 4, 24, 24]))
    plan = plan_quantization(model, OPS, placement="inputs_outputs")
    assert plan.quantized_outputs == ["conv", "conv2"]
    int8 = insert_qdq(model, plan, _minmax_ranges(model, faces))
    assert [f.line() for f in lint_model(int8)] == []
    readers = {n.name: list(n.input) for n in int8.graph.node}
    assert readers["relu"] == ["conv_dequantized"] and readers["conv2"][0] == "conv_dequantized"
    q_inputs = [n.input[0] for n in int8.graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(q_inputs) == sorted(set(q_inputs))  # one pair per tensor
    assert {"image", "conv", "relu", "feat", "mm_relu"} <= set(q_inputs)
    assert "conv2" not in q_inputs  # only a graph output reads it: outputs stay float
    ref, got = _run(model, faces), _run(int8, faces)
    np.testing.assert_allclose(got["emotion_probs"], ref["emotion_probs"], atol=0.05)
    np.testing.assert_allclose(got["conv2"], ref["conv2"], atol=0.1 * np.abs(ref["conv2"]).max())
    with pytest.raises(CalibrationError, match="placement"):
        plan_quantization(model, OPS, placement="everywhere")


def test_per_channel_weights_reconstruct_within_half_a_step():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.arange(1, 7)[:, None,
                                                                                   None, None]
    weight[2] = 0.0
    q, scale = quantize_weight(weight, axis=0)
    assert q.dtype == np.int8 and scale.shape == (6,)
    assert scale[2] == 1.0 and not q[2].any()
    assert np.abs(q).max() == 127
    restored = q.astype(np.float32) * scale[:, None, None, None]
    assert np.all(np.abs(restored - weight) <= scale[:, None, None, None] / 2 + 1e-7)


def test_keep_fp32_leaves_named_layers_in_float(faces):
    model = build_test_graph()
    plan = plan_quantization(model, OPS, keep_fp32=("deconv", "au_logits"))
    assert plan.kept_fp32 == ["deconv", "au_fc"]
    int8 = insert_qdq(model, plan, _minmax_ranges(model, faces))
    deconv = next(n for n in int8.graph.node if n.name == "deconv")
    assert list(deconv.input) == ["relu", "w_deconv"]
    assert inspect_qdq(int8)["quantized_nodes"] == 3


def test_bad_keep_fp32_name_and_old_opset_are_clear_errors():
    model = build_test_graph()
    with pytest.raises(CalibrationError, match=r"no node or tensor named \['decon'\].*deconv"):
        plan_quantization(model, OPS, keep_fp32=("decon",))
    with pytest.raises(ModelFileError, match="opset 11"):
        plan_quantization(build_test_graph(opset=11), OPS)


def test_missing_range_is_an_error_not_a_guess():
    model = build_test_graph()
    plan = plan_quantization(model, OPS)
    with pytest.raises(CalibrationError, match="no calibrated range"):
        insert_qdq(model, plan, {"image": 1.0})


def test_residual_add_gets_qdq_on_its_skip_input(faces):
    """A ResNet join Add(conv(relu), relu): the skip input (relu) goes through a Q/DQ pair so
    TensorRT fuses the Add into the INT8 convolution; without it the lint says so."""
    model = build_test_graph()
    rng = np.random.default_rng(2)
    model.graph.initializer.append(numpy_helper.from_array(
        (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32), "w_res"))
    relu = next(i for i, n in enumerate(model.graph.node) if n.name == "relu")
    model.graph.node.insert(relu + 1, helper.make_node("Conv", ["relu", "w_res"], ["res"],
                                                       name="res_conv", pads=[1, 1, 1, 1]))
    model.graph.node.insert(relu + 2, helper.make_node("Add", ["res", "relu"], ["joined"],
                                                       name="res_add"))
    deconv = next(n for n in model.graph.node if n.name == "deconv")
    deconv.input[0] = "joined"
    plan = plan_quantization(model, OPS)
    add_index = next(i for i, n in enumerate(model.graph.node) if n.name == "res_add")
    assert plan.residual_inputs == [(add_index, 1)]
    int8 = insert_qdq(model, plan, _minmax_ranges(model, faces))
    add = next(n for n in int8.graph.node if n.name == "res_add")
    assert list(add.input) == ["res", "relu_dequantized"]
    assert [f.line() for f in lint_model(int8)] == []
    plan.residual_inputs = []
    without = insert_qdq(model, plan, _minmax_ranges(model, faces))
    assert [f.rule for f in lint_model(without)] == ["residual-qdq"]
    ref, got = _run(model, faces), _run(int8, faces)
    np.testing.assert_allclose(got["emotion_probs"], ref["emotion_probs"], atol=0.05)
