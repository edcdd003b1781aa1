"""``aue calibrate``: INT8 calibration of an exported ONNX model on real faces.

    aue calibrate MODEL.onnx --dataset ferplus --root DIR --split train --method entropy \\
        --num-images 512 --out OUTDIR [--eval-split valid --eval-images 1000]
    aue calibrate MODEL.onnx --data PHOTOS_DIR --method percentile --percentile 99.99 \\
        --num-images 300 --out OUTDIR [--eval-data OTHER_DIR]
    aue calibrate MODEL.onnx ... --target ort-cpu    # the INT8 model for ONNX Runtime on a CPU

Target tensorrt (default) writes OUTDIR/model.int8.onnx (+ card), calibration.cache,
calibration_report.json, plots and calibration_images.tsv; target ort-cpu writes
model.int8.ort.onnx, model.int8.ort.card.json, calibration_report.ort.json, plots *.ort.png
and calibration_images.ort.tsv (no cache). Defaults come from config/calibration.yaml
(``--config`` to use another file); flags override them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from aue_edge.calibration.config import METHODS, QDQ_PLACEMENTS, TARGETS, load_config
from aue_edge.core.errors import ConfigError
from aue_edge.edge.trt_cache import CACHE_ALGORITHMS
from aue_edge.edge.model_card import ModelCard, find_card
from aue_edge.edge.outputs import prepare_output_dir, remove_if_empty


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aue calibrate",
        description="INT8 calibration: TensorRT calibration cache (TensorRT 8.5), explicit "
                    "Q/DQ ONNX (TensorRT 10+, ONNX Runtime) and an FP32-vs-INT8 report.")
    parser.add_argument("model", type=Path, help="FP32 ONNX model exported by 'aue export'")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, metavar="DIR",
                      help="folder of face photos (run through YuNet + alignment)")
    data.add_argument("--dataset", metavar="NAME",
                      help="data set reader name, e.g. ferplus (see docs/data.md)")
    parser.add_argument("--root", type=Path, help="data set root (with --dataset)")
    parser.add_argument("--split", default="train",
                        help="data set split for calibration (default: train)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUTDIR",
                        help="output folder (created; existing outputs are replaced)")
    parser.add_argument("--config", type=Path, help="calibration YAML (default: "
                                                    "config/calibration.yaml)")
    parser.add_argument("--card", type=Path,
                        help="model card JSON for a model that has none beside it or inside it")
    parser.add_argument("--target", choices=TARGETS,
                        help="tensorrt (default): model.int8.onnx, symmetric int8 Q/DQ for "
                             "TensorRT + calibration.cache; ort-cpu: model.int8.ort.onnx, uint8 "
                             "activations that ONNX Runtime's CPU int8 kernels run")
    parser.add_argument("--ort-reduce-range", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="--target ort-cpu: 7-bit weights, against int16 saturation on x86 "
                             "CPUs without VNNI (default from config: on); --no-ort-reduce-range "
                             "on VNNI CPUs and ARM")
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--num-images", type=int, help="calibration images to use")
    parser.add_argument("--min-images", type=int,
                        help="fewer usable calibration images than this is an error")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--percentile", type=float,
                        help="percentile of |x| kept by --method percentile (e.g. 99.99)")
    held_out = parser.add_mutually_exclusive_group()
    held_out.add_argument("--eval-split",
                          help="held-out split of the same data set (default from config: "
                               "valid); never the calibration split")
    held_out.add_argument("--eval-data", type=Path, metavar="DIR",
                          help="held-out folder of photos (default with --data: the photos "
                               "of --data not used for calibration)")
    held_out.add_argument("--no-eval", action="store_true",
                          help="skip the held-out comparison (recorded as a warning)")
    parser.add_argument("--eval-images", type=int, help="held-out images (0 = all)")
    parser.add_argument("--snr-images", type=int,
                        help="held-out images for the per-layer SNR (0 = skip)")
    parser.add_argument("--keep-fp32", nargs="+", metavar="NAME",
                        help="ONNX node names (or their output tensors) kept in FP32")
    parser.add_argument("--qdq-placement", choices=QDQ_PLACEMENTS,
                        help="Q/DQ on weighted-op inputs only (default, TensorRT's "
                             "recommendation) or also on Conv outputs (int8 convolutions in "
                             "ONNX Runtime CPU, less accurate)")
    parser.add_argument("--trt-version",
                        help="TensorRT the artefacts are for: 8.5 (JetPack 5.1, default), 8.6 "
                             "(JetPack 6.0), 10.x (JetPack 6.1/6.2) or a full version such as "
                             "8.6.2; sets the cache header and the lint's rules")
    parser.add_argument("--cache-algorithm", choices=("auto",) + CACHE_ALGORITHMS,
                        help="calibrator name in the cache header (auto: the method's; "
                             "EntropyCalibration2 lets trtexec --calib load any cache)")
    parser.add_argument("--data-aligned", action="store_true", default=None,
                        help="--data/--eval-data images are already aligned face crops")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--num-threads", type=int, help="ONNX Runtime threads (0 = default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def calibrate_main(argv: list[str]) -> int:
    from aue_edge.calibration.calibrate import output_files

    args = build_parser().parse_args(argv)
    config = load_config(args.config).replace(
        target=args.target, ort_reduce_range=args.ort_reduce_range, method=args.method,
        num_images=args.num_images, min_images=args.min_images,
        batch_size=args.batch_size, percentile=args.percentile, eval_split=args.eval_split,
        eval_images=args.eval_images, snr_images=args.snr_images,
        keep_fp32=tuple(args.keep_fp32) if args.keep_fp32 else None,
        trt_version=args.trt_version, cache_algorithm=args.cache_algorithm,
        qdq_placement=args.qdq_placement,
        data_aligned=args.data_aligned, seed=args.seed, num_threads=args.num_threads)
    if config.target == "ort-cpu" and args.qdq_placement is not None:
        raise ConfigError("--qdq-placement applies to --target tensorrt; with --target ort-cpu "
                          "ONNX Runtime's quantizer places Q/DQ on the inputs and outputs of "
                          "each quantised op (drop the flag)")
    if config.target == "tensorrt" and args.ort_reduce_range is not None:
        raise ConfigError("--ort-reduce-range applies to --target ort-cpu only")
    if args.num_images is not None and args.min_images is None and \
            config.min_images > config.num_images:
        config = config.replace(min_images=config.num_images)
    # --out first: an unwritable folder fails in one line before any data or model is read.
    created = prepare_output_dir(args.out, output_files(config.target))
    try:
        return _calibrate_main(args, config)
    except BaseException:
        if created:
            remove_if_empty(args.out)
        raise


def _calibrate_main(args: argparse.Namespace, config) -> int:
    from aue_edge.calibration.calibrate import calibrate
    from aue_edge.calibration.sources import DatasetFaces, FolderFaces

    card = ModelCard.load(args.card) if args.card else find_card(args.model)

    eval_continues = False
    if args.dataset:
        if args.root is None:
            raise ConfigError("--dataset needs --root (the data set folder)")
        calib_source = DatasetFaces(args.dataset, args.root, args.split)
        eval_source = None
        if not args.no_eval and args.eval_data is None:
            if config.eval_split == args.split:
                raise ConfigError(f"--eval-split {config.eval_split} is the calibration split: "
                                  f"the held-out images must not overlap the calibration ones; "
                                  f"choose another split (valid or test)")
            eval_source = DatasetFaces(args.dataset, args.root, config.eval_split)
    else:
        if args.root is not None:
            raise ConfigError("--root goes with --dataset; with --data the folder is the data")
        calib_source = FolderFaces(args.data, card, config.data_aligned,
                                   config.detector_score_threshold)
        eval_source = None
        if not args.no_eval and args.eval_data is None:
            eval_source, eval_continues = calib_source, True
    if args.eval_data is not None:
        eval_source = FolderFaces(args.eval_data, card, config.data_aligned,
                                  config.detector_score_threshold)
    try:
        result = calibrate(args.model, card, calib_source, eval_source, config, args.out,
                           eval_continues_calib=eval_continues, progress=not args.no_progress)
    finally:
        calib_source.close()
        if eval_source is not None and eval_source is not calib_source:
            eval_source.close()
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    report = result.summary
    used = report["calibration_images"]["used"]
    print(f"calibrated {report['model']['path']} with {report['method']} on {used} images")
    print(f"  INT8 Q/DQ model : {result.int8_model} (target {report['target']})")
    print(f"  model card      : {result.card}")
    if result.cache is not None:
        print(f"  TensorRT cache  : {result.cache} ({report['outputs']['cache_header']}, "
              f"{report['outputs']['cache_tensors']} tensors)")
    print(f"  report          : {result.report}")
    evaluation = report["evaluation"]
    if evaluation:
        line = f"  held-out        : {evaluation['num_images']} images"
        if "emotion_top1_agreement" in evaluation:
            line += f", top-1 agreement {100 * evaluation['emotion_top1_agreement']:.2f} %"
        print(line)
        accuracy = evaluation.get("accuracy")
        if accuracy:
            print(f"  accuracy        : FP32 {100 * accuracy['fp32']:.2f} %, INT8 "
                  f"{100 * accuracy['int8']:.2f} % ({accuracy['delta_points']:+.2f} points)")
    for warning in report["warnings"]:
        print(f"  warning: {warning}")
