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
import os
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

FACENET = ENCODERS + ["--encoder", "facenet-casia"]
FERPLUS_CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
ZERO_SHOT_CLASSES = ["fear", "contempt"]

# augmentation against the gap to faces that are not FER+ crops (issue 15), each alone on top of the recipe's
AUGMENTATIONS = {"crop-area-0.6": ["--crop-area", "0.6"], "rotation-30": ["--rotation", "30"],
                 "trivial": ["--auto-augment", "trivial"], "blur": ["--blur", "0.5"]}

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
    # with the face-pretrained encoder: Table 2's rows, Table 1's controls, balance, zero-shot classes
    **{f"enc-facenet-{name}": FACENET + ["--losses", losses]
       for name, losses in (("ce", "ce"), ("ce+t", "ce,t"), ("ce+sc", "ce,sc"))},
    "enc-facenet-orthogonal": FACENET + ["--text-encoder", "orthogonal"],
    "enc-facenet-clip-random": FACENET + ["--text-encoder", "clip:ViT-B-16/random"],
    "enc-facenet-mpnet": FACENET + ["--text-encoder", "mpnet"],
    "enc-facenet-balanced-softmax": FACENET + ["--ce-adjust", "1"],
    "enc-facenet-oversample": FACENET + ["--balance", "oversample"],
    **{f"aug-{name}": FACENET + flags for name, flags in AUGMENTATIONS.items()},
    **{f"zs-{c}{suffix}": FACENET + ["--classes", ",".join(k for k in FERPLUS_CLASSES if k != c), *flags]
       for c in ZERO_SHOT_CLASSES for suffix, flags in (("", []), ("-orthogonal", ["--text-encoder", "orthogonal"]))},
}
ZERO_SHOT = {row: row.split("-")[1] for row in ROWS if row.startswith("zs-")}  # row -> the class it leaves out
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
    "table1-facenet": ("Losses and text encoders vs fixed prototypes, face-pretrained encoder (paper Tables 1 and 2)",
                       ["enc-facenet-classifier", "enc-facenet-ce", "enc-facenet-ce+t", "enc-facenet-ce+sc",
                        "enc-facenet", "enc-facenet-orthogonal", "enc-facenet-clip-random", "enc-facenet-mpnet"]),
    "balance": ("Training for rare classes, face-pretrained encoder",
                ["enc-facenet", "enc-facenet-votes", "enc-facenet-oversample", "enc-facenet-balanced-softmax"]),
    "augment": ("Augmentation for faces that are not FER+ crops, face-pretrained encoder",
                ["enc-facenet", *(f"aug-{name}" for name in AUGMENTATIONS)]),
    "zero-shot": ("A class left out of training, added back by its text alone (face-pretrained encoder)",
                  list(ZERO_SHOT)),
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


def evaluate_command(row: str, out: Path, dataset: str, classes: str, output: Path, device: str) -> list[str]:
    """``kefer.evaluate`` of a run's best checkpoint; a zero-shot row adds its left-out class back by text."""
    added = ["--add-class", ZERO_SHOT[row]] if row in ZERO_SHOT else []
    return [sys.executable, "-m", "kefer.evaluate", "--checkpoint", str(out), "--dataset", dataset,
            "--classes", classes, *added, "--device", device, "--output", str(output)]


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


def run_one(row: str, seed: int, scale: str, root: Path, extra: list[str], device: str,
            env: dict | None = None) -> str:
    """Train (unless done) and evaluate on CK+ one (row, seed) with environment ``env``; returns a
    one-line status."""
    out = root / scale / row / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "log.txt", "a") as log:
        if not (out / "metrics.json").exists():
            cmd = train_command(row, seed, scale, out, extra)
            (out / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
            resume = ["--resume"] if (out / "last.pt").exists() else []
            if subprocess.call(cmd + resume, stdout=log, stderr=subprocess.STDOUT, env=env) != 0:
                return f"{row} seed {seed}: training FAILED, see {out / 'log.txt'}"
        evaluations = [("ckplus", CKPLUS_CLASSES, out / "ckplus.json")]
        if row in ZERO_SHOT:  # all 8 FER+ test classes, the left-out one scored by its text alone
            evaluations.append(("ferplus", ",".join(FERPLUS_CLASSES), out / "zero_shot.json"))
        for dataset, classes, output in evaluations:
            if not output.exists():
                cmd = evaluate_command(row, out, dataset, classes, output, device)
                if subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=env) != 0:
                    return f"{row} seed {seed}: {output.name} evaluation failed, see {out / 'log.txt'}"
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
    # Runs side by side share the cores: more threads than cores makes every run several times slower.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // parallel))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    start = time.time()
    log.info(f"{len(jobs)} runs ({scale} scale) into {root / scale}, {parallel} at a time, {threads} threads each")

    def job(args):
        done = (root / scale / args[0] / f"seed{args[1]}" / "ckplus.json").exists()
        if deadline is not None and time.time() - start > deadline * 60 and not done:
            return f"{args[0]} seed {args[1]}: not started (deadline)"
        return run_one(*args, scale, root, extra, device, env)

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
        if (run_dir / "zero_shot.json").exists():
            record["zero_shot"] = json.loads((run_dir / "zero_shot.json").read_text())
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


def per_class_table(name: str, scale: str, by_row: dict[str, list[dict]], dataset: str = "ckplus") -> str:
    """Markdown: each row's per-class test accuracy on ``dataset`` (``ckplus`` or ``ferplus``), mean ±
    standard deviation over seeds; blank where a row has no such class (e.g. one left out of training)."""
    rows = [r for r in EXPERIMENTS[name][1] if by_row.get(r)]
    if not rows:
        return f"(no finished run of {name} at the {scale} scale)"
    classes = list(dict.fromkeys(c for r in rows for rec in by_row[r] for c in rec[dataset]["classes"]))
    label = {"ckplus": "CK+ (7 classes)", "ferplus": "FER+ test"}[dataset]
    lines = [f"{label} accuracy per class (%), mean ± standard deviation over seeds.", "",
             "| row | seeds | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for row in rows:
        records = by_row[row]
        cells = [fmt(*summary(values)) if (values := [r[dataset]["per_class_accuracy"][c] for r in records
                                                     if c in r[dataset]["per_class_accuracy"]]) else ""
                 for c in classes]
        lines.append(f"| {row} | {len(records)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def where_left_out_goes(record: dict) -> tuple[str, float, np.ndarray, list[str]]:
    """(left-out class, its recall, share of its test images per predicted class [K], classes) of a
    zero-shot run's all-class FER+ test evaluation."""
    zs = record["zero_shot"]
    name = ZERO_SHOT[record["row"]]
    k = zs["classes"].index(name)
    row = np.asarray(zs["confusion_matrix"][k], dtype=float)
    return name, row[k] / row.sum(), row / row.sum(), zs["classes"]


def zero_shot_table(scale: str, by_row: dict[str, list[dict]]) -> str:
    lines = [f"**{EXPERIMENTS['zero-shot'][0]}**, {scale} scale (`python -m kefer.experiments run zero-shot --scale "
             f"{scale}`): trained on FER+ without one class (its images dropped), then tested on all 8 FER+ test "
             "classes with that class added back by its prompt alone (`kefer.evaluate --add-class`).", "",
             "| row | text | seeds | left-out class | its recall (zero-shot) | chance | AUC of its prompt | where its "
             "images go (mean share) | FER+ test, 8 classes | FER+ test, the 7 trained |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in EXPERIMENTS["zero-shot"][1]:
        records = [r for r in by_row.get(row, []) if "zero_shot" in r]
        if not records:
            lines.append(f"| {row} | | 0 | {ZERO_SHOT[row]} | not run | | | | | |")
            continue
        parts = [where_left_out_goes(r) for r in records]
        name, classes = parts[0][0], parts[0][3]
        share = np.mean([p[2] for p in parts], axis=0)
        top = ", ".join(f"{classes[i]} {100 * share[i]:.0f}%" for i in np.argsort(-share, kind="stable")[:3])
        recall = [p[1] for p in parts]
        text = "orthogonal" if "orthogonal" in ROWS[row] else "minilm"
        auc = [r["zero_shot"]["per_class_auc"][name] for r in records]
        lines.append(
            f"| {row} | {text} | {len(records)} | {name} | {fmt(*summary(recall))} "
            f"| {100 / len(classes):.1f} | {np.mean(auc):.3f} ± {np.std(auc, ddof=1) if len(auc) > 1 else float('nan'):.3f} "
            f"| {top} | "
            f"{fmt(*summary([r['zero_shot']['test_accuracy'] for r in records]))} | "
            f"{fmt(*summary([r['ferplus']['test_accuracy'] for r in records]))} |")
    return "\n".join(lines)


def summary(values: list[float]) -> tuple[float, float]:
    """(mean, standard deviation with ddof=1, nan for one value)"""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def plot_zero_shot(scale: str, by_row: dict[str, list[dict]], path: Path) -> None:
    """Left: the left-out class's zero-shot recall per row (seeds as dots, chance dashed). Right:
    where that class's test images go, mean share per predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in EXPERIMENTS["zero-shot"][1] if any("zero_shot" in x for x in by_row.get(r, []))]
    if not rows:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    shares = {}
    for i, row in enumerate(rows):
        parts = [where_left_out_goes(r) for r in by_row[row] if "zero_shot" in r]
        recall = [100 * p[1] for p in parts]
        left.bar(i, np.mean(recall), color="#8fb3d9" if "orthogonal" not in row else "#d9a38f")
        left.scatter([i] * len(recall), recall, color="k", s=12, zorder=3)
        shares[row], classes = np.mean([p[2] for p in parts], axis=0), parts[0][3]
    left.axhline(100 / len(classes), ls="--", color="grey", label="chance (1/8)")
    left.set_xticks(range(len(rows)), rows, rotation=20, ha="right")
    left.set_ylabel("recall of the left-out class (%)")
    left.set_title("Zero-shot recall, FER+ test")
    left.legend()
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        right.bar(np.arange(len(classes)) + i * width, 100 * shares[row], width, label=row)
    right.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    right.set_ylabel("share of the left-out class's test images (%)")
    right.set_title("Where the left-out class's images go")
    right.legend(fontsize=8)
    fig.suptitle(f"{EXPERIMENTS['zero-shot'][0]}, {scale} scale")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def between_markers(text: str, key: str, body: str) -> str:
    """``text`` with what stands between ``<!-- table:key -->`` and ``<!-- /table:key -->`` replaced by
    ``body``; unchanged where the markers are absent."""
    begin, end = f"<!-- table:{key} -->", f"<!-- /table:{key} -->"
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]


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
        plot_zero_shot(scale, by_row, out / f"{scale}-zero-shot-recall.png")
        text = between_markers(text, f"zero-shot-recall:{scale}", zero_shot_table(scale, by_row))
        for name in EXPERIMENTS:
            plot_experiment(name, scale, by_row, out / f"{scale}-{name}.png")
            text = between_markers(text, f"{name}:{scale}", table(name, scale, by_row))
            for dataset in ("ckplus", "ferplus"):
                text = between_markers(text, f"{name}-{dataset}-per-class:{scale}",
                                       per_class_table(name, scale, by_row, dataset))
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
