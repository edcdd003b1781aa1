"""``aue doctor`` without a Jetson: TensorRT absent, trtexec/polygraphy/aue build scripted.
Checks that every step is attempted and recorded, a failing step never stops the next, the
report is one JSON file, and the engine jobs follow the installed TensorRT."""
from __future__ import annotations

import json

import pytest

from aue_edge.edge import doctor
from aue_edge.edge.doctor import MODEL_DIR, Doctor, engine_jobs


def scripted(calls):
    def run(argv, timeout_s):
        calls.append(argv)
        if argv[0] == "dpkg-query":
            return 1, "dpkg-query: no packages found matching nvidia-jetpack"
        if "trtexec" in argv[0]:
            return (1, "[E] Error[4]: parser failed") if "--calib=" in " ".join(argv) \
                else (0, "&&&& PASSED TensorRT.trtexec")
        if argv[0] == "polygraphy":
            return 0, "[I] PASSED | All outputs matched"
        if argv[1:4] == ["-m", "aue_edge.cli", "build"]:
            out = argv[argv.index("--out") + 1]
            open(out, "wb").write(b"not an engine")  # 'built', but TensorRT cannot load it
            return 0, "Engine written"
        raise AssertionError(argv)
    return run


def test_doctor_records_every_step_and_writes_one_report(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(Doctor, "installed_trt", lambda self: None)
    calls = []
    path = Doctor(tmp_path / "report", run_command=scripted(calls), bench_seconds=0).run()
    report = json.loads(path.read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["environment"]["status"] == "ok" and steps["environment"]["tensorrt"] \
        .startswith("not importable")
    lint = steps["lint"]["files"]
    assert lint["aue_crl/model.onnx"]["breaking"] == []
    assert lint["aue_crl/model.int8.onnx"]["breaking"] == []
    assert lint["yunet/face_detection_yunet.onnx"]["breaking"] == []
    assert any("[qdq-zero-point]" in line for line in lint["aue_crl/model.int8.ort.onnx"]["breaking"])
    assert steps["trtexec:classifier-fp16"]["status"] == "ok"
    assert "--fp16" in steps["trtexec:classifier-fp16"]["command"]
    failed = steps["trtexec:classifier-int8-cache"]
    assert failed["status"] == "failed" and "parser failed" in failed["output_tail"]
    assert steps["polygraphy"]["status"] == "ok"
    assert steps["aue build:yunet-fp16"]["status"] == "ok"
    # The 'engines' cannot be loaded here: parity and bench fail, and are recorded as such.
    assert steps["parity:classifier-fp32"]["status"] == "failed"
    assert steps["bench:yunet-fp32"]["status"] == "failed"
    assert "parity:yunet-fp32" not in steps
    assert report["summary"]["ok"] >= 10 and report["summary"]["failed"] >= 1
    assert not list((tmp_path / "report").glob("*.partial"))


def test_without_trtexec_or_polygraphy_those_steps_are_skipped_with_a_reason(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    d = Doctor(tmp_path, run_command=scripted([]))
    job = engine_jobs(MODEL_DIR, 10)[0]
    assert d.trtexec(job) == {"status": "skipped", "reason": "trtexec not found (it ships "
                                                             "with JetPack in /usr/src/tensorrt/bin)"}
    assert d.polygraphy()["status"] == "skipped"


@pytest.mark.parametrize("major, has_cache_job", [(8, True), (10, False), (None, True)])
def test_engine_jobs_follow_the_installed_tensorrt(major, has_cache_job):
    names = [job.name for job in engine_jobs(MODEL_DIR, major)]
    assert ("classifier-int8-cache" in names) == has_cache_job
    assert {"classifier-fp32", "classifier-fp16", "classifier-int8-qdq", "yunet-fp32",
            "yunet-fp16"} <= set(names)
    for job in engine_jobs(MODEL_DIR, major):
        assert job.onnx.is_file(), job
        argv = job.build_argv(MODEL_DIR / "x.engine")
        assert argv[argv.index("--precision") + 1] == job.precision
        assert ("--detector" in argv) == job.detector
