"""Tiny ONNX graphs for the TensorRT lint, ``aue build`` and calibration tests (onnx.helper
only)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def model(nodes, inits=(), inputs=None, outputs=None, opset=17, value_info=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def qdq_conv(weight_axis=0, zero_dtype=np.int8, zero_value=0, op="Conv", channels=4):
    """x -> Q/DQ -> Conv/ConvTranspose with a per-channel int8 weight DQ on ``weight_axis``."""
    shape = (channels, channels, 3, 3)
    inits = [const("s", np.float32(0.1)), const("z", zero_dtype(zero_value)),
             const("w_q", np.ones(shape, np.int8)),
             const("w_s", np.full(shape[weight_axis], 0.01, np.float32)),
             const("w_z", np.zeros(shape[weight_axis], np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="w_dq",
                              axis=weight_axis),
             helper.make_node(op, ["xd", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 8, 8])]
    return model(nodes, inits, inputs)


def emotion_au_head(features: str) -> list:
    """The shipped model's heads on a pooled feature map ``features``: ``emotion_probs``
    (softmax over ``w_fc``/``b_fc``) and ``au_probs`` (sigmoid over ``w_au``/``b_au``)."""
    return [
        helper.make_node("GlobalAveragePool", [features], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["feat"], name="flatten"),
        helper.make_node("Gemm", ["feat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["emotion_probs"], name="softmax", axis=1),
        helper.make_node("Gemm", ["feat", "w_au", "b_au"], ["au_logits"], name="au_fc",
                         transB=1),
        helper.make_node("Sigmoid", ["au_logits"], ["au_probs"], name="sigmoid"),
    ]
