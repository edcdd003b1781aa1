"""``aue evaluate MODEL --dataset ckplus``: emotion and action units judged against real FACS
codes (CK+ peak frames), always beside the baselines a useful AU output must beat.

Train stage (host). The model sees the edge's preprocessing (ONNX Runtime for ``.onnx``), like
every ``aue evaluate``. Protocol (subject-exclusive, ``folds.CKPLUS_FOLDS``):

* For each fold k the model is scored on fold k's subjects; everything fitted (thresholds, the
  stacked read-out) is fitted on the other two folds only. Pass one model (it must not have
  trained on CK+, or not on the fold scored: its card's ``training.ckplus`` says) or three fold
  models (model k trained without fold k). The three test folds' decisions and scores are pooled
  for the headline numbers; per-fold means give the spread.
* AUs: every AU of the card that CK+ codes with >= :data:`MIN_POSITIVE_SEQUENCES` positive
  sequences. F1-frame (all three peak frames count) at the model's own threshold(s) from its
  card, F1 at thresholds fitted on the training folds, and ROC AUC.
* Baselines, each with the same metrics:
  ``constant``: one score for every face (AUC 0.5; F1 of calling every AU present, the best a
  constant decision can do); ``knowledge``: ``emotion_probs @ W`` (W = the card's learned prior,
  clamped to its bands); ``oracle``: ``onehot(true emotion) @ W`` (what the knowledge table gives
  with a perfect emotion classifier); ``stacked``: per-AU logistic regression (and a multinomial
  one for emotion) on the model's own outputs (emotion log-probabilities + AU probabilities),
  fitted on the training folds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aue_edge.core.errors import DatasetError, ModelFileError
from aue_edge.edge.model_card import ModelCard
from aue_edge.train.evaluate import knowledge_table
from aue_edge.train.metrics import best_f1_threshold, binary_f1, roc_auc

MIN_POSITIVE_SEQUENCES = 10
BASELINES = ("constant", "knowledge", "oracle", "stacked")
L2_PENALTY = 1.0


# ------------------------------------------------------------------------------ logistic fits
def _standardise(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (other - mean) / std


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int = 2) -> Callable[[np.ndarray],
                                                                                   np.ndarray]:
    """L2-regularised logistic (``classes == 2``, y in {0,1}) or multinomial regression fitted
    with L-BFGS; returns ``predict(x) -> probabilities`` ((N,) or (N, classes))."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n, d = x.shape
    k = 1 if classes == 2 else classes
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(classes)[y] if k > 1 else None

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        w = w.reshape(d + 1, k)
        z = xb @ w
        reg = 0.5 * L2_PENALTY * float((w[:-1] ** 2).sum())
        if k == 1:
            z = z[:, 0]
            value = float(np.sum(np.logaddexp(0, z) - y * z))
            grad = xb.T @ (1 / (1 + np.exp(-z)) - y)
            grad = grad[:, None]
        else:
            logp = log_softmax(z, axis=1)
            value = float(-(onehot * logp).sum())
            grad = xb.T @ (np.exp(logp) - onehot)
        grad[:-1] += L2_PENALTY * w[:-1]
        return value + reg, grad.ravel()

    w = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B",
                 options={"maxiter": 500}).x.reshape(d + 1, k)

    def predict(x_new: np.ndarray) -> np.ndarray:
        z = np.hstack([x_new, np.ones((len(x_new), 1))]) @ w
        if k == 1:
            return 1 / (1 + np.exp(-z[:, 0]))
        return np.exp(log_softmax(z, axis=1))

    return predict


# ------------------------------------------------------------------------------ model outputs
def ckplus_subjects_seen(card: ModelCard) -> set[str]:
    """CK+ subjects a model trained on, as its card records (empty: none)."""
    return set(card.training.get("ckplus", {}).get("subjects", []))


def _run_model(path: Path, images: np.ndarray, providers: tuple[str, ...],
               num_threads: int | None, device: str, batch_size: int, progress: bool
               ) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    from aue_edge.train.evaluate import load_predictor, predict_faces

    card, predict, close = load_predictor(path, providers, num_threads, device)
    if card.outputs.au_probs is None:
        close()
        raise ModelFileError(f"{path} has no AU output (its card names no au_probs); CK+ "
                             f"evaluation scores emotion and action units together")
    emotion, au = predict_faces(predict, close, images, card, batch_size, f"CK+ {path.name}",
                                progress)
    if not (np.isfinite(emotion).all() and np.isfinite(au).all()):
        raise ModelFileError(f"{path} produced non-finite outputs on CK+ faces; the model file "
                             f"is corrupt or its card does not match it")
    return card, emotion, au


# ------------------------------------------------------------------------------ scoring
def _scores(y: np.ndarray, score: np.ndarray, decision: np.ndarray) -> dict[str, float]:
    return {"f1": binary_f1(y, decision), "auc": roc_auc(y, score)}


def _summary(per_au: dict[str, dict[str, float]]) -> dict[str, Any]:
    keys = sorted({k for v in per_au.values() for k in v if k != "threshold"})
    out: dict[str, Any] = {f"mean_{k}": float(np.nanmean([v[k] for v in per_au.values()]))
                           for k in keys}
    out["per_au"] = per_au
    return out


def evaluate_ckplus(model_paths: Sequence[str | Path], root: str | Path,
                    fold: int | None = None, out_dir: str | Path | None = None,
                    providers: tuple[str, ...] = ("cpu",), num_threads: int | None = None,
                    device: str = "cpu", batch_size: int = 256, progress: bool = True
                    ) -> dict[str, Any]:
    """Score one model (every fold) or three fold models on CK+; see the module docstring.

    Writes ``ckplus_evaluation.json`` and ``ckplus_au_f1_auc.png`` into ``out_dir`` when given.
    """
    from aue_edge.data.ckplus import CKPLUS_AUS, CkPlus
    from aue_edge.data.folds import CKPLUS_FOLDS

    paths = [Path(p) for p in model_paths]
    for p in paths:
        if not p.is_file():
            raise ModelFileError(f"model {p} does not exist")
    if len(paths) not in (1, len(CKPLUS_FOLDS)):
        raise DatasetError(f"give one model (scored on every fold) or {len(CKPLUS_FOLDS)} fold "
                           f"models (model k scored on fold k), not {len(paths)}")
    folds = [fold] if fold else list(range(1, len(CKPLUS_FOLDS) + 1))
    if len(paths) > 1 and fold:
        paths = [paths[fold - 1]]
    data = CkPlus(root, "all")
    images, labels, _probs, _names = data.load_arrays(progress=progress)
    subjects = np.array(data.subjects)
    sequences = np.array(data.sequences)
    au_true = data.au_matrix()

    outputs = [_run_model(p, images, providers, num_threads, device, batch_size, progress)
               for p in paths]
    card = outputs[0][0]
    for other, p in zip(outputs[1:], paths[1:]):
        if (other[0].outputs.au_names, other[0].outputs.emotion_labels) != (
                card.outputs.au_names, card.outputs.emotion_labels):
            raise ModelFileError(f"{p} has other labels or AUs than {paths[0]}; fold models of "
                                 f"one recipe share them")
    model_labels = list(card.outputs.emotion_labels)
    missing = [name for name in data.labels if name not in model_labels]
    y_emotion = np.array([model_labels.index(data.labels[y]) if data.labels[y] in model_labels
                          else -1 for y in labels])
    positive_sequences = {name: len(set(sequences[au_true[:, CKPLUS_AUS.index(name)] == 1]))
                          for name in card.outputs.au_names if name in CKPLUS_AUS}
    au_names = [n for n, c in positive_sequences.items() if c >= MIN_POSITIVE_SEQUENCES]
    if not au_names:
        raise DatasetError(f"none of the card's AUs {list(card.outputs.au_names)} has "
                           f">= {MIN_POSITIVE_SEQUENCES} positive CK+ sequences")
    model_idx = [card.outputs.au_names.index(n) for n in au_names]
    y_au = au_true[:, [CKPLUS_AUS.index(n) for n in au_names]].astype(bool)
    table = knowledge_table(card)

    methods = ("model",) + BASELINES
    pooled_score = {m: np.zeros(y_au.shape) for m in methods}
    pooled_dec = {m: np.zeros(y_au.shape, bool) for m in methods}
    pooled_dec_fitted = {m: np.zeros(y_au.shape, bool) for m in methods}
    pooled_emotion = {m: np.full(len(labels), -2) for m in ("model", "stacked")}
    tested = np.zeros(len(labels), bool)
    per_fold: dict[str, Any] = {}
    thresholds_used: dict[str, list[float]] = {}
    for k in folds:
        model_k = outputs[0] if len(outputs) == 1 else outputs[k - 1]
        card_k, emotion, au = model_k
        test = np.isin(subjects, CKPLUS_FOLDS[k - 1])
        train = ~test
        overlap = ckplus_subjects_seen(card_k) & set(subjects[test])
        if overlap:
            raise ModelFileError(
                f"{paths[0] if len(outputs) == 1 else paths[k - 1]} trained on CK+ subjects of "
                f"fold {k} ({sorted(overlap)[:4]}...); scoring it there would be scoring on "
                f"training faces. Pass the three fold models of 'aue train --ckplus-fold K', or "
                f"--fold with the fold it did not train on")
        scores = {"model": au[:, model_idx].astype(np.float64)}
        scores["constant"] = np.full(y_au.shape, 0.5)  # any one value: AUC 0.5 exactly
        if table is not None:
            table_au = table[:, model_idx]
            scores["knowledge"] = emotion @ table_au
            oracle_rows = np.where(y_emotion[:, None] >= 0, table_au[np.maximum(y_emotion, 0)],
                                   0.0)
            scores["oracle"] = oracle_rows
        features = np.hstack([np.log(emotion + 1e-6), au])
        f_train, f_all = _standardise(features[train], features)
        stacked = np.zeros(y_au.shape)
        for a in range(len(au_names)):
            if y_au[train, a].any():
                stacked[:, a] = fit_logistic(f_train, y_au[train, a].astype(float))(f_all)
        scores["stacked"] = stacked
        valid = y_emotion >= 0
        emo_fit = fit_logistic(f_train[valid[train]], y_emotion[train & valid],
                               classes=len(model_labels))
        pooled_emotion["stacked"][test] = emo_fit(f_all[test]).argmax(1)
        pooled_emotion["model"][test] = emotion[test].argmax(1)
        own = np.array(card_k.outputs.thresholds())[model_idx]
        thresholds_used[f"fold{k}"] = own.round(4).tolist()
        fold_result: dict[str, Any] = {}
        for m, s in scores.items():
            fixed = np.full(len(au_names), 0.5) if m != "model" else own
            if m == "constant":
                fixed = np.full(len(au_names), -np.inf)  # call every AU present
            fitted = np.array([best_f1_threshold(y_au[train, a], s[train, a])
                               for a in range(len(au_names))])
            if m == "constant":
                fitted = fixed
            pooled_score[m][test] = s[test]
            pooled_dec[m][test] = s[test] >= fixed
            pooled_dec_fitted[m][test] = s[test] >= fitted
            fold_result[m] = {
                "mean_f1": float(np.mean([binary_f1(y_au[test, a], s[test, a] >= fixed[a])
                                          for a in range(len(au_names))])),
                "mean_auc": float(np.nanmean([roc_auc(y_au[test, a], s[test, a])
                                              for a in range(len(au_names))]))}
        fold_result["emotion_accuracy"] = {
            m: float(np.mean(pooled_emotion[m][test] == y_emotion[test]))
            for m in pooled_emotion}
        per_fold[f"fold{k}"] = fold_result
        tested |= test

    result: dict[str, Any] = {
        "dataset": "ckplus", "root": str(root), "models": [str(p) for p in paths],
        "model_name": card.model_name, "folds": folds, "num_images": int(tested.sum()),
        "num_sequences": int(len(set(sequences[tested]))),
        "num_subjects": int(len(set(subjects[tested]))),
        "au_names": au_names, "positive_sequences": {n: positive_sequences[n] for n in au_names},
        "emotion_labels_missing_from_model": missing,
        "emotion_accuracy": {m: float(np.mean(pooled_emotion[m][tested] == y_emotion[tested]))
                             for m in pooled_emotion},
        "model_thresholds": thresholds_used,
        "au": {}, "per_fold": per_fold,
    }
    for m in methods:
        if m in ("knowledge", "oracle") and table is None:
            result["au"][m] = {"skipped": "the model card holds no expression->AU prior W"}
            continue
        per_au = {}
        for a, name in enumerate(au_names):
            y, s = y_au[tested, a], pooled_score[m][tested, a]
            per_au[name] = {**_scores(y, s, pooled_dec[m][tested, a]),
                            "f1_fitted": binary_f1(y, pooled_dec_fitted[m][tested, a])}
        result["au"][m] = _summary(per_au)
    if len(folds) > 1:
        result["spread_over_folds"] = {
            m: {"mean_f1_sd": float(np.std([per_fold[f][m]["mean_f1"] for f in per_fold])),
                "mean_auc_sd": float(np.std([per_fold[f][m]["mean_auc"] for f in per_fold]))}
            for m in methods if m in per_fold[next(iter(per_fold))]}
    if out_dir is not None:
        _write_with_plot(result, Path(out_dir), "ckplus_evaluation.json", plot_ckplus_au)
    return result


def _write_with_plot(result: dict[str, Any], out_dir: Path, json_name: str,
                     plot: Callable[[dict[str, Any], Path], Path]) -> None:
    """``ckplus_au_f1_auc.png`` (its path recorded in ``result``) and ``json_name``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(plot(result, out_dir / "ckplus_au_f1_auc.png"))
    (out_dir / json_name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def plot_ckplus_au(result: dict[str, Any], path: str | Path) -> Path:
    """Per-AU F1 (model threshold; baselines at 0.5) and AUC bars: the model beside every
    baseline."""
    methods = [m for m in ("model",) + BASELINES if "per_au" in result["au"][m]]
    acc = result["emotion_accuracy"]
    return _plot_au_bars(
        result["au_names"], [(m, result["au"][m]) for m in methods],
        "F1-frame (model: its thresholds; baselines: 0.5)", len(methods),
        f"{result['model_name']} on CK+ ({result['num_subjects']} subjects, folds "
        f"{result['folds']}, subject-exclusive): emotion accuracy model {acc['model']:.3f}, "
        f"stacked read-out {acc['stacked']:.3f}", path)


def _plot_au_bars(names: Sequence[str], series: list[tuple[str, dict[str, Any]]],
                  f1_label: str, legend_columns: int, title: str, path: str | Path) -> Path:
    """Two bar charts, per-AU F1 over per-AU AUC, one bar per ``(label, summary)`` of
    ``series`` (a summary holds ``per_au`` and the ``mean_*`` values, as :func:`_summary`)."""
    from aue_edge.core.plotting import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.8 * len(names)), 7.5), sharex=True)
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for metric, ax in zip(("f1", "auc"), axes):
        for i, (label, summary) in enumerate(series):
            values = [summary["per_au"][n][metric] for n in names]
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width,
                   label=f"{label} (mean {summary[f'mean_{metric}']:.2f})", color=f"C{i}")
        ax.set_ylabel(f1_label if metric == "f1" else "ROC AUC", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=legend_columns, loc="lower center",
                  bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_xticks(x, names, rotation=45)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=110)


# ------------------------------------------------------------------ AU detectors (CK+ CV runs)
def au_detector_cv_report(y_au: np.ndarray, subjects: Sequence[str], sequences: Sequence[str],
                          fold_probs: dict[int, np.ndarray], au_names: Sequence[str],
                          model_name: str, reference: str | Path | None = None,
                          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the fold models of an AU-detector CK+ run beside the baselines.

    ``fold_probs[k]`` holds fold model k's AU probabilities on *every* CK+ image (rows in the
    order of ``subjects``; columns ``au_names``); it is scored on fold k's subjects only, with
    thresholds fitted on its training folds. Metrics per AU, pooled over the test folds:
    F1-frame at 0.5 (the papers' protocol), F1 at the fitted thresholds, ROC AUC; the constant
    predictor's F1 (every AU present) and AUC 0.5 beside them. ``reference`` is an ``aue
    evaluate --dataset ckplus`` result (``ckplus_evaluation.json`` of the default model's fold
    models): its model and baselines, scored on the same images and folds, join the table.
    Also returns ``oof_thresholds``: per-AU best-F1 thresholds on the pooled out-of-fold
    probabilities (for a model trained on every subject, which has no held-out fold itself).
    """
    from aue_edge.data.folds import CKPLUS_FOLDS
    from aue_edge.train.trainer import fit_au_thresholds

    subjects, sequences = np.asarray(subjects), np.asarray(sequences)
    y_au = np.asarray(y_au).astype(bool)
    positive = {n: len(set(sequences[y_au[:, a]])) for a, n in enumerate(au_names)}
    keep = [a for a, n in enumerate(au_names) if positive[n] >= MIN_POSITIVE_SEQUENCES]
    names = [au_names[a] for a in keep]
    if sorted(fold_probs) != list(range(1, len(CKPLUS_FOLDS) + 1)):
        raise DatasetError(f"need the probabilities of all {len(CKPLUS_FOLDS)} fold models, got "
                           f"folds {sorted(fold_probs)}")
    y = y_au[:, keep]
    score = np.zeros(y.shape)
    at_half = np.zeros(y.shape, bool)
    at_fitted = np.zeros(y.shape, bool)
    fitted_by_fold, per_fold = {}, {}
    for k, probs in fold_probs.items():
        test = np.isin(subjects, CKPLUS_FOLDS[k - 1])
        s = np.asarray(probs, dtype=np.float64)[:, keep]
        fitted = np.array([best_f1_threshold(y[~test, a], s[~test, a])
                           for a in range(len(names))])
        fitted_by_fold[f"fold{k}"] = fitted.round(4).tolist()
        score[test], at_half[test], at_fitted[test] = s[test], s[test] >= 0.5, s[test] >= fitted
        per_fold[f"fold{k}"] = {
            "mean_f1": float(np.mean([binary_f1(y[test, a], at_half[test, a])
                                      for a in range(len(names))])),
            "mean_auc": float(np.nanmean([roc_auc(y[test, a], s[test, a])
                                          for a in range(len(names))]))}
    per_au = {n: {"f1": binary_f1(y[:, a], at_half[:, a]), "auc": roc_auc(y[:, a], score[:, a]),
                  "f1_fitted": binary_f1(y[:, a], at_fitted[:, a])}
              for a, n in enumerate(names)}
    constant = {n: {"f1": binary_f1(y[:, a], np.ones(len(y), bool)), "auc": 0.5,
                    "f1_fitted": binary_f1(y[:, a], np.ones(len(y), bool))}
                for a, n in enumerate(names)}
    result: dict[str, Any] = {
        "dataset": "ckplus", "protocol": "subject-exclusive 3-fold CV (folds.CKPLUS_FOLDS), "
        "fold model k scored on fold k, metrics pooled over the three test folds",
        "model_name": model_name, "num_images": int(len(y)),
        "num_subjects": int(len(set(subjects))), "au_names": names,
        "positive_sequences": {n: positive[n] for n in names},
        "fitted_thresholds": fitted_by_fold,
        "oof_thresholds": fit_au_thresholds(score, y, np.ones(y.shape, bool), tuple(names)),
        "au": {"model": _summary(per_au), "constant": _summary(constant)},
        "per_fold": per_fold,
        "spread_over_folds": {"mean_f1_sd": float(np.std([f["mean_f1"]
                                                           for f in per_fold.values()])),
                              "mean_auc_sd": float(np.std([f["mean_auc"]
                                                           for f in per_fold.values()]))},
    }
    if reference is not None:
        result["reference"] = _reference_columns(Path(reference), names, len(y))
    if out_dir is not None:
        _write_with_plot(result, Path(out_dir), "ckplus_cv.json", plot_detector_cv)
        (Path(out_dir) / "ckplus_cv.md").write_text(detector_cv_markdown(result),
                                                    encoding="utf-8")
    return result


def detector_cv_markdown(result: dict[str, Any]) -> str:
    """One row per AU: the detector (F1 at 0.5, F1 at thresholds fitted on the training folds,
    AUC) beside the default model, the knowledge read-out and the constant predictor."""
    ref = result.get("reference", {}).get("au", {})
    columns = [("detector", result["au"]["model"], ("f1", "f1_fitted", "auc"))]
    if "model" in ref:
        columns.append(("default model", ref["model"], ("f1", "f1_fitted", "auc")))
    if "knowledge" in ref:
        columns.append(("emotion_probs @ W", ref["knowledge"], ("f1", "f1_fitted", "auc")))
    columns.append(("constant", result["au"]["constant"], ("f1",)))
    head = ["AU (positive sequences)"] + [f"{name} {metric}" for name, _s, metrics in columns
                                         for metric in metrics]
    lines = [f"{result['model_name']} on CK+: {result['protocol']}. F1 of the detector and "
             f"the read-out at 0.5, of the default model at its card's thresholds; f1_fitted at "
             f"thresholds fitted on the training folds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(f"{n} ({result['positive_sequences'][n]})", n) for n in result["au_names"]]
    for label, n in rows + [("**mean**", None)]:
        cells = [label]
        for _name, summary, metrics in columns:
            for metric in metrics:
                value = (summary[f"mean_{metric}"] if n is None
                         else summary["per_au"][n][metric])
                cells.append(f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    spread = result["spread_over_folds"]
    lines += ["", f"Spread over the three folds (sd): {spread['mean_f1_sd']:.3f} in mean F1 at "
                  f"0.5, {spread['mean_auc_sd']:.3f} in mean AUC.", ""]
    return "\n".join(lines)


def _reference_columns(path: Path, au_names: list[str], num_images: int) -> dict[str, Any]:
    """The default model's and baselines' per-AU numbers from an ``aue evaluate --dataset
    ckplus`` result, checked to be on the same images, folds and AUs."""
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"reference evaluation {path} cannot be read ({exc}); make it with "
                           f"'aue evaluate FOLD1 FOLD2 FOLD3 --dataset ckplus --out-dir DIR'")
    if ref.get("dataset") != "ckplus" or ref.get("folds") != [1, 2, 3] \
            or ref.get("num_images") != num_images:
        raise DatasetError(f"reference evaluation {path} is not a 3-fold CK+ evaluation of the "
                           f"same {num_images} images (folds {ref.get('folds')}, "
                           f"{ref.get('num_images')} images)")
    missing = [n for n in au_names if n not in ref.get("au_names", [])]
    if missing:
        raise DatasetError(f"reference evaluation {path} does not score {missing}")
    columns = {}
    for method, summary in ref["au"].items():
        if "per_au" not in summary:
            continue
        columns[method] = _summary({n: summary["per_au"][n] for n in au_names})
    return {"file": str(path), "model_name": ref.get("model_name"),
            "models": ref.get("models"), "au": columns}


def plot_detector_cv(result: dict[str, Any], path: str | Path) -> Path:
    """Per-AU F1-frame and AUC bars: the detector beside the default model and baselines."""
    series = [(f"{result['model_name']}, F1 at 0.5", result["au"]["model"])]
    reference = result.get("reference", {}).get("au", {})
    for method, label in (("model", "default model (its thresholds)"),
                          ("knowledge", "emotion_probs @ W (0.5)")):
        if method in reference:
            series.append((label, reference[method]))
    series.append(("constant (all present)", result["au"]["constant"]))
    return _plot_au_bars(result["au_names"], series, "F1-frame", 2,
                         f"{result['model_name']} on CK+ ({result['num_subjects']} subjects, "
                         f"subject-exclusive 3-fold CV)", path)
