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

from aue_edge.edge.errors import DatasetError, ModelFileError
from aue_edge.edge.model_card import ModelCard
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
def _prior_table(card: ModelCard) -> np.ndarray | None:
    from aue_edge.train.knowledge import clamp_prior

    config = card.architecture.get("config", {})
    weights = card.architecture.get("learned_prior_weight") or config.get("prior_init")
    if not weights or not config.get("prior_low"):
        return None
    return clamp_prior(np.asarray(weights), np.asarray(config["prior_low"]),
                       np.asarray(config["prior_high"]))


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
    from aue_edge.train.data.ckplus import CKPLUS_AUS, CkPlus
    from aue_edge.train.data.folds import CKPLUS_FOLDS

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
    table = _prior_table(card)

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
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result["plot"] = str(plot_ckplus_au(result, out_dir / "ckplus_au_f1_auc.png"))
        (out_dir / "ckplus_evaluation.json").write_text(json.dumps(result, indent=2) + "\n",
                                                        encoding="utf-8")
    return result


def plot_ckplus_au(result: dict[str, Any], path: str | Path) -> Path:
    """Per-AU F1 (model threshold; baselines at 0.5) and AUC bars: the model beside every
    baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aue_edge.edge.plotting import save_figure

    names = result["au_names"]
    methods = [m for m in ("model",) + BASELINES if "per_au" in result["au"][m]]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.8 * len(names)), 7.5), sharex=True)
    width = 0.8 / len(methods)
    x = np.arange(len(names))
    for metric, ax in zip(("f1", "auc"), axes):
        for i, m in enumerate(methods):
            values = [result["au"][m]["per_au"][n][metric] for n in names]
            mean = result["au"][m][f"mean_{metric}"]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width,
                   label=f"{m} (mean {mean:.2f})", color=f"C{i}")
        ax.set_ylabel("F1-frame (model: its thresholds; baselines: 0.5)" if metric == "f1"
                      else "ROC AUC", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=len(methods), loc="lower center",
                  bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_xticks(x, names, rotation=45)
    acc = result["emotion_accuracy"]
    fig.suptitle(f"{result['model_name']} on CK+ ({result['num_subjects']} subjects, folds "
                 f"{result['folds']}, subject-exclusive): emotion accuracy model "
                 f"{acc['model']:.3f}, stacked read-out {acc['stacked']:.3f}", fontsize=9)
    return save_figure(fig, path, dpi=110)
