"""Checkpoints: model weights as safetensors with the run's metadata as JSON in the header,
and the resumable training state. Both are written atomically (temp file, then rename)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .io import atomic_write

FORMAT = "kefer-1"


def save_model(path: str | Path, state: dict, meta: dict, half: bool = False) -> None:
    """Write ``state`` (name -> tensor) and ``meta`` (JSON-serialisable) to a .safetensors file.

    ``meta`` holds what inference needs: classes, prompts, templates, text-encoder id, encoder,
    input size, normalisation and the run config. ``half`` stores the weights as fp16; the text
    embeddings (``text``) stay fp32, so re-encoding the checkpoint's prompts reproduces them.
    """
    tensors = {
        k: (v.half() if half and v.is_floating_point() and k != "text" else v).detach().cpu().contiguous()
        for k, v in state.items()
    }
    _write(path, tensors, meta)


def _write(path: str | Path, tensors: dict, meta: dict) -> None:
    header = {"format": FORMAT, "kefer": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def _read(path: str | Path) -> tuple[dict, dict]:
    """(state dict as stored, metadata) of a kefer .safetensors file; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"{path} is not a readable safetensors checkpoint: {e}") from e
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a kefer checkpoint (no '{FORMAT}' metadata).")
    return state, json.loads(header["kefer"])


def load_model(path: str | Path) -> tuple[dict, dict]:
    """(state dict in fp32, metadata) from a file written by ``save_model``."""
    state, meta = _read(path)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, meta


def read_meta(path: str | Path) -> dict:
    """The metadata of a file written by ``save_model``."""
    return _read(path)[1]


def update_meta(path: str | Path, meta: dict) -> None:
    """Replace the metadata of a file written by ``save_model``; its tensors are written back as
    stored (same dtypes, same bytes)."""
    _write(path, _read(path)[0], meta)


def save_training_state(path: str | Path, state: dict) -> None:
    """Write the resumable state (model, optimiser, scheduler, epoch, history, ...) atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    """The state written by ``save_training_state``, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)
