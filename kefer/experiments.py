"""The reproduction experiments of docs/RESULTS.md: named sets of training runs, a runner, a report.

    python -m kefer.experiments list
    python -m kefer.experiments run table2 contrast text --seeds 0 1 2 --parallel 2
    python -m kefer.experiments report      # raw JSON -> tables in docs/RESULTS.md and plots
    python -m kefer.experiments run table2 --seeds 0 -- --max-train-samples 500 --epochs 2   # a smoke test

A row is a list of ``train.py`` flags; each (row, seed) is one ``train.py`` run into
``runs/experiments/<scale>/<row>/seed<k>``, followed by a FER+ -> CK+ (7 classes) evaluation of its
best checkpoint. Rows shared by experiments (e.g. ``full``) run once. A finished run is skipped.
``report`` copies each finished run's numbers into ``docs/results/raw/<scale>-<row>-seed<k>.json`` (kept in
the repository), then rebuilds every table and plot from those files alone.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .io import log_to_console
from .text import PAPER_TEMPLATES

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--preset", "cpu"]                       # ResNet-18 from scratch, 64 px, 12 epochs, MiniLM
ENCODERS = ["--preset", "paper-r18", "--img-size", "112", "--text-encoder", "minilm", "--epochs", "20"]
# ^ the paper's optimiser recipe (lr 2e-3, batch 64), 112 px, 20 epochs

ROWS: dict[str, list[str]] = {
    "classifier": CPU + ["--losses", "classifier"],
    "ce": CPU + ["--losses", "ce"],
    "ce+t": CPU + ["--losses", "ce,t"],
    "ce+sc": CPU + ["--losses", "ce,sc"],
    "full": CPU + ["--losses", "ce,t,sc"],
    "full-pairwise": CPU + ["--losses", "ce,t,sc", "--sc-form", "pairwise"],
    "ce+t+infonce": CPU + ["--losses", "ce,t,infonce"],
    "text-clip-random": CPU + ["--text-encoder", "clip:ViT-B-16/random"],
    "text-orthogonal": CPU + ["--text-encoder", "orthogonal"],
    **{f"template-{i + 1}": CPU + ["--template", t] for i, t in enumerate(PAPER_TEMPLATES[:-1])},
    "templates-all": CPU + ["--template", "paper"],
    "enc-scratch": ENCODERS + ["--encoder", "inception-resnet-v1"],
    "enc-facenet": ENCODERS + ["--encoder", "facenet-casia"],
    "enc-imagenet": ENCODERS + ["--encoder", "efficientnet-lite0-imagenet"],
    "enc-facenet-votes": ENCODERS + ["--encoder", "facenet-casia", "--labels", "votes"],
    "enc-facenet-bn-train": ENCODERS + ["--encoder", "facenet-casia", "--batchnorm", "train"],
    "enc-facenet-classifier": ENCODERS + ["--encoder", "facenet-casia", "--losses", "classifier"],
    "fast": CPU + ["--epochs", "40"],
}
EXPERIMENTS: dict[str, tuple[str, list[str]]] = {
    "table2": ("Loss ablation (paper Table 2)", ["classifier", "ce", "ce+t", "ce+sc", "full"]),
    "contrast": ("Self-contrast vs InfoNCE (paper Fig. 4)", ["full", "full-pairwise", "ce+t+infonce"]),
    "text": ("Text encoders and controls (paper Table 1)", ["full", "text-clip-random", "text-orthogonal"]),
    "templates": ("Prompt templates (paper Table 3)",
                  [f"template-{i + 1}" for i in range(8)] + ["full", "templates-all"]),
    "encoders": ("Visual encoder initialisation (InceptionResnetV1 / EfficientNet-Lite0)",
                 ["enc-scratch", "enc-facenet", "enc-imagenet"]),
    "table2-facenet": ("Classifier baseline vs full method, face-pretrained encoder",
                       ["enc-facenet-classifier", "enc-facenet"]),
    "batchnorm": ("Folded BatchNorm of the face-pretrained encoder: frozen vs batch statistics",
                  ["enc-facenet", "enc-facenet-bn-train"]),
    "labels": ("FER+ majority labels vs annotator vote distributions, face-pretrained encoder",
               ["enc-facenet", "enc-facenet-votes"]),
    "models": ("Shipped models", ["fast", "enc-facenet"]),
}
# A scale shrinks every run the same way, so that a 2-core CPU can run the seeds of an experiment.
# Rows on the ResNet-18 `cpu` preset and the 112-px encoder rows shrink differently.
SCALES: dict[str, dict[str, list[str]]] = {
    "full": {"cpu": [], "encoders": []},  # all 25,045 FER+ training images, each row's own size/epochs
    "small": {"cpu": ["--max-train-samples", "2000", "--epochs", "10", "--img-size", "48"],  # FER+'s 48 px
              "encoders": ["--max-train-samples", "2000", "--epochs", "4", "--img-size", "80"]},
}
CKPLUS_CLASSES = "neutral,happiness,surprise,sadness,anger,disgust,fear"
PLOTTED = {"classifier", "full", "enc-facenet-classifier", "enc-facenet"}  # seed 0 keeps its plots


def rows_of(experiments: list[str]) -> list[str]:
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"Unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)}")
    return list(dict.fromkeys(r for e in experiments for r in EXPERIMENTS[e][1]))


def train_command(row: str, seed: int, scale: str, out: Path, extra: list[str]) -> list[str]:
    plots = [] if row in PLOTTED and seed == 0 else ["--no-plots"]
    family = "cpu" if ROWS[row][:2] == CPU else "encoders"
    return [sys.executable, str(ROOT / "train.py"), *ROWS[row], *SCALES[scale][family], "--seed", str(seed),
            "--output", str(out), *plots, *extra]


def run_one(row: str, seed: int, scale: str, root: Path, extra: list[str], device: str) -> str:
    """Train (unless done) and evaluate on CK+ one (row, seed); returns a one-line status."""
    out = root / scale / row / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "log.txt", "a") as log:
        if not (out / "metrics.json").exists():
            cmd = train_command(row, seed, scale, out, extra)
            (out / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
            resume = ["--resume"] if (out / "last.pt").exists() else []
            if subprocess.call(cmd + resume, stdout=log, stderr=subprocess.STDOUT) != 0:
                return f"{row} seed {seed}: training FAILED, see {out / 'log.txt'}"
        if not (out / "ckplus.json").exists():
            cmd = [sys.executable, "-m", "kefer.evaluate", "--checkpoint", str(out), "--dataset", "ckplus",
                   "--classes", CKPLUS_CLASSES, "--device", device, "--output", str(out / "ckplus.json")]
            if subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT) != 0:
                return f"{row} seed {seed}: CK+ evaluation failed, see {out / 'log.txt'}"
    metrics = json.loads((out / "metrics.json").read_text())
    return f"{row} seed {seed}: test {metrics['test_accuracy']:.4f} ({time.time() - t0:.0f} s)"


def run(experiments: list[str], seeds: list[int], scale: str, root: Path, parallel: int,
        deadline: float | None, extra: list[str], device: str, only: list[str] | None = None) -> None:
    """Run every (row, seed) of ``experiments`` (or just the rows in ``only``), seed-major so that
    partial results cover all rows. No run starts after ``deadline`` minutes."""
    rows = rows_of(experiments)
    if only:
        unknown = sorted(set(only) - set(rows))
        if unknown:
            raise SystemExit(f"--only {unknown}: not rows of {experiments}")
        rows = [r for r in rows if r in only]
    jobs = [(row, seed) for seed in seeds for row in rows]
    start = time.time()
    log.info(f"{len(jobs)} runs ({scale} scale) into {root / scale}, {parallel} at a time")

    def job(args):
        done = (root / scale / args[0] / f"seed{args[1]}" / "ckplus.json").exists()
        if deadline is not None and time.time() - start > deadline * 60 and not done:
            return f"{args[0]} seed {args[1]}: not started (deadline)"
        return run_one(*args, scale, root, extra, device)

    with ThreadPoolExecutor(parallel) as pool:
        for i, status in enumerate(pool.map(job, jobs)):
            log.info(f"[{i + 1}/{len(jobs)}] {status}")


def collect(root: Path, raw: Path) -> int:
    """Copy the numbers of each finished run under ``root`` into ``raw/<scale>-<row>-seed<k>.json``."""
    n = 0
    for metrics_path in sorted(root.glob("*/*/seed*/metrics.json")):
        run_dir = metrics_path.parent
        ck = run_dir / "ckplus.json"
        if not ck.exists():
            continue
        with open(run_dir / "history.csv") as f:
            history = list(csv.DictReader(f))
        record = {
            "scale": run_dir.parent.parent.name, "row": run_dir.parent.name,
            "seed": int(run_dir.name.removeprefix("seed")),
            "command": (run_dir / "command.txt").read_text().strip() if (run_dir / "command.txt").exists() else None,
            "config": json.loads((run_dir / "config.json").read_text()),
            "ferplus": json.loads(metrics_path.read_text()),
            "ckplus": json.loads(ck.read_text()),
            "history": history,
            "train_seconds": sum(float(r["seconds"]) for r in history),
        }
        raw.mkdir(parents=True, exist_ok=True)
        stem = f"{record['scale']}-{record['row']}-seed{record['seed']}"
        (raw / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
        for name in ("confusion_matrix.png", "tsne.png"):
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, raw.parent / f"{stem}-{name}")
        n += 1
    return n


def load_raw(raw: Path) -> dict[str, dict[str, list[dict]]]:
    """{scale: {row: [records of its seeds]}}"""
    out: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(raw.glob("*.json")):
        record = json.loads(path.read_text())
        out.setdefault(record["scale"], {}).setdefault(record["row"], []).append(record)
    return out


def summarise(records: list[dict]) -> dict:
    """Mean and standard deviation (ddof=1) over seeds of the reported numbers."""
    cols = {
        "FER+ test": [r["ferplus"]["test_accuracy"] for r in records],
        "FER+ mean per class": [r["ferplus"]["test_mean_accuracy"] for r in records],
        "FER+ val (selection)": [r["ferplus"]["val_accuracy"] for r in records],
        "FER+ -> CK+": [r["ckplus"]["test_accuracy"] for r in records],
        "CK+ mean per class": [r["ckplus"]["test_mean_accuracy"] for r in records],
    }
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), v)
            for k, v in cols.items()}


def fmt(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" + ("" if np.isnan(std) else f" ± {100 * std:.2f}")


def family_of(row: str) -> tuple[str, list[str]]:
    """A row's family ('cpu' or 'encoders') and the flags it shares with its family."""
    return ("cpu", CPU) if ROWS[row][:2] == CPU else ("encoders", ENCODERS)


def table(name: str, scale: str, by_row: dict[str, list[dict]]) -> str:
    title, rows = EXPERIMENTS[name]
    families = dict.fromkeys(family_of(r)[0] for r in rows)
    common = "; ".join(f"`{' '.join((CPU if f == 'cpu' else ENCODERS) + SCALES[scale][f])}`" for f in families)
    lines = [f"**{title}**, {scale} scale (`python -m kefer.experiments run {name} --scale {scale}`). "
             f"Every row: {common}, then its own flags (later flags win).", "",
             "| row | own flags | seeds | epochs | FER+ test | FER+ mean per class | FER+ val | FER+ → CK+ | CK+ mean per class |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        records = by_row.get(row, [])
        flags = " ".join(ROWS[row][len(family_of(row)[1]):])
        if not records:
            lines.append(f"| {row} | `{flags}` | 0 | | not run | | | | |")
            continue
        s = summarise(records)
        epochs = sorted({r["config"]["epochs"] for r in records})
        lines.append(f"| {row} | `{flags}` | {len(records)} | {'/'.join(map(str, epochs))} | "
                     + " | ".join(fmt(*s[k][:2]) for k in ("FER+ test", "FER+ mean per class",
                                                           "FER+ val (selection)", "FER+ -> CK+", "CK+ mean per class"))
                     + " |")
    return "\n".join(lines)


def plot_experiment(name: str, scale: str, by_row: dict[str, list[dict]], path: Path) -> None:
    """Bars: mean FER+ test accuracy per row with every seed as a dot; CK+ beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title, rows = EXPERIMENTS[name]
    rows = [r for r in rows if by_row.get(r)]
    if len(rows) < 2:  # nothing to compare
        return
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.3 * len(rows)) * 2, 4))
    for ax, key in zip(axes, ("FER+ test", "FER+ -> CK+")):
        values = [summarise(by_row[r])[key][2] for r in rows]
        means = [100 * np.mean(v) for v in values]
        ax.bar(range(len(rows)), means, color="#8fb3d9")
        for i, v in enumerate(values):
            ax.scatter([i] * len(v), [100 * x for x in v], color="k", s=12, zorder=3)
        lo = min(100 * min(v) for v in values)
        ax.set_ylim(max(0, lo - 5), min(100, max(means) + 3))
        ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
        ax.set_ylabel(f"{key} accuracy (%)")
        ax.set_title(key)
    fig.suptitle(f"{title}, {scale} scale")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(root: Path, out: Path, results_md: Path) -> None:
    """Collect finished runs, then rebuild tables (in ``results_md`` between markers), CSV and plots."""
    raw = out / "raw"
    if root.exists():
        log.info(f"collected {collect(root, raw)} finished runs from {root}")
    scales = load_raw(raw)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scale", "row", "seed", "epochs", "best_epoch", "val_accuracy", "ferplus_test_accuracy",
                    "ferplus_test_mean_accuracy", "ckplus_accuracy", "ckplus_mean_accuracy", "train_seconds"])
        for scale, by_row in sorted(scales.items()):
            for row, records in sorted(by_row.items()):
                for r in records:
                    w.writerow([scale, row, r["seed"], r["config"]["epochs"], r["ferplus"]["best_epoch"],
                                r["ferplus"]["val_accuracy"], r["ferplus"]["test_accuracy"],
                                r["ferplus"]["test_mean_accuracy"], r["ckplus"]["test_accuracy"],
                                r["ckplus"]["test_mean_accuracy"], r["train_seconds"]])
    text = results_md.read_text() if results_md.exists() else ""
    for scale, by_row in scales.items():
        for name in EXPERIMENTS:
            plot_experiment(name, scale, by_row, out / f"{scale}-{name}.png")
            begin, end = f"<!-- table:{name}:{scale} -->", f"<!-- /table:{name}:{scale} -->"
            if begin in text and end in text:
                head, rest = text.split(begin, 1)
                text = head + begin + "\n" + table(name, scale, by_row) + "\n" + end + rest.split(end, 1)[1]
    if text:
        results_md.write_text(text)
    log.info(f"tables in {results_md}, plots and runs.csv in {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kefer.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="experiments, their rows and flags")
    r = sub.add_parser("run", help="train and evaluate the runs of some experiments")
    r.add_argument("experiments", nargs="+")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--scale", choices=sorted(SCALES), default="full",
                   help="small: 2,000 training images, 10 epochs at 48 px (encoder rows: 4 at 80 px)")
    r.add_argument("--parallel", type=int, default=1, help="runs at a time")
    r.add_argument("--deadline", type=float, help="start no run after this many minutes")
    r.add_argument("--root", type=Path, default=ROOT / "runs" / "experiments")
    r.add_argument("--device", default="auto")
    r.add_argument("--workers", type=int, help="data-loading workers per run")
    r.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows of the experiments")
    r.epilog = "Flags after '--' are passed to every train.py run, e.g. -- --time-budget 7"
    g = sub.add_parser("report", help="collect finished runs and rebuild tables and plots")
    g.add_argument("--root", type=Path, default=ROOT / "runs" / "experiments")
    g.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    g.add_argument("--results-md", type=Path, default=ROOT / "docs" / "RESULTS.md")
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:len(argv) - len(passthrough) - (1 if "--" in argv else 0)])
    log_to_console()
    if args.command == "list":
        for name, (title, rows) in EXPERIMENTS.items():
            print(f"{name}: {title}")
            for row in rows:
                print(f"    {row:18s} {' '.join(ROWS[row])}")
    elif args.command == "run":
        extra = ["--device", args.device] + (["--workers", str(args.workers)] if args.workers is not None else [])
        extra += passthrough  # flags after '--' go to every train.py run and win over the row's
        log.info(f"hardware: {platform.processor() or platform.machine()}")
        run(args.experiments, args.seeds, args.scale, args.root, args.parallel, args.deadline, extra,
            "cpu" if args.device == "auto" else args.device, args.only)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        report(args.root, args.out, args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
