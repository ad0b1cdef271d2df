"""The learning-rate schedule and the time budget."""
from __future__ import annotations

import logging
import math
from dataclasses import replace

from .config import Config

log = logging.getLogger(__name__)


def lr_lambda(cfg: Config, steps_per_epoch: int):
    """Per-step LR factor: linear warm-up from warmup_lr, then cosine to 0."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, warm + 1)

    def factor(step: int) -> float:
        if step < warm:
            return (cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warm) / cfg.lr
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))

    return factor


def fit_to_budget(cfg: Config, epoch_seconds: float, spent_seconds: float) -> Config:
    """``cfg`` with ``epochs`` cut so that the run ends within ``cfg.time_budget`` minutes.

    Called after the warm-up epochs, before the cosine schedule starts, so the schedule is set for
    the epochs that will really run. Keeps ~10% of the budget for the final test evaluation.
    """
    left = cfg.time_budget * 60 * 0.9 - spent_seconds
    epochs = max(cfg.warmup_epochs + 1, min(cfg.epochs, cfg.warmup_epochs + int(left // epoch_seconds)))
    if epochs < cfg.epochs:
        log.info(f"time budget {cfg.time_budget:g} min at {epoch_seconds:.0f} s/epoch: "
                 f"{epochs} epochs instead of {cfg.epochs}")
    return replace(cfg, epochs=epochs)
