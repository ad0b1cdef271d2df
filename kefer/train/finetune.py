"""Fine-tuning a trained model on new data (``--init MODEL``): what the run takes from the model, the
fine-tuning schedule, and the starting model measured as "epoch 0", so a run never hands back a
model that is worse on validation than the one it started from.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import read_meta, save_model
from ..models.network import KEFERModel
from ..recognizer import load, resolve_checkpoint
from .config import Config
from .evaluate import evaluate

log = logging.getLogger(__name__)

# What a run takes from the model it starts from (normalisation comes with the weights, ``normalisation``).
INHERITED = ("encoder", "encoder_kwargs", "text_encoder", "img_size", "templates")
# Fields whose weights would not load if they differed from the model's: a flag that differs is refused.
MUST_MATCH = ("encoder", "encoder_kwargs", "text_encoder")
# The fine-tuning schedule, unless flags set these fields. Chosen on CK+ subject folds' validation
# splits (``kefer lab finetune``; docs/own-data.md has the grid, the rule and the results).
SCHEDULE = {"lr": 1e-3, "epochs": 4, "warmup_epochs": 0, "select": "mean_accuracy"}


def model_meta(init: str) -> dict:
    """The metadata of checkpoint ``init`` (a run dir, a file or a shipped model's name)."""
    return read_meta(resolve_checkpoint(init))


def from_model(cfg: Config, explicit: set[str]) -> Config:
    """``cfg`` (with ``init`` set) completed from the model it starts from: the model's ``INHERITED``
    fields and the fine-tuning ``SCHEDULE``, except the fields named in ``explicit`` (set by flags).

    A flag that contradicts the model is refused (``MUST_MATCH``: its weights would not load) or
    honoured with a warning (input size, templates). Logs what was taken."""
    meta = model_meta(cfg.init)
    theirs = {"encoder": meta["encoder"], "encoder_kwargs": meta.get("encoder_kwargs") or {},
              "text_encoder": meta["text_encoder"], "img_size": meta["img_size"], "templates": list(meta["templates"])}
    for name in MUST_MATCH:
        if name in explicit and getattr(cfg, name) != theirs[name]:
            raise ValueError(f"--init {cfg.init} is a {name.replace('_', ' ')} {theirs[name]!r} model; its weights do "
                             f"not load into {getattr(cfg, name)!r}. Leave --{name.replace('_', '-')} out to fine-tune "
                             f"it, or leave --init out to train a {getattr(cfg, name)!r} model from the start.")
    for name in ("img_size", "templates"):
        if name in explicit and getattr(cfg, name) != theirs[name]:
            log.warning(f"--init {cfg.init} was trained with {name} {theirs[name]!r}; this run uses "
                        f"{getattr(cfg, name)!r}, as asked: expect its starting accuracy to fall")
    taken = {k: v for k, v in theirs.items() if k not in explicit}
    schedule = {k: v for k, v in SCHEDULE.items() if k not in explicit}
    log.info(f"--init {cfg.init}: took " + ", ".join(
        f"{k} {len(v)} wordings" if k == "templates" else f"{k} {v!r}" for k, v in taken.items())
        + " and its normalisation; fine-tuning schedule " + ", ".join(f"{k}={v}" for k, v in schedule.items()))
    return replace(cfg, **taken, **schedule)


def normalisation(meta: dict) -> tuple[tuple, tuple]:
    """(mean, std) per channel the model was trained with."""
    return tuple(meta["mean"]), tuple(meta["std"])


def save_start(path: Path, model: KEFERModel, meta: dict, start_meta: dict) -> None:
    """best.safetensors as the starting model: ``model`` (the starting weights with this run's class
    anchors), this run's ``meta`` with the starting model's stored operating point, so that kept
    unchanged it answers as the model did."""
    save_model(path, model.state_dict(), {**meta, "operating": start_meta.get("operating") or {}, "epoch": 0})


def measure_start(path: Path, cfg: Config, device: torch.device) -> dict:
    """The starting model saved at ``path``, on this run's validation split (and test split, unless
    ``cfg.test`` is off): {"val_accuracy", "val_mean_accuracy", "test_accuracy", ...,
    "per_class_accuracy": {split: {class: accuracy}}}. Reported beside the fine-tuned figures; the
    test figures never select anything."""
    recognizer = load(path, device=device, backend="torch")
    out = {"per_class_accuracy": {}}
    for split in ("val", "test") if cfg.test else ("val",):
        m = evaluate(recognizer, cfg.dataset, cfg.data_root, classes=cfg.classes, split=split)
        out.update({f"{split}_accuracy": m[f"{split}_accuracy"], f"{split}_mean_accuracy": m[f"{split}_mean_accuracy"]})
        out["per_class_accuracy"][split] = m["per_class_accuracy"]
    log.info(f"starting model {cfg.init}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in out.items() if k != "per_class_accuracy"))
    return out
