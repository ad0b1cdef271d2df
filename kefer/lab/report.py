"""The experiments' report: finished runs -> raw JSON records (kept in the repository) -> the tables
of docs/RESULTS.md and the plots of docs/results/ (``kefer lab experiments report``)."""
from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from .experiments import CPU, ENCODERS, EXPERIMENTS, ROWS, SCALES, ZERO_SHOT

log = logging.getLogger(__name__)


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
    lines = [f"**{title}**, {scale} scale (`kefer lab experiments run {name} --scale {scale}`). "
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
    lines = [f"**{EXPERIMENTS['zero-shot'][0]}**, {scale} scale (`kefer lab experiments run zero-shot --scale "
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
