"""The Python API of the README (``from aue_edge import Pipeline``), run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter


def test_readme_python_example_runs_as_written(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- python-api -->\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its Python API example"
    proc = subprocess.run([sys.executable, "-c", match.group(1)], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) > 20, proc.stdout
    # the demo clip shows smiling faces: mostly happiness with AU12 (lip corner puller) active
    frames = Counter(line.split(" face ")[0] for line in lines)
    assert len(frames) > 20, frames
    assert sum("happiness" in line and "'AU12'" in line for line in lines) > len(lines) / 2, \
        lines[:5]


def test_import_aue_edge_stays_light_and_names_the_api():
    code = ("import sys, aue_edge; heavy = {'cv2', 'onnxruntime'} & set(sys.modules); "
            "print(sorted(heavy)); print(aue_edge.__all__); "
            "from aue_edge import Pipeline, FaceResult, FrameResult, PipelineConfig; "
            "print(Pipeline.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout.splitlines()
    assert out[0] == "[]"               # entry points import aue_edge before any heavy library
    assert "Pipeline" in out[1] and "FaceResult" in out[1]
    assert out[2] == "aue_edge.edge.pipeline"
    proc = subprocess.run([sys.executable, "-c", "import aue_edge; aue_edge.Pipelin"],
                          capture_output=True, text=True, timeout=120)
    assert "has no attribute 'Pipelin'" in proc.stderr
