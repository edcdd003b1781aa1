"""``aue import-onnx``: rebuild an ``aue train`` checkpoint from an AUE-CRL ONNX file that
``aue export`` wrote, when the checkpoint itself is gone. Train stage (torch).

Why: the shipped default model travels as ONNX only, but stages 2 and 3 (the AU branch and the
attention fusion) train on top of its frozen stage-1 backbone. With the checkpoint rebuilt from
the ONNX, ``aue train CONFIG --init imported.pt --stage 2 --stage 3`` continues from exactly the
network the robot runs.

How: the card in the ONNX metadata names the architecture and holds its config, so the same
torch model is built. Initializers that kept their torch names (``model.<param>``) load directly.
The legacy exporter folded every Conv + BatchNorm pair into one Conv with a bias and gave those
weights anonymous names (``onnx::Conv_885``); the Conv nodes of the ONNX graph appear in the same
order as the torch convolutions run in ``forward``, so they are matched by order and checked by
shape. A folded pair is loaded as the folded convolution followed by an identity BatchNorm
(weight 1, bias = the folded bias, running mean 0, running variance 1 - eps), which computes the
same function in eval mode. The result is then checked against ONNX Runtime on real inputs:
a mismatch above FP32 tolerance is an error, never a silent approximation.

BatchNorm running statistics of the folded layers are therefore not the originals: the rebuilt
modules are meant to stay frozen (as stages 2-3 keep the backbone); re-training them in train
mode would start from identity statistics.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aue_edge.core.errors import ModelFileError
from aue_edge.edge.model_card import METADATA_KEY

PREFIX = "model."


def _onnx_card(proto: Any, path: Path) -> dict[str, Any]:
    meta = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path} carries no model card in its metadata ({METADATA_KEY}); "
                             f"only files written by 'aue export' can be imported")
    return json.loads(meta[METADATA_KEY])


def emotion_from_card(arch: dict[str, Any]) -> str:
    return str(arch.get("emotion_output", "fused_logits"))


def _conv_order(model: nn.Module, size_px: int) -> list[tuple[str, nn.Conv2d | nn.ConvTranspose2d]]:
    """The model's (transposed) convolutions in the order ``forward`` runs them."""
    order: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append((names[mod], mod)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, size_px, size_px))
    finally:
        for h in hooks:
            h.remove()
    return order


def _following_bn(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that directly follows ``conv_name`` in its Sequential / block, if any."""
    parent_name, _, leaf = conv_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and leaf.isdigit():
        nxt = int(leaf) + 1
        if nxt < len(parent) and isinstance(parent[nxt], nn.BatchNorm2d):
            return parent[nxt]
    # ResNet blocks name their pairs conv1/bn1, conv2/bn2; downsample is a Sequential(conv, bn).
    if leaf.startswith("conv"):
        bn = getattr(parent, "bn" + leaf[4:], None)
        if isinstance(bn, nn.BatchNorm2d):
            return bn
    return None


def checkpoint_from_onnx(onnx_path: str | Path, out_path: str | Path, atol: float = 1e-4,
                         check_images: np.ndarray | None = None) -> dict[str, Any]:
    """Rebuild the checkpoint of ``onnx_path`` into ``out_path``; returns a short report.

    ``check_images``: (N, 3, H, W) float32 model inputs for the ONNX Runtime comparison
    (default: 8 random inputs). Raises :class:`ModelFileError` when the file is not an AUE-CRL
    export, a weight does not fit, or the rebuilt model's outputs differ by more than ``atol``.
    """
    import onnx
    from onnx import numpy_helper

    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.train.models import create_model, list_models, model_family
    from aue_edge.train.runtime import save_checkpoint

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX model {onnx_path} does not exist")
    try:
        proto = onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises DecodeError/OSError variants for bad files
        raise ModelFileError(f"{onnx_path} cannot be read as ONNX ({type(exc).__name__}: "
                             f"{exc})") from None
    card = _onnx_card(proto, onnx_path)
    arch = card.get("architecture", {})
    name = arch.get("name")
    if (name not in list_models() or model_family(name) != "aue_crl"
            or "config" not in arch):
        raise ModelFileError(f"{onnx_path}: its card names architecture "
                             f"{arch.get('name')!r}; only AUE-CRL exports can be imported")
    model = create_model(arch["name"], **arch["config"])
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    state = model.state_dict()
    loaded: set[str] = set()

    def put(name: str, value: np.ndarray) -> None:
        if tuple(state[name].shape) != tuple(value.shape):
            raise ModelFileError(f"{onnx_path}: weight for {name} has shape {value.shape}, the "
                                 f"model built from the card expects {tuple(state[name].shape)}")
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
        loaded.add(name)

    for name, value in inits.items():
        if name.startswith(PREFIX) and name[len(PREFIX):] in state:
            put(name[len(PREFIX):], value)

    size_px = int(card["input"]["size_px"][0])
    conv_nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    convs = _conv_order(model, size_px)
    if len(conv_nodes) != len(convs):
        raise ModelFileError(f"{onnx_path} has {len(conv_nodes)} convolutions, the model built "
                             f"from its card runs {len(convs)}; the file is not this "
                             f"architecture's export")
    for node, (conv_name, conv) in zip(conv_nodes, convs):
        if f"{conv_name}.weight" in loaded:
            continue  # kept its torch name (no BatchNorm was folded into it)
        weight = inits.get(node.input[1])
        bias = inits.get(node.input[2]) if len(node.input) > 2 else None
        if weight is None or bias is None:
            raise ModelFileError(f"{onnx_path}: convolution {node.name} ({conv_name}) has no "
                                 f"constant weight and bias")
        bn = _following_bn(model, conv_name)
        put(f"{conv_name}.weight", weight)
        if bn is None:
            put(f"{conv_name}.bias", bias)
            continue
        bn_name = next(n for n, m in model.named_modules() if m is bn)
        put(f"{bn_name}.weight", np.ones_like(bias))
        put(f"{bn_name}.bias", bias)
        put(f"{bn_name}.running_mean", np.zeros_like(bias))
        put(f"{bn_name}.running_var", np.full_like(bias, 1.0 - bn.eps))
    # A Linear that the exporter turned into MatMul(x, W^T) with a constant-folded, renamed
    # weight (the attention score layer): matched by node name and transposed shape.
    for node in proto.graph.node:
        if node.op_type != "MatMul" or not node.name.startswith("/model/"):
            continue
        layer = node.name[len("/model/"):].rsplit("/", 1)[0].replace("/", ".")
        key = f"{layer}.weight"
        if key in state and key not in loaded and node.input[1] in inits:
            put(key, inits[node.input[1]].T)
    # The export graph computes pred2 (the fused head) and not pred1 (the stage-1 head), so
    # pred1 is rebuilt as the f_e part of the fused head: the shipped stage 3 started its fused
    # head from pred1 (init_fused_from_pred1), so these columns are pred1 as stage 3 refined it.
    if emotion_from_card(arch) == "fused_logits" and "expr_head.weight" not in loaded:
        e = int(arch["config"]["expr_channels"])
        put("expr_head.weight", inits[PREFIX + "fused_head.weight"][:, :e])
        put("expr_head.bias", inits[PREFIX + "fused_head.bias"])
    if "learned_prior_weight" in arch and "prior_weight" in state:
        put("prior_weight", np.asarray(arch["learned_prior_weight"], dtype=np.float32))
    # Buffers the export does not carry (prior bands, BN batch counters) keep the model's own
    # values, which the card's config rebuilt; every parameter must have come from the file.
    missing = [n for n, _ in model.named_parameters() if n not in loaded]
    if missing:
        raise ModelFileError(f"{onnx_path}: no weight found for {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}")
    model.load_state_dict(state, strict=True)

    emotion_from = emotion_from_card(arch)
    wrapper = model.export_module(emotion_from).eval()
    if check_images is None:
        check_images = np.random.default_rng(0).standard_normal(
            (8, 3, size_px, size_px)).astype(np.float32)
    backend = OrtBackend(onnx_path, providers=("cpu",))
    try:
        ref = backend.infer({card["input"]["name"]: check_images})
    finally:
        backend.close()
    with torch.no_grad():
        ours = wrapper(torch.from_numpy(check_images))
    ours = ours if isinstance(ours, tuple) else (ours,)
    worst = {}
    for name, value in zip(wrapper.output_names, ours):
        worst[name] = float(np.abs(value.numpy() - ref[name]).max())
    if max(worst.values()) > atol:
        raise ModelFileError(f"the model rebuilt from {onnx_path} differs from ONNX Runtime by "
                             f"{worst} (tolerance {atol}); the import is not exact")
    training = card.get("training", {})
    fields = {"input": {k: card["input"][k] for k in ("size_px", "color", "mean", "std")},
              "emotion_labels": card["outputs"]["emotion_labels"],
              "au_names": card["outputs"]["au_names"], "training": training,
              "metrics": card.get("metrics", {})}
    save_checkpoint(out_path, model, arch["name"], card=fields, stage=3 if
                    emotion_from == "fused_logits" else 1, final_logits=emotion_from,
                    imported_from={"onnx": onnx_path.name, "max_abs_diff": worst})
    return {"checkpoint": str(out_path), "model_name": arch["name"],
            "loaded_tensors": len(loaded), "max_abs_diff_vs_onnxruntime": worst}
