"""Training-run plumbing shared by every trainer: seeds, devices, checkpoints.

Checkpoints are plain dicts loaded with ``torch.load(weights_only=True)``: the model name, the
exact builder config, the state dict, and whatever the trainer adds (stage, epoch, optimiser,
metrics, model-card fields). :func:`load_checkpoint` rebuilds the model and says clearly when a
file is corrupt or belongs to another architecture.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aue_edge.core.errors import ConfigError, ModelFileError

CHECKPOINT_FORMAT = "aue_edge.checkpoint.v1"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} asked for but torch sees no CUDA GPU; use "
                          f"--device cpu or auto")
    return device


def start_run(seed: int, num_threads: int, device: str, out_dir: str | Path
              ) -> tuple[torch.device, Path]:
    """A single-process run's start: seeds, torch CPU threads (0: torch's default), the device
    and the output folder (created)."""
    seed_everything(seed)
    if num_threads:
        torch.set_num_threads(num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return select_device(device), out


def save_checkpoint(path: str | Path, model: torch.nn.Module, model_name: str,
                    **extra: Any) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "model_config": dict(getattr(model, "config", {})),
        "state_dict": model.state_dict(),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/zip errors
        raise ModelFileError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); the file is "
            f"corrupt, truncated or not a torch checkpoint written by 'aue train'") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not an aue_edge checkpoint (expected format "
                             f"{CHECKPOINT_FORMAT!r}); was it written by 'aue train'?")
    return payload


def load_checkpoint(path: str | Path, expected_model: str | None = None
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was written for and load its weights (strict)."""
    from aue_edge.train.models import create_model

    payload = read_checkpoint(path)
    name = payload["model_name"]
    if expected_model is not None and name != expected_model:
        raise ModelFileError(f"checkpoint {path} holds a {name!r} model, expected "
                             f"{expected_model!r}")
    model = create_model(name, **payload["model_config"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not match the {name!r} architecture "
                             f"built from its own config: {exc}") from None
    return model, payload
