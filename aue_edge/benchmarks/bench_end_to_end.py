"""Benchmark group "end_to_end": ``Pipeline.process`` on a real 640x480 frame, 1 and 5 faces.

The whole per-frame chain the robot runs (validate, detect, align, one batched inference,
tracking, smoothing), per model x backend x precision. Each round processes the same frame
with the next timestamp (30 fps), so tracking keeps its IDs as on a live camera. The pipeline's
own per-stage timings of every timed round are saved (``extra_info.stage_ms``) for the
report's per-stage breakdown.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from aue_edge.edge.pipeline import STAGES, Pipeline

GROUP = "end_to_end"


def bench_pipeline(measure, benchmark, variant, faces, frames, bench_config):
    if variant.skip_reason:
        pytest.skip(variant.skip_reason)
    _time_pipeline(measure, benchmark, variant, frames[faces], faces, bench_config)


def bench_pipeline_with_au_detector(measure, benchmark, variant, faces, frames, bench_config):
    """The same frames with the AU output taken from ``--au-model`` (its file of the same
    precision), so the detector's per-face cost is the difference to ``bench_pipeline``."""
    if variant.skip_reason:
        pytest.skip(variant.skip_reason)
    au_file = Path(bench_config.au_model_dir) / variant.path.name
    if variant.backend != "ort" or not au_file.is_file():
        pytest.skip(f"{au_file} does not exist or is not an ONNX Runtime file: the AU detector "
                    f"is timed with the main model's ONNX Runtime file of the same name")
    if variant.model_dir.resolve() == Path(bench_config.au_model_dir).resolve():
        pytest.skip("the AU detector is the main model of this case")
    _time_pipeline(measure, benchmark, variant, frames[faces], faces, bench_config,
                   au_file=au_file)


def _time_pipeline(measure, benchmark, variant, frame, faces, bench_config, au_file=None):
    timings = []
    au = {} if au_file is None else {"au_model_dir": str(au_file.parent),
                                     "au_model_file": au_file.name}
    with Pipeline.from_model_dir(variant.model_dir, backend=variant.backend,
                                 model_file=variant.path.name,
                                 num_threads=bench_config.num_threads, **au) as pipeline:
        clock = itertools.count()

        def process():
            result = pipeline.process(frame, timestamp_s=next(clock) / 30.0)
            timings.append(result.timings_ms)
            return result

        model = variant.model_name if au_file is None else (
            f"{variant.model_name}+{au_file.parent.name}")
        result = measure(process, group=GROUP, item_unit="frames", faces=faces,
                         model=model, backend=variant.backend,
                         precision=variant.precision, model_file=variant.path.name,
                         num_threads=bench_config.num_threads, **variant.build_info())
    # Warm-up rounds are not in pytest-benchmark's timings; drop them here too.
    timed = timings[bench_config.warmup_rounds:]
    benchmark.extra_info["stage_ms"] = {stage: [round(t[stage], 4) for t in timed]
                                        for stage in STAGES}
    assert len(result.faces) == faces, (
        f"the pipeline found {len(result.faces)} faces in the {faces}-face frame")
