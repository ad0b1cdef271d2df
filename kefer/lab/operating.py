"""Choosing a model's operating point on validation (the product applies it: ``kefer.operating``).

Choosing reads the validation split only, never test::

    kefer lab operating accurate-int8 --plot op.png --output op.json   # print, plot, keep the JSON
    kefer lab operating runs/mine --write                              # store it in the checkpoint
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from ..backend import read_onnx_meta, update_file_meta
from ..checkpoint import read_meta
from ..operating import OperatingPoint, margins
from ..recognizer import load, resolve_checkpoint
from ..scoring import Prompts, score
from ..train.evaluate import split_features, training_prior
from ..train.metrics import classification_metrics
from ..viz import plot_operating
from .study import study_parser

log = logging.getLogger(__name__)

STRENGTHS = np.round(np.arange(0, 1.0001, 0.05), 2)   # balance strengths a swept
THRESHOLDS = np.round(np.arange(0, 1.0001, 0.01), 2)  # abstain margins t swept
TOLERANCE = 0.005   # a strength may cost at most 0.5 points of overall validation accuracy
PRECISION = 0.90    # default accuracy asked of the faces answered: a live demo should still answer most faces
BALANCE_RULE = ("logits - a * log(K * training frequency); a in {0, 0.05, ..., 1}: the highest validation "
                "mean per-class accuracy among the strengths whose overall validation accuracy is at most "
                "0.5 points below a = 0's (ties: the smaller a)")
ABSTAIN_RULE = ("margin = top-1 minus top-2 probability after balancing; t in {0, 0.01, ..., 1}: the smallest t "
                "at which the validation accuracy on the faces with margin >= t is at least PRECISION")

def choose_strength(accuracy, mean_accuracy, tolerance: float = TOLERANCE) -> int:
    """Index of the chosen strength among a sweep whose first entry is a = 0: the highest mean
    per-class accuracy among those with overall accuracy >= accuracy[0] - tolerance (the first on ties)."""
    accuracy, mean_accuracy = np.asarray(accuracy, np.float64), np.asarray(mean_accuracy, np.float64)
    allowed = accuracy >= accuracy[0] - tolerance - 1e-12
    return int(np.argmax(np.where(allowed, mean_accuracy, -np.inf)))


def precision_coverage(margin, correct, thresholds=THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold t [T]: accuracy on the faces with margin >= t (nan where none is left) and the
    fraction of faces answered (coverage)."""
    margin, correct = np.asarray(margin, np.float64), np.asarray(correct, bool)
    answered = margin[None, :] >= np.asarray(thresholds, np.float64)[:, None] - 1e-12   # [T, N]
    n = answered.sum(1)
    hits = (answered & correct[None, :]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan), n / max(len(margin), 1)


def choose_margin(precision, precision_asked: float) -> int | None:
    """Index of the smallest threshold whose precision reaches ``precision_asked`` (None: none does)."""
    ok = np.nan_to_num(np.asarray(precision, np.float64), nan=-1.0) >= precision_asked
    return int(np.argmax(ok)) if ok.any() else None


def choose(features: np.ndarray, labels: np.ndarray, prompts: Prompts, prior: dict, idx,
           precision: float = PRECISION, split: str = "val") -> dict:
    """Sweep the balance strengths and abstain thresholds on one split's representations
    [N, d] with ``labels`` [N] (indices into the dataset's classes, ``idx`` their model indices).

    Returns {"operating": what the checkpoint stores, "sweep": {"strength": [...], "accuracy",
    "mean_accuracy", "threshold", "precision", "coverage"}}; abstain is left out where no
    threshold reaches ``precision``.
    """
    point = OperatingPoint(prior)
    idx = np.asarray(idx)
    classes = [prompts.classes[i] for i in idx]
    labels = np.asarray(labels)
    results = []
    for a in STRENGTHS:
        probs = score(features, point.balance(prompts, float(a)))[1]
        results.append((probs, classification_metrics(labels, probs[:, idx].argmax(1), classes)))
    accuracy = [m["accuracy"] for _, m in results]
    mean_accuracy = [m["mean_accuracy"] for _, m in results]
    best = choose_strength(accuracy, mean_accuracy)
    probs, m = results[best]
    val = {"split": split, "n": m["n"], "accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"],
           "accuracy_raw": accuracy[0], "mean_accuracy_raw": mean_accuracy[0],
           "per_class_accuracy": m["per_class_accuracy"]}
    operating = {"class_prior": prior,
                 "balance": {"strength": float(STRENGTHS[best]), "rule": BALANCE_RULE, "val": val}}
    correct = probs.argmax(1) == idx[labels]     # the full argmax, as a face is answered at inference
    prec, coverage = precision_coverage(margins(probs), correct)
    chosen = choose_margin(prec, precision)
    if chosen is None:
        log.warning("no margin reaches validation precision %.3f: no abstain threshold", precision)
    else:
        operating["abstain"] = {
            "margin": float(THRESHOLDS[chosen]), "precision": precision,
            "rule": ABSTAIN_RULE.replace("PRECISION", f"{precision:g}"),
            "val": {"split": split, "n": int(len(labels)), "coverage": float(coverage[chosen]),
                    "answered_accuracy": float(prec[chosen])}}
    sweep = {"strength": STRENGTHS.tolist(), "accuracy": accuracy, "mean_accuracy": mean_accuracy,
             "threshold": THRESHOLDS.tolist(), "precision": [None if np.isnan(p) else float(p) for p in prec],
             "coverage": coverage.tolist()}
    return {"operating": operating, "sweep": sweep}


def table(result: dict) -> str:
    """The sweep as text: strengths with the chosen one marked, then thresholds every 0.05 and the chosen one."""
    op, sweep = result["operating"], result["sweep"]
    a = op["balance"]["strength"]
    lines = ["    a   val acc  mean/class"]
    for s, acc, mean in zip(sweep["strength"], sweep["accuracy"], sweep["mean_accuracy"]):
        lines.append(f"{s:5.2f}  {100 * acc:7.2f}  {100 * mean:9.2f}" + ("  <- chosen" if s == a else ""))
    t = op.get("abstain", {}).get("margin")
    lines.append(f"\nabstain (after balancing at a = {a:g}):\n    t  precision  coverage")
    for th, p, c in zip(sweep["threshold"], sweep["precision"], sweep["coverage"]):
        if round(th * 100) % 5 == 0 or th == t:
            shown = "      -" if p is None else f"{100 * p:7.2f}"
            lines.append(f"{th:5.2f}  {shown}    {100 * c:6.2f}" + ("  <- chosen" if th == t else ""))
    if t is None:
        lines.append(f"no threshold reaches precision {100 * result['precision']:.1f}%")
    return "\n".join(lines)


def write(path: Path, operating: dict) -> None:
    """Store ``operating`` in the checkpoint file at ``path`` (.safetensors: tensors and dtypes kept
    byte for byte; .onnx: its metadata), keeping the rest of its metadata."""
    meta = read_onnx_meta(path)[0] if path.suffix == ".onnx" else read_meta(path)
    update_file_meta(path, {"operating": {**(meta.get("operating") or {}), **operating}})


def main(argv=None) -> int:
    p = study_parser("kefer lab operating", __doc__, "store the operating point in the checkpoint file",
                     "write the sweep as a figure (.png)")
    p.add_argument("--precision", type=float, default=PRECISION,
                   help=f"validation accuracy asked of the faces answered (default {PRECISION})")
    p.add_argument("--dataset", help="whose validation split (default: the model's training dataset)")
    p.add_argument("--data-root", help="dataset root (default: $KEFER_DATA/<dataset> or ../shared/data/<dataset>)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not 0 < args.precision <= 1:
        print("error: --precision must be in (0, 1]", file=sys.stderr)
        return 2
    try:
        path = resolve_checkpoint(args.checkpoint)
        rec = load(path, device=args.device, balanced=False, abstain=False)
        cfg = rec.meta.get("config", {})
        dataset = args.dataset or cfg.get("dataset")
        data_root = args.data_root or (None if args.dataset else cfg.get("data_root"))
        if not dataset:
            raise ValueError("The checkpoint names no training dataset; pass --dataset.")
        prior = rec.operating.prior or training_prior(rec)
        _, features, labels, idx = split_features(rec, dataset, data_root, "val")
        result = choose(features.numpy(), labels.numpy(), rec.prompts, prior, idx.numpy(), args.precision)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"checkpoint": str(path), "dataset": dataset, "precision": args.precision, **result}
    print(f"{rec.name} on {dataset}/val ({len(labels)} faces), backend {rec.backend.name}")
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_operating(result, args.plot, f"{rec.name} on {dataset}/val")
    if args.write:
        write(path, result["operating"])
        log.info("operating point written into %s", path)
    return 0

