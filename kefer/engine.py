"""Training and evaluation loops: fit() runs one whole experiment into a run directory.

A run directory holds config.json, history.csv, best.safetensors (selected on validation),
last.pt (to resume), metrics.json (test evaluated once, at the end), confusion_matrix.png,
tsne.png and curves.png.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from . import viz
from .checkpoint import load_model, load_training_state, save_model, save_training_state
from .config import Config
from .data import build_dataset
from .data.transforms import eval_transform, train_transform
from .losses import LossConfig, total_loss
from .metrics import classification_metrics
from .model import KEFERModel, build_encoder
from .recognizer import resolve_checkpoint
from .text import check_template, class_embeddings


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


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
        print(f"[kefer] time budget {cfg.time_budget:g} min at {epoch_seconds:.0f} s/epoch: "
              f"{epochs} epochs instead of {cfg.epochs}")
    return replace(cfg, epochs=epochs)


def train_one_epoch(model, loader, optimizer, scheduler, scaler, loss_cfg: LossConfig, nu, device,
                    amp: bool, desc: str) -> dict:
    """One pass over ``loader``. Returns the mean of each loss term, 'loss' and 'train_accuracy'
    (over all processes). ``model`` may be wrapped in DistributedDataParallel. Labels are class
    indices [B] or distributions [B, K] (``--labels votes``), whose argmax is the class."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    model.train()
    sums, correct, seen = {}, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, mininterval=1, disable=not dist.is_main())
    for step, (x, y) in enumerate(bar):
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        soft = y if y.is_floating_point() else None
        if soft is not None:
            y = soft.argmax(1)
        with autocast(device, amp):
            f = model(x)
        f = f.float()
        loss, parts = total_loss(loss_cfg, f, core.text, y, nu, transform=core.transform, head=core.head,
                                 soft=soft)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Loss became {loss.item()} (terms {parts}); lower --lr?")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
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


def init_from_checkpoint(model: KEFERModel, cfg: Config, text_id: str | None) -> None:
    """Load the weights of kefer checkpoint ``cfg.init`` (a file, run directory or shipped model name)
    into ``model``, to fine-tune a trained model further or on other data. Its text embeddings are
    not taken: this run's classes and prompts give them. Raises ValueError where the checkpoint's
    encoder, text encoder or layers differ from this run's. Another input size is allowed where the
    weights fit (CNNs take any size; a ViT's position embeddings do not fit), to fine-tune at a
    larger input."""
    weights, meta = load_model(resolve_checkpoint(cfg.init))
    ours = {"encoder": cfg.encoder, "text_encoder": text_id}
    theirs = {k: meta.get(k) for k in ours}
    if ours != theirs:
        raise ValueError(f"--init {cfg.init}: the checkpoint has {theirs}, this run {ours}; pass the "
                         f"checkpoint's --encoder and --text-encoder.")
    if meta.get("img_size") != cfg.img_size:
        print(f"[kefer] --init {cfg.init} was trained at {meta.get('img_size')} px; this run fine-tunes it at "
              f"{cfg.img_size} px")
    weights.pop("text", None)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shapes differ, e.g. a classifier head over other classes
        raise ValueError(f"--init {cfg.init} does not fit this model: {e}") from e
    if set(missing) - {"text"} or unexpected:
        raise ValueError(f"--init {cfg.init} does not fit this model (losses {meta.get('losses')!r} vs "
                         f"{cfg.losses!r}): missing {sorted(set(missing) - {'text'})[:3]}, unexpected {unexpected[:3]}.")


def checkpoint_meta(cfg: Config, model: KEFERModel, classes, text_encoder_id, prompts) -> dict:
    """What inference needs to rebuild and use the model, stored inside the checkpoint."""
    return {
        "classes": list(classes),
        "templates": list(cfg.templates),
        "prompts": prompts,
        "text_encoder": text_encoder_id,
        "encoder": cfg.encoder,
        "encoder_kwargs": cfg.encoder_kwargs,
        "img_size": cfg.img_size,
        "mean": list(model.encoder.mean),
        "std": list(model.encoder.std),
        "losses": cfg.losses,
        "config": asdict(cfg),
    }


def write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def fit(cfg: Config, output: str | Path, resume: bool = False) -> dict:
    """Train ``cfg`` into ``output``; select the best epoch on validation; test it once.

    Under ``torchrun`` every process trains its share of each batch (DDP) and only the main one
    prints and writes.
    """
    begun = time.time()  # the time budget counts data loading and model building too
    device = dist.setup(cfg.device)
    main = dist.is_main()
    log = print if main else (lambda *args, **kwargs: None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    last_path = output / "last.pt"
    state = load_training_state(last_path) if resume and last_path.exists() else None
    if resume and state is None:
        log(f"[kefer] nothing to resume in {output}; starting fresh")
    if state is not None:
        cfg = Config.from_dict(state["config"])
    if main:
        cfg.save(output / "config.json")
    seed_everything(cfg.seed + dist.rank())
    loss_cfg = LossConfig(cfg.loss_terms, cfg.lambdas, cfg.sc_form)
    for template in cfg.templates:
        check_template(template)

    encoder = build_encoder(cfg.encoder, cfg.img_size, cfg.encoder_weights, batchnorm=cfg.batchnorm,
                            **cfg.encoder_kwargs)
    mean, std = encoder.mean, encoder.std
    train_set = build_dataset(cfg.dataset, cfg.data_root, "train",
                              train_transform(cfg.img_size, mean, std, cfg.rotation),
                              classes=cfg.classes, max_samples=cfg.max_train_samples, seed=cfg.seed,
                              labels=cfg.labels)
    classes = train_set.classes
    val_set = build_dataset(cfg.dataset, cfg.data_root, "val", eval_transform(cfg.img_size, mean, std), classes=classes)
    nu = classes.index("neutral") if "neutral" in classes else None
    if loss_cfg.needs_neutral and nu is None:
        raise ValueError(f"Losses {cfg.losses!r} need a 'neutral' class; {cfg.dataset} has {classes}.")

    if "classifier" in loss_cfg.terms:
        text, text_id, prompts = None, None, None
    elif state is not None:
        text, text_id, prompts = state["model"]["text"], state["text_encoder"], state["prompts"]
    else:
        text, prompts, text_id = class_embeddings(cfg.text_encoder, classes, cfg.templates)
    model = KEFERModel(encoder, len(classes), text)
    if cfg.init and state is None:
        init_from_checkpoint(model, cfg, text_id)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.encoder.compile()  # in place: state-dict keys and checkpoints stay the same
    trained = model
    if dist.world_size() > 1:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=model.transform is not None and not loss_cfg.needs_neutral)

    train_loader = make_loader(train_set, cfg.batch_size, True, device, cfg.workers, cfg.seed, cfg.balance)
    val_loader = make_loader(val_set, cfg.batch_size * 2, False, device, cfg.workers)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(train_loader)))
    scaler = torch.amp.GradScaler(enabled=cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    history, best, start = [], {"val_accuracy": -1.0, "epoch": -1}, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        history, best, start = state["history"], state["best"], state["epoch"] + 1
        log(f"[kefer] resuming {output} after epoch {state['epoch'] + 1}/{cfg.epochs}")
    meta = checkpoint_meta(cfg, model, classes, text_id, prompts)
    log(f"[kefer] {cfg.dataset}: {len(train_set)} train / {len(val_set)} val images, classes {classes}; "
        f"encoder {cfg.encoder} @ {cfg.img_size}px, losses {cfg.losses}, text {text_id}, device {device}"
        + (f" x {dist.world_size()} processes" if dist.world_size() > 1 else ""))

    started = time.time()
    epoch = start
    while epoch < cfg.epochs:  # a while loop: the time budget may cut cfg.epochs after warm-up
        t0 = time.time()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        train_loader.sampler.set_epoch(epoch)
        row.update(train_one_epoch(trained, train_loader, optimizer, scheduler, scaler, loss_cfg, nu, device,
                                   cfg.amp, desc=f"epoch {epoch + 1}/{cfg.epochs}"))
        logits, _, labels = infer(model, val_loader, device, cfg.amp, desc="val")
        row["val_accuracy"] = float((logits.argmax(1) == labels).float().mean())
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)
        improved = row["val_accuracy"] > best["val_accuracy"]
        if improved:
            best = {"val_accuracy": row["val_accuracy"], "epoch": epoch + 1}
        if cfg.time_budget and epoch + 1 == cfg.warmup_epochs:
            now = dist.sum_all({"epochs": time.time() - started, "all": time.time() - begun})  # same on every rank
            cfg = fit_to_budget(cfg, now["epochs"] / dist.world_size() / (epoch + 1 - start),
                                now["all"] / dist.world_size())
            scheduler.lr_lambdas = [lr_lambda(cfg, len(train_loader))]
            meta["config"] = asdict(cfg)
            if main:
                cfg.save(output / "config.json")
        if main:
            write_history(output / "history.csv", history)
            if improved:
                save_model(output / "best.safetensors", model.state_dict(), {**meta, **best})
            save_training_state(last_path, {
                "config": asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": torch.get_rng_state(),
                "epoch": epoch, "history": history, "best": best, "text_encoder": text_id, "prompts": prompts,
            })
            terms = " ".join(f"{k}={row[k]:.3f}" for k in ("loss", *loss_cfg.terms))
            log(f"[kefer] epoch {epoch + 1}/{cfg.epochs} {terms} train_acc={row['train_accuracy']:.4f} "
                f"val_acc={row['val_accuracy']:.4f} ({row['seconds']}s)")
        epoch += 1

    from .recognizer import Recognizer

    dist.barrier()  # best.safetensors is written
    recognizer = Recognizer.from_checkpoint(output / "best.safetensors", device=device, backend="torch")
    metrics = evaluate(recognizer, cfg.dataset, cfg.data_root, output if main and cfg.plots else None,
                       classes=cfg.classes, amp=cfg.amp)
    metrics = {"val_accuracy": best["val_accuracy"], "best_epoch": best["epoch"], **metrics}
    dist.cleanup()
    if not main:
        return metrics
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    viz.plot_history(history, output / "curves.png")
    print(f"[kefer] best epoch {best['epoch']} (val {best['val_accuracy']:.4f}); "
          f"test accuracy {metrics['test_accuracy']:.4f}, mean per-class {metrics['test_mean_accuracy']:.4f}")
    return metrics


def evaluate(recognizer, dataset: str, data_root=None, plots_dir: str | Path | None = None,
             classes: list[str] | None = None, amp: bool = True, split: str = "test", flip: bool = False) -> dict:
    """Test ``recognizer`` on a dataset split, also across datasets.

    Dataset classes are matched to the model's by name; predictions are restricted to the shared
    classes (e.g. FER+ 8 -> CK+ 7). Writes confusion_matrix.png and tsne.png into ``plots_dir``.
    ``flip``: test-time augmentation, each face averaged with its mirror image (twice the cost).
    """
    data = build_dataset(dataset, data_root, split, recognizer.transform, classes=classes)
    missing = [c for c in data.classes if c not in recognizer.classes]
    if missing:
        raise ValueError(f"The model has no class(es) {missing} of {dataset}; it knows {recognizer.classes}.")
    idx = torch.tensor([recognizer.classes.index(c) for c in data.classes])
    feats, labels = [], []
    for x, y in tqdm(make_loader(data, 128, False, torch.device("cpu"), 0), desc=split, leave=False, mininterval=2,
                     disable=not dist.is_main()):
        feats.append(torch.from_numpy(recognizer.represent(x, flip)))
        labels.append(y)
    feats, labels = (dist.gather(torch.cat(t)) for t in (feats, labels))
    probs = torch.from_numpy(recognizer.score(feats.numpy(), recognizer.own_prompts)[1])
    pred = probs[:, idx].argmax(1)
    m = classification_metrics(labels.numpy(), pred.numpy(), data.classes)
    out = {
        "dataset": dataset, "split": split,
        "test_accuracy": m["accuracy"], "test_mean_accuracy": m["mean_accuracy"],
        "per_class_accuracy": m["per_class_accuracy"], "confusion_matrix": m["confusion_matrix"],
        "classes": data.classes, "n": m["n"], "skipped_images": len(data.skipped), "flip": flip,
    }
    if plots_dir is not None:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        title = f"{recognizer.name} on {dataset}/{split}"
        viz.plot_confusion(m["confusion_matrix"], data.classes, Path(plots_dir) / "confusion_matrix.png", title)
        prompts = recognizer.own_prompts
        viz.plot_tsne(feats, labels, prompts.anchors[idx], data.classes, Path(plots_dir) / "tsne.png", title,
                      anchor_kind="classifier weights" if prompts.is_classifier else "text anchors")
    return out
