"""One INT8 calibration run: FP32 ONNX + real faces -> cache, Q/DQ model, report.

The calibration stage of the flow (train -> **calibration** -> edge), behind ``aue calibrate``.
:func:`calibrate` runs these phases, each a function with explicit inputs and outputs:

0. :func:`check_model`: the FP32 model is one this run can calibrate (not already quantised,
   inputs the card describes, a graph the TensorRT target parses) and what gets quantised;
1. :func:`collect_statistics`: the model, with every activation exposed as an output, runs in
   ONNX Runtime on the calibration faces (edge preprocessing from the card); streaming
   histograms per tensor;
2. :func:`choose_thresholds` from the chosen calibrator (entropy, percentile, minmax);
3. one writer per target: :func:`write_tensorrt` (target ``tensorrt``, default):
   ``calibration.cache`` (TensorRT 8.5 implicit INT8) for every activation tensor, and
   ``model.int8.onnx`` (explicit symmetric Q/DQ for TensorRT 10+) with the card embedded
   (precision ``int8-qdq``) and a card JSON beside it; :func:`write_ort` (target ``ort-cpu``):
   ``model.int8.ort.onnx`` (uint8 activations for ONNX Runtime's CPU int8 kernels,
   ``ort_qdq.py``) with its card (precision ``int8-qdq-ort``) embedded and in
   ``model.int8.ort.card.json``; no cache;
4. :func:`evaluate`: held-out FP32 vs INT8 agreement, accuracy and per-layer SNR;
5. :func:`write_report`: the report + plots (names per target: :data:`OUTPUT_NAMES`).

Everything is written into a staging folder (:func:`aue_edge.edge.outputs.staged_outputs`) and
moved over the previous files only when every phase succeeded.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from aue_edge import __version__
from aue_edge.calibration.calibrators import (Threshold, clipped_fraction,
                                              compute_thresholds, quantization_snr_db)
from aue_edge.calibration.config import CalibrationConfig
from aue_edge.calibration.graph import (activation_tensors, graph_inputs, load_model,
                                        opset_version, temporary_model_file,
                                        with_extra_outputs)
from aue_edge.calibration.ort_qdq import (ORT_PRECISION, asymmetric_ranges, inspect_ort_qdq,
                                          quantize_for_ort)
from aue_edge.calibration.qdq import (QuantizationPlan, inspect_qdq, insert_qdq,
                                      plan_quantization)
from aue_edge.calibration.report import OutputAgreement, TensorSnr, write_plots
from aue_edge.calibration.sources import (FaceSource, UsageLog, iter_face_batches,
                                          seeded_order)
from aue_edge.calibration.stats import StatsCollector, TensorHistogram
from aue_edge.edge.trt_cache import ALGORITHM_BY_METHOD, write_cache
from aue_edge.edge.trt_lint import lint_model, raise_for_targets
from aue_edge.edge.trt_targets import TrtTarget, resolve_target
from aue_edge.core.checksums import sha256_of_files
from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
from aue_edge.core.errors import CalibrationError, ModelFileError
from aue_edge.edge.model_card import (CALIBRATION_CACHE_FILENAME, CARD_FILENAME,
                                      INT8_ORT_MODEL_FILENAME, INT8_QDQ_MODEL_FILENAME,
                                      ModelCard, embed_card_in_onnx)
from aue_edge.edge.outputs import prepare_output_dir, staged_outputs
from aue_edge.edge.face.landmarks import mean_shape_68
from aue_edge.edge.face.templates import FERPLUS_TEMPLATE_5PT
from aue_edge.edge.pipeline import LANDMARKS_INPUT, LoadedModel, is_landmarks_input
from aue_edge.edge.preprocess import to_model_input

REPORT_FILENAME = "calibration_report.json"
IMAGES_FILENAME = "calibration_images.tsv"
REPORT_SCHEMA = "aue_calibration_report/1"
MOST_HURT_COUNT = 10
CLIP_WARNING_FRACTION = 0.01   # warn when a threshold clips more than 1 % of a tensor's values


@dataclass(frozen=True)
class OutputNames:
    """File names one target writes; the two targets can share a folder without overwriting."""

    model: str
    report: str
    images: str
    plot_suffix: str
    precision: str


OUTPUT_NAMES = {
    "tensorrt": OutputNames(INT8_QDQ_MODEL_FILENAME, REPORT_FILENAME, IMAGES_FILENAME, "",
                            "int8-qdq"),
    "ort-cpu": OutputNames(INT8_ORT_MODEL_FILENAME, "calibration_report.ort.json",
                           "calibration_images.ort.tsv", ".ort", ORT_PRECISION),
}


@dataclass(frozen=True)
class CalibrationOutputs:
    out_dir: Path
    int8_model: Path
    cache: Path | None          # None for target ort-cpu (the cache is TensorRT's)
    report: Path
    card: Path
    summary: dict


def _backend(path: Path, config: CalibrationConfig) -> OrtBackend:
    return OrtBackend(path, num_threads=config.num_threads or None)


def _check_model_input(model: onnx.ModelProto, card: ModelCard, model_path: Path) -> str:
    names = [vi.name for vi in graph_inputs(model)]
    extra = [n for n in names if n != card.input.name]
    if card.input.name not in names or not all(is_landmarks_input(n, card) for n in extra):
        raise ModelFileError(
            f"{model_path}: calibration feeds the image input {card.input.name!r} (from the "
            f"model card) and a 'landmarks' input where the card declares one, but the model's "
            f"run-time inputs are {names}. Models with other inputs are not supported by 'aue "
            f"calibrate'; check that the card belongs to this model")
    return card.input.name


def _feeds(input_name: str, card: ModelCard, faces: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs for aligned ``faces``: the image batch and, for a model with a
    ``landmarks`` input (LP-Net), the 68 points the pipeline feeds by default (its
    ``mean_shape`` provider: the mean shape in the aligned crop)."""
    feeds = {input_name: to_model_input(faces, card.input)}
    if any(is_landmarks_input(n, card) for n in card.extra_inputs):
        shape = mean_shape_68(card.alignment.template_5pt or FERPLUS_TEMPLATE_5PT)
        feeds[LANDMARKS_INPUT] = np.repeat(np.asarray(shape, np.float32)[None], len(faces), 0)
    return feeds


def _label_map(source: FaceSource, card: ModelCard) -> np.ndarray | None:
    """Index in the card's emotion labels of each of the source's labels (-1 if absent)."""
    if not source.labels or not card.outputs.emotion_labels or \
            card.outputs.emotion_probs is None:
        return None
    card_index = {name: i for i, name in enumerate(card.outputs.emotion_labels)}
    return np.array([card_index.get(name, -1) for name in source.labels], dtype=np.int64)


def calibrate(model_path: str | Path, card: ModelCard, calib_source: FaceSource,
              eval_source: FaceSource | None, config: CalibrationConfig, out_dir: str | Path,
              eval_continues_calib: bool = False, progress: bool = True
              ) -> CalibrationOutputs:
    """Run the whole calibration: the phases of the module docstring, one function each.

    ``eval_source`` is the held-out source (None: no evaluation, recorded as a warning).
    ``eval_continues_calib``: the held-out images are the ones after the calibration images in
    the same seeded order of ``calib_source`` (``eval_source`` must be that source).
    """
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    names = OUTPUT_NAMES[config.target]
    if (out_dir / names.model).resolve() == model_path.resolve():
        raise CalibrationError(f"--out {out_dir} would overwrite the input model {model_path}; "
                               f"calibrate the FP32 model or choose another folder")
    created = prepare_output_dir(out_dir, output_files(config.target))
    # Written into a staging folder and moved over the previous files only on success.
    with staged_outputs(out_dir, created) as stage:
        checked = check_model(model_path, card, config)
        stats = collect_statistics(checked, card, calib_source, config, progress)
        thresholds = choose_thresholds(stats.histograms, config, progress)
        int8_card = card.replace(precision=names.precision, provenance={
            **card.provenance, "calibration": calibration_facts(checked, stats.log, config)})
        if config.target == "tensorrt":
            int8 = write_tensorrt(checked, thresholds, config, int8_card, stage)
        else:
            int8 = write_ort(checked, stats.histograms, thresholds, config, int8_card, stage)
        evaluation = evaluate(checked, int8, card, eval_source, stats, config,
                              eval_continues_calib, progress)
        int8_card = int8_card.replace(metrics={
            "calibration_eval": _card_metrics(evaluation.summary, evaluation.log, eval_source),
            "fp32_model": card.metrics})
        _save_with_card(int8.model, int8_card, int8.path)
        warnings = [*checked.warnings, *stats.warnings, *thresholds.warnings, *int8.warnings,
                    *evaluation.warnings]
        card_path = _write_card(int8_card, out_dir, stage, model_path, names, warnings)
        report = write_report(stage, checked, card, calib_source, stats, thresholds, int8,
                              eval_source, evaluation, config, card_path.name, warnings)
    return CalibrationOutputs(out_dir, out_dir / names.model,
                              out_dir / int8.cache.name if int8.cache is not None else None,
                              out_dir / names.report, out_dir / card_path.name, report)


def output_files(target: str) -> tuple[str, ...]:
    """Every file name ``aue calibrate --target target`` may write into --out (the plots are
    checked when written)."""
    names = OUTPUT_NAMES[target]
    return (names.model, names.report, names.images, CALIBRATION_CACHE_FILENAME,
            CARD_FILENAME,
            Path(names.model).stem + ".card.json")


# ------------------------------------------------------------------ phase 0: the FP32 model
@dataclass(frozen=True)
class CheckedModel:
    """The FP32 model, checked to be one this run can calibrate, and what gets quantised."""

    path: Path
    sha256: str
    model: onnx.ModelProto
    input_name: str
    activations: list[str]       # every tensor whose statistics are collected
    plan: QuantizationPlan
    trt_target: TrtTarget        # from config.trt_version
    warnings: tuple[str, ...]


def check_model(model_path: Path, card: ModelCard, config: CalibrationConfig) -> CheckedModel:
    """Load ``model_path`` and refuse what cannot be calibrated (already quantised, inputs the
    card does not describe, a graph TensorRT would reject, nothing to quantise)."""
    model = load_model(model_path)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise CalibrationError(f"{model_path} is already quantised (it has Q/DQ nodes); "
                               f"calibrate the FP32 model that 'aue export' wrote")
    input_name = _check_model_input(model, card, model_path)
    target = resolve_target(config.trt_version)
    if config.target == "tensorrt":
        # The cache and Q/DQ model are only as parseable as the FP32 graph they annotate.
        raise_for_targets(lint_model(model), (target.name,), str(model_path),
                          "Re-export it with 'aue export' (static ranks, opset 17).")
    with _backend(model_path, config) as fp32:
        LoadedModel(model_path, fp32, card, "FP32")   # the card must describe this model
    plan = plan_quantization(model, tuple(config.quantize_op_types), tuple(config.keep_fp32),
                             config.qdq_placement)
    if not plan.quantized:
        raise CalibrationError(f"{model_path}: no {list(config.quantize_op_types)} node can be "
                               f"quantised (kept: {plan.kept_fp32}, skipped: {plan.skipped}); "
                               f"an int8 model would be identical to the FP32 one")
    return CheckedModel(model_path, sha256_of_files(model_path), model, input_name,
                        activation_tensors(model), plan, target,
                        tuple(f"node {name} left in FP32: {why}" for name, why in plan.skipped))


# ------------------------------------------------------------------ phase 1: statistics
@dataclass(frozen=True)
class Statistics:
    """Histograms of every activation over the calibration faces, and which faces they were."""

    histograms: dict[str, TensorHistogram]
    log: UsageLog
    order: np.ndarray            # the seeded order the calibration faces were drawn in
    warnings: tuple[str, ...]


def collect_statistics(checked: CheckedModel, card: ModelCard, source: FaceSource,
                       config: CalibrationConfig, progress: bool = True) -> Statistics:
    """Run the FP32 model with every activation exposed on ``config.num_images`` faces of
    ``source``; too few usable faces (< ``config.min_images``) is an error."""
    warnings = []
    collector = StatsCollector(checked.activations, config.num_bins)
    log = UsageLog("calibration", config.num_images)
    order = seeded_order(len(source), config.seed)
    measure = with_extra_outputs(checked.model, checked.activations)
    with temporary_model_file(measure) as measure_path, _backend(measure_path, config) as fp32:
        bar = tqdm(total=config.num_images, desc="calibration statistics", unit="img",
                   disable=not progress)
        for batch in iter_face_batches(source, order, log, config.batch_size):
            feeds = _feeds(checked.input_name, card, [item.face for item in batch])
            collector.update(fp32.infer(feeds), len(batch))
            bar.update(len(batch))
        bar.close()
    if log.used < config.min_images:
        raise CalibrationError(
            f"only {log.used} usable calibration images (of {len(source)} "
            f"candidates; skipped: {dict(log.skipped) or 'none'}), at least "
            f"{config.min_images} are needed (min_images); add images or lower --min-images")
    if log.used < config.num_images:
        warnings.append(f"{config.num_images} calibration images requested, only "
                        f"{log.used} usable (skipped: {dict(log.skipped) or 'none'})")
    if log.skipped:
        warnings.append(f"calibration images without a usable face: {dict(log.skipped)}")
    for name, count in collector.nonfinite_tensors().items():
        warnings.append(f"tensor {name}: {count} NaN/inf values on calibration images were left "
                        f"out of its histogram; the FP32 model itself is unstable there")
    return Statistics(collector.histograms, log, order, tuple(warnings))


# ------------------------------------------------------------------ phase 2: thresholds
@dataclass(frozen=True)
class Thresholds:
    """The calibrator's threshold of every tensor."""

    per_tensor: dict[str, Threshold]
    warnings: tuple[str, ...]    # one per kind of note (e.g. tensors zero on every image)

    @property
    def amax(self) -> dict[str, float]:
        return {name: t.amax for name, t in self.per_tensor.items()}


def choose_thresholds(histograms: dict[str, TensorHistogram], config: CalibrationConfig,
                      progress: bool = True) -> Thresholds:
    """``config.method``'s threshold for each histogram; tensors with the same note (a fact
    about how their threshold was chosen) are summarised in one warning."""
    thresholds = compute_thresholds(histograms, config.method, config.percentile,
                                    config.entropy_start_bin, config.entropy_max_clip_fraction,
                                    config.entropy_flatten_zero_bin, progress=progress)
    by_note: dict[str, list[str]] = {}
    for name, t in thresholds.items():
        if t.note:
            by_note.setdefault(t.note, []).append(name)
    warnings = tuple(f"{len(tensors)} tensors: {note} ({', '.join(tensors[:3])}"
                     f"{', ...' if len(tensors) > 3 else ''}; see per_tensor.note)"
                     for note, tensors in by_note.items())
    return Thresholds(thresholds, warnings)


# ------------------------------------------------------------------ phase 3: writers
@dataclass(frozen=True)
class Int8Model:
    """What one target's writer wrote: the INT8 model (with the card it was given) and, for
    target tensorrt, the calibration cache."""

    model: onnx.ModelProto
    path: Path
    facts: dict                             # inspect_qdq / inspect_ort_qdq of the model
    cache: Path | None                      # None for target ort-cpu
    cache_header: str | None
    cache_ranges: dict[str, float]          # tensor -> amax written into the cache
    ort_ranges: dict[str, tuple[float, float]]  # target ort-cpu: uint8 (min, max) per tensor
    warnings: tuple[str, ...]


def calibration_facts(checked: CheckedModel, log: UsageLog, config: CalibrationConfig
                      ) -> dict:
    """How the INT8 model was made: the ``calibration`` entry of its card's provenance."""
    tensorrt = config.target == "tensorrt"
    return {"target": config.target, "method": config.method,
            "calibration_images": log.used,
            "calibration_set_sha256": log.set_sha256(),
            "source_model": checked.path.name,
            "source_model_sha256": checked.sha256,
            "quantized_nodes": len(checked.plan.quantized),
            "qdq_placement": config.qdq_placement if tensorrt else "onnxruntime-qdq",
            "activations": "int8 symmetric" if tensorrt else "uint8 asymmetric",
            "weights": "int8 per-channel" + (
                ", reduce_range (7-bit)" if not tensorrt and config.ort_reduce_range else ""),
            "kept_fp32": list(checked.plan.kept_fp32),
            "percentile": config.percentile if config.method == "percentile" else None}


def cache_left_out(checked: CheckedModel) -> tuple[set[str], set[str]]:
    """Tensors the TensorRT cache leaves out: (what only kept-FP32 layers read or write, the
    model's outputs). Probabilities stay in float: a clipped sigmoid/softmax output scale would
    cap the probabilities TensorRT returns."""
    return (_kept_fp32_tensors(checked.model, checked.plan.kept_fp32),
            {o.name for o in checked.model.graph.output})


def write_tensorrt(checked: CheckedModel, thresholds: Thresholds, config: CalibrationConfig,
                   card: ModelCard, out: Path) -> Int8Model:
    """Target tensorrt into ``out``: the symmetric Q/DQ model (``card`` embedded), checked by
    the TensorRT lint before anything is written, and the implicit-INT8 calibration cache."""
    names = OUTPUT_NAMES["tensorrt"]
    target = checked.trt_target
    warnings = []
    amax = thresholds.amax
    algorithm = ALGORITHM_BY_METHOD[config.method] if config.cache_algorithm == "auto" \
        else config.cache_algorithm
    if algorithm != ALGORITHM_BY_METHOD[config.method]:
        warnings.append(f"cache header says {algorithm} although the ranges come from the "
                        f"{config.method} calibrator (cache_algorithm override)")
    kept_only, model_outputs = cache_left_out(checked)
    cache_ranges = {name: value for name, value in amax.items()
                    if name not in kept_only and name not in model_outputs}
    int8_model = insert_qdq(checked.model, checked.plan, amax)
    lint_notes = raise_for_targets(lint_model(int8_model), (target.name,),
                                   "the Q/DQ model (not written)")
    warnings += [f"TensorRT lint: {f.line((target.name,))}" for f in lint_notes]
    facts = inspect_qdq(int8_model)
    if facts["opset"] != opset_version(checked.model):
        raise CalibrationError(f"the Q/DQ model changed the opset from "
                               f"{opset_version(checked.model)} to {facts['opset']}")
    cache = out / CALIBRATION_CACHE_FILENAME
    write_cache(cache, cache_ranges, target.cache_version_code, algorithm)
    if target.implicit_int8 == "deprecated":
        warnings.append(f"TensorRT {target.name} deprecates implicit INT8 (calibration "
                        f"caches; removed in TensorRT 11): build {names.model} there")
    path = out / names.model
    _save_with_card(int8_model, card, path)
    return Int8Model(int8_model, path, facts, cache,
                     f"TRT-{target.cache_version_code}-{algorithm}", cache_ranges, {},
                     tuple(warnings))


def write_ort(checked: CheckedModel, histograms: dict[str, TensorHistogram],
              thresholds: Thresholds, config: CalibrationConfig, card: ModelCard, out: Path
              ) -> Int8Model:
    """Target ort-cpu into ``out``: the same calibrator's thresholds as uint8 asymmetric ranges,
    a Q/DQ model in the form ONNX Runtime's CPU int8 kernels fuse (``card`` embedded)."""
    ort_ranges = asymmetric_ranges(histograms, thresholds.amax)
    plan = checked.plan
    excluded = tuple(plan.kept_fp32) + tuple(name for name, _why in plan.skipped)
    int8_model = quantize_for_ort(checked.model, ort_ranges, tuple(config.quantize_op_types),
                                  excluded, config.ort_reduce_range)
    facts = inspect_ort_qdq(int8_model, config.ort_reduce_range)
    if facts["problems"]:
        raise CalibrationError("the ort-cpu Q/DQ model is not in the form ONNX Runtime's "
                               "CPU int8 kernels fuse, not written: " +
                               "; ".join(facts["problems"][:5]))
    facts["opset"] = opset_version(int8_model)
    path = out / OUTPUT_NAMES["ort-cpu"].model
    _save_with_card(int8_model, card, path)
    return Int8Model(int8_model, path, facts, None, None, {}, ort_ranges, ())


def _save_with_card(model: onnx.ModelProto, card: ModelCard, path: Path) -> None:
    embed_card_in_onnx(model, card)
    onnx.save(model, str(path))


# ------------------------------------------------------------------ phase 4: evaluation
@dataclass(frozen=True)
class Evaluation:
    """FP32 vs INT8 on held-out faces; ``summary`` None when nothing was measured."""

    log: UsageLog | None
    summary: dict | None                    # OutputAgreement.summary()
    layer_snr_db: dict[str, float]          # FP32 layer output -> SNR of its INT8 twin
    warnings: tuple[str, ...]


def evaluate(checked: CheckedModel, int8: Int8Model, card: ModelCard,
             source: FaceSource | None, stats: Statistics, config: CalibrationConfig,
             continues_calib: bool = False, progress: bool = True) -> Evaluation:
    """FP32 vs INT8 files as written, on held-out faces of ``source`` that did not calibrate
    (``continues_calib``: the faces after the calibration ones in the same seeded order)."""
    if source is None:
        return Evaluation(None, None, {}, ("no held-out images: FP32 vs INT8 agreement and "
                                           "accuracy were NOT measured",))
    warnings = []
    log, agreement, node_snr = _evaluate(
        checked.model, int8.model, checked.path, int8.path, card, source, stats.log,
        stats.order if continues_calib else None, checked.input_name, checked.plan, config,
        progress)
    if log.used == 0:
        warnings.append("the held-out set is empty (every image was skipped or used for "
                        "calibration): agreement and accuracy were NOT measured")
    if log.excluded_overlap:
        warnings.append(f"{log.excluded_overlap} held-out images have the same pixels "
                        f"as a calibration image and were left out of the evaluation")
    return Evaluation(log, agreement.summary(), node_snr, tuple(warnings))


# ------------------------------------------------------------------ phase 5: report
def write_report(out: Path, checked: CheckedModel, card: ModelCard, calib_source: FaceSource,
                 stats: Statistics, thresholds: Thresholds, int8: Int8Model,
                 eval_source: FaceSource | None, evaluation: Evaluation,
                 config: CalibrationConfig, card_name: str, warnings: list[str]) -> dict:
    """The report JSON, the image list and the plots of one run into ``out``; returns the
    report. ``warnings`` are the earlier phases'; a clipping warning may be added."""
    names = OUTPUT_NAMES[config.target]
    amax = thresholds.amax
    warnings = list(warnings)
    per_tensor = {}
    heavily_clipped: list[str] = []
    qdq_tensors = {node.input[0] for node in int8.model.graph.node
                   if node.op_type == "QuantizeLinear"} & set(checked.activations)
    for name in checked.activations:
        hist = stats.histograms[name]
        per_tensor[name] = {**hist.summary(), "amax": amax[name],
                            "scale": amax[name] / 127.0,
                            "quantised_in_qdq_model": name in qdq_tensors,
                            "in_cache": name in int8.cache_ranges,
                            "histogram_snr_db": _finite(quantization_snr_db(hist, amax[name])),
                            "clipped_fraction": clipped_fraction(hist, amax[name])}
        if int8.ort_ranges:
            per_tensor[name]["uint8_range"] = list(int8.ort_ranges[name])
        if per_tensor[name]["clipped_fraction"] > CLIP_WARNING_FRACTION and \
                (name in qdq_tensors or name in int8.cache_ranges):
            heavily_clipped.append(name)
        if thresholds.per_tensor[name].note:
            per_tensor[name]["note"] = thresholds.per_tensor[name].note
    if heavily_clipped:
        heavily_clipped.sort(key=lambda n: -per_tensor[n]["clipped_fraction"])
        worst = ", ".join(f"{n} ({100 * per_tensor[n]['clipped_fraction']:.1f} %)"
                          for n in heavily_clipped[:3])
        warnings.append(f"{len(heavily_clipped)} tensors have more than "
                        f"{100 * CLIP_WARNING_FRACTION:g} % of their calibration values above "
                        f"the {config.method} threshold (worst: {worst}; all in per_tensor."
                        f"clipped_fraction); if accuracy suffers, try --method percentile or "
                        f"--keep-fp32 for the layers reading them")
    worst_inputs = sorted(qdq_tensors, key=lambda n: per_tensor[n]["histogram_snr_db"]
                          if per_tensor[n]["histogram_snr_db"] is not None else math.inf)
    node_snr = evaluation.layer_snr_db
    most_hurt = sorted(node_snr.items(), key=lambda kv: kv[1])[:MOST_HURT_COUNT]
    plots = write_plots(out, stats.histograms,
                        worst_inputs[:config.plot_worst_tensors], amax, config.method,
                        config.percentile, config.entropy_start_bin,
                        config.entropy_max_clip_fraction, config.entropy_flatten_zero_bin,
                        node_snr, names.plot_suffix) \
        if config.plot_worst_tensors else []
    _write_image_list(out / names.images, stats.log, evaluation.log)
    plan = checked.plan
    kept_only, model_outputs = cache_left_out(checked)
    report = {
        "schema": REPORT_SCHEMA,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "aue_edge_version": __version__,
        "model": {"path": str(checked.path), "sha256": checked.sha256,
                  "model_name": card.model_name, "opset": opset_version(checked.model),
                  "input": checked.input_name},
        "target": config.target,
        "method": config.method,
        "config": config.to_dict(),
        "calibration_images": stats.log.summary(calib_source),
        "evaluation_images": evaluation.log.summary(eval_source)
        if evaluation.log is not None and eval_source is not None else None,
        "image_list": names.images,
        "outputs": {
            "int8_model": int8.path.name, "card": card_name,
            "cache": int8.cache.name if int8.cache is not None else None,
            "cache_header": int8.cache_header,
            "cache_tensors": len(int8.cache_ranges),
            "qdq": {k: v for k, v in int8.facts.items()
                    if k not in ("problems", "per_tensor_weights")},
            "plots": plots,
        },
        "quantization": {"quantized_nodes": [q.name for q in plan.quantized],
                         "kept_fp32": list(plan.kept_fp32),
                         "weights_per_tensor": list(plan.per_tensor_weights)
                         if config.target == "tensorrt" else int8.facts["per_tensor_weights"],
                         "left_in_fp32": [{"node": n, "why": w} for n, w in plan.skipped],
                         "cache_left_out_for_kept_fp32": sorted(kept_only),
                         "cache_left_out_model_outputs": sorted(model_outputs)},
        "evaluation": evaluation.summary,
        "most_hurt": [{"tensor": name, "snr_db_vs_fp32": _finite(snr)}
                      for name, snr in most_hurt],
        "layer_snr_db": {name: _finite(snr) for name, snr in node_snr.items()},
        "per_tensor": per_tensor,
        "warnings": warnings,
    }
    (out / names.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _finite(value: float) -> float | None:
    """JSON has no inf: a perfect (infinite) SNR is written as null."""
    return float(value) if math.isfinite(value) else None


def _card_metrics(summary: dict | None, log: UsageLog | None, source: FaceSource | None
                  ) -> dict:
    if summary is None or log is None or source is None:
        return {"measured": False}
    out = {"measured": True, "held_out": source.describe().get("split") or
           source.describe().get("folder"), "num_images": summary["num_images"],
           "emotion_top1_agreement": summary.get("emotion_top1_agreement")}
    if summary.get("accuracy"):
        out.update(accuracy_fp32=summary["accuracy"]["fp32"],
                   accuracy_int8=summary["accuracy"]["int8"])
    return out


def _kept_fp32_tensors(model: onnx.ModelProto, kept: list[str]) -> set[str]:
    """Outputs of kept-FP32 nodes, and inputs read only by kept-FP32 nodes.

    Leaving them out of the implicit cache stops TensorRT from running those layers in int8
    (a layer needs scales on its tensors to be picked for int8).
    """
    if not kept:
        return set()
    kept_set = set(kept)
    is_kept = [(n.name or (n.output[0] if n.output else n.op_type)) in kept_set
               for n in model.graph.node]
    readers: dict[str, list[bool]] = {}
    for node, flag in zip(model.graph.node, is_kept):
        for name in node.input:
            readers.setdefault(name, []).append(flag)
    out = set()
    for node, flag in zip(model.graph.node, is_kept):
        if flag:
            out.update(node.output)
            out.update(name for name in node.input if all(readers.get(name, [False])))
    return out


def _write_card(card: ModelCard, out_dir: Path, stage: Path, model_path: Path,
                names: OutputNames, warnings: list[str]) -> Path:
    """The INT8 card beside its model (written into ``stage``, named for ``out_dir``): target
    tensorrt writes card.json unless that folder's card.json is the FP32 model's (then
    model.int8.card.json); target ort-cpu always writes model.int8.ort.card.json, so a folder's
    card.json never describes it."""
    named = Path(names.model).stem + ".card.json"
    if names.model != INT8_QDQ_MODEL_FILENAME:
        return card.save(stage / named)
    beside = out_dir / CARD_FILENAME
    if out_dir.resolve() == model_path.parent.resolve() and beside.is_file():
        warnings.append(f"{beside} belongs to the FP32 model and was kept; the INT8 card is in "
                        f"{named} and in the ONNX metadata of {names.model}")
        return card.save(stage / named)
    return card.save(stage / CARD_FILENAME)


def _layer_outputs(model: onnx.ModelProto, int8_model: onnx.ModelProto,
                   plan: QuantizationPlan, through_output_qdq: bool = False) -> dict[str, str]:
    """FP32 tensor -> INT8 tensor compared for each quantised layer's output (per-layer SNR).

    The INT8 side is the layer's output as the INT8 graph names it. ONNX Runtime's quantizer
    (target ort-cpu) folds a Relu that follows a Conv into the Conv's uint8 output range: the
    Conv output then carries the Relu's name but holds pre-ReLU values until its
    QuantizeLinear clamps them. With ``through_output_qdq`` the INT8 side is therefore the
    DequantizeLinear output after the layer (what the next layer reads), compared with the
    FP32 tensor of the same name (the Relu output)."""
    fp32_tensors = {name for node in model.graph.node for name in node.output}
    int8_outputs = {node.name: node.output[0] for node in int8_model.graph.node
                    if node.name and node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in int8_model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs: dict[str, str] = {}
    for entry in plan.quantized:
        node = model.graph.node[entry.node_index]
        name = int8_outputs.get(node.name, node.output[0]) if node.name else node.output[0]
        if name not in fp32_tensors or name in pairs:
            continue
        int8_name = name
        if through_output_qdq:
            quantize = readers.get(name, [])
            if len(quantize) == 1 and quantize[0].op_type == "QuantizeLinear":
                dequantize = readers.get(quantize[0].output[0], [])
                if len(dequantize) == 1 and dequantize[0].op_type == "DequantizeLinear":
                    int8_name = dequantize[0].output[0]
        pairs[name] = int8_name
    return pairs


def _write_image_list(path: Path, calib: UsageLog, held_out: UsageLog | None) -> None:
    lines = ["role\tsha256\tkey"]
    for log in (calib, held_out):
        if log is not None:
            lines += [f"{log.role}\t{h}\t{k}" for k, h in zip(log.keys, log.hashes)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _evaluate(model: onnx.ModelProto, int8_model: onnx.ModelProto, model_path: Path,
              int8_path: Path, card: ModelCard, eval_source: FaceSource, calib_log: UsageLog,
              calib_order: np.ndarray | None, input_name: str, plan: QuantizationPlan,
              config: CalibrationConfig, progress: bool
              ) -> tuple[UsageLog, OutputAgreement, dict[str, float]]:
    """FP32 vs INT8 files as shipped, on held-out faces; per-layer SNR (from copies exposing the
    layer outputs) on the first ``snr_images`` of them."""
    exclude = set(calib_log.hashes)
    if calib_order is not None:
        order, start = calib_order, calib_log.next_position
    else:
        order, start = seeded_order(len(eval_source), config.seed + 1), 0
    eval_log = UsageLog("evaluation", config.eval_images)
    agreement = OutputAgreement(card, _label_map(eval_source, card))
    layer_pairs = _layer_outputs(model, int8_model, plan,
                                 through_output_qdq=config.target == "ort-cpu")
    snr = TensorSnr(list(layer_pairs))
    snr_left = config.snr_images
    fp32_layers_model = with_extra_outputs(model, list(layer_pairs))
    int8_layers_model = with_extra_outputs(int8_model, list(layer_pairs.values()))
    with temporary_model_file(fp32_layers_model) as fp32_layers_path, \
            temporary_model_file(int8_layers_model) as int8_layers_path, \
            _backend(model_path, config) as fp32, _backend(int8_path, config) as int8, \
            _backend(fp32_layers_path, config) as fp32_layers, \
            _backend(int8_layers_path, config) as int8_layers:
        total = config.eval_images or max(len(order) - start, 0)
        bar = tqdm(total=total, desc="held-out FP32 vs INT8", unit="img", disable=not progress)
        for batch in iter_face_batches(eval_source, order, eval_log, config.batch_size,
                                       exclude, start):
            feeds = _feeds(input_name, card, [item.face for item in batch])
            agreement.update(fp32.infer(feeds), int8.infer(feeds),
                             [item.label for item in batch])
            if snr_left > 0:
                take = min(snr_left, len(batch))
                few = {name: value[:take] for name, value in feeds.items()}
                int8_values = int8_layers.infer(few)
                snr.update(fp32_layers.infer(few),
                           {fp32_name: int8_values[int8_name]
                            for fp32_name, int8_name in layer_pairs.items()})
                snr_left -= take
            bar.update(len(batch))
        bar.close()
    return eval_log, agreement, snr.snr_db() if config.snr_images and eval_log.used else {}
