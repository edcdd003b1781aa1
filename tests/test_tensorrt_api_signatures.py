"""Every TensorRT call of ``aue_edge/edge/backends/trt_api.py`` checked against the real bindings' API.

TensorRT cannot run here. ``tests/fixtures/tensorrt_api/tensorrt-{8.6.1,10.3.0}.json`` are the
classes, methods (pybind11 signatures), properties and enum values of the PyPI bindings, dumped
by ``tools/dump_tensorrt_api.py``. From a dump this test builds a fake ``tensorrt`` module
whose classes have exactly those members and whose methods bind their arguments to exactly
those signatures, then drives every code path of TrtApi through it (build, parse errors,
deserialize, I/O tensors, shapes, execute, the cache calibrator, the logger). A misspelt name,
a wrong keyword, a missing argument, an attribute set that is not a settable property, an
override the base class does not declare, or a method removed in that release fails here.

What this does NOT check: behaviour (return values are scripted below), CUDA, and TensorRT 8.5
itself (its bindings are not on PyPI; the bindings-API branch for TensorRT < 8.5 is driven
against 8.6.1, which still has those deprecated methods).
"""
from __future__ import annotations

import ast
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from aue_edge.edge.backends import trt_api
from aue_edge.core.errors import ModelFileError

REPO = Path(__file__).resolve().parents[1]
DUMPS = REPO / "tests" / "fixtures" / "tensorrt_api"
VERSIONS = ("8.6.1", "10.3.0")
SIGNATURE = re.compile(r"^(\w+)\((.*)\)(?: -> (.+))?$")


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


class Params:
    """A pybind11 parameter list (pybind11 allows a required parameter after a defaulted one,
    which ``inspect.Signature`` refuses): binds positional and keyword arguments like
    CPython binds them to a pybind11 function, raising TypeError on a mismatch."""

    def __init__(self, params: list[tuple[str, bool, str]]) -> None:
        self.params = params  # (name, has default, kind: plain|positional|varargs|varkw)

    def bind(self, *args, **kwargs) -> dict:
        bound, position = {}, 0
        plain = [p for p in self.params if p[2] in ("plain", "positional")]
        has_varargs = any(p[2] == "varargs" for p in self.params)
        has_varkw = any(p[2] == "varkw" for p in self.params)
        if len(args) > len(plain) and not has_varargs:
            raise TypeError(f"{len(args)} positional arguments, at most {len(plain)}")
        for value, (name, _default, _kind) in zip(args, plain):
            bound[name] = value
            position += 1
        for name, value in kwargs.items():
            spec = next((p for p in self.params if p[0] == name and p[2] != "positional"),
                        None)
            if spec is None and not has_varkw:
                raise TypeError(f"unexpected keyword {name!r}")
            if name in bound:
                raise TypeError(f"{name!r} given twice")
            bound[name] = value
        missing = [n for n, default, kind in self.params
                   if kind in ("plain", "positional") and not default and n not in bound]
        if missing:
            raise TypeError(f"missing {missing}")
        return bound


def parse_signature(line: str) -> tuple[Params, str]:
    """A pybind11 signature line -> (its parameters without self, return annotation)."""
    match = SIGNATURE.match(line)
    assert match, line
    params, keyword_only = [], False
    for part in _split_params(match.group(2)):
        if part == "/":  # the ones before are positional-only
            params = [(n, d, "positional") for n, d, _k in params]
        elif part == "*":
            keyword_only = True
        elif part.startswith("**"):
            params.append((part[2:].split(":")[0], True, "varkw"))
        elif part.startswith("*"):
            params.append((part[1:].split(":")[0], True, "varargs"))
            keyword_only = True
        else:
            name = part.split(":")[0].split("=")[0].strip()
            params.append((name, "=" in part, "keyword" if keyword_only else "plain"))
    if params and params[0][0] == "self":
        params = params[1:]
    return Params(params), match.group(3) or "None"


class EnumValue:
    """A pybind11 enum member: has .name, int() and compares by identity of (enum, name)."""

    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other) -> bool:
        return isinstance(other, EnumValue) and (other.enum, other.name) == (self.enum, self.name)

    def __hash__(self) -> int:
        return hash((self.enum, self.name))


class FakeTensorRT:
    """A ``tensorrt`` module with exactly the members of one dump. ``script[(class, member)]``
    gives return values (a value, or a callable of the bound arguments)."""

    def __init__(self, version: str, script: dict) -> None:
        self.api = json.loads((DUMPS / f"tensorrt-{version}.json").read_text())
        self.script = script
        self.calls: list[tuple[str, str]] = []
        self.module = types.ModuleType("tensorrt")
        self.module.__version__ = self.api["tensorrt_version"]
        self.classes: dict[str, type] = {}
        for name in self.api["classes"]:
            setattr(self.module, name, self.fake_class(name, self.api["classes"][name]))
        for name in self.api["functions"]:
            setattr(self.module, name, self.fake_function(name))

    # ------------------------------------------------------------------ members
    def returned(self, owner: str, member: str, annotation: str, bound=None):
        self.calls.append((owner, member))
        if (owner, member) in self.script:
            value = self.script[(owner, member)]
            return value(bound) if callable(value) else value
        match = re.fullmatch(r"(?:Optional\[)?tensorrt\.tensorrt\.(\w+)\]?", annotation)
        if match and match.group(1) in self.classes:
            return self.instance(match.group(1))
        return {"bool": True, "int": 1, "str": owner, "None": None}.get(annotation)

    def instance(self, name: str):
        cls = self.classes[name]
        obj = object.__new__(cls)
        object.__setattr__(obj, "_fake_values", {})
        return obj

    def fake_function(self, name: str):
        lines = self.api["functions"][name]
        signatures = [parse_signature(line) for line in lines]
        fake = self

        def function(*args, **kwargs):
            bound, returns = fake.bind("tensorrt", name, signatures, args, kwargs)
            return fake.returned("tensorrt", name, returns, bound)

        return function

    def bind(self, owner: str, name: str, signatures, args, kwargs):
        errors = []
        for signature, returns in signatures:
            try:
                return signature.bind(*args, **kwargs), returns
            except TypeError as exc:
                errors.append(str(exc))
        raise TypeError(f"{owner}.{name}{args, kwargs} matches no signature of TensorRT "
                        f"{self.module.__version__}: {errors}")

    def fake_class(self, name: str, spec: dict, qualname: str | None = None) -> type:
        fake = self
        qualname = qualname or name
        namespace: dict = {"__module__": "tensorrt.tensorrt"}
        settable = set()
        for member, info in spec["members"].items():
            kind = info["kind"]
            if kind == "method" and info["signatures"]:  # (ErrorCode.name has none: left out)
                namespace[member] = self.fake_method(qualname, member, info["signatures"])
            elif kind == "property":
                namespace[member] = self.fake_property(qualname, member, info["settable"])
                if info["settable"]:
                    settable.add(member)
            elif kind == "class":
                namespace[member] = self.fake_class(member, info["class"],
                                                    f"{qualname}.{member}")
        if "__init__" not in namespace:
            namespace["__init__"] = self.fake_method(qualname, "__init__", ["__init__(self)"])

        def __setattr__(obj, attr, value):
            # Subclasses our code defines may keep their own attributes; a fake TensorRT
            # object only takes settable properties.
            if type(obj).__module__ == "tensorrt.tensorrt" and attr not in settable:
                raise AttributeError(f"TensorRT {fake.module.__version__}: "
                                     f"{qualname}.{attr} is not a settable property")
            object.__setattr__(obj, attr, value)

        namespace["__setattr__"] = __setattr__
        cls = type(name, (), namespace)
        for member, info in spec["members"].items():
            if info["kind"] == "value":
                setattr(cls, member, EnumValue(qualname, member, info["int"] or 0))
        self.classes.setdefault(name, cls)
        return cls

    def fake_method(self, owner: str, member: str, lines: list[str]):
        signatures = [parse_signature(line) for line in lines]
        fake = self

        def method(obj, *args, **kwargs):
            bound, returns = fake.bind(owner, member, signatures, args, kwargs)
            if member == "__init__":
                object.__setattr__(obj, "_fake_values", {})
                return None
            return fake.returned(owner, member, returns, bound)

        method.__name__ = member
        return method

    def fake_property(self, owner: str, member: str, settable: bool):
        fake = self

        def getter(obj):
            values = object.__getattribute__(obj, "_fake_values")
            if member in values:
                return values[member]
            return fake.returned(owner, member, "property")

        def setter(obj, value):
            fake.calls.append((owner, f"{member}="))
            object.__getattribute__(obj, "_fake_values")[member] = value

        return property(getter, setter if settable else None)


class FakeCuda:
    name = "fake-cuda"

    def stream_handle(self, stream) -> int:
        return 0

    def close(self) -> None:
        pass


def script(fake_version: str) -> dict:
    names = ["image", "emotion_probs"]

    class Memory:
        def __bytes__(self) -> bytes:
            return b"serialized"

    def enum(cls, member):
        return lambda _bound: getattr(getattr(fake_module(), cls), member)

    return {
        ("Builder", "num_DLA_cores"): 2,
        ("Builder", "platform_has_fast_fp16"): True,
        ("Builder", "platform_has_fast_int8"): True,
        ("OnnxParser", "parse_from_file"): True,
        ("Builder", "build_serialized_network"): Memory(),
        ("ITimingCache", "serialize"): Memory(),
        ("ICudaEngine", "num_io_tensors"): 2,
        ("ICudaEngine", "get_tensor_name"): lambda b: names[b["index"]],
        ("ICudaEngine", "get_tensor_mode"): lambda b: fake_module().TensorIOMode.INPUT
        if b["name"] == "image" else fake_module().TensorIOMode.OUTPUT,
        ("ICudaEngine", "get_tensor_shape"): (-1, 3, 112, 112),
        ("ICudaEngine", "get_tensor_profile_shape"): [(1, 3, 112, 112)] * 3,
        ("ICudaEngine", "get_tensor_dtype"): enum("DataType", "FLOAT"),
        ("ICudaEngine", "num_bindings"): 2,
        ("ICudaEngine", "binding_is_input"): lambda b: b["index"] == 0,
        ("ICudaEngine", "get_binding_name"): lambda b: names[b["index"]],
        ("ICudaEngine", "get_binding_dtype"): enum("DataType", "FLOAT"),
        ("ICudaEngine", "get_binding_shape"): (-1, 3, 112, 112),
        ("ICudaEngine", "get_profile_shape"): [(1, 3, 112, 112)] * 3,
        ("IExecutionContext", "get_tensor_shape"): (1, 3, 112, 112),
        ("IExecutionContext", "get_binding_shape"): (1, 3, 112, 112),
        ("tensorrt", "nptype"): lambda _bound: np.float32,
    }


_CURRENT: dict = {}


def fake_module():
    return _CURRENT["fake"].module


@pytest.fixture(params=VERSIONS)
def fake_trt(request, monkeypatch):
    fake = FakeTensorRT(request.param, script(request.param))
    _CURRENT["fake"] = fake
    monkeypatch.setattr(trt_api, "import_tensorrt", lambda: fake.module)
    yield fake
    _CURRENT.clear()


def test_build_engine_calls_match_the_bindings(fake_trt, tmp_path):
    api = trt_api.TrtApi(need_cuda=False)
    out = api.build_engine(tmp_path / "m.onnx", {"image": ((1, 3, 112, 112),) * 3},
                           ("FP16", "INT8", "GPU_FALLBACK"), 1 << 30,
                           calibration_cache=b"TRT-8502-EntropyCalibration2\n", dla_core=0,
                           timing_cache=b"", check_platform=lambda platform: None)
    assert out.engine_bytes == b"serialized" and out.timing_cache_bytes == b"serialized"
    called = set(fake_trt.calls)
    assert {("Builder", "create_network"), ("IBuilderConfig", "set_memory_pool_limit"),
            ("IBuilderConfig", "int8_calibrator="), ("IBuilderConfig", "DLA_core="),
            ("IOptimizationProfile", "set_shape"), ("Builder", "build_serialized_network"),
            ("IBuilderConfig", "set_timing_cache")} <= called
    assert set(out.platform) == {"fast_fp16", "fast_int8", "num_dla_cores"}


def test_parser_errors_are_read_with_the_bindings_names(fake_trt, tmp_path):
    fake_trt.script[("OnnxParser", "parse_from_file")] = False
    fake_trt.script[("OnnxParser", "num_errors")] = 1
    api = trt_api.TrtApi(need_cuda=False)
    with pytest.raises(ModelFileError, match="rejected .* with 1 error"):
        api.build_engine(tmp_path / "m.onnx", {}, ("FP16",), 1 << 20)
    assert ("OnnxParser", "get_error") in fake_trt.calls


@pytest.mark.parametrize("api_version", ["as dumped", "8.4.3"])
def test_runtime_calls_match_the_bindings(fake_trt, api_version):
    api = trt_api.TrtApi(need_cuda=False)
    if api_version != "as dumped":
        if fake_trt.module.__version__ != "8.6.1":
            pytest.skip("the bindings API (TensorRT < 8.5) is gone in TensorRT 10")
        api.version = api_version  # drive the bindings-API branch against 8.6's bindings
    api.cuda = FakeCuda()
    engine = api.deserialize(b"engine", "test engine", dla_core=1)
    assert ("Runtime", "DLA_core=") in fake_trt.calls
    tensors = api.io_tensors(engine)
    assert [(t.name, t.is_input, t.dtype) for t in tensors] == [
        ("image", True, np.dtype(np.float32)), ("emotion_probs", False, np.dtype(np.float32))]
    assert tensors[0].profile == ((1, 3, 112, 112),) * 3
    context = api.create_context(engine)
    api.set_input_shape(context, tensors[0], (1, 3, 112, 112))
    assert api.tensor_shape(context, tensors[0]) == (1, 3, 112, 112)
    api.execute(context, tensors, {"image": 1, "emotion_probs": 2}, stream=None)
    executed = {m for _c, m in fake_trt.calls}
    assert ("execute_async_v3" in executed) == (api_version == "as dumped")


def test_subclassed_interfaces_override_members_the_bindings_declare(fake_trt):
    """The logger and the cache calibrator override TensorRT virtual methods; a misspelt
    override would never be called by TensorRT."""
    api = trt_api.TrtApi(need_cuda=False)
    calibrator = api._cache_calibrator(b"cache")
    for obj, base in ((api.logger, "ILogger"), (calibrator, "IInt8EntropyCalibrator2")):
        declared = set(fake_trt.api["classes"][base]["members"])
        own = {name for name, value in vars(type(obj)).items()
               if callable(value) and not name.startswith("__")}
        assert own and own <= declared, (base, own - declared)
    assert calibrator.read_calibration_cache() == b"cache"
    assert calibrator.get_batch(["image"]) is None and calibrator.get_batch_size() == 1
    api.logger.log(fake_trt.module.ILogger.Severity.INFO, "hello")
    assert api.log_messages == ["[INFO] hello"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_trt_attribute_and_getattr_name_exists_in_the_bindings(version):
    """Static check: each ``trt.X...`` chain and each name passed to getattr/hasattr on a
    TensorRT object in trt_api.py is a member of the dumped bindings (names used only behind a
    version check are allowed to be missing in 10.x)."""
    api = json.loads((DUMPS / f"tensorrt-{version}.json").read_text())
    source = (REPO / "aue_edge" / "edge" / "backends" / "trt_api.py").read_text()
    tree = ast.parse(source)
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "trt":
                chains.add(tuple(parts))
            if isinstance(inner, ast.Attribute) and inner.attr == "trt" and \
                    isinstance(inner.value, ast.Name) and inner.value.id == "self":
                chains.add(tuple(parts))
    assert ("Builder",) in chains and ("ILogger", "Severity", "WARNING") in chains
    members_anywhere = {m for c in api["classes"].values() for m in c["members"]}
    for chain in chains:
        head, *rest = chain
        if head in ("__version__", "nptype"):
            assert head == "__version__" or head in api["functions"]
            continue
        assert head in api["classes"], f"trt.{head} is not in TensorRT {version}"
        spec = api["classes"][head]
        for part in rest:
            if part == "__init__":
                break
            assert part in spec["members"], f"trt.{'.'.join(chain)} not in TensorRT {version}"
            info = spec["members"][part]
            spec = info.get("class", spec)
    trt_objects = "builder|engine|context|config|network|parser"
    looked_up = re.findall(rf"(?:getattr|hasattr)\((?:{trt_objects}), \"(\w+)\"", source)
    assert "num_DLA_cores" in looked_up
    for name in looked_up:
        assert name in members_anywhere, f"{name} is not a member of any TensorRT {version} class"
