"""Benchmark group "end_to_end": ``Pipeline.process`` on a real 640x480 frame, 1 and 5 faces.

The whole per-frame chain the robot runs (validate, detect, align, one batched inference,
tracking, smoothing), per model x backend x precision. Each round processes the same frame
with the next timestamp (30 fps), so tracking keeps its IDs as on a live camera. The pipeline's
own per-stage timings of every timed round are saved (``extra_info.stage_ms``) for the
report's per-stage breakdown.
"""
from __future__ import annotations

import itertools

import pytest

from aue_edge.edge.pipeline import STAGES, Pipeline

GROUP = "end_to_end"


def bench_pipeline(measure, benchmark, variant, faces, frames, bench_config):
    if variant.skip_reason:
        pytest.skip(variant.skip_reason)
    frame = frames[faces]
    timings = []
    with Pipeline.from_model_dir(variant.model_dir, backend=variant.backend,
                                 model_file=variant.path.name,
                                 num_threads=bench_config.num_threads) as pipeline:
        clock = itertools.count()

        def process():
            result = pipeline.process(frame, timestamp_s=next(clock) / 30.0)
            timings.append(result.timings_ms)
            return result

        result = measure(process, group=GROUP, item_unit="frames", faces=faces,
                         model=variant.model_name, backend=variant.backend,
                         precision=variant.precision, model_file=variant.path.name,
                         num_threads=bench_config.num_threads, **variant.build_info())
    # Warm-up rounds are not in pytest-benchmark's timings; drop them here too.
    timed = timings[bench_config.warmup_rounds:]
    benchmark.extra_info["stage_ms"] = {stage: [round(t[stage], 4) for t in timed]
                                        for stage in STAGES}
    assert len(result.faces) == faces, (
        f"the pipeline found {len(result.faces)} faces in the {faces}-face frame")
