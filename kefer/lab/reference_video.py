"""The estimated reference on videos built from CK+ (the protocol: docs/results/reference-video.md).

    kefer lab reference-video accurate --output video.json --plot video.png [--videos DIR]

For each CK+ subject and each order (``session``: every sequence's neutral crop, then its apex;
``expressive-first``: the apex crops, then the neutral ones) a video is written: each 48x48 crop
upscaled to 240x240 at the centre of a 640x480 grey frame, held for ``HOLD`` frames at ``FPS``.
Each video runs through ``analysis.analyze_video`` with ``estimate=True`` (the **estimated**
setting); **plain** is the same frames' embeddings scored without a reference. A subject in fold k
is scored with the rule ``kefer lab reference`` chooses for fold k on the other folds (held out);
``--rule stored`` uses the model's stored rule for every subject instead. Only CK+ is read.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ..analysis import analyze_video
from ..recognizer import load, resolve_checkpoint
from ..reference import ReferenceRule
from ..train.data import build_dataset
from ..train.data.splits import subject_folds
from ..train.metrics import classification_metrics
from .reference import FOLDS, SEED, ckplus_evidence, held_out, subject_of

log = logging.getLogger(__name__)

HOLD, FPS = 12, 30                     # each crop shown for 12 frames of a 30-fps video (0.4 s)
FRAME, SIDE, GREY = (480, 640), 240, 110   # frame [H, W], the face's side, the background
ORDERS = ("session", "expressive-first")


def subject_crops(data_root=None) -> tuple[dict, list[str]]:
    """CK+'s 7-class crops -> ({subject: [(sequence, path, label)] sorted by sequence, neutral
    before apex}, classes)."""
    data = build_dataset("ckplus", data_root, "test")
    neutral = data.classes.index("neutral")
    crops = {}
    for path, label in data.samples:
        sequence = Path(path).name.split("_")[1]
        crops.setdefault(subject_of(path), []).append((sequence, Path(path), int(label)))
    return {s: sorted(c, key=lambda x: (x[0], x[2] != neutral)) for s, c in sorted(crops.items())}, data.classes


def in_order(crops: list, order: str, neutral: int) -> list:
    """One subject's [(sequence, path, label)] in ``order``: "session" keeps the sequences' order
    (neutral, then apex); "expressive-first" shows every apex crop before every neutral one."""
    if order == "session":
        return list(crops)
    return [c for c in crops if c[2] != neutral] + [c for c in crops if c[2] == neutral]


def write_video(crops: list, path: Path) -> None:
    """Crops [(sequence, path, label)] -> an MP4 at ``path``, each crop upscaled and held HOLD frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, FRAME[::-1])
    top, left = (FRAME[0] - SIDE) // 2, (FRAME[1] - SIDE) // 2
    for _, crop, _ in crops:
        frame = np.full((*FRAME, 3), GREY, np.uint8)
        grey = cv2.resize(cv2.imread(str(crop), cv2.IMREAD_GRAYSCALE), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
        frame[top:top + SIDE, left:left + SIDE] = grey[..., None]
        for _ in range(HOLD):
            writer.write(frame)
    writer.release()


def run_video(rec, path: Path, prompts, idx: np.ndarray) -> dict:
    """One video through the path -> per frame [T]: whether a face was found, the plain and the
    estimated prediction (dataset class index; -1 without a face), whether the estimate was used;
    and how many frames the path scored without an estimate yet disagree with plain scoring."""
    found, plain, estimated, used, disagree = [], [], [], [], 0
    for frame in analyze_video(rec, path, prompts=prompts, estimate=True):
        found.append(bool(frame.faces))
        if not frame.faces:
            plain.append(-1), estimated.append(-1), used.append(False)
            continue
        face = max(frame.faces, key=lambda f: f.area)
        base = rec.score(face.embedding[None], prompts)[1][0]
        if face.reference == "none" and not np.allclose(base, face.probabilities, atol=1e-5):
            disagree += 1
        plain.append(int(np.argmax(base[idx])))
        estimated.append(int(np.argmax(face.probabilities[idx])))
        used.append(face.reference == "estimated")
    return {"found": np.array(found), "plain": np.array(plain), "estimated": np.array(estimated),
            "used": np.array(used), "disagree": disagree}


def per_crop(predictions: np.ndarray, crop: np.ndarray, classes: int) -> np.ndarray:
    """Frame predictions [T] (-1: no face) and each frame's crop [T] -> each crop's most frequent
    prediction [n] (ties: the lower class; -1 for a crop without a face in any frame)."""
    out = np.full(crop.max() + 1, -1)
    for c in range(len(out)):
        p = predictions[(crop == c) & (predictions >= 0)]
        if len(p):
            out[c] = int(np.bincount(p, minlength=classes).argmax())
    return out


def study(rec, data_root=None, videos: Path | None = None, rule: str = "folds") -> dict:
    """Every subject's two videos through the path -> plain and estimated metrics per order, per
    frame and per shown crop, with the rules used."""
    subjects, classes = subject_crops(data_root)
    neutral = classes.index("neutral")
    idx = np.array([rec.classes.index(c) for c in classes])
    chosen = held_out(ckplus_evidence(rec, data_root))[2] if rule == "folds" else None
    rules = {}
    for k in range(1, FOLDS + 1):
        side = subject_folds(list(subjects), k, FOLDS, SEED)
        fold_rule = rec.prompts.reference_rule if chosen is None else ReferenceRule(
            chosen[k - 1]["alpha"], chosen[k - 1]["beta"], chosen[k - 1]["cutoff"])
        rules.update({s: (k, fold_rule) for s, where in side.items() if where == "test"})
    result = {"model": rec.name, "classes": classes, "subjects": len(subjects), "hold_frames": HOLD, "fps": FPS,
              "rule": rule, "rules": {k: vars(r) for k, r in sorted(set(rules.values()), key=lambda x: x[0])}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(videos or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for order in ORDERS:
            runs = []
            for n, (subject, crops) in enumerate(subjects.items()):
                shown = in_order(crops, order, neutral)
                path = folder / f"{subject}-{order}.mp4"
                write_video(shown, path)
                run = run_video(rec, path, replace(rec.prompts, reference_rule=rules[subject][1]), idx)
                run["labels"] = np.repeat([c[2] for c in shown], HOLD)[:len(run["found"])]
                run["crop"] = np.repeat(np.arange(len(shown)), HOLD)[:len(run["found"])]
                run["crop_labels"] = np.array([c[2] for c in shown])
                runs.append(run)
                if (n + 1) % 20 == 0:
                    log.info("%s: %d of %d subjects", order, n + 1, len(subjects))
            result[order] = summarise(runs, classes)
    return result


def summarise(runs: list[dict], classes: list[str]) -> dict:
    """Per-video runs -> plain and estimated metrics per frame (frames with a face) and per shown crop."""
    cat = {key: np.concatenate([r[key] for r in runs]) for key in ("found", "plain", "estimated", "used", "labels")}
    face = cat["found"]
    out = {"frames": int(len(face)), "frames_without_face": int((~face).sum()),
           "frames_with_estimate": int(cat["used"].sum()), "disagreeing_plain_frames": sum(r["disagree"] for r in runs),
           "first_estimate_frame_median": float(np.median([np.argmax(r["used"]) if r["used"].any() else len(r["used"])
                                                           for r in runs]))}
    for setting in ("plain", "estimated"):
        out[f"{setting}_per_frame"] = classification_metrics(cat["labels"][face], cat[setting][face], classes)
        crops = [per_crop(r[setting], r["crop"], len(classes)) for r in runs]
        labels = np.concatenate([r["crop_labels"] for r in runs])
        pred = np.concatenate(crops)
        out[f"{setting}_per_crop"] = classification_metrics(labels[pred >= 0], pred[pred >= 0], classes)
    out["crops_without_face"] = int((pred < 0).sum())
    return out


def table(result: dict) -> str:
    classes = result["classes"]
    lines = [f"{result['model']}: CK+ videos of {result['subjects']} subjects, each crop held {result['hold_frames']} "
             f"frames at {result['fps']} fps, rule: {result['rule']} {result['rules']}",
             f"{'order, setting':40s}{'n':>7s}{'overall':>9s}{'mean/cls':>9s}" + "".join(f"{c[:8]:>9s}" for c in classes)]
    for order in ORDERS:
        r = result[order]
        for unit in ("frame", "crop"):
            for setting in ("plain", "estimated"):
                m = r[f"{setting}_per_{unit}"]
                lines.append(f"{order + ', per ' + unit + ', ' + setting:40s}{m['n']:7d}{100 * m['accuracy']:9.2f}"
                             f"{100 * m['mean_accuracy']:9.2f}"
                             + "".join(f"{100 * m['per_class_accuracy'][c]:9.1f}" for c in classes))
        lines.append(f"  {r['frames']} frames, {r['frames_without_face']} without a face, {r['frames_with_estimate']} "
                     f"scored against an estimate (first at frame {r['first_estimate_frame_median']:.0f}, median), "
                     f"{r['disagreeing_plain_frames']} plain frames disagreeing, {r['crops_without_face']} crops "
                     f"without a face")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Per class and mean: plain vs estimated, per shown crop (bars) and per frame (dots), one panel per order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*result["classes"], "mean"]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, len(ORDERS), figsize=(12, 4), sharey=True)
    for ax, order in zip(axes, ORDERS):
        for shift, setting, colour in ((-0.2, "plain", "#7f7f7f"), (0.2, "estimated", "#1f77b4")):
            for unit in ("crop", "frame"):
                m = result[order][f"{setting}_per_{unit}"]
                values = [100 * m["per_class_accuracy"][c] for c in result["classes"]] + [100 * m["mean_accuracy"]]
                if unit == "crop":
                    ax.bar(x + shift, values, 0.4, color=colour, label=f"{setting}, per shown crop")
                else:
                    ax.scatter(x + shift, values, 16, colour, edgecolors="k", zorder=3, label=f"{setting}, per frame")
        ax.set_xticks(x, names, rotation=30)
        ax.set_title(f"{result['model']} on CK+ videos, {order} order")
        ax.axhline(75, color="r", lw=0.8, ls="--")
    axes[0].set_ylabel("accuracy, % (bars: per shown crop; dots: per frame)")
    axes[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab reference-video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors or .onnx checkpoint, a run directory, or an assets/ model name")
    p.add_argument("--output", help="write the result as JSON")
    p.add_argument("--plot", help="plot plain vs estimated per class, one panel per order (.png)")
    p.add_argument("--data-root", help="the CK+ crops (default: $KEFER_DATA/ckplus or ../shared/data/ckplus)")
    p.add_argument("--videos", help="keep the videos in this folder (default: a temporary one)")
    p.add_argument("--rule", choices=("folds", "stored"), default="folds",
                   help="folds: each fold's rule chosen on the other folds (held out); stored: the model's")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch, OpenCV and ONNX Runtime")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = study(load(resolve_checkpoint(args.checkpoint)), args.data_root, args.videos, args.rule)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, Path(args.plot))
    return 0
