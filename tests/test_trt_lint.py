"""TensorRT-compatibility lint: each documented rule fires on a tiny model that breaks it and
stays quiet on one that keeps it; every shipped model is linted as ``aue build`` would."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.onnx_graphs import const, model, qdq_conv
from onnx import TensorProto, helper, numpy_helper

from aue_edge.edge.trt_lint import (ALL_TARGETS, TrtLintError, lint_file, lint_model,
                                    raise_for_targets)

SHIPPED = Path(__file__).resolve().parents[1] / "aue_edge" / "edge" / "models"


def rules(findings):
    return {f.rule: f.breaks for f in findings}


def test_if_with_branches_of_different_rank_breaks_every_target():
    """The shape the first release's classifier had: Squeeze (rank 3) vs Identity (rank 4),
    condition from Shape."""
    then_g = helper.make_graph([helper.make_node("Squeeze", ["x", "ax"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 8, 8])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["dim1"]),
             helper.make_node("Equal", ["dim1", "one64"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="/model/If", then_branch=then_g,
                              else_branch=else_g)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 8, 8])]
    inits = [const("one", np.int64(1)), const("one64", np.int64(1)),
             const("ax", np.array([1], np.int64))]
    found = lint_model(model(nodes, inits, inputs))
    assert rules(found) == {"if-branch-rank": ALL_TARGETS}
    assert "(then (3,), else (4,))" in found[0].message and "operators.md" in found[0].source
    # Ranks shape inference cannot tell: advice to check, not a stop.
    then_g = helper.make_graph([helper.make_node("Squeeze", ["x", "shape"], ["t"])], "then",
                               [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    nodes[3] = helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)
    unknown = lint_model(model(nodes, inits, inputs))
    assert rules(unknown) == {"if-branch-rank": ()} and "cannot tell" in unknown[0].message
    # The same If with a constant condition is folded by the parser: no finding.
    nodes[3] = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
    assert lint_model(model(nodes[3:], [*inits, const("c", np.array(True))], inputs)) == []


@pytest.mark.parametrize("size, bad", [(5, False), (1, False), (15, False), (4, True),
                                       (17, True)])
def test_lrn_window_must_be_odd_and_at_most_15(size, bad):
    found = lint_model(model([helper.make_node("LRN", ["x"], ["y"], size=size)]))
    assert rules(found) == ({"lrn-window": ALL_TARGETS} if bad else {})


def test_unsqueeze_axes_computed_at_run_time_break_the_parser():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "z", "o"], ["axes"]),
             helper.make_node("Unsqueeze", ["x", "axes"], ["y"])]
    found = lint_model(model(nodes, [const("z", np.array([0])), const("o", np.array([1]))]))
    assert rules(found) == {"constant-input": ALL_TARGETS}
    folded = [helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(
        np.array([0], np.int64))), helper.make_node("Unsqueeze", ["x", "axes"], ["y"])]
    assert lint_model(model(folded)) == []


def test_opset_and_unsupported_operators_per_target():
    assert rules(lint_model(model([helper.make_node("Relu", ["x"], ["y"])], opset=18))) == {
        "opset": ("8.5", "8.6")}
    found = rules(lint_model(model([helper.make_node("Unique", ["x"], ["y"])])))
    assert found == {"unsupported-op": ("8.5",)}
    contrib = model([helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")])
    contrib.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert rules(lint_model(contrib)) == {"unsupported-op": ALL_TARGETS}


def test_symmetric_int8_qdq_with_axis0_weights_is_clean():
    assert lint_model(qdq_conv()) == []


@pytest.mark.parametrize("zero_dtype, zero_value, message", [
    (np.uint8, 0, "uint8"), (np.int8, 3, "non-zero zero point")])
def test_asymmetric_or_uint8_zero_points_break_every_target(zero_dtype, zero_value, message):
    found = lint_model(qdq_conv(zero_dtype=zero_dtype, zero_value=zero_value))
    assert rules(found) == {"qdq-zero-point": ALL_TARGETS}
    assert message in found[0].message and "Non-zero zero point" in found[0].source


def test_int32_bias_dq_and_shape_tensor_qdq_are_refused():
    bias = qdq_conv()
    bias.graph.initializer.extend([const("b_q", np.zeros(4, np.int32)),
                                   const("b_s", np.float32(0.001)), const("b_z", np.int32(0))])
    bias.graph.node.insert(0, helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"],
                                               name="bias_dq"))
    bias.graph.node[-1].input.append("b")
    assert rules(lint_model(bias))["int32-bias-dq"] == ALL_TARGETS
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Reshape", ["x", "xd"], ["y"], name="reshape")]
    found = lint_model(model(nodes, [const("s", np.float32(0.1)), const("z", np.int8(0))]))
    assert rules(found) == {"shape-tensor-qdq": ALL_TARGETS}


def test_deconvolution_weights_need_axis0_scales_on_tensorrt_8():
    found = lint_model(qdq_conv(weight_axis=1, op="ConvTranspose"))
    assert rules(found) == {"deconv-weight-axis": ("8.5", "8.6")}
    assert "#2380" in found[0].source
    assert lint_model(qdq_conv(weight_axis=0, op="ConvTranspose")) == []
    assert rules(lint_model(qdq_conv(weight_axis=1, op="Conv"))) == {"weight-axis": ALL_TARGETS}


def test_residual_add_without_qdq_is_advice_and_with_qdq_is_clean():
    m = qdq_conv()
    m.graph.node[-1].output[0] = "c"
    m.graph.node.extend([helper.make_node("Relu", ["x"], ["skip"]),
                         helper.make_node("Add", ["c", "skip"], ["y"], name="res_add")])
    found = lint_model(m)
    assert rules(found) == {"residual-qdq": ()} and "Add" in found[0].message
    m.graph.node[-1].input[1] = "xd"  # skip input through the Q/DQ pair
    assert lint_model(m) == []


def test_dla_rules_follow_gpu_fallback_and_tensorrt_8_explicit_quantization():
    pow_model = model([helper.make_node("Pow", ["x", "two"], ["y"])],
                      [const("two", np.float32(2))])
    assert rules(lint_model(pow_model)) == {}
    assert rules(lint_model(pow_model, dla=True)) == {"dla-unsupported-op": ()}
    assert rules(lint_model(pow_model, dla=True, gpu_fallback=False)) == {
        "dla-unsupported-op": ALL_TARGETS}
    assert rules(lint_model(qdq_conv(), dla=True)) == {
        "dla-explicit-quantization": ("8.5", "8.6")}


def test_raise_for_targets_stops_only_on_the_targets_asked_for():
    found = lint_model(qdq_conv(weight_axis=1, op="ConvTranspose"))
    assert raise_for_targets(found, ("10.x",), "m.onnx") == found
    with pytest.raises(TrtLintError, match=r"(?s)m.onnx would fail on TensorRT 8.5 .*"
                                           r"\[deconv-weight-axis\] conv"):
        raise_for_targets(found, ("8.5",), "m.onnx")


def test_every_shipped_model_for_tensorrt_passes_the_lint():
    """What `aue build` checks: the classifiers (FP32 and the TensorRT Q/DQ file) and YuNet
    have no construct any target's parser rejects, and the Q/DQ file has its residual Q/DQ;
    the ONNX Runtime file (uint8, asymmetric, int32 biases) is refused, as it must be."""
    for name in ("aue_crl/model.onnx", "aue_crl/model.int8.onnx", "aue_student/model.onnx",
                 "aue_student/model.int8.onnx", "yunet/face_detection_yunet.onnx"):
        assert [f.line() for f in lint_file(SHIPPED / name)] == [], name
    assert {f.rule for f in lint_file(SHIPPED / "aue_crl" / "model.onnx", dla=True)} == {
        "dla-unsupported-op"}
    ort = rules(lint_file(SHIPPED / "aue_crl" / "model.int8.ort.onnx"))
    assert ort["qdq-zero-point"] == ALL_TARGETS and ort["int32-bias-dq"] == ALL_TARGETS
    onnx.checker.check_model(str(SHIPPED / "aue_crl" / "model.int8.onnx"))
