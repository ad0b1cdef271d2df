"""Fine-tuning a shipped model on "your own data", measured on CK+ by subject: the study that chose
``kefer.train.finetune.SCHEDULE`` and the before/after figures of docs/own-data.md.

    kefer lab finetune accurate --seeds 0 1 2 --grid lr=1e-4,3e-4,1e-3 epochs=3,8 --no-test --output grid.json
    kefer lab finetune accurate --seeds 0 1 2 --output after.json --plot after.png

Each seed splits CK+'s subjects 70/10/20 into train/val/test (a subject on one side only) and links
the crops into ``<work>/seed<k>/{train,val,test}/<class>/`` (7 classes, contempt left out). Each
grid point is one ``kefer train --dataset folder --init MODEL`` run per seed, with the point's flags
over the fine-tuning defaults. ``--no-test`` runs read validation only: the grid is chosen on it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..io import data_home
from ..train.config import Config
from ..train.data import read_folder
from ..train.data.splits import subject_holdout
from ..recognizer import load
from ..train.evaluate import evaluate
from ..train.finetune import from_model, measure_start, save_start
from ..train.fit import fit, prepare
from ..options import parse_kv
from ..viz import plot_before_after
from .reference import subject_of

log = logging.getLogger(__name__)

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
VAL, TEST = 0.1, 0.2


def fold_folder(source: Path, work: Path, seed: int) -> Path:
    """``work/seed<seed>/{train,val,test}/<class>/`` of symbolic links to CK+ crops in ``source``,
    split by subject (``subject_holdout``)."""
    samples, classes = read_folder(source, CLASSES)
    split = subject_holdout([subject_of(p) for p, _ in samples], VAL, TEST, seed)
    root = work / f"seed{seed}"
    for path, label in samples:
        link = root / split[subject_of(path)] / classes[label] / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(path.resolve())
    return root


def grid_points(specs: list[str]) -> list[dict]:
    """['lr=1e-4,3e-4', 'epochs=3,8'] -> every combination as {field: value}, typed like Config's."""
    axes = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        axes[name] = [parse_kv(f"v={v}")["v"] for v in values.split(",")]
    unknown = set(axes) - set(Config.__dataclass_fields__)
    if unknown:
        raise ValueError(f"--grid: {sorted(unknown)} are not training config fields.")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def run_point(model: str, point: dict, fold: Path, output: Path, test: bool) -> dict:
    """One fine-tune of ``model`` on ``fold`` with ``point``'s fields set: its metrics.json and seconds.
    A run already finished in ``output`` is not trained again; with ``test``, a finished run that
    was chosen on validation alone (``--no-test``) gets its test figures now, the first read of them."""
    cfg = from_model(Config(dataset="folder", data_root=str(fold), init=model, classes=CLASSES, plots=False,
                            test=test, **point), set(point))
    done = output / "metrics.json"
    if not done.is_file():
        begun = time.time()
        metrics = {**fit(cfg, output), "seconds": round(time.time() - begun, 1)}
        done.write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
    metrics = json.loads(done.read_text())
    if test and "test_accuracy" not in metrics:
        device = torch.device("cpu")
        metrics.update(evaluate(load(output / "best.safetensors"), cfg.dataset, cfg.data_root, classes=CLASSES))
        with tempfile.TemporaryDirectory() as tmp:   # the starting model, as the run measured it at epoch 0
            run = prepare(cfg, Path(tmp), device, None)
            save_start(Path(tmp) / "start.safetensors", run.model, run.meta, run.init_meta)
            metrics["start"] = measure_start(Path(tmp) / "start.safetensors", cfg, device)
        done.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def summarise(rows: list[dict]) -> dict:
    """Per grid point, the mean over seeds of the selected and the starting model's figures."""
    out = {}
    for row in rows:
        out.setdefault(json.dumps(row["point"], sort_keys=True), []).append(row)
    table = {}
    for key, runs in out.items():
        splits = ["val"] + (["test"] if "test_accuracy" in runs[0] else [])
        table[key] = {f"{s}_{m}{w}": float(np.mean([r[f"{s}_{m}"] if w == "" else r["start"][f"{s}_{m}"] for r in runs]))
                      for s in splits for m in ("accuracy", "mean_accuracy") for w in ("", "_start")}
        table[key]["seconds"] = float(np.mean([r["seconds"] for r in runs]))
        table[key]["kept_start"] = sum(r["best_epoch"] == 0 for r in runs)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the model to fine-tune: a run directory, a file or a shipped model's name")
    p.add_argument("--output", help="write every run's metrics and the summary as JSON")
    p.add_argument("--plot", help="a PNG of the test per-class accuracy before and after (needs the test split)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid", nargs="*", default=[], help="FIELD=v1,v2 ... (default: the fine-tuning defaults alone)")
    p.add_argument("--no-test", dest="test", action="store_false", help="read validation only (choosing the grid)")
    p.add_argument("--work", default="runs/finetune", help="where the fold folders and the runs go")
    p.add_argument("--data-root", help="the CK+ crops (default: $KEFER_DATA/ckplus)")
    args = p.parse_args(argv)
    source = Path(args.data_root) if args.data_root else data_home() / "ckplus"
    work = Path(args.work)
    rows = []
    for seed in args.seeds:             # seed-major: a cut-short study still compares every point
        for point in grid_points(args.grid) or [{}]:
            name = "-".join(f"{k}{v}" for k, v in point.items()) or "defaults"
            metrics = run_point(args.checkpoint, point, fold_folder(source, work, seed), work / name / f"seed{seed}",
                                args.test)
            rows.append({"point": point, "seed": seed, **metrics})
            log.info(f"{name} seed {seed}: selected epoch {metrics['best_epoch']}, val mean per-class "
                     f"{metrics['val_mean_accuracy']:.4f} (start {metrics['start']['val_mean_accuracy']:.4f}), "
                     f"{metrics['seconds']:.0f} s")
    table = summarise(rows)
    for key, figures in table.items():
        log.info(f"{key}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))
    if args.output:
        Path(args.output).write_text(json.dumps({"rows": rows, "summary": table}, indent=2) + "\n")
    if args.plot and args.test:
        plot_before_after([r["start"]["per_class_accuracy"]["test"] for r in rows],
                          [r["per_class_accuracy"] for r in rows], CLASSES, args.plot,
                          f"{args.checkpoint} fine-tuned on CK+ by subject ({len(args.seeds)} seeds, test subjects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
