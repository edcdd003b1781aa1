"""Benchmark group "infer": one model call on a batch of real aligned faces.

Parametrized model x backend x precision (``cases.model_variants``) x batch of faces (the
config's ``batches``). The batch is made of the 5 real faces of the 5-face frame, aligned and
preprocessed exactly as the pipeline does, repeated to the batch size. Combinations that cannot
run here (TensorRT absent, a model or engine not built) are skipped with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest

GROUP = "infer"


@pytest.fixture
def opened_backend(variant, bench_config):
    """The variant's model opened on its backend (closed after the case)."""
    if variant.skip_reason:
        pytest.skip(variant.skip_reason)
    from aue_edge.edge.backends.factory import create_backend, find_model_card

    backend = create_backend(variant.path, variant.backend, num_threads=bench_config.num_threads)
    try:
        yield backend, find_model_card(variant.path)
    finally:
        backend.close()


def bench_infer(measure, opened_backend, variant, batch, frames, detections,
                alignment_template, bench_config):
    from aue_edge.edge.face.alignment import align_faces
    from aue_edge.edge.face.landmarks import mean_shape_68
    # The pipeline's own rule for the largest batch one call takes (it chunks above it).
    from aue_edge.edge.pipeline import LANDMARKS_INPUT, batch_limit
    from aue_edge.edge.preprocess import to_model_input

    backend, card = opened_backend
    limit = batch_limit(backend, card.input.name)
    if limit is not None and batch > limit:
        pytest.skip(f"{variant.path.name} takes at most {limit} faces per call: batch {batch} "
                    f"NOT benchmarked (the pipeline splits larger batches into chunks)")
    crops = align_faces(frames[5], detections[5].landmarks5,
                        card.alignment.template_5pt or alignment_template,
                        card.input.size_px)
    faces = to_model_input(crops, card.input)
    feeds = {card.input.name: np.ascontiguousarray(np.resize(faces, (batch, *faces.shape[1:])))}
    if LANDMARKS_INPUT in card.extra_inputs:
        # What the pipeline's default landmark provider feeds: the mean 68-point shape placed
        # by the 5-point alignment, as fractions of the aligned crop.
        points = mean_shape_68(card.alignment.template_5pt or alignment_template)
        feeds[LANDMARKS_INPUT] = np.ascontiguousarray(
            np.broadcast_to(points, (batch, *points.shape)), dtype=np.float32)
    outputs = measure(lambda: backend.infer(feeds), group=GROUP, items_per_call=batch,
                      item_unit="faces", model=variant.model_name, backend=variant.backend,
                      precision=variant.precision, batch=batch, model_file=variant.path.name,
                      num_threads=bench_config.num_threads,
                      providers=list(getattr(backend, "providers", ())),
                      **variant.build_info())
    for name in (card.outputs.emotion_probs, card.outputs.au_probs):
        if name is not None:
            assert outputs[name].shape[0] == batch
