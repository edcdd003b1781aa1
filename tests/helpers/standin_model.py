"""The TEST STAND-IN classifier, built with onnx.helper: the shipped AUE-CRL model's I/O names
and card layout, outputs a fixed linear function of the mean pixel value. Never the product's
model: the tests compute its exact expected output with numpy (:func:`expected_outputs`) and so
check batching, ordering, chunking and smoothing, independent of training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aue_edge.edge.face.alignment import align_faces
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.model_card import AlignmentSpec, InputSpec, ModelCard, OutputSpec
from aue_edge.edge.preprocess import to_model_input

FERPLUS_LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                  "contempt")
AUECRL_AUS = tuple(f"AU{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 17, 20, 23, 24, 25,
                                      26))
SEED = 1234


def standin_weights(num_emotions: int, num_aus: int, seed: int = SEED):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 2.0, (3, num_emotions)).astype(np.float32),
            rng.normal(0, 0.3, (num_emotions,)).astype(np.float32),
            rng.normal(0, 2.0, (3, num_aus)).astype(np.float32),
            rng.normal(0, 0.3, (num_aus,)).astype(np.float32))


def build_standin_model(out_dir: Path, *, batch: int | str = "N", size_px=(112, 112),
                        color: str = "gray3", labels=FERPLUS_LABELS, au_names=AUECRL_AUS,
                        file_name: str = "model.onnx", extra_input: str | None = None,
                        seed: int = SEED, au_only: bool = False,
                        non_finite: str | None = None) -> Path:
    """A tiny ONNX model with the shipped model's I/O: ``image`` (N,3,H,W) -> ``emotion_probs``
    = softmax(mean_hw(image) @ W1 + b1), ``au_probs`` = sigmoid(mean_hw(image) @ W2 + b2);
    ``card.json`` beside it. Test stand-in only.

    ``extra_input="landmarks"`` adds LP-Net's declared (N, 68, 2) input, whose mean is added to
    the AU logits; ``extra_input="pose"`` an undeclared (N, 3) input.

    ``non_finite="always"``: the emotion weights are NaN (a corrupted file); ``"on_faces"``:
    ``sqrt(1e-4 - variance of the crop)`` is added to the emotion logits, finite on a blank
    (uniform) crop but NaN on a real face."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w1, b1, w2, b2 = standin_weights(len(labels), len(au_names), seed)
    if non_finite == "always":
        w1 = np.full_like(w1, np.nan)
    h, w = size_px
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["feat"], axis=1),
             helper.make_node("MatMul", ["feat", "w2"], ["au_mm"]),
             helper.make_node("Add", ["au_mm", "b2"], ["au_logits"])]
    outputs = [helper.make_tensor_value_info("au_probs", TensorProto.FLOAT, [batch, len(au_names)])]
    inits = [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")]
    if not au_only:
        em_logits = "em_logits"
        nodes += [helper.make_node("MatMul", ["feat", "w1"], ["em_mm"]),
                  helper.make_node("Add", ["em_mm", "b1"], ["em_logits"])]
        if non_finite == "on_faces":
            em_logits = "em_logits_var"
            nodes += [helper.make_node("Mul", ["image", "image"], ["sq"]),
                      helper.make_node("ReduceMean", ["sq"], ["mean_sq"], axes=[2, 3],
                                       keepdims=0),
                      helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3],
                                       keepdims=0),
                      helper.make_node("Mul", ["mean", "mean"], ["mean2"]),
                      helper.make_node("Sub", ["mean_sq", "mean2"], ["var_c"]),
                      helper.make_node("ReduceMean", ["var_c"], ["var"], axes=[1],
                                       keepdims=1),
                      helper.make_node("Sub", ["eps", "var"], ["margin"]),
                      helper.make_node("Sqrt", ["margin"], ["root"]),
                      helper.make_node("Add", ["em_logits", "root"], [em_logits])]
            inits.append(numpy_helper.from_array(np.float32(1e-4), "eps"))
        nodes.append(helper.make_node("Softmax", [em_logits], ["emotion_probs"], axis=1))
        outputs.insert(0, helper.make_tensor_value_info("emotion_probs", TensorProto.FLOAT,
                                                        [batch, len(labels)]))
        inits += [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1")]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, h, w])]
    extra_inputs = {}
    if extra_input == "landmarks":
        inputs.append(helper.make_tensor_value_info("landmarks", TensorProto.FLOAT,
                                                    [batch, 68, 2]))
        nodes += [helper.make_node("ReduceMean", ["landmarks"], ["lm_mean"], axes=[2],
                                   keepdims=0),
                  helper.make_node("ReduceMean", ["lm_mean"], ["lm_mean2"], axes=[1],
                                   keepdims=1),
                  helper.make_node("Add", ["au_logits", "lm_mean2"], ["au_logits_lm"])]
        extra_inputs = {"landmarks": {"name": "landmarks", "shape": ["batch", 68, 2],
                                      "units": "fractions of the aligned face crop"}}
    elif extra_input == "pose":
        inputs.append(helper.make_tensor_value_info("pose", TensorProto.FLOAT, [batch, 3]))
        nodes.append(helper.make_node("Identity", ["pose"], ["pose_out"]))
        outputs.append(helper.make_tensor_value_info("pose_out", TensorProto.FLOAT, [batch, 3]))
    nodes.append(helper.make_node("Sigmoid", ["au_logits" if extra_input != "landmarks"
                                              else "au_logits_lm"], ["au_probs"]))
    graph = helper.make_graph(nodes, "aue_test_standin", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="aue-edge-tests")
    onnx.checker.check_model(model)
    path = out_dir / file_name
    onnx.save(model, str(path))
    card = ModelCard(
        model_name="test-standin (not a trained model)",
        input=InputSpec(name="image", size_px=tuple(size_px), color=color),
        alignment=AlignmentSpec(template_5pt=FERPLUS_TEMPLATE_5PT, source="FER+ template"),
        outputs=OutputSpec(emotion_probs=None if au_only else "emotion_probs",
                           au_probs="au_probs", emotion_labels=() if au_only else labels,
                           au_names=au_names, au_threshold=0.5),
        extra_inputs=extra_inputs,
        provenance={"note": "built by tests/helpers/standin_model.py; not trained"})
    card.save(out_dir)
    return path


def expected_outputs(frame_bgr, landmarks5, card: ModelCard, seed: int = SEED):
    """What the stand-in must output for these faces, computed with numpy one face at a time."""
    w1, b1, w2, b2 = standin_weights(len(card.outputs.emotion_labels) or 8,
                                     len(card.outputs.au_names), seed)
    emotions, aus = [], []
    for lm in landmarks5:
        crop = align_faces(frame_bgr, lm[None], card.alignment.template_5pt,
                           card.input.size_px)
        feat = to_model_input(crop, card.input).mean(axis=(2, 3))[0]
        logits = feat @ w1 + b1
        e = np.exp(logits - logits.max())
        emotions.append(e / e.sum())
        aus.append(1.0 / (1.0 + np.exp(-(feat @ w2 + b2))))
    return np.array(emotions), np.array(aus)
