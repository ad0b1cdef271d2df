"""The training step, one epoch of it, and inference over a loader, on one process or under DDP."""
from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .losses import LossConfig, total_loss
from ..models.network import KEFERModel
from . import distributed as dist


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset, batch_size: int, train: bool, device: torch.device, workers: int | None,
                seed: int = 0, balance: str = "none") -> DataLoader:
    """A DataLoader over this process's share of ``dataset``; on CUDA with worker processes,
    pinned memory and persistent workers.

    Training order comes from ``distributed.EpochSampler`` (``balance='oversample'`` draws classes
    equally often); evaluation visits every sample once across processes.
    """
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    if train:
        sampler = dist.EpochSampler(dataset.targets, seed, balance)
    else:
        sampler = dist.ShardSampler(len(dataset))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=train and len(sampler) > batch_size,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on CPU."""
    if not (enabled and device.type == "cuda"):
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_step(model, x: torch.Tensor, y: torch.Tensor, optimizer, scaler, loss_cfg: LossConfig, nu: int | None,
               device: torch.device, amp: bool, text: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
    """One optimiser step on images x [B, 3, H, W] with labels y: class indices [B] or
    distributions [B, K] (``--labels votes``), whose argmax is the class. ``model`` may be wrapped
    in DistributedDataParallel. ``text`` [K, d]: this step's class anchors (default: the model's);
    or [P, K, d]: P anchor sets, of which the step trains against the one where this batch's loss is
    highest (``--template-sampling worst``).
    Returns (loss, its terms, f [B, d] in fp32, class indices [B])."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    x, y = to_device(x, device), y.to(device, non_blocking=True)
    soft = y if y.is_floating_point() else None
    if soft is not None:
        y = soft.argmax(1)
    with autocast(device, amp):
        f = model(x)
    f = f.float()
    text = core.text if text is None else text
    if text is not None and text.dim() == 3:  # None: the classifier baseline has no anchors
        with torch.no_grad():
            losses = [total_loss(loss_cfg, f, t, y, nu, transform=core.transform, head=core.head, soft=soft)[0]
                      for t in text]
        text = text[int(torch.stack(losses).argmax())]
    loss, parts = total_loss(loss_cfg, f, text, y, nu, transform=core.transform, head=core.head, soft=soft)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"Loss became {loss.item()} (terms {parts}); lower --lr?")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, parts, f, y


def train_one_epoch(model, loader, optimizer, scheduler, scaler, loss_cfg: LossConfig, nu, device,
                    amp: bool, desc: str, text_pool: torch.Tensor | None = None, pool_choice: str = "batch",
                    pool_seed: int = 0) -> dict:
    """One pass of ``train_step`` over ``loader``, the scheduler stepped after each. Returns the
    mean of each loss term, 'loss' and 'train_accuracy' (over all processes).

    ``text_pool`` [P, K, d]: text augmentation, each batch trained against one of the P anchor
    sets (templates, class-name forms): with ``pool_choice`` "batch", drawn with ``pool_seed`` (the
    same draws on every process and on resume); "worst", the one its loss is highest on (``train_step``)."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    draws = None if text_pool is None or pool_choice == "worst" else torch.randint(
        len(text_pool), (len(loader),), generator=torch.Generator().manual_seed(pool_seed)).tolist()
    model.train()
    sums, correct, seen = {}, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, mininterval=1, disable=not dist.is_main())
    for step, (x, y) in enumerate(bar):
        text = text_pool if draws is None else text_pool[draws[step]]
        loss, parts, f, y = train_step(model, x, y, optimizer, scaler, loss_cfg, nu, device, amp, text)
        scheduler.step()
        with torch.no_grad():
            correct += (core.logits(f).argmax(1) == y).sum()
        seen += len(y)
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v * len(y)
        if step % 20 == 0:  # .item() waits for the GPU: not on every step
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    totals = dist.sum_all({**sums, "correct": correct, "seen": seen})
    out = {k: totals[k] / totals["seen"] for k in sums}
    out["train_accuracy"] = totals["correct"] / totals["seen"]
    return out


@torch.no_grad()
def infer(model: KEFERModel, loader: DataLoader, device: torch.device, amp: bool = True, desc: str = "eval",
          flip: bool = False):
    """Run ``model`` over ``loader``: (logits [N, K], representations [N, d], labels [N]) on CPU,
    gathered from every process. ``flip``: average each representation with its mirror image's."""
    model.eval()
    logits, feats, labels = [], [], []
    for x, y in tqdm(loader, desc=desc, leave=False, mininterval=2, disable=not dist.is_main()):
        x = to_device(x, device)
        with autocast(device, amp):
            f = model.represent(x, flip)
        logits.append(model.logits(f).cpu())
        feats.append(f.cpu())
        labels.append(y)
    return tuple(dist.gather(torch.cat(t)) for t in (logits, feats, labels))
