"""Data sets as uint8 arrays for the trainers. Train stage.

* :func:`load_split_arrays` / :func:`pack_arrays`: a data set split as uint8 arrays, from the
  reader (FER+ layout) or from a *packed arrays file* (``.npz`` or lzma-compressed ``.npz.xz``
  written by ``aue train CONFIG --pack-data FILE``), which is how a run ships FER+ to a remote
  GPU machine in one small file;
* :func:`load_ckplus_arrays`: the CK+ faces (real AU labels) AUE-CRL's stages 2-3 mix in.
"""
from __future__ import annotations

import io
import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aue_edge.core.errors import ConfigError, DatasetError
from aue_edge.train.config import DataConfig

PACKED_FORMAT = "aue_edge.packed_arrays.v1"


@dataclass
class SplitArrays:
    """One split as arrays: uint8 images (N, H, W), int64 labels, float32 label distributions."""

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    names: list[str]
    label_names: tuple[str, ...]
    source: str


def load_split_arrays(data: DataConfig, split: str, limit: int = 0,
                      progress: bool = True) -> SplitArrays:
    """A split from the packed arrays file when ``data.packed`` is set, else from the reader."""
    if data.packed:
        arrays = read_packed(data.packed, split)
        if arrays.label_names and data.label_mode not in arrays.source:
            raise DatasetError(f"{data.packed} was packed for {arrays.source}, but the config "
                               f"asks for label_mode {data.label_mode!r}; re-pack the data")
    else:
        from aue_edge.data import get_dataset

        kwargs = {"label_mode": data.label_mode} if data.dataset == "ferplus" else {}
        dataset = get_dataset(data.dataset, data.root, split, **kwargs)
        if not hasattr(dataset, "load_arrays"):
            raise DatasetError(f"data set {data.dataset!r} has no array loader; the AUE-CRL "
                               f"trainer reads FER+-style grey arrays")
        images, labels, probs, names = dataset.load_arrays(progress=progress)
        arrays = SplitArrays(images, labels, probs, list(names), tuple(dataset.labels),
                             f"{data.dataset}:{data.root}:{split}:{data.label_mode}")
    if limit:
        arrays = SplitArrays(arrays.images[:limit], arrays.labels[:limit], arrays.probs[:limit],
                             arrays.names[:limit], arrays.label_names, arrays.source)
    if len(arrays.labels) == 0:
        raise DatasetError(f"split {split!r} of {data.packed or data.root} holds no images "
                           f"after the label rule; nothing to train or evaluate on")
    return arrays


def pack_arrays(path: str | Path, splits: dict[str, SplitArrays], compress: bool = True) -> Path:
    """Write splits to one ``.npz`` (``compress``: lzma, ``.npz.xz``; FER+ train+valid ~50 MB)."""
    path = Path(path)
    payload: dict[str, np.ndarray] = {}
    meta = {"format": PACKED_FORMAT, "splits": {}}
    for split, arr in splits.items():
        payload[f"{split}/images"] = arr.images
        payload[f"{split}/labels"] = arr.labels
        payload[f"{split}/probs"] = arr.probs
        payload[f"{split}/names"] = np.asarray(arr.names)
        meta["splits"][split] = {"label_names": list(arr.label_names), "source": arr.source,
                                 "num_images": int(len(arr.labels))}
    payload["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    data = buffer.getvalue()
    if compress:
        data = lzma.compress(data, preset=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def read_packed(path: str | Path, split: str) -> SplitArrays:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"packed arrays file {path} does not exist; write one with "
                           f"'aue train CONFIG --pack-data {path}'")
    data = path.read_bytes()
    try:
        if data[:6] == b"\xfd7zXZ\x00":
            data = lzma.decompress(data)
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
    except (lzma.LZMAError, ValueError, KeyError, OSError) as exc:
        raise DatasetError(f"{path} is not a packed arrays file ({type(exc).__name__}: "
                           f"{exc}); write one with 'aue train CONFIG --pack-data FILE'") from None
    if meta.get("format") != PACKED_FORMAT:
        raise DatasetError(f"{path}: format {meta.get('format')!r}, expected {PACKED_FORMAT!r}")
    if split not in meta["splits"]:
        raise DatasetError(f"{path} holds splits {sorted(meta['splits'])}, not {split!r}")
    info = meta["splits"][split]
    return SplitArrays(npz[f"{split}/images"], npz[f"{split}/labels"], npz[f"{split}/probs"],
                       [str(n) for n in npz[f"{split}/names"]], tuple(info["label_names"]),
                       info["source"])


@dataclass
class CkPlusArrays:
    """CK+ training faces for stages 2-3: labels in the model's label space, AUs in its AU
    order (``known`` False for a model AU that CK+ does not code)."""

    images: np.ndarray
    labels: np.ndarray
    aus: np.ndarray
    known: np.ndarray
    subjects: list[str]
    fold: int


def load_ckplus_arrays(data: DataConfig, emotion_labels: tuple[str, ...],
                       au_names: tuple[str, ...], progress: bool = True) -> CkPlusArrays | None:
    """The CK+ faces a run trains on (``data.ckplus_root``; fold 0 = every subject), or None."""
    if not data.ckplus_root:
        return None
    from aue_edge.data.ckplus import CKPLUS_AUS, CkPlus
    from aue_edge.data.knowledge import label_mapping

    if not au_names:
        raise ConfigError("data.ckplus_root gives real AU labels, but this model has no AU "
                          "branch (the backbone baseline); drop data.ckplus_root")
    reader = CkPlus(data.ckplus_root, "all" if data.ckplus_fold == 0 else "train",
                    max(1, data.ckplus_fold))
    images, labels, _probs, _names = reader.load_arrays(progress=progress)
    mapping = label_mapping(reader.labels, emotion_labels)
    if (mapping < 0).any():
        missing = [n for n, m in zip(reader.labels, mapping) if m < 0]
        raise ConfigError(f"the model's labels {list(emotion_labels)} lack the CK+ emotions "
                          f"{missing}; CK+ faces cannot be trained on")
    matrix = reader.au_matrix()
    known = np.array([a in CKPLUS_AUS for a in au_names])
    aus = np.zeros((len(labels), len(au_names)), dtype=np.float32)
    for j, name in enumerate(au_names):
        if known[j]:
            aus[:, j] = matrix[:, CKPLUS_AUS.index(name)]
    return CkPlusArrays(images, mapping[labels], aus, np.broadcast_to(known, aus.shape).copy(),
                        list(reader.subjects), data.ckplus_fold)
