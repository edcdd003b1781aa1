"""``aue train``, ``aue export`` and ``aue evaluate`` (train stage, host with torch).

Each ``*_main(argv) -> int`` parses its own flags; ``aue_edge/cli.py`` dispatches to them and
turns typed errors into one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aue_edge.core.config_files import read_json
from aue_edge.core.errors import ConfigError


def train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aue train", description="Train a model from a YAML config "
        "(aue_edge/train/configs/); its model.name picks the trainer: AUE-CRL (or its baseline: "
        "stage 1 expression, stage 2 AU from knowledge pseudo labels, stage 3 attention fusion) "
        "or an AU detector (LP-Net, GTLE-Net, KDSRL).")
    parser.add_argument("config", help="training config YAML (see aue_edge/train/configs/)")
    parser.add_argument("--stage", action="append", type=int, choices=(1, 2, 3),
                        help="AUE-CRL: run only this stage (repeatable; config: "
                             "aue_crl.stages); later stages start from the previous stage's "
                             "best checkpoint in --out-dir")
    parser.add_argument("--init", metavar="CKPT",
                        help="start the first stage from this checkpoint instead")
    parser.add_argument("--resume", action="store_true",
                        help="continue each stage from its stageN_last.pt in --out-dir")
    parser.add_argument("--out-dir",
                        help="where checkpoints and reports go (config: run.out_dir)")
    parser.add_argument("--root", help="data set folder (config: data.root)")
    parser.add_argument("--packed", help="packed arrays file (config: data.packed)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (config: run.device)")
    parser.add_argument("--pretrained", metavar="PATH",
                        help="AUE-CRL: torchvision-format ResNet weights for the backbone "
                             "(config: model.pretrained)")
    parser.add_argument("--seed", type=int, help="config: run.seed")
    parser.add_argument("--batch-size", type=int, help="config: run.batch_size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set aue_crl.stage1.epochs=30 or "
                             "--set run.num_threads=2 (repeatable; VALUE is YAML)")
    parser.add_argument("--pack-data", metavar="FILE",
                        help="write the config's train and validation splits to a packed "
                             "arrays file (lzma .npz.xz) and exit; train elsewhere with "
                             "--packed FILE")
    parser.add_argument("--pack-splits", nargs="+", metavar="SPLIT",
                        help="splits to pack (default: the config's train and val splits)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = parser.parse_args(argv)

    from aue_edge.train.run_config import cli_overrides, read_config_family

    overrides = cli_overrides(args.set, out_dir=args.out_dir, root=args.root,
                              packed=args.packed, device=args.device, seed=args.seed,
                              batch_size=args.batch_size)
    family = read_config_family(args.config)
    if family == "student":  # distilled from an exported AUE-CRL model
        from aue_edge.train import distill

        refused = [flag for flag, value in (("--stage", args.stage), ("--init", args.init),
                                            ("--pretrained", args.pretrained),
                                            ("--pack-data", args.pack_data)) if value]
        if refused:
            raise ConfigError(f"{', '.join(refused)}: not for a student model (its one stage "
                              f"starts from scratch; its teacher is distill.teacher); pack "
                              f"FER+ with an AUE-CRL config")
        distill.train(distill.load_distill_config(args.config, overrides), resume=args.resume,
                      progress=not args.no_progress)
        return 0
    if family != "aue_crl":  # LP-Net, GTLE-Net, KDSRL: own trainers
        from aue_edge.train.au.run import au_flag_overrides, train_from_config

        if args.pack_data:
            raise ConfigError("--pack-data: pack FER+ with an AUE-CRL config (the arrays are the "
                              "same); AU configs read the file through data.packed / --packed")
        overrides.update(au_flag_overrides(init=args.init, resume=args.resume,
                                           progress=not args.no_progress, stages=args.stage,
                                           pretrained=args.pretrained))
        train_from_config(args.config, overrides)
        return 0

    from aue_edge.train import trainer
    from aue_edge.train.arrays import load_split_arrays, pack_arrays
    from aue_edge.train.config import load_config

    if args.pretrained is not None:
        overrides["model.pretrained"] = args.pretrained
    if args.stage:
        overrides["aue_crl.stages"] = sorted(set(args.stage))
    cfg = load_config(args.config, overrides)
    if args.pack_data:
        splits = args.pack_splits or [cfg.data.train_split, cfg.data.val_split]
        arrays = {s: load_split_arrays(cfg.data, s, progress=not args.no_progress)
                  for s in splits}
        path = pack_arrays(args.pack_data, arrays)
        counts = {s: len(a.labels) for s, a in arrays.items()}
        print(f"packed {counts} images into {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    trainer.train(cfg, resume=args.resume, init_checkpoint=args.init,
                  progress=not args.no_progress)
    return 0


def card_metrics(result: dict, origin: str) -> dict:
    """The part of an ``aue evaluate`` result that goes into a model card's metrics."""
    try:
        if result.get("dataset") == "ckplus" and "oof_thresholds" in result:
            # an AU detector's CK+ cross-validation run (aue train, data.dataset: ckplus)
            reference = result.get("reference", {}).get("au", {})
            return {"ckplus_cv": {
                "protocol": result["protocol"] + "; the detector's F1 at 0.5, the default "
                            "model's at its card's thresholds (f1_fitted: thresholds fitted on "
                            "training folds)",
                "num_images": result["num_images"],
                "au": {m: {k: round(v[k], 4) for k in ("mean_f1", "mean_f1_fitted", "mean_auc")}
                       for m, v in result["au"].items()},
                "default_model": {k: round(v, 4) for k, v in reference.get("model", {}).items()
                                  if k.startswith("mean_")}}}
        if result.get("dataset") == "ckplus":
            return {"ckplus_cv": {
                "protocol": "subject-exclusive 3-fold CV on ../shared/data/ckplus (folds.py); "
                            "model k scored on fold k; F1 at the model's thresholds, baselines "
                            "at 0.5 (f1_fitted: thresholds fitted on training folds)",
                "folds": result["folds"], "num_images": result["num_images"],
                "emotion_accuracy": result["emotion_accuracy"],
                "au": {m: {k: round(v[k], 4) for k in ("mean_f1", "mean_f1_fitted", "mean_auc")}
                       for m, v in result["au"].items() if "mean_f1" in v}}}
        return {f"{result['dataset']}_{result['split']}": {
            k: result[k] for k in ("accuracy", "mean_class_accuracy", "num_images")}}
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{origin} is not an 'aue evaluate --json' result (missing {exc})") \
            from None


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aue export", description="Export an 'aue train' checkpoint to ONNX (dynamic "
        "batch, weights inside) with its model card in the metadata and as card.json.")
    parser.add_argument("checkpoint", help="checkpoint written by 'aue train' (model.pt)")
    parser.add_argument("--out", required=True, help="output folder (model.onnx + card.json)")
    parser.add_argument("--opset", type=int, default=17,
                        help="ONNX opset: 17 (default; TensorRT 8.5 / JetPack 5, legacy "
                             "exporter) or 18+ (dynamo exporter)")
    parser.add_argument("--metrics-json", metavar="FILE", action="append", default=[],
                        help="an 'aue evaluate --json' result to record in the card's metrics "
                             "(repeatable; a CK+ evaluation of the recipe's fold models is "
                             "recorded as ckplus_cv)")
    args = parser.parse_args(argv)

    from aue_edge.train.export import export_checkpoint

    metrics = {}
    for file in args.metrics_json:
        result = read_json(file, "'aue evaluate --json' result", "write it with 'aue evaluate "
                           "... --json --out-json FILE'")
        metrics.update(card_metrics(result, file))
    path = export_checkpoint(args.checkpoint, args.out, args.opset, metrics or None)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.parent / 'card.json'}")
    return 0


def import_onnx_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aue import-onnx", description="Rebuild an 'aue train' checkpoint from an AUE-CRL "
        "model.onnx written by 'aue export' (e.g. the shipped model, to train its stages 2-3 "
        "on top of its backbone); checked against ONNX Runtime.")
    parser.add_argument("onnx", help="model.onnx with its card in the metadata")
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    args = parser.parse_args(argv)

    from aue_edge.train.onnx_import import checkpoint_from_onnx

    report = checkpoint_from_onnx(args.onnx, args.out)
    print(f"wrote {report['checkpoint']} ({report['model_name']}, {report['loaded_tensors']} "
          f"tensors); largest output difference to ONNX Runtime "
          f"{max(report['max_abs_diff_vs_onnxruntime'].values()):.2e}")
    return 0


def evaluate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="aue evaluate", description="Accuracy of a checkpoint (.pt, torch) or an ONNX "
        "model (ONNX Runtime, the edge backend) on a data set split, with the edge "
        "preprocessing.")
    parser.add_argument("model", nargs="+",
                        help="model.onnx (card.json beside it or in its metadata) or a "
                             "checkpoint .pt; for --dataset ckplus also three fold models "
                             "(model k scored on fold k)")
    parser.add_argument("--dataset", default="ferplus")
    parser.add_argument("--root", default="", help="data set folder in its published layout")
    parser.add_argument("--packed", default="", help="packed arrays file instead of --root")
    parser.add_argument("--split", default="test")
    parser.add_argument("--label-mode", default="majority", choices=("majority", "probability"))
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--providers", default="cpu",
                        help="ONNX Runtime providers, comma separated (cpu, cuda, tensorrt)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device for checkpoints")
    parser.add_argument("--confusion-png", metavar="FILE", help="write the confusion matrix")
    parser.add_argument("--out-json", metavar="FILE", help="also write the JSON to a file")
    parser.add_argument("--json", action="store_true",
                        help="print the full JSON object (default: a short summary)")
    parser.add_argument("--fold", type=int, choices=(1, 2, 3),
                        help="bp4d/disfa/ckplus: score this fold's test subjects (default: "
                             "all)")
    parser.add_argument("--out-dir", default="runs/au_evaluation",
                        help="bp4d/disfa/ckplus: where the F1 table and bar chart go")
    args = parser.parse_args(argv)
    if not args.root and not args.packed:
        parser.error("give --root DIR (data set folder) or --packed FILE")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0: every image), got {args.limit}")
    if len(args.model) > 1 and args.dataset != "ckplus":
        parser.error("several models are for --dataset ckplus (one per fold)")
    if args.dataset == "ckplus":
        return _evaluate_ckplus(args)
    args.model = args.model[0]
    if args.dataset in ("bp4d", "disfa"):  # AU detectors: F1-frame per AU
        from aue_edge.train.au.run import evaluate_au_detector

        result = evaluate_au_detector(args.model, args.dataset, args.root, args.out_dir,
                                      fold=args.fold, max_images=args.limit or None,
                                      batch_size=args.batch_size, progress=not args.json)
        print(json.dumps(result, indent=2))
        return 0

    from aue_edge.train.evaluate import evaluate_model

    result = evaluate_model(args.model, args.dataset, args.root, args.split, args.label_mode,
                            args.packed, args.limit, args.batch_size,
                            tuple(p.strip() for p in args.providers.split(",") if p.strip()),
                            args.threads, args.device, args.confusion_png,
                            progress=not args.json)
    if not _write_result(result, args):
        print(f"{result['model_name']} on {args.dataset} {args.split}: accuracy "
              f"{result['accuracy']:.4f}, mean class accuracy "
              f"{result['mean_class_accuracy']:.4f}, {result['num_images']} images",
              file=sys.stdout)
    return 0


def _write_result(result: dict, args: argparse.Namespace) -> bool:
    """``--out-json`` and ``--json`` of ``aue evaluate``; True when the JSON was printed."""
    text = json.dumps(result, indent=2)
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    return bool(args.json)


def _evaluate_ckplus(args: argparse.Namespace) -> int:
    from aue_edge.train.ckplus_eval import evaluate_ckplus

    result = evaluate_ckplus(args.model, args.root, args.fold, args.out_dir,
                             tuple(p.strip() for p in args.providers.split(",") if p.strip()),
                             args.threads, args.device, args.batch_size, progress=not args.json)
    if _write_result(result, args):
        return 0
    acc = result["emotion_accuracy"]
    print(f"{result['model_name']} on CK+ folds {result['folds']} ({result['num_subjects']} "
          f"subjects, {result['num_images']} faces): emotion accuracy {acc['model']:.4f} "
          f"(stacked read-out {acc['stacked']:.4f})")
    print(f"{'AU output':<11} {'mean F1':>8} {'F1 fitted':>9} {'mean AUC':>9}")
    for name, scores in result["au"].items():
        if "mean_f1" in scores:
            print(f"{name:<11} {scores['mean_f1']:>8.3f} {scores['mean_f1_fitted']:>9.3f} "
                  f"{scores['mean_auc']:>9.3f}")
    print(f"per-AU table and chart: {Path(args.out_dir) / 'ckplus_evaluation.json'}, "
          f"{result['plot']}")
    return 0
