"""The AUE-CRL ablation of docs/training.md: stages 2-3 variants on one frozen stage-1 backbone,
several seeds each, judged on FER+ test and on CK+ with subject-exclusive cross-validation.

Train stage (host). ``python -m aue_edge.train.ablation --init STAGE1.pt --out runs/ablation``
trains every (variant, seed[, CK+ fold]) that has no ``model.onnx`` yet in ``--out`` (so an
interrupted run continues), evaluates each, and writes ``ablation.json`` and ``ablation.md``.

Variants (all from the same stage-1 checkpoint; the backbone stays frozen, as in the paper):

* ``backbone``: no stages 2-3; the stage-1 classifier pred1 (the backbone baseline row). Its AU
  numbers are the knowledge read-out and stacked read-out of its emotion output only.
* ``paper``: the paper's stages 2-3 as written: MSE to pseudo labels, SGD (lr 0.01 / 0.001),
  softmax attention with the AU-pair loss on it. One departure: its fused classifier starts
  from pred1 like the others' (``init_fused_from_pred1``), because a classifier from scratch
  does not converge in this CPU budget (59 % FER+ test after one 2,500-image epoch: a budget
  effect, not a property of the method).
* ``fixed``: the fixes of the shipped recipe (BCE summed over AUs, AdamW, dropout on, sigmoid
  gates the pair loss can act on, fused head from pred1 with non-zero f_a columns), FER+
  pseudo labels only.
* ``no_attention``: ``fixed`` with uniform weights (``attention: mean``).
* ``fixed_ckplus``: ``fixed`` + CK+ faces with their real FACS codes in every batch (the shipped
  recipe); scored with three fold models per seed, model k never having seen fold k.

Every variant re-initialises the stage-2 and stage-3 modules (``reinit``), so all start from the
same frozen backbone and its pred1 and nothing else. The budget is smaller than the shipped
model's (``--fer-images``, ``--epochs2``, ``--epochs3``) so that 3 seeds of every variant fit a
CPU session; it is the same for every variant.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from aue_edge.edge.model_card import FP32_MODEL_FILENAME

CONFIG = Path(__file__).resolve().parent / "configs" / "aue_crl_r18_au_ckplus.yaml"

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"model.kwargs": {"attention": "kcaus"},
              "data.ckplus_root": "",
              "aue_crl.stage2.au_loss": "mse", "aue_crl.stage2.optimizer": "sgd",
              "aue_crl.stage2.lr": 0.01, "aue_crl.stage2.weight_decay": 0.0005,
              "aue_crl.stage2.au_pair_weight": 0.0, "aue_crl.stage3.optimizer": "sgd",
              "aue_crl.stage3.lr": 0.001, "aue_crl.stage3.weight_decay": 0.0005},
    "fixed": {"data.ckplus_root": ""},
    "no_attention": {"model.kwargs": {"attention": "mean"}, "data.ckplus_root": ""},
    "fixed_ckplus": {},
}


def _train(init: Path, out_dir: Path, overrides: dict[str, Any], seed: int, fold: int | None,
           budget: dict[str, Any], ckplus_root: str, ferplus_root: str) -> Path:
    from aue_edge.train import trainer
    from aue_edge.train.config import load_config
    from aue_edge.train.export import export_checkpoint

    onnx_path = out_dir / "onnx" / FP32_MODEL_FILENAME
    if onnx_path.is_file():
        return onnx_path
    settings = {"run.seed": seed, "run.out_dir": str(out_dir), "data.root": ferplus_root,
                "data.ckplus_root": ckplus_root, "aue_crl.stage2.reinit": True,
                "aue_crl.stage3.reinit": True, **budget, **overrides}
    if fold is not None:
        settings["data.ckplus_fold"] = fold
    cfg = load_config(CONFIG, settings)
    trainer.train(cfg, init_checkpoint=str(init), progress=False)
    return export_checkpoint(out_dir / "model.pt", out_dir / "onnx")


def _scores(models: list[Path], ferplus_root: str, ckplus_root: str) -> dict[str, Any]:
    from aue_edge.train.ckplus_eval import evaluate_ckplus
    from aue_edge.train.evaluate import evaluate_model

    fer = [evaluate_model(m, "ferplus", ferplus_root, "test", progress=False)["accuracy"]
           for m in models]
    ck = evaluate_ckplus(models, ckplus_root, progress=False)
    return {"ferplus_test_accuracy": float(np.mean(fer)),
            "ckplus_emotion_accuracy": ck["emotion_accuracy"]["model"],
            "ckplus_au": {m: {k: ck["au"][m][k] for k in ("mean_f1", "mean_f1_fitted",
                                                          "mean_auc")}
                          for m in ("model", "knowledge", "stacked") if "mean_f1" in ck["au"][m]}}


def run_ablation(init: str | Path, out: str | Path, seeds: tuple[int, ...], ferplus_root: str,
                 ckplus_root: str, variants: tuple[str, ...], budget: dict[str, Any]
                 ) -> dict[str, Any]:
    from aue_edge.train.export import export_checkpoint

    init, out = Path(init), Path(out)
    results: dict[str, Any] = {"init": str(init), "seeds": list(seeds), "budget": budget,
                               "variants": {}}
    backbone = out / "backbone" / "onnx" / FP32_MODEL_FILENAME
    if not backbone.is_file():
        # pred1 alone: the stage-1 checkpoint exported with the expression head as the output.
        from aue_edge.train.runtime import read_checkpoint, save_checkpoint
        from aue_edge.train.models import create_model

        payload = read_checkpoint(init)
        model = create_model(payload["model_name"], **payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        extra = {k: v for k, v in payload.items()
                 if k not in ("format", "model_name", "model_config", "state_dict")}
        extra["final_logits"] = "expr_logits"
        save_checkpoint(out / "backbone" / "model.pt", model, payload["model_name"], **extra)
        export_checkpoint(out / "backbone" / "model.pt", out / "backbone" / "onnx")
    scores = _scores([backbone], ferplus_root, ckplus_root)
    scores["ckplus_au"].pop("model")  # its AU head is stage 1's untrained one: not a result
    results["variants"]["backbone"] = {"seeds": [scores]}
    for name in variants:
        per_seed = []
        for seed in seeds:
            base = out / name / f"seed{seed}"
            if name.endswith("ckplus"):
                models = [_train(init, base / f"fold{k}", VARIANTS[name], seed, k, budget,
                                 ckplus_root, ferplus_root) for k in (1, 2, 3)]
            else:
                models = [_train(init, base, VARIANTS[name], seed, None, budget, ckplus_root,
                                 ferplus_root)]
            per_seed.append(_scores(models, ferplus_root, ckplus_root))
            print(f"{name} seed {seed}: {json.dumps(per_seed[-1])}", flush=True)
        results["variants"][name] = {"seeds": per_seed}
    for entry in results["variants"].values():
        entry["summary"] = _summarise(entry["seeds"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "ablation.md").write_text(markdown_table(results), encoding="utf-8")
    return results


def _summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(values: list[float]) -> list[float]:
        return [float(np.mean(values)), float(np.std(values))]

    summary = {"ferplus_test_accuracy": stat([s["ferplus_test_accuracy"] for s in seeds]),
               "ckplus_emotion_accuracy": stat([s["ckplus_emotion_accuracy"] for s in seeds])}
    for method in seeds[0]["ckplus_au"]:
        for key in ("mean_f1", "mean_f1_fitted", "mean_auc"):
            summary[f"{method}_{key}"] = stat([s["ckplus_au"][method][key] for s in seeds])
    return summary


def markdown_table(results: dict[str, Any]) -> str:
    def cell(summary: dict[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
        if key not in summary:
            return "-"
        mean, sd = summary[key]
        return f"{scale * mean:.{digits}f} +- {scale * sd:.{digits}f}"

    lines = ["| variant | seeds | FER+ test acc (%) | CK+ emotion acc (%) | AU output mean F1 | "
             "AU output mean AUC | knowledge read-out F1 / AUC | stacked read-out F1 / AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in results["variants"].items():
        s = entry["summary"]
        lines.append(
            f"| {name} | {len(entry['seeds'])} | {cell(s, 'ferplus_test_accuracy', 100, 2)} | "
            f"{cell(s, 'ckplus_emotion_accuracy', 100, 1)} | {cell(s, 'model_mean_f1')} | "
            f"{cell(s, 'model_mean_auc')} | {cell(s, 'knowledge_mean_f1')} / "
            f"{cell(s, 'knowledge_mean_auc')} | {cell(s, 'stacked_mean_f1')} / "
            f"{cell(s, 'stacked_mean_auc')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aue_edge.train.ablation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True,
                        help="stage-1 checkpoint that never saw CK+ (aue import-onnx of the "
                             "first release's model.onnx)")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ferplus-root", default="../shared/data/ferplus")
    parser.add_argument("--ckplus-root", default="../shared/data/ckplus")
    parser.add_argument("--fer-images", type=int, default=3000)
    parser.add_argument("--epochs2", type=int, default=2)
    parser.add_argument("--epochs3", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    budget = {"data.limit_train": args.fer_images, "data.limit_val": 1000,
              "aue_crl.stage2.max_images": 0, "aue_crl.stage2.epochs": args.epochs2,
              "aue_crl.stage3.epochs": args.epochs3, "run.num_threads": args.threads}
    results = run_ablation(args.init, args.out, tuple(args.seeds), args.ferplus_root,
                           args.ckplus_root, tuple(args.variants), budget)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
