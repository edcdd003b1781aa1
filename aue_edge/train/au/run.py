"""``aue train CONFIG.yaml`` for the AU detectors: config -> data -> stages -> checkpoint -> report.

Train stage. :func:`train_from_config` is what ``aue train`` calls when the config's model is an
AU detector (:func:`~aue_edge.train.run_config.config_family`); it runs one of two protocols:

- **FER+ with pseudo AU labels** (``data.dataset: ferplus``): train on ``data.train_split``,
  score F1-frame against the pseudo labels of ``data.eval_split`` (a sanity check: the
  knowledge, not FACS coders, produced them). Output: ``<out_dir>/model.pt``.
- **BP4D / DISFA** (real AU labels): subject-exclusive 3-fold cross-validation; for every fold
  in ``data.folds`` a fresh model (same seed) is trained on the two other folds and scored on
  this one, F1-frame per AU at 0.5 with no threshold tuning. Output: ``<out_dir>/fold<k>/
  model.pt`` and ``results.json``, ``results.md`` (table with the paper's row) and
  ``f1_per_au.png`` in ``<out_dir>``.

Every run writes ``training_report.json`` with the resolved config, sizes and scores.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from aue_edge.core.errors import ConfigError, DatasetError, ModelFileError
from aue_edge.train.au.config import AuTrainConfig, KdsrlSection, load_au_config
from aue_edge.train.au.data import AuArrays, au_dataset_arrays, ferplus_arrays
from aue_edge.train.au.evaluate import write_report
from aue_edge.train.au.trainers import predict_au_probs, run_training
from aue_edge.data.folds import BP4D_FOLDS, CKPLUS_FOLDS, DISFA_FOLDS
from aue_edge.train.run_config import family_of
from aue_edge.train.runtime import read_checkpoint, seed_everything, start_run


def au_flag_overrides(*, init: str | None = None, resume: bool = False, progress: bool = True,
                      stages: list[int] | None = None, pretrained: str | None = None
                      ) -> dict[str, Any]:
    """The config keys of the ``aue train`` flags an AU detector keeps in its config (``--init``,
    ``--resume``, ``--no-progress``); AUE-CRL's ``--stage`` and ``--pretrained`` are refused."""
    if stages:
        raise ConfigError("--stage selects AUE-CRL stages; an AU detector's stages are set in "
                          "its config section (e.g. lp_net.stages, kdsrl.ssl_epochs: 0)")
    if pretrained:
        raise ConfigError("--pretrained is not supported for AU detectors; start from an 'aue "
                          "train' checkpoint with --init CHECKPOINT instead")
    overrides: dict[str, Any] = {}
    if init is not None:
        overrides["model.init_checkpoint"] = init
    if resume:
        overrides["run.resume"] = True
    if not progress:
        overrides["run.progress"] = False
    return overrides


def _init_from_checkpoint(model: torch.nn.Module, path: str,
                          prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Copy every tensor whose name and shape match (e.g. a KDSRL encoder after FER+ SSL, or a
    BP4D LP-Net stem into a DISFA run), only under ``prefixes`` when given (per-AU heads are
    indexed by position, and AU lists differ between data sets); the rest keeps its fresh
    initialisation and is listed in the report."""
    payload = read_checkpoint(path)
    own = model.state_dict()
    loaded = {k: v for k, v in payload["state_dict"].items()
              if k in own and tuple(own[k].shape) == tuple(v.shape)
              and (not prefixes or k.startswith(tuple(prefixes)))}
    if not loaded:
        raise ModelFileError(f"checkpoint {path} ({payload['model_name']}) shares no tensor with "
                             f"this model; is it the same model family?")
    model.load_state_dict(loaded, strict=False)
    return {"checkpoint": str(path), "from_model": payload["model_name"],
            "loaded_tensors": len(loaded), "fresh_tensors": sorted(set(own) - set(loaded))}


def _build_model(cfg: AuTrainConfig, au_names: tuple[str, ...]) -> tuple[torch.nn.Module, dict]:
    from aue_edge.train.models import create_model

    model = create_model(cfg.model.name, au_names=list(au_names), **cfg.model.kwargs)
    init = {}
    if cfg.model.init_checkpoint:
        init = _init_from_checkpoint(model, cfg.model.init_checkpoint, cfg.model.init_prefixes)
    return model, init


def _report_family(cfg: AuTrainConfig) -> str:
    """The key of the paper's results (KDSRL reports frozen and fine-tuned separately)."""
    if isinstance(cfg.method, KdsrlSection):
        return f"kdsrl_{cfg.method.classify_mode}"
    return cfg.model.family


def _au_reader(dataset: str, root: str, fold: int, split: str):
    from aue_edge.data.bp4d import Bp4d
    from aue_edge.data.ckplus import CkPlus
    from aue_edge.data.disfa import Disfa

    return {"bp4d": Bp4d, "disfa": Disfa, "ckplus": CkPlus}[dataset](root, fold=fold,
                                                                      split=split)


_FOLDS = {"bp4d": BP4D_FOLDS, "disfa": DISFA_FOLDS, "ckplus": CKPLUS_FOLDS}


def _ckplus_payload(subjects: tuple[str, ...], inherited: set[str]) -> dict[str, Any]:
    """What a CK+ fold model's checkpoint (and so its card) records: the CK+ subjects its
    weights saw (its training subjects and those of its start checkpoint) and, filled in after
    training by :func:`run_training`'s ``fit_thresholds``, per-AU thresholds fitted on its
    training subjects."""
    return {"ckplus": {"subjects": sorted(set(subjects) | inherited),
                       "thresholds": "best-F1 on the model's own training subjects"},
            "fit_thresholds": True}


def _inherited_ckplus(cfg: AuTrainConfig, protocol, folds) -> set[str]:
    """CK+ subjects the start checkpoint (``--init``) saw; refuses a run that would score a
    fold on faces those weights trained on."""
    if not cfg.model.init_checkpoint:
        return set()
    seen = set(read_checkpoint(cfg.model.init_checkpoint).get("ckplus", {}).get("subjects", []))
    for fold in folds:
        leaked = seen & set(protocol[fold - 1])
        if leaked:
            raise ModelFileError(
                f"{cfg.model.init_checkpoint} was trained on {len(leaked)} CK+ subjects of fold "
                f"{fold} ({sorted(leaked)[:3]}...), which this run holds out; start the CK+ "
                f"cross-validation from a checkpoint that never saw CK+ (the FER+ steps of "
                f"docs/au_detectors.md)")
    return seen


def _ckplus_cv(cfg: AuTrainConfig, reader, everything: AuArrays,
               fold_probs: dict[int, Any], out_dir: Path) -> dict[str, Any]:
    from aue_edge.train.ckplus_eval import au_detector_cv_report

    if len(reader.sequences) != len(everything):
        raise DatasetError(f"CK+: {len(everything)} frames were read for {len(reader.sequences)} "
                           f"listed; every CK+ crop is used as it is")
    result = au_detector_cv_report(everything.binary_targets() == 1, everything.subjects,
                                   reader.sequences, fold_probs, everything.au_names,
                                   cfg.model.name, cfg.data.ckplus_reference or None, out_dir)
    model, const = result["au"]["model"], result["au"]["constant"]
    line = (f"CK+ CV ({len(result['au_names'])} AUs): mean F1 at 0.5 {model['mean_f1']:.3f}, "
            f"fitted {model['mean_f1_fitted']:.3f}, AUC {model['mean_auc']:.3f}; constant F1 "
            f"{const['mean_f1']:.3f}")
    ref = result.get("reference", {}).get("au", {})
    if "model" in ref:
        line += (f"; default model F1 {ref['model']['mean_f1']:.3f} AUC "
                 f"{ref['model']['mean_auc']:.3f}")
    print(line)
    return result


def train_from_config(config: str | Path | dict, overrides: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """Train an AU detector from a YAML config (or parsed dict) with dotted-key overrides
    (:mod:`aue_edge.train.run_config`); returns the run report."""
    cfg = load_au_config(config, overrides)
    device, out_dir = start_run(cfg.run.seed, cfg.run.num_threads, cfg.run.device,
                                cfg.run.out_dir)
    au_names = cfg.model.resolved_au_names()
    progress = cfg.run.progress
    t0 = time.time()
    report: dict[str, Any] = {"config": cfg.to_dict(), "device": str(device),
                              "au_names": list(au_names)}
    if cfg.data.dataset == "ferplus":
        model, init = _build_model(cfg, au_names)
        train = ferplus_arrays(cfg.data.root, cfg.data.train_split, au_names,
                               cfg.data.pseudo_labels, cfg.data.max_train_images,
                               cfg.data.packed, progress)
        evaluation = ferplus_arrays(cfg.data.root, cfg.data.eval_split, au_names,
                                    cfg.data.pseudo_labels, cfg.data.max_eval_images,
                                    cfg.data.packed, progress)
        result = run_training(cfg, model, train, out_dir, device, evaluation)
        report.update(init=init, train=_describe(train), eval=_describe(evaluation),
                      checkpoint=str(result.checkpoint),
                      pseudo_f1_pct=dict(zip(au_names, result.scores.f1_pct)),
                      pseudo_mean_f1_pct=round(result.scores.mean_f1_pct, 3),
                      all_positive_mean_f1_pct=_all_positive_f1(evaluation),
                      note="F1 against knowledge-derived pseudo labels (primary AUs of the "
                           "expression count as present): a sanity check, not a FACS score")
    else:
        from aue_edge.data.folds import fold_subjects

        protocol = _FOLDS[cfg.data.dataset]
        fold_scores, folds, fold_probs = {}, {}, {}
        # Every frame is read (and, with face_crop: detect, detected and aligned) once; the
        # folds are then subject selections of these arrays.
        model, init = _build_model(cfg, au_names)
        reader = _au_reader(cfg.data.dataset, cfg.data.root, 1, "all")
        everything = au_dataset_arrays(reader, au_names, model.input_size_px[0],
                                       cfg.data.face_crop, None, progress)
        report["all_frames"] = _describe(everything)
        inherited = (_inherited_ckplus(cfg, protocol, cfg.data.folds)
                     if cfg.data.dataset == "ckplus" else set())
        for i, fold in enumerate(cfg.data.folds):
            if i > 0:   # a fresh model per fold, initialised exactly like the first one
                seed_everything(cfg.run.seed)
                model, init = _build_model(cfg, au_names)
            train_subjects = fold_subjects(protocol, fold, "train")
            train = everything.of_subjects(train_subjects, cfg.data.max_train_images,
                                           f"fold{fold}/train")
            test = everything.of_subjects(fold_subjects(protocol, fold, "test"),
                                          cfg.data.max_eval_images, f"fold{fold}/test")
            extra = {}
            if cfg.data.dataset == "ckplus":
                extra = _ckplus_payload(train_subjects, inherited)
            result = run_training(cfg, model, train, out_dir / f"fold{fold}", device, test,
                                  extra=extra)
            if cfg.data.dataset == "ckplus":
                fold_probs[fold] = predict_au_probs(result.model, everything,
                                                    cfg.run.eval_batch_size, stage=result.stage)
            fold_scores[f"fold{fold}"] = result.scores
            folds[f"fold{fold}"] = {"init": init, "train": _describe(train),
                                    "test": _describe(test),
                                    "checkpoint": str(result.checkpoint),
                                    "mean_f1_pct": round(result.scores.mean_f1_pct, 3),
                                    "all_positive_mean_f1_pct": _all_positive_f1(test)}
        files = write_report(out_dir, fold_scores, _report_family(cfg), cfg.data.dataset)
        report.update(folds=folds, results={k: str(v) for k, v in files.items()},
                      mean_f1_pct=round(sum(s.mean_f1_pct for s in fold_scores.values())
                                        / len(fold_scores), 3))
        if cfg.data.dataset == "ckplus" and len(fold_probs) == len(protocol):
            report["ckplus_cv"] = _ckplus_cv(cfg, reader, everything, fold_probs, out_dir)
            if cfg.data.train_all:
                seed_everything(cfg.run.seed)
                model, init = _build_model(cfg, au_names)
                thresholds = report["ckplus_cv"]["oof_thresholds"]
                extra = {"au_thresholds": thresholds,
                         "ckplus": {"subjects": sorted(set(everything.subjects)),
                                    "thresholds": "best-F1 on the pooled out-of-fold "
                                                  "probabilities of the fold models"}}
                result = run_training(cfg, model, everything, out_dir / "all", device,
                                      extra=extra)
                report["all"] = {"init": init, "train": _describe(everything),
                                 "checkpoint": str(result.checkpoint),
                                 "au_thresholds": thresholds}
    report["train_seconds"] = round(time.time() - t0, 1)
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n",
                                                  encoding="utf-8")
    if "folds" in report:
        print(f"done in {report['train_seconds']} s: {cfg.data.dataset} "
              f"{len(report['folds'])}-fold mean F1-frame {report['mean_f1_pct']:.1f}% over "
              f"{len(au_names)} AUs; table "
              f"{report['results']['markdown']}")
    else:
        print(f"done in {report['train_seconds']} s: {report['checkpoint']}; mean F1 against the "
              f"pseudo labels of FER+ {cfg.data.eval_split}: {report['pseudo_mean_f1_pct']:.1f}% "
              f"(all-positive detector: {report['all_positive_mean_f1_pct']:.1f}%)")
    return report


def _all_positive_f1(arrays: AuArrays) -> float:
    """Mean F1-frame of the trivial detector that says "present" for every AU in every frame:
    F1 rewards that on rare AUs, so a model must beat this number to mean anything."""
    import numpy as np

    from aue_edge.train.au.evaluate import f1_frame

    targets = arrays.binary_targets()
    return round(f1_frame(np.ones(targets.shape), targets, arrays.au_names).mean_f1_pct, 3)


def _describe(arrays: AuArrays) -> dict[str, Any]:
    known = arrays.targets >= 0
    return {"source": arrays.source, "num_images": len(arrays),
            "dropped": dict(arrays.dropped),
            "positives_per_au": dict(zip(arrays.au_names,
                                         [int(v) for v in (arrays.binary_targets() == 1).sum(0)])),
            "unknown_labels": int((~known).sum()),
            "subjects": sorted({s for s in arrays.subjects if s is not None})}


def evaluate_au_detector(model_path: str | Path, dataset: str, root: str | Path,
                         out_dir: str | Path, fold: int | None = None, face_crop: str = "as_is",
                         max_images: int | None = None, batch_size: int = 64,
                         progress: bool = True) -> dict[str, Any]:
    """F1-frame of a checkpoint (``.pt``, torch) or an exported ``.onnx`` (ONNX Runtime through
    the edge preprocessing ``to_model_input``) on BP4D/DISFA; writes the results files.

    ``fold=None`` scores every subject (a model trained elsewhere, e.g. on FER+ pseudo labels:
    a cross-data-set test); ``fold=k`` scores fold k's test subjects (the model of that fold).
    Only the AUs both the model and the data set know are scored; the report lists them.
    """
    import numpy as np

    from aue_edge.train.au.evaluate import f1_frame

    model_path = Path(model_path)
    if dataset not in ("bp4d", "disfa"):
        raise ConfigError(f"dataset must be bp4d or disfa, got {dataset!r}")
    reader = _au_reader(dataset, str(root), fold or 1, "test" if fold else "all")
    if model_path.suffix == ".onnx":
        from aue_edge.edge.model_card import find_card

        card = find_card(model_path)
        model_aus, size, name = card.outputs.au_names, card.input.size_px[0], card.model_name
    else:
        from aue_edge.train.runtime import load_checkpoint

        model, payload = load_checkpoint(model_path)
        stage = payload.get("model_stage")   # an LP-Net trained only to stage 1 or 2
        model_aus, size, name = model.au_names, model.input_size_px[0], payload["model_name"]
    common = tuple(a for a in model_aus if a in reader.au_names)
    if not common:
        raise ConfigError(f"{model_path} predicts {tuple(model_aus)}, none of which {dataset} "
                          f"labels ({reader.au_names})")
    arrays = au_dataset_arrays(reader, common, size, face_crop, max_images, progress)
    columns = [tuple(model_aus).index(a) for a in common]
    if model_path.suffix == ".onnx":
        from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
        from aue_edge.edge.preprocess import to_model_input
        from aue_edge.train.au.data import mean_shape_array

        chunks = []
        with OrtBackend(model_path) as backend:
            wants_landmarks = any(i.name == "landmarks" for i in backend.inputs)
            for start in range(0, len(arrays), batch_size):
                faces = arrays.images[start:start + batch_size]
                feeds = {"image": to_model_input(faces, card.input)}
                if wants_landmarks:
                    feeds["landmarks"] = np.repeat(mean_shape_array()[None], len(faces), 0)
                chunks.append(backend.infer(feeds)["au_probs"])
        probs = np.concatenate(chunks)
    else:
        probs = predict_au_probs(model, arrays, batch_size, stage=stage)
    scores = f1_frame(probs[:, columns], arrays.binary_targets(), common)
    family = family_of(name)
    files = write_report(out_dir, {f"fold{fold}" if fold else "all_subjects": scores},
                         family, dataset)
    return {"model": str(model_path), "dataset": dataset, "fold": fold, "au_names": list(common),
            "num_frames": len(arrays), "dropped": dict(arrays.dropped),
            "f1_pct": dict(zip(common, scores.f1_pct)), "mean_f1_pct": scores.mean_f1_pct,
            "results": {k: str(v) for k, v in files.items()}}
