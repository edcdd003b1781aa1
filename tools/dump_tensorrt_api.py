"""Dump the Python API of real TensorRT bindings (classes, methods with their pybind11
signatures, properties, enum values) to JSON, without TensorRT's native libraries.

Why: TensorRT cannot be installed on the development machines, but its Python bindings are on
PyPI as real wheels (``tensorrt_bindings`` 8.6.1, ``tensorrt_cu12_bindings`` 10.3.0; only the
``*-libs`` wheels need NVIDIA's download host). They link against libnvinfer & co.; a stub
library exporting the C entry points they import (``tools/tensorrt_stub.cpp``) lets ``import
tensorrt`` succeed for introspection only. The dumps in ``tests/fixtures/tensorrt_api/`` are
what ``tests/test_tensorrt_api_signatures.py`` checks every TensorRT call of
``aue_edge/edge/backends/trt_api.py`` against (a wrong name, keyword or removed method fails there).

Regenerate (needs pip access to PyPI, g++, and Python 3.11: the wheels are cp311)::

    .venv/bin/python tools/dump_tensorrt_api.py 8.6.1
    .venv/bin/python tools/dump_tensorrt_api.py 10.3.0

Nothing is installed: the wheel is unpacked into a temporary folder.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "tensorrt_api"
STUB_SOURCE = Path(__file__).with_name("tensorrt_stub.cpp")
# version -> (PyPI distribution, sonames the bindings' tensorrt.so links against)
WHEELS = {
    "8.6.1": ("tensorrt_bindings", ("libnvinfer.so.8", "libnvonnxparser.so.8",
                                    "libnvparsers.so.8", "libnvinfer_plugin.so.8")),
    "10.3.0": ("tensorrt_cu12_bindings", ("libnvinfer.so.10", "libnvonnxparser.so.10",
                                          "libnvinfer_plugin.so.10")),
}
SIGNATURE = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\)(?: -> (.+))?$")


def _signatures(obj, name: str) -> list[str]:
    """The pybind11 signature lines of a routine's docstring (one per overload)."""
    doc = getattr(obj, "__doc__", None) or ""
    found = []
    for line in doc.splitlines():
        match = SIGNATURE.match(line.strip())
        if match and match.group(1) == name:
            found.append(line.strip().split(". ", 1)[-1] if line.strip()[0].isdigit()
                         else line.strip())
    generic = f"{name}(*args, **kwargs)"
    if len(found) > 1 and generic in found:  # pybind11's "Overloaded function." header line
        found.remove(generic)
    if not found and callable(obj):
        try:  # a pure-Python function of the package's __init__.py (e.g. nptype)
            found.append(f"{name}{inspect.signature(obj)}")
        except (TypeError, ValueError):
            pass
    return found


def _describe_class(cls) -> dict:
    members = {}
    for name in sorted(dir(cls)):
        if name.startswith("__") and name != "__init__":
            continue
        try:
            static = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        value = getattr(cls, name)
        if isinstance(static, property):
            members[name] = {"kind": "property", "settable": static.fset is not None}
        elif isinstance(value, cls):
            members[name] = {"kind": "value", "int": int(value) if hasattr(value, "__int__")
                             else None}
        elif inspect.isclass(value):
            members[name] = {"kind": "class", "class": _describe_class(value)}
        elif callable(value):
            members[name] = {"kind": "method", "signatures": _signatures(value, name)}
        else:
            members[name] = {"kind": "attribute", "type": type(value).__name__}
    bases = [b.__name__ for b in cls.__mro__[1:] if b.__module__.startswith("tensorrt")]
    return {"bases": bases, "members": members}


def introspect() -> dict:
    """Run inside the interpreter that imported the stubbed bindings."""
    import tensorrt as trt

    api = {"tensorrt_version": trt.__version__, "classes": {}, "functions": {}}
    for name in sorted(dir(trt)):
        if name.startswith("_"):
            continue
        value = getattr(trt, name)
        if inspect.isclass(value) and value.__module__.startswith("tensorrt"):
            api["classes"][name] = _describe_class(value)
        elif callable(value) and getattr(value, "__module__", "").startswith("tensorrt"):
            api["functions"][name] = _signatures(value, name)
    return api


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kwargs)


def dump(version: str) -> Path:
    if version not in WHEELS:
        raise SystemExit(f"version must be one of {sorted(WHEELS)}, got {version!r}")
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("the wheels are built for CPython 3.11: run this with Python 3.11")
    distribution, sonames = WHEELS[version]
    with tempfile.TemporaryDirectory(prefix="trt_api_") as tmp:
        tmp_path = Path(tmp)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              f"{distribution}=={version}", "-d", str(tmp_path / "wheel")])
        wheel = next((tmp_path / "wheel").glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp_path / "unpacked")
        site = tmp_path / "site"
        site.mkdir()
        # The package unpacks as tensorrt_bindings/; import it under its real name.
        shutil.copytree(tmp_path / "unpacked" / "tensorrt_bindings", site / "tensorrt")
        stub = tmp_path / "stub"
        stub.mkdir()
        for soname in sonames:
            _run(["g++", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o",
                  str(stub / soname), str(STUB_SOURCE)])
        env = dict(os.environ, LD_LIBRARY_PATH=str(stub), PYTHONPATH=str(site))
        result = subprocess.run([sys.executable, __file__, "--introspect"], env=env,
                                check=True, capture_output=True, text=True)
    api = json.loads(result.stdout)
    api["source"] = f"PyPI {distribution}=={version} ({wheel.name}), imported against stub " \
                    f"native libraries by tools/dump_tensorrt_api.py"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"tensorrt-{version}.json"
    out.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(api['classes'])} classes)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", nargs="?", choices=sorted(WHEELS))
    parser.add_argument("--introspect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.introspect:
        json.dump(introspect(), sys.stdout)
        return
    if args.version is None:
        parser.error("give a TensorRT version")
    dump(args.version)


if __name__ == "__main__":
    main()
