"""One whole experiment into a run directory: ``fit``.

A run directory holds config.json, history.csv, best.safetensors (selected on validation),
last.pt (to resume), metrics.json (test evaluated once, at the end), confusion_matrix.png,
tsne.png and curves.png.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import viz
from ..checkpoint import load_model, load_training_state, save_model, save_training_state
from .config import Config
from .metrics import classification_metrics
from .data import build_dataset
from ..preprocess import eval_transform
from .augment import train_transform
from ..vocab import adjectives, neutral_index
from .losses import LossConfig, prior_offset
from ..models.network import KEFERModel
from ..models.factory import create_encoder
from ..operating import class_prior
from ..recognizer import load, resolve_checkpoint
from .template_sets import HELD_OUT_TEMPLATES, TUNING_TEMPLATES
from ..text import check_template, class_embeddings
from . import distributed as dist
from .evaluate import evaluate
from .finetune import measure_start, model_meta, normalisation, save_start
from .loop import infer, make_loader, seed_everything, train_one_epoch
from .schedule import fit_to_budget, lr_lambda

log = logging.getLogger(__name__)


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
        log.info(f"--init {cfg.init} was trained at {meta.get('img_size')} px; this run fine-tunes it at "
                 f"{cfg.img_size} px")
    weights.pop("text", None)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shapes differ, e.g. a classifier head over other classes
        raise ValueError(f"--init {cfg.init} does not fit this model: {e}") from e
    if set(missing) - {"text"} or unexpected:
        raise ValueError(f"--init {cfg.init} does not fit this model (losses {meta.get('losses')!r} vs "
                         f"{cfg.losses!r}): missing {sorted(set(missing) - {'text'})[:3]}, unexpected {unexpected[:3]}.")


def checkpoint_meta(cfg: Config, model: KEFERModel, classes, text_encoder_id, prompts, prior=None) -> dict:
    """What inference needs to rebuild and use the model, stored inside the checkpoint; with
    ``prior`` {class: training frequency}, also that (``kefer.operating``)."""
    meta = {
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
    if prior is not None:
        meta["operating"] = {"class_prior": prior}
    return meta


def write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def resumable_state(output: Path, cfg: Config) -> tuple[dict | None, Config]:
    """(last.pt's state, its saved config) of run ``output``, or (None, ``cfg``) where there is
    nothing to resume. Warns naming the fields of ``cfg`` that differ from the saved config, which
    the resumed run ignores (``epochs`` cut by the saved run's time budget excepted)."""
    if not (output / "last.pt").exists():
        log.info(f"nothing to resume in {output}; starting fresh")
        return None, cfg
    state = load_training_state(output / "last.pt")
    saved = Config.from_dict(state["config"])
    ignored = cfg.differences(saved)
    if saved.time_budget and saved.time_budget == cfg.time_budget and saved.epochs < cfg.epochs:
        ignored.pop("epochs")
    if ignored and dist.is_main():
        log.warning(f"--resume continues {output} with its saved config.json; ignored, as they differ from it: "
                    + ", ".join(f"{k}={new!r} (saved {old!r})" for k, (new, old) in ignored.items()))
    return state, saved


@dataclass
class Run:
    """What the epochs of one ``fit`` share. ``trained`` is ``model`` or its DDP wrapper."""

    cfg: Config
    output: Path
    device: torch.device
    model: KEFERModel
    trained: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_cfg: LossConfig
    nu: int | None
    meta: dict
    text: dict          # text_encoder id and prompts, kept in last.pt
    history: list
    best: dict
    text_pool: torch.Tensor | None = None   # [P, K, d] anchor sets to draw from (--template-sampling batch, worst)
    start: dict | None = None               # the starting model's figures (--init; ``finetune.measure_start``)
    init_meta: dict | None = None           # the starting model's metadata (--init)

    def epoch(self, epoch: int) -> dict:
        """Train one epoch and validate: its history row."""
        t0 = time.time()
        row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        self.train_loader.sampler.set_epoch(epoch)
        row.update(train_one_epoch(self.trained, self.train_loader, self.optimizer, self.scheduler, self.scaler,
                                   self.loss_cfg, self.nu, self.device, self.cfg.amp,
                                   desc=f"epoch {epoch + 1}/{self.cfg.epochs}", text_pool=self.text_pool,
                                   pool_choice=self.cfg.template_sampling, pool_seed=self.cfg.seed * 100_003 + epoch))
        logits, _, labels = infer(self.model, self.val_loader, self.device, self.cfg.amp, desc="val")
        m = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.meta["classes"])
        row["val_accuracy"], row["val_mean_accuracy"] = m["accuracy"], m["mean_accuracy"]
        row["seconds"] = round(time.time() - t0, 1)
        return row

    def set_epochs(self, cfg: Config) -> None:
        """Continue under ``cfg`` (fewer epochs): the schedule and the saved config follow it."""
        self.cfg = cfg
        self.scheduler.lr_lambdas = [lr_lambda(cfg, len(self.train_loader))]
        self.meta["config"] = asdict(cfg)
        if dist.is_main():
            cfg.save(self.output / "config.json")

    def save(self, epoch: int, improved: bool) -> None:
        """history.csv, best.safetensors (if ``improved``) and last.pt after ``epoch``."""
        write_history(self.output / "history.csv", self.history)
        if improved:
            save_model(self.output / "best.safetensors", self.model.state_dict(), {**self.meta, **self.best})
        save_training_state(self.output / "last.pt", {
            "config": asdict(self.cfg), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(), "epoch": epoch, "history": self.history, "best": self.best,
            "text_encoder": self.text["text_encoder"], "prompts": self.text["prompts"], "start": self.start,
        })

    def improves(self, row: dict) -> bool:
        """Whether history ``row`` beats the best so far on the selection figure (``cfg.select``)."""
        key = f"val_{self.cfg.select}"
        return row[key] > self.best.get(key, -1.0)

    def begin_from_start(self) -> None:
        """"Epoch 0" of a fine-tune: the starting model saved as best.safetensors and measured, so
        that selection keeps it unless an epoch beats it."""
        if dist.is_main():
            save_start(self.output / "best.safetensors", self.model, self.meta, self.init_meta)
        dist.barrier()
        self.start = measure_start(self.output / "best.safetensors", self.cfg, self.device)
        row = {"epoch": 0, "val_accuracy": self.start["val_accuracy"],
               "val_mean_accuracy": self.start["val_mean_accuracy"]}
        self.history.append(row)
        self.best = {**row}


def datasets(cfg: Config, mean: tuple, std: tuple):
    """(train set, augmented; val set) of ``cfg``, normalised with the encoder's ``mean``/``std``."""
    train_set = build_dataset(cfg.dataset, cfg.data_root, "train",
                              train_transform(cfg.img_size, mean, std, cfg.rotation, cfg.crop_area,
                                              cfg.auto_augment, cfg.erasing, cfg.blur),
                              classes=cfg.classes, max_samples=cfg.max_train_samples, seed=cfg.seed,
                              labels=cfg.labels)
    val_set = build_dataset(cfg.dataset, cfg.data_root, "val", eval_transform(cfg.img_size, mean, std),
                            classes=train_set.classes)
    return train_set, val_set


def class_text(cfg: Config, loss_cfg: LossConfig, classes: list[str], state: dict | None):
    """(class text embeddings [K, d], text encoder id, prompts [K][T]); all None for the
    classifier baseline; from ``state`` when resuming."""
    if "classifier" in loss_cfg.terms:
        return None, None, None
    if state is not None:
        return state["model"]["text"], state["text_encoder"], state["prompts"]
    text, prompts, text_id = class_embeddings(cfg.text_encoder, classes, cfg.templates)
    return text, text_id, prompts


def check_config(cfg: Config) -> None:
    """ValueError for options that cannot work together, before any data is read."""
    for template in cfg.templates:
        check_template(template)
    LossConfig(cfg.loss_terms, cfg.lambdas, cfg.sc_form)   # unknown or clashing loss terms
    held_out = [t for t in cfg.templates if t in HELD_OUT_TEMPLATES + TUNING_TEMPLATES]
    if held_out:
        raise ValueError(f"{held_out} are kefer's held-out or tuning templates (kefer.train.template_sets.HELD_OUT_TEMPLATES, "
                         "TUNING_TEMPLATES), kept for measuring wordings a model never saw: train with other wordings.")
    if cfg.class_names == "variants" and cfg.template_sampling == "mean":
        raise ValueError("--class-names variants is text augmentation: add --template-sampling batch (or worst).")
    if cfg.ce_adjust and cfg.balance == "oversample":
        raise ValueError("--ce-adjust corrects for the training class prior, which --balance oversample makes "
                         "uniform, so together the adjustment would do nothing: use one or the other.")


def template_pool(cfg: Config, loss_cfg: LossConfig, classes: list[str]) -> torch.Tensor | None:
    """[P, K, d]: the class text embeddings of each ``--template`` alone (and, with
    ``--class-names variants``, of each template with the classes' adjectives too), for text
    augmentation (``--template-sampling batch`` or ``worst``); None otherwise."""
    if cfg.template_sampling == "mean" or "classifier" in loss_cfg.terms:
        return None
    names = [classes]
    if cfg.class_names == "variants":
        if adjectives(classes) is None:
            raise ValueError(f"--class-names variants: the classes {classes} have no distinct adjective forms "
                             "(kefer.vocab.ADJECTIVES); leave the flag out.")
        names.append(adjectives(classes))
    if len(cfg.templates) * len(names) < 2:
        raise ValueError(f"--template-sampling {cfg.template_sampling} chooses among several anchor sets; give "
                         "--template more than once (or --template paper), or add --class-names variants.")
    return torch.stack([class_embeddings(cfg.text_encoder, n, [t])[0] for n in names for t in cfg.templates])


def prepare(cfg: Config, output: Path, device: torch.device, state: dict | None) -> Run:
    """Data, model, optimiser and schedule of a run; from ``state`` (last.pt) when resuming."""
    seed_everything(cfg.seed + dist.rank())
    check_config(cfg)
    encoder = create_encoder(cfg.encoder, cfg.img_size, cfg.encoder_weights, batchnorm=cfg.batchnorm,
                            **cfg.encoder_kwargs)
    init_meta = model_meta(cfg.init) if cfg.init else None
    if init_meta is not None:
        encoder.mean, encoder.std = normalisation(init_meta)
    train_set, val_set = datasets(cfg, encoder.mean, encoder.std)
    classes = train_set.classes
    prior = class_prior(train_set.targets, classes, cfg.balance)   # {class: probability in training}
    offset = prior_offset([prior.get(c, 0.0) for c in classes], cfg.ce_adjust)
    loss_cfg = LossConfig(cfg.loss_terms, cfg.lambdas, cfg.sc_form,
                          logit_offset=None if offset is None else offset.to(device))
    nu = neutral_index(classes)
    if loss_cfg.needs_neutral and nu is None:
        raise ValueError(f"Losses {cfg.losses!r} need a 'neutral' class (the method maps each face to its neutral "
                         f"version); {cfg.dataset} has {classes}. Add a neutral/ folder of neutral faces, or train "
                         f"with --losses ce (the faces against their class texts alone).")
    text, text_id, prompts = class_text(cfg, loss_cfg, classes, state)
    pool = template_pool(cfg, loss_cfg, classes)
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
    history, best, start = [], {"val_accuracy": -1.0, "val_mean_accuracy": -1.0, "epoch": -1}, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        history, best, start = state["history"], state["best"], state.get("start")
    log.info(f"{cfg.dataset}: {len(train_set)} train / {len(val_set)} val images, classes {classes}; "
             f"encoder {cfg.encoder} @ {cfg.img_size}px, losses {cfg.losses}, text {text_id}, device {device}"
             + (f" x {dist.world_size()} processes" if dist.world_size() > 1 else ""))
    return Run(cfg, output, device, model, trained, train_loader, val_loader, optimizer, scheduler, scaler,
               loss_cfg, nu, checkpoint_meta(cfg, model, classes, text_id, prompts, prior),
               {"text_encoder": text_id, "prompts": prompts}, history, best,
               None if pool is None else pool.to(device), start, init_meta)


def fit(cfg: Config, output: str | Path, resume: bool = False) -> dict:
    """Train ``cfg`` into ``output``; select the best epoch on validation; test it once.

    ``resume`` continues the run in ``output`` from its last.pt, under its saved config. Under
    ``torchrun`` every process trains its share of each batch (DDP) and only the main one writes.
    Returns metrics.json's content.
    """
    begun = time.time()  # the time budget counts data loading and model building too
    device = dist.setup(cfg.device)
    main = dist.is_main()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    state, cfg = resumable_state(output, cfg) if resume else (None, cfg)
    if main:
        cfg.save(output / "config.json")
    run = prepare(cfg, output, device, state)
    start = 0 if state is None else state["epoch"] + 1
    if state is not None:
        log.info(f"resuming {output} after epoch {start}/{cfg.epochs}")
    elif cfg.init:
        run.begin_from_start()

    started = time.time()
    epoch = start
    while epoch < run.cfg.epochs:  # a while loop: the time budget may cut the epochs after warm-up
        row = run.epoch(epoch)
        run.history.append(row)
        improved = run.improves(row)
        if improved:
            run.best = {"val_accuracy": row["val_accuracy"], "val_mean_accuracy": row["val_mean_accuracy"],
                        "epoch": epoch + 1}
        if run.cfg.time_budget and epoch + 1 == run.cfg.warmup_epochs:
            now = dist.sum_all({"epochs": time.time() - started, "all": time.time() - begun})  # same on every rank
            run.set_epochs(fit_to_budget(run.cfg, now["epochs"] / dist.world_size() / (epoch + 1 - start),
                                         now["all"] / dist.world_size()))
        if main:
            run.save(epoch, improved)
            terms = " ".join(f"{k}={row[k]:.3f}" for k in ("loss", *run.loss_cfg.terms))
            log.info(f"epoch {epoch + 1}/{run.cfg.epochs} {terms} train_acc={row['train_accuracy']:.4f} "
                     f"val_acc={row['val_accuracy']:.4f} ({row['seconds']}s)")
        epoch += 1
    return finish(run)


def finish(run: Run) -> dict:
    """Test the best checkpoint once (unless ``cfg.test`` is off); write metrics.json (with the
    starting model's figures beside, for a fine-tune), the test plots and curves.png."""
    cfg, output, main = run.cfg, run.output, dist.is_main()
    dist.barrier()  # best.safetensors is written
    metrics = {"val_accuracy": run.best["val_accuracy"], "val_mean_accuracy": run.best.get("val_mean_accuracy"),
               "best_epoch": run.best["epoch"], "selected_on": f"val_{cfg.select}"}
    if cfg.test:
        recognizer = load(output / "best.safetensors", device=run.device, backend="torch")
        metrics.update(evaluate(recognizer, cfg.dataset, cfg.data_root, output if main and cfg.plots else None,
                                classes=cfg.classes))
    if run.start is not None:
        metrics["start"] = run.start
    dist.cleanup()
    if not main:
        return metrics
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    viz.plot_history(run.history, output / "curves.png")
    if run.start is not None and run.best["epoch"] == 0:
        log.warning(f"no epoch beat the starting model {cfg.init} on validation ({cfg.select} "
                    f"{run.start[f'val_{cfg.select}']:.4f}): best.safetensors is the starting model, unchanged")
    log.info(f"best epoch {run.best['epoch']} (val accuracy {run.best['val_accuracy']:.4f}, selected on {cfg.select})"
             + (f"; test accuracy {metrics['test_accuracy']:.4f}, mean per-class {metrics['test_mean_accuracy']:.4f}"
                if cfg.test else "; test not evaluated (--no-test)")
             + (f"; the starting model: test accuracy {run.start['test_accuracy']:.4f}, mean per-class "
                f"{run.start['test_mean_accuracy']:.4f}" if run.start and cfg.test else ""))
    return metrics
