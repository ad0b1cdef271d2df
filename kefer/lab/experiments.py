"""The reproduction experiments of docs/RESULTS.md: named sets of training runs and a runner
(the report: ``kefer.lab.report``).

    kefer lab experiments list
    kefer lab experiments run table2 contrast text --seeds 0 1 2 --parallel 2
    kefer lab experiments report      # raw JSON -> tables in docs/RESULTS.md and plots
    kefer lab experiments run table2 --seeds 0 -- --max-train-samples 500 --epochs 2   # a smoke test

A row is a list of ``train.py`` flags; each (row, seed) is one ``train.py`` run into
``runs/experiments/<scale>/<row>/seed<k>``, followed by a FER+ -> CK+ (7 classes) evaluation of its
best checkpoint. Rows shared by experiments (e.g. ``full``) run once. A finished run is skipped.
``report`` copies each finished run's numbers into ``docs/results/raw/<scale>-<row>-seed<k>.json`` (kept in
the repository), then rebuilds every table and plot from those files alone.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from ..text import PAPER_TEMPLATES

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
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
    """``kefer evaluate`` of a run's best checkpoint; a zero-shot row adds its left-out class back by text."""
    added = ["--add-class", ZERO_SHOT[row]] if row in ZERO_SHOT else []
    return [sys.executable, "-m", "kefer", "evaluate", "--checkpoint", str(out), "--dataset", dataset,
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
