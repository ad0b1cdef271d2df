"""Honest probabilities: a temperature T fitted on FER+ validation (the product applies it:
``scoring.temper``, softmax(log p / T); the argmax does not change).

    kefer lab temperature accurate-int8 --output t.json --plot t.png   # fit, report, plot
    kefer lab temperature accurate --write                             # store T in the model

T minimises the negative log-likelihood (NLL) of the model's FER+ validation probabilities (as
loaded: balanced at its stored strength, with temperature 1), over the dataset's classes
renormalised as evaluation predicts. Only then are FER+ test (read once) and CK+ (7 classes)
scored, before (T = 1) and after: expected calibration error (ECE, 15 equal-width confidence bins),
NLL and accuracy (the same before and after). Tempering commutes with that renormalisation, so the
numbers over the dataset's classes are those of the product's tempered probabilities.

The stored abstain margin was chosen on the untempered scale: after ``--write``, re-run
``kefer lab operating MODEL --write`` to re-choose it on the calibrated one (the study reports the
margin that rule would choose on validation at T, for reference).
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..operating import margins
from ..recognizer import load, resolve_checkpoint
from ..scoring import temper
from ..train.evaluate import split_features
from ..train.metrics import classification_metrics
from ..viz import plot_reliability
from .study import study_parser
from .operating import PRECISION, THRESHOLDS, choose_margin, precision_coverage, write

log = logging.getLogger(__name__)

BINS = 15                       # equal-width confidence bins of the ECE
LOW, HIGH = 0.05, 20.0          # the temperatures searched
GRID = 81                       # log-spaced coarse grid, then golden-section between its neighbours
DECIMALS = 3                    # T is rounded to this many decimals (the value stored is the value reported)
RULE = (f"T in [{LOW:g}, {HIGH:g}] minimising the mean negative log-likelihood of softmax(log p / T) on FER+ "
        f"validation (p: the model's probabilities as loaded, balanced, T = 1, over the dataset's classes "
        f"renormalised); {GRID}-point log grid, golden-section refinement, rounded to {DECIMALS} decimals")
SETS = (("ferplus", "val"), ("ferplus", "test"), ("ckplus", "test"))


def ece(probs, labels, bins: int = BINS) -> tuple[float, dict]:
    """Expected calibration error of probabilities [N, C] against ``labels`` [N]: top-1 confidence
    against accuracy in ``bins`` equal-width bins (lower, upper] (the first also holds 0), weighted
    by the fraction of faces in each. Returns (ece, {"lower", "upper", "confidence", "accuracy",
    "count"}: per bin, None for the mean confidence and accuracy of an empty bin)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    conf = probs.max(1)
    right = probs.argmax(1) == labels
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, conf, minlength=bins)
    right_sum = np.bincount(which, right.astype(np.float64), minlength=bins)
    n = max(len(labels), 1)
    value = float(np.abs(right_sum - conf_sum).sum() / n)
    edges = np.linspace(0, 1, bins + 1)
    table = {"lower": edges[:-1].round(6).tolist(), "upper": edges[1:].round(6).tolist(),
             "confidence": [float(c / k) if k else None for c, k in zip(conf_sum, count)],
             "accuracy": [float(r / k) if k else None for r, k in zip(right_sum, count)],
             "count": count.tolist()}
    return value, table


def _log_tempered(probs, temperature: float) -> np.ndarray:
    """log softmax(log p / T) [N, C] in float64 (``scoring.temper``'s formula, its clamp included)."""
    z = np.log(np.maximum(np.asarray(probs, np.float64), 1e-300)) / temperature
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def nll(probs, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` [N] under softmax(log p / T) of ``probs`` [N, C]."""
    labels = np.asarray(labels)
    return float(-_log_tempered(probs, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(probs, labels, low: float = LOW, high: float = HIGH) -> float:
    """The T in [low, high] minimising ``nll(probs, labels, T)``: a log-spaced grid of ``GRID``
    points, then golden-section search on log T between the best point's neighbours (the NLL is
    convex in 1 / T, so unimodal); deterministic, rounded to ``DECIMALS`` decimals."""
    logs = np.linspace(np.log(low), np.log(high), GRID)
    losses = [nll(probs, labels, np.exp(u)) for u in logs]
    best = int(np.argmin(losses))
    a, b = logs[max(best - 1, 0)], logs[min(best + 1, GRID - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(probs, labels, np.exp(c)), nll(probs, labels, np.exp(d))
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(probs, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(probs, labels, np.exp(d))
    u = (a + b) / 2
    if losses[best] < nll(probs, labels, np.exp(u)):   # the search ended on the range's edge
        u = logs[best]
    return round(float(np.exp(u)), DECIMALS)


def calibration(probs, labels, classes, temperature: float = 1.0) -> dict:
    """ECE, NLL, accuracy, mean top-1 confidence and the mean confidence of wrong answers of
    ``probs`` [N, C] tempered at T, and the ECE bins."""
    p = temper(np.asarray(probs, np.float32), temperature)
    value, bins = ece(p, labels)
    pred = p.argmax(1)
    wrong = pred != np.asarray(labels)
    m = classification_metrics(np.asarray(labels), pred, list(classes))
    return {"temperature": temperature, "ece": value, "nll": nll(probs, labels, temperature),
            "accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"],
            "confidence": float(p.max(1).mean()),
            "wrong_confidence": float(p.max(1)[wrong].mean()) if wrong.any() else None, "bins": bins}


def dataset_probs(rec, prompts, dataset: str, data_root, split: str) -> dict:
    """One split scored with ``prompts``: the full probabilities [N, K] and those over the
    dataset's classes renormalised [N, C] (as evaluation predicts), labels [N], classes, idx."""
    data, feats, labels, idx = split_features(rec, dataset, data_root, split)
    full = rec.score(feats.numpy(), prompts)[1]
    idx = idx.numpy()
    p = full[:, idx].astype(np.float64)
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-300)
    return {"full": full, "probs": p.astype(np.float32), "labels": labels.numpy(), "classes": list(data.classes),
            "idx": idx}


def abstain(full: np.ndarray, labels, idx, temperature: float, precision: float = PRECISION) -> dict:
    """The abstain margin ``kefer lab operating``'s rule chooses on these validation probabilities
    [N, K] tempered at T (top-1 minus top-2 over every class, as a face is answered)."""
    p = temper(full, temperature)
    correct = p.argmax(1) == np.asarray(idx)[np.asarray(labels)]
    prec, coverage = precision_coverage(margins(p), correct)
    chosen = choose_margin(prec, precision)
    if chosen is None:
        return {"temperature": temperature, "margin": None, "precision": precision}
    return {"temperature": temperature, "margin": float(THRESHOLDS[chosen]), "precision": precision,
            "coverage": float(coverage[chosen]), "answered_accuracy": float(prec[chosen])}


def study(rec, data_root_ferplus=None, data_root_ckplus=None) -> dict:
    """Fit T on FER+ validation with ``rec``'s prompts at temperature 1 (balanced as loaded); then
    read FER+ test once and CK+; report each before (T = 1) and after.

    Returns {"temperature": T, "rule", "sets": {"ferplus/val": {"n", "before": {...}, "after":
    {...}}, ...}, "abstain": {"before": ..., "after": ...}} (``calibration`` and ``abstain``)."""
    prompts = replace(rec.prompts, temperature=1.0)
    if rec.prompts.temperature != 1.0:
        log.info("%s stores temperature %g: fitting from the untempered probabilities", rec.name,
                 rec.prompts.temperature)
    roots = {"ferplus": data_root_ferplus, "ckplus": data_root_ckplus}
    val = dataset_probs(rec, prompts, "ferplus", roots["ferplus"], "val")
    t = fit_temperature(val["probs"], val["labels"])
    log.info("T = %g (fitted on FER+ val, %d faces)", t, len(val["labels"]))
    out = {"temperature": t, "rule": RULE, "stored_temperature": rec.prompts.temperature, "sets": {},
           "abstain": {"split": "ferplus/val", "before": abstain(val["full"], val["labels"], val["idx"], 1.0),
                       "after": abstain(val["full"], val["labels"], val["idx"], t)}}
    for dataset, split in SETS:            # T is fixed: test is read here, once
        d = val if (dataset, split) == ("ferplus", "val") else dataset_probs(rec, prompts, dataset, roots[dataset], split)
        before = calibration(d["probs"], d["labels"], d["classes"], 1.0)
        after = calibration(d["probs"], d["labels"], d["classes"], t)
        if before["accuracy"] != after["accuracy"]:
            log.warning("%s/%s: accuracy changed under T (%.4f -> %.4f)", dataset, split, before["accuracy"],
                        after["accuracy"])
        out["sets"][f"{dataset}/{split}"] = {"n": int(len(d["labels"])), "classes": d["classes"],
                                             "before": before, "after": after}
    return out


def stored(result: dict) -> dict:
    """What the checkpoint stores under ``"operating"``: {"temperature": {"value", "rule", "val", "ece"}}."""
    sets = result["sets"]
    val = sets["ferplus/val"]
    return {"temperature": {
        "value": result["temperature"], "rule": RULE,
        "val": {"split": "ferplus/val", "n": val["n"], "nll_before": val["before"]["nll"],
                "nll_after": val["after"]["nll"], "ece_before": val["before"]["ece"], "ece_after": val["after"]["ece"]},
        "ece": {name: {"before": s["before"]["ece"], "after": s["after"]["ece"], "n": s["n"]}
                for name, s in sets.items()}}}


def table(result: dict) -> str:
    """The study as text: per split, ECE, NLL, accuracy and mean confidence before and after."""
    lines = [f"T = {result['temperature']:g} (fitted on FER+ val)",
             f"{'split':<14}{'n':>6}  {'ECE':>13}  {'NLL':>13}  {'accuracy':>8}  {'confidence':>13}  "
             f"{'wrong conf.':>13}"]
    for name, s in result["sets"].items():
        b, a = s["before"], s["after"]
        wrong = ("       -" if b["wrong_confidence"] is None
                 else f"{b['wrong_confidence']:.3f} -> {a['wrong_confidence']:.3f}")
        lines.append(f"{name:<14}{s['n']:>6}  {b['ece']:.3f} -> {a['ece']:.3f}  {b['nll']:.3f} -> {a['nll']:.3f}  "
                     f"{100 * a['accuracy']:8.2f}  {b['confidence']:.3f} -> {a['confidence']:.3f}  {wrong}")
    ab = result["abstain"]
    for when in ("before", "after"):
        x = ab[when]
        shown = ("none reaches it" if x["margin"] is None else
                 f"t = {x['margin']:.2f} (coverage {100 * x['coverage']:.1f}%, answered {100 * x['answered_accuracy']:.1f}%)")
        lines.append(f"abstain margin for val precision {x['precision']:g} at T = {x['temperature']:g}: {shown}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = study_parser("kefer lab temperature", __doc__, "store the temperature in the checkpoint file",
                     "write reliability diagrams before/after (.png)")
    p.add_argument("--ferplus-root", help="FER+ root (default: $KEFER_DATA/ferplus or ../shared/data/ferplus)")
    p.add_argument("--ckplus-root", help="CK+ root (default: $KEFER_DATA/ckplus or ../shared/data/ckplus)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        path = resolve_checkpoint(args.checkpoint)
        rec = load(path, device=args.device)
        result = study(rec, args.ferplus_root, args.ckplus_root)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"checkpoint": str(path), "model": rec.name, "backend": rec.backend.name,
              "balance_strength": rec.prompts.strength, **result}
    print(f"{rec.name} ({rec.backend.name}, balanced at a = {rec.prompts.strength:g})")
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        sets = result["sets"]
        plot_reliability({k: s["before"]["bins"] for k, s in sets.items()},
                         {k: s["after"]["bins"] for k, s in sets.items()}, args.plot,
                         f"{rec.name}: reliability before (T = 1) and after (T = {result['temperature']:g}, "
                         f"fitted on FER+ val)")
    if args.write:
        write(path, stored(result))
        log.info("temperature %g written into %s; re-run `kefer lab operating %s --write` to re-choose the "
                 "abstain margin on the calibrated scale", result["temperature"], path, args.checkpoint)
    return 0
