"""ONNX graph helpers for calibration: which tensors are activations, and exposing them.

Calibration needs the value of every activation (a float tensor computed from the model input)
on real images. ONNX Runtime only returns graph outputs, so :func:`with_extra_outputs` returns a
copy of the model with the wanted tensors added as outputs; that copy is only ever used for
measuring and is never saved as a deployable model.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError

from aue_edge.core.errors import ModelFileError

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file (with external data) and check it; clear error if it is not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, DecodeError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a valid ONNX model ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); is the file complete? Re-export it with "
                             f"'aue export'") from None
    return model


def opset_version(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelFileError("the model imports no default-domain (ai.onnx) opset")


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Inputs that are fed at run time (older exporters also list initializers as inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in initializers]


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type (0 = unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:  # best effort: use what the file declares
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + \
            list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Float tensors computed from the model's run-time inputs, inputs first, in graph order.

    These are what TensorRT's implicit-INT8 calibrator gives a scale to (its network tensors
    are named after ONNX tensors). Tensors computed only from constants (shape arithmetic,
    folded weights) and integer tensors are left out.
    """
    types = tensor_types(model)
    dynamic = {vi.name for vi in graph_inputs(model)}
    ordered = [vi.name for vi in graph_inputs(model)
               if vi.type.tensor_type.elem_type in FLOAT_TYPES]
    for node in model.graph.node:
        if not any(name in dynamic for name in node.input if name):
            continue
        for name in node.output:
            if not name:
                continue
            dynamic.add(name)
            if types.get(name, 0) in FLOAT_TYPES:
                ordered.append(name)
    return ordered


def with_extra_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the tensors ``names`` (for measuring only)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    types = tensor_types(model)
    for name in names:
        if name in existing:
            continue
        copy.graph.output.append(onnx.helper.make_tensor_value_info(
            name, types.get(name, onnx.TensorProto.FLOAT) or onnx.TensorProto.FLOAT, None))
    return copy


@contextmanager
def temporary_model_file(model: onnx.ModelProto) -> Iterator[Path]:
    """Write a measuring copy of a model to a temporary file (weights kept inside if < 2 GB)."""
    with tempfile.TemporaryDirectory(prefix="aue_calib_") as tmp:
        path = Path(tmp) / "measure.onnx"
        large = model.ByteSize() > 1_900_000_000
        onnx.save(model, str(path), save_as_external_data=large,
                  location="measure.onnx.data" if large else None)
        yield path
