"""ONNX export with the model card inside and beside the file. Train stage -> edge.

:func:`export_onnx` is generic (any ``nn.Module``; the AU detectors use it too);
:func:`export_checkpoint` turns an ``aue train`` checkpoint into ``model.onnx`` + ``card.json``
(what ``aue export`` runs).

Exporter choice (see ../shared/ENVIRONMENT.md):

* opset <= 17 (default 17: TensorRT 8.5 on JetPack 5 needs it): the legacy TorchScript
  exporter (``dynamo=False``), dynamic batch axis through ``dynamic_axes``;
* opset >= 18: the default (dynamo) exporter with ``external_data=False`` (weights inside the
  file) and a batch-2 example, because a batch-1 example can silently fix the batch to 1; the
  batch is declared dynamic through ``dynamic_shapes``.

Either way the result is checked with ``onnx.checker``, its opset and dynamic batch axis are
verified, the TensorRT lint (``aue_edge/edge/trt_lint.py``) stops an export any TensorRT target its
opset allows would reject (opset <= 17: 8.5, 8.6 and 10.x; 18+: 10.x), and the card goes into
``metadata_props`` (key ``aue_model_card``) and ``card.json``. The file is written under a
temporary name and renamed only after these checks: a failed export never replaces a good one.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from aue_edge.core.checksums import sha256_of_files
from aue_edge.core.errors import ConfigError, ModelFileError
from aue_edge.edge.model_card import (CARD_FILENAME, FP32_MODEL_FILENAME, AlignmentSpec,
                                      InputSpec, ModelCard, OutputSpec, embed_card_in_onnx)
from aue_edge.edge.trt_lint import ALL_TARGETS, lint_model, raise_for_targets
from aue_edge.edge.trt_targets import TARGETS

DEFAULT_OPSET = 17


def export_onnx(model: torch.nn.Module, card: ModelCard, out_dir: str | Path,
                opset: int = DEFAULT_OPSET, example_inputs: tuple[torch.Tensor, ...] | None = None,
                input_names: Sequence[str] = ("image",),
                output_names: Sequence[str] = ("emotion_probs", "au_probs"),
                dynamic_axes: dict[str, dict[int, str]] | None = None,
                filename: str = FP32_MODEL_FILENAME) -> Path:
    """Export ``model`` (eval mode) to ``out_dir/filename`` and write ``card.json`` beside it.

    ``example_inputs`` default: one float32 batch of 2 shaped from ``card.input``.
    ``dynamic_axes`` default: axis 0 ("batch") of every input and output.
    """
    import onnx

    if opset < 13 or opset > 23:
        raise ConfigError(f"opset {opset} is outside what this exporter supports (13..23); use "
                          f"17 for TensorRT 8.5 (JetPack 5) or 18+ for newer runtimes")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    partial = out_dir / f"{filename}.partial.onnx"
    if example_inputs is None:
        h, w = card.input.size_px
        example_inputs = (torch.randn(2, 3, h, w),)
    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    model = model.eval()
    with warnings.catch_warnings():
        # The legacy exporter is deprecated upstream; it is still the only route to opset 17.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        if opset <= 17:
            torch.onnx.export(model, example_inputs, str(partial), dynamo=False,
                              opset_version=opset, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            shapes = tuple({axis: batch for axis in dynamic_axes.get(name, {})}
                           for name in input_names)
            program = torch.onnx.export(model, example_inputs, dynamo=True, opset_version=opset,
                                        input_names=list(input_names),
                                        output_names=list(output_names),
                                        dynamic_shapes=shapes, external_data=False)
            program.save(str(partial), external_data=False)
    try:
        proto = onnx.load(str(partial))
        _constants_as_initializers(proto)
        _check_export(proto, path, opset, input_names, output_names)
        targets = tuple(t for t in ALL_TARGETS if opset <= TARGETS[t].max_opset)
        notes = raise_for_targets(lint_model(proto), targets, f"the export of {path} (not "
                                  f"written)", "Change the model code so that it exports "
                                  "static ranks and constant axes (docs/jetson.md).")
        for finding in notes:
            warnings.warn(f"TensorRT lint: {finding.line(targets)}", stacklevel=2)
        embed_card_in_onnx(proto, card)
        onnx.save(proto, str(partial))
        onnx.checker.check_model(str(partial))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    card.save(out_dir / CARD_FILENAME)
    return path


def _constants_as_initializers(proto: Any) -> None:
    """Float ``Constant`` nodes (the legacy exporter inlines non-persistent buffers, e.g.
    KDSRL's fixed RoIAlign weights, that way) become initializers: the same graph, but weights
    that quantizers treat as weights (ONNX Runtime's refuses a MatMul reading a Constant)."""
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    keep = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if (node.op_type == "Constant" and value is not None and len(node.attribute) == 1
                and value.data_type == TensorProto.FLOAT and len(value.dims) >= 2):
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value),
                                                             node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _check_export(proto: Any, path: Path, opset: int, input_names: Sequence[str],
                  output_names: Sequence[str]) -> None:
    import onnx

    onnx.checker.check_model(proto)
    got_opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if got_opset != opset:
        raise ModelFileError(f"{path}: asked for opset {opset}, the exporter wrote {got_opset}")
    graph_inputs = [i.name for i in proto.graph.input]
    graph_outputs = [o.name for o in proto.graph.output]
    if graph_inputs[:len(input_names)] != list(input_names) or graph_outputs != list(output_names):
        raise ModelFileError(f"{path}: graph inputs {graph_inputs} / outputs {graph_outputs}, "
                             f"expected {list(input_names)} / {list(output_names)}")
    for value in (*proto.graph.input, *proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise ModelFileError(f"{path}: {value.name} has a fixed batch of {dim0.dim_value}; "
                                 f"the export must keep the batch axis dynamic")


def card_from_checkpoint(payload: dict[str, Any], model: torch.nn.Module,
                         checkpoint: Path | None = None, opset: int = DEFAULT_OPSET,
                         metrics: dict[str, Any] | None = None) -> ModelCard:
    """The model card of an ``aue train`` checkpoint (its ``card`` entry + architecture)."""
    from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT

    fields = payload.get("card")
    if not isinstance(fields, dict) or "input" not in fields:
        raise ModelFileError(f"checkpoint {checkpoint} carries no model-card fields; it was not "
                             f"written by 'aue train' (re-train or add them)")
    inp = fields["input"]
    n_params = sum(p.numel() for p in model.parameters())
    arch = {"name": payload["model_name"], "parameters": int(n_params),
            "config": payload.get("model_config", {}),
            "emotion_output": payload.get("final_logits", "fused_logits")}
    learned_w = getattr(model, "prior_weight", None)
    if learned_w is not None:
        # The learned expression->AU matrix W (KGAURL): with the prior bands in the config it
        # gives the pseudo AU labels 'aue evaluate' compares the AU output with.
        arch["learned_prior_weight"] = learned_w.detach().cpu().numpy().round(5).tolist()
    if fields.get("knowledge_prior"):
        # A student's teacher's W, clamped (aue_edge.train.distill): the same baselines.
        arch["knowledge_prior"] = fields["knowledge_prior"]
    au_names = tuple(fields.get("au_names", ()))
    return ModelCard(
        model_name=payload["model_name"],
        input=InputSpec(name="image", size_px=tuple(inp["size_px"]), color=inp["color"],
                        mean=tuple(inp["mean"]), std=tuple(inp["std"])),
        alignment=AlignmentSpec(
            method="similarity_5pt", template_5pt=tuple(map(tuple, FERPLUS_TEMPLATE_5PT)),
            source="FER+ framing (aue_edge.edge.face.templates.FERPLUS_TEMPLATE_5PT); training "
                   "images are the FER+ 48x48 crops resized to the input size"),
        outputs=OutputSpec(emotion_probs="emotion_probs",
                           au_probs="au_probs" if au_names else None,
                           emotion_labels=tuple(fields["emotion_labels"]), au_names=au_names,
                           au_thresholds=dict(fields.get("au_thresholds", {}))),
        precision="fp32",
        architecture=arch,
        training=dict(fields.get("training", {})),
        metrics={**fields.get("metrics", {}), **(metrics or {})},
        provenance={"exported_by": "aue export", "torch": torch.__version__, "opset": opset,
                    "checkpoint": checkpoint.name if checkpoint else None,
                    "checkpoint_sha256": sha256_of_files(checkpoint) if checkpoint else None},
    )


def is_au_detector(payload: dict[str, Any]) -> bool:
    """A checkpoint of the AU-detector trainer (LP-Net, GTLE-Net, KDSRL), not of AUE-CRL or a
    student distilled from it."""
    from aue_edge.train.models import model_family
    from aue_edge.train.run_config import AU_FAMILIES

    return model_family(payload["model_name"]) in AU_FAMILIES


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                      metrics: dict[str, Any] | None = None) -> Path:
    """``aue export``: checkpoint -> ``out_dir/model.onnx`` + ``out_dir/card.json``."""
    from aue_edge.train.runtime import load_checkpoint

    checkpoint = Path(checkpoint)
    model, payload = load_checkpoint(checkpoint)
    model.eval()
    if is_au_detector(payload):
        from aue_edge.train.au.export import export_au_checkpoint

        return export_au_checkpoint(checkpoint, out_dir, opset, metrics)
    wrapper = model.export_module(payload.get("final_logits", "fused_logits")).eval()
    card = card_from_checkpoint(payload, model, checkpoint, opset, metrics)
    h, w = card.input.size_px
    return export_onnx(wrapper, card, out_dir, opset, example_inputs=(torch.randn(2, 3, h, w),),
                       input_names=("image",), output_names=wrapper.output_names)
