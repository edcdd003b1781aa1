"""``aue evaluate``: accuracy of a torch checkpoint or an ONNX model on a data set split.

Train stage (host). Both kinds of model see exactly the edge's preprocessing
(``aue_edge.edge.preprocess.to_model_input`` with the model card's input spec); an ONNX model
runs through the edge's ONNX Runtime backend (``OrtBackend``), so the number reported for
``model.onnx`` is what the robot's pipeline computes on the same aligned faces.

Output: one JSON object with ``accuracy``, ``mean_class_accuracy`` (mean per-class recall, the
paper's "Ave. acc"), ``num_images``, ``per_class``, ``confusion_matrix``, and for models with an
AU output ``au_pseudo_label_stats`` (the AU probabilities against the knowledge pseudo labels
of the true expression: FER+ has no AU labels); optionally a confusion-matrix PNG.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from aue_edge.core.errors import DatasetError, ModelFileError
from aue_edge.edge.model_card import ModelCard
from aue_edge.edge.preprocess import to_model_input
from aue_edge.train.metrics import (au_pseudo_label_stats, classification_report,
                                    plot_confusion_matrix)


def _check_labels(model_labels: Sequence[str], data_labels: Sequence[str], model: Path) -> None:
    if tuple(model_labels) != tuple(data_labels):
        raise ModelFileError(
            f"{model} predicts the labels {list(model_labels)} but the data set is labelled "
            f"{list(data_labels)}; evaluate it on a data set with the same label set (in the "
            f"same order) or retrain it for this one")


def _detector_error(path: Path) -> ModelFileError:
    return ModelFileError(
        f"{path} is an AU detector (no emotion output); 'aue evaluate' scores expression "
        f"models. Score a detector on BP4D/DISFA with 'aue evaluate --dataset bp4d|disfa', on "
        f"CK+ through its cross-validation run ('aue train' with data.dataset: ckplus writes "
        f"ckplus_cv.json; docs/au_detectors.md)")


def _onnx_predictor(path: Path, providers: tuple[str, ...], num_threads: int | None):
    from aue_edge.edge.backends.onnxruntime_backend import OrtBackend
    from aue_edge.edge.model_card import find_card

    card = find_card(path)
    if card.outputs.emotion_probs is None:
        raise _detector_error(path)
    backend = OrtBackend(path, providers=providers, num_threads=num_threads)
    if card.outputs.emotion_probs not in {o.name for o in backend.outputs}:
        raise ModelFileError(f"{path} has no output {card.outputs.emotion_probs!r} named in its "
                             f"card; outputs are {[o.name for o in backend.outputs]}")

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = backend.infer({card.input.name: batch})
        return out[card.outputs.emotion_probs], out.get(card.outputs.au_probs or "")

    return card, predict, backend.close


def _checkpoint_predictor(path: Path, device: str):
    import torch

    from aue_edge.train.export import card_from_checkpoint, is_au_detector
    from aue_edge.train.runtime import load_checkpoint, select_device

    model, payload = load_checkpoint(path)
    if is_au_detector(payload):
        raise _detector_error(path)
    card: ModelCard = card_from_checkpoint(payload, model, None)
    dev = select_device(device)
    wrapper = model.export_module(payload.get("final_logits", "fused_logits")).to(dev).eval()

    @torch.no_grad()
    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = wrapper(torch.from_numpy(batch).to(dev))
        if isinstance(out, tuple):
            return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
        return out.float().cpu().numpy(), None

    return card, predict, lambda: None


def load_predictor(path: Path, providers: tuple[str, ...] = ("cpu",),
                   num_threads: int | None = None, device: str = "cpu"):
    """``(card, predict(batch) -> (emotion_probs, au_probs | None), close)`` for a ``.onnx``
    (ONNX Runtime, the edge backend) or an ``aue train`` checkpoint (torch)."""
    if path.suffix == ".onnx":
        return _onnx_predictor(path, providers, num_threads)
    return _checkpoint_predictor(path, device)


def predict_faces(predict, close, faces: np.ndarray, card: ModelCard, batch_size: int,
                  desc: str, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """A predictor of :func:`load_predictor` over uint8 face crops in batches, with the edge's
    preprocessing; returns ``(emotion_probs, au_probs or None)`` and closes the predictor.
    A non-finite output is a ModelFileError: no metric is ever computed from NaN."""
    emotions, aus = [], []
    try:
        for start in tqdm(range(0, len(faces), batch_size), desc=desc, unit="batch",
                          disable=not progress):
            emotion, au = predict(to_model_input(faces[start:start + batch_size], card.input))
            emotions.append(emotion)
            if au is not None:
                aus.append(au)
    finally:
        close()
    emotion, au = np.concatenate(emotions), (np.concatenate(aus) if aus else None)
    finite = np.isfinite(emotion).all(axis=1)
    if au is not None:
        finite &= np.isfinite(au).all(axis=1)
    if not finite.all():
        raise ModelFileError(f"{desc}: the model gave non-finite values (NaN or inf) for "
                             f"{int((~finite).sum())} of {len(faces)} images; no accuracy is "
                             f"computed from them. Its weights are corrupt or the export is "
                             f"broken: re-export it")
    return emotion, au


def knowledge_table(card: ModelCard) -> np.ndarray | None:
    """The (E, A) expression->AU table W of a model card, clamped to its prior bands: AUE-CRL's
    learned W (or its initial prior), or the table a student carries from its teacher
    (``architecture.knowledge_prior``); None when the card holds none."""
    from aue_edge.data.knowledge import clamp_prior

    arch = card.architecture
    if arch.get("knowledge_prior"):
        return np.asarray(arch["knowledge_prior"], dtype=np.float64)
    config = arch.get("config", {})
    weights = arch.get("learned_prior_weight") or config.get("prior_init")
    if not weights or not config.get("prior_low"):
        return None
    return clamp_prior(np.asarray(weights), np.asarray(config["prior_low"]),
                       np.asarray(config["prior_high"]))


def _au_stats(card: ModelCard, labels: np.ndarray, au_probs: np.ndarray) -> dict[str, Any]:
    """AU output vs the knowledge pseudo labels of the true expression (no AU ground truth
    exists for FER+): one-hot(label) x W clamped to the prior bands, W as learned (card)."""
    table = knowledge_table(card)
    if table is None:
        return {"skipped": "the model card holds no expression->AU prior"}
    return au_pseudo_label_stats(au_probs, table[labels], card.outputs.au_names,
                                 card.outputs.thresholds())


def evaluate_model(model_path: str | Path, dataset: str = "ferplus", root: str = "",
                   split: str = "test", label_mode: str = "majority", packed: str = "",
                   limit: int = 0, batch_size: int = 256, providers: tuple[str, ...] = ("cpu",),
                   num_threads: int | None = None, device: str = "cpu",
                   confusion_png: str | Path | None = None, progress: bool = True
                   ) -> dict[str, Any]:
    """Evaluate a ``.onnx`` (ONNX Runtime) or a ``.pt`` checkpoint (torch) on one split."""
    from aue_edge.train.arrays import load_split_arrays
    from aue_edge.train.config import DataConfig

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelFileError(f"model {model_path} does not exist")
    if batch_size < 1:
        raise DatasetError(f"batch size must be >= 1, got {batch_size}")
    data = DataConfig(dataset=dataset, root=str(root), packed=str(packed or ""),
                      label_mode=label_mode)
    arrays = load_split_arrays(data, split, limit, progress)
    card, predict, close = load_predictor(model_path, providers, num_threads, device)
    kind = "onnx" if model_path.suffix == ".onnx" else "checkpoint"
    _check_labels(card.outputs.emotion_labels, arrays.label_names, model_path)
    t0 = time.time()
    probs, au_probs = predict_faces(predict, close, arrays.images, card, batch_size,
                                    f"evaluate {split}", progress)
    if probs.shape != (len(arrays.labels), len(card.outputs.emotion_labels)):
        raise ModelFileError(f"{model_path} returned emotion probabilities of shape "
                             f"{probs.shape}, expected ({len(arrays.labels)}, "
                             f"{len(card.outputs.emotion_labels)})")
    report = classification_report(arrays.labels, probs.argmax(1), card.outputs.emotion_labels)
    result = {"model": str(model_path), "model_format": kind, "model_name": card.model_name,
              "dataset": dataset, "split": split, "label_mode": label_mode,
              "source": arrays.source, **report,
              "seconds": round(time.time() - t0, 2)}
    if limit:
        result["limit"] = limit
    if au_probs is not None:
        result["au_pseudo_label_stats"] = _au_stats(card, arrays.labels, au_probs)
    if confusion_png:
        title = (f"{card.model_name} on {dataset} {split}: acc {report['accuracy']:.4f}, mean "
                 f"class acc {report['mean_class_accuracy']:.4f} (n={report['num_images']})")
        result["confusion_png"] = str(plot_confusion_matrix(
            np.asarray(report["confusion_matrix"]), card.outputs.emotion_labels, confusion_png,
            title))
    return result
