"""Choosing how a person's reference changes the scores, on CK+ by subject-independent folds
(the rule: docs/results/reference-rule.md).

    kefer lab reference accurate --output ref.json --plot ref.png      # choose, report, plot
    kefer lab reference accurate --write                                # store the rule in the model

Every CK+ crop is embedded once. A subject's reference is the mean of their neutral crops, leaving
out the crop being scored; a crop without another neutral crop of its subject is left out. The
subjects are dealt into ``FOLDS`` folds: each fold is scored with the parameters the rule chooses on
the other folds, and those held-out predictions are what is reported. The stored parameters are the
rule applied to every subject. Only CK+ is read.
"""
from __future__ import annotations

import itertools
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..recognizer import load, resolve_checkpoint
from ..reference import Reference, ReferenceRule
from ..scoring import combine, relative_evidence
from ..train.data.splits import subject_folds
from ..train.evaluate import split_features
from ..train.metrics import classification_metrics
from ..viz import plot_confusion
from .operating import write
from .study import study_parser

log = logging.getLogger(__name__)

# rule 3 of docs/results/reference-rule.md (rule 1: cosines, alpha and beta up to 4, cutoff from 0.80;
# rule 2: cosines, alpha up to 16, beta up to 16, cutoff from 0.60)
ALPHAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
BETAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CUTOFFS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.925, 0.95, 0.975)
GRID = [ReferenceRule(a, b, c) for a, b, c in itertools.product(ALPHAS, BETAS, CUTOFFS)]   # tie order: a, b, c
NEUTRAL_FLOOR = 0.90
FOLDS, SEED = 5, 0
RULE = ("rule 3 of docs/results/reference-rule.md: grid alpha x beta x cutoff; on the choosing subjects, the highest mean per-class accuracy among the points "
        "with neutral accuracy >= 0.90 (else the highest mean per-class accuracy); ties: smaller alpha, beta, cutoff")


def subject_of(path) -> str:
    """``S010_004_00000019.png`` -> ``S010``."""
    return Path(path).name.split("_")[0]


def ckplus_evidence(rec, data_root=None) -> dict:
    """Every CK+ crop, 7 classes: plain probabilities over the dataset's classes [N, C], relative
    evidence [N, C] against its subject's leave-one-out reference (``relative``, mask
    ``has_reference``) and against the estimate from the subject's other crops that plain scoring
    calls neutral (``estimated``, mask ``has_estimate``), labels [N], subjects [N]."""
    data, feats, labels, idx = split_features(rec, "ckplus", data_root, "test")
    feats, labels, idx = feats.numpy(), labels.numpy(), idx.numpy()
    probs = rec.score(feats, replace(rec.prompts, temperature=1.0))[1][:, idx]   # combined before tempering
    probs = probs / probs.sum(1, keepdims=True)          # over the dataset's classes, as evaluate predicts
    subjects = np.array([subject_of(s[0]) for s in data.samples])
    neutral = data.classes.index("neutral")
    anchors = rec.prompts.anchors[idx]
    evidence = {}
    for kind, is_neutral in (("relative", labels == neutral), ("estimated", probs.argmax(1) == neutral)):
        relative, found = np.zeros_like(probs), np.zeros(len(labels), bool)
        for subject in np.unique(subjects):
            own = np.flatnonzero(subjects == subject)
            neutrals = own[is_neutral[own]]
            for i in own:
                others = neutrals[neutrals != i]
                if len(others):
                    ref = Reference.from_embeddings(feats[others])
                    relative[i] = relative_evidence(feats[i:i + 1], ref, anchors, neutral)[0]
                    found[i] = True
        evidence[kind], evidence[f"{kind}_found"] = relative, found
    return {"classes": data.classes, "probs": probs, "relative": evidence["relative"],
            "has_reference": evidence["relative_found"], "estimated": evidence["estimated"],
            "has_estimate": evidence["estimated_found"], "labels": labels, "subjects": subjects, "neutral": neutral}


def metrics(ev: dict, rows: np.ndarray, rule: ReferenceRule | None) -> dict:
    probs = ev["probs"][rows]
    if rule is not None:
        probs = combine(probs, ev["relative"][rows], ev["neutral"], rule)
    return classification_metrics(ev["labels"][rows], probs.argmax(1), ev["classes"])


def choose(ev: dict, rows: np.ndarray) -> ReferenceRule:
    """The rule of docs/results/reference-rule.md on the crops ``rows``."""
    scored = [(rule, metrics(ev, rows, rule)) for rule in GRID]
    neutral = ev["classes"][ev["neutral"]]
    eligible = [s for s in scored if s[1]["per_class_accuracy"][neutral] >= NEUTRAL_FLOOR] or scored
    best = max(m["mean_accuracy"] for _, m in eligible)
    return next(rule for rule, m in eligible if m["mean_accuracy"] >= best - 1e-12)


def held_out(ev: dict) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Predictions [N] with the recorded and with the estimated reference (-1 where a crop has none)
    of each fold, by the rule chosen on the other folds' recorded references."""
    pred, estimated = np.full(len(ev["labels"]), -1), np.full(len(ev["labels"]), -1)
    chosen = []
    for k in range(1, FOLDS + 1):
        side = subject_folds(list(ev["subjects"]), k, FOLDS, SEED)
        fold = np.array([side[s] == "test" for s in ev["subjects"]])
        rule = choose(ev, np.flatnonzero(~fold & ev["has_reference"]))
        for out, key, mask in ((pred, "relative", "has_reference"), (estimated, "estimated", "has_estimate")):
            rows = np.flatnonzero(fold & ev[mask])
            out[rows] = combine(ev["probs"][rows], ev[key][rows], ev["neutral"], rule).argmax(1)
        chosen.append({"fold": k, "subjects": int(len(set(ev["subjects"][fold]))), **vars(rule)})
    return pred, estimated, chosen


def study(rec, data_root=None) -> dict:
    ev = ckplus_evidence(rec, data_root)
    rows = np.flatnonzero(ev["has_reference"])
    pred, estimated, chosen = held_out(ev)
    final = choose(ev, rows)
    plain = metrics(ev, rows, None)
    reference = classification_metrics(ev["labels"][rows], pred[rows], ev["classes"])
    with_estimate = np.flatnonzero(ev["has_estimate"])
    return {"model": rec.name, "classes": ev["classes"], "crops": int(len(ev["labels"])),
            "without_reference": int((~ev["has_reference"]).sum()), "scored": int(len(rows)),
            "subjects": int(len(set(ev["subjects"]))), "folds": FOLDS, "seed": SEED, "rule": RULE,
            "plain": plain, "recorded_reference": reference, "chosen_per_fold": chosen,
            "without_estimate": int((~ev["has_estimate"]).sum()),
            "plain_on_estimated": metrics(ev, with_estimate, None),
            "estimated_reference": classification_metrics(ev["labels"][with_estimate], estimated[with_estimate],
                                                          ev["classes"]),
            "stored": {**vars(final), "rule": RULE, "chosen_on": "CK+ crops, all subjects"}}


def table(result: dict) -> str:
    lines = [f"{result['model']}: CK+ {result['scored']} crops of {result['subjects']} subjects with a reference "
             f"({result['without_reference']} without one left out), held-out folds",
             f"{'':24s}{'plain':>8s}{'reference':>11s}"]
    for name in ("accuracy", "mean_accuracy"):
        lines.append(f"{name:24s}{100 * result['plain'][name]:8.2f}{100 * result['recorded_reference'][name]:11.2f}")
    for c in result["classes"]:
        lines.append(f"  {c:22s}{100 * result['plain']['per_class_accuracy'][c]:8.2f}"
                     f"{100 * result['recorded_reference']['per_class_accuracy'][c]:11.2f}")
    est, base = result["estimated_reference"], result["plain_on_estimated"]
    lines.append(f"estimated reference ({est['n']} crops with an estimate, {result['without_estimate']} without): "
                 f"mean per class {100 * base['mean_accuracy']:.2f} plain -> {100 * est['mean_accuracy']:.2f}")
    s = result["stored"]
    lines.append(f"stored: alpha {s['alpha']}, beta {s['beta']}, cutoff {s['cutoff']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = study_parser("kefer lab reference", __doc__, "store the chosen rule in the checkpoint file",
                     "write the confusion matrices: plain, recorded and estimated reference (.png; three files)")
    p.add_argument("--data-root", help="the CK+ crops (default: $KEFER_DATA/ckplus or ../shared/data/ckplus)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        path = resolve_checkpoint(args.checkpoint)
        result = study(load(path), args.data_root)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        stem = Path(args.plot)
        for key in ("plain", "recorded_reference", "estimated_reference"):
            plot_confusion(result[key]["confusion_matrix"], result["classes"], stem.with_name(f"{stem.stem}-{key}.png"),
                           f"{result['model']} on CK+, {key.replace('_', ' ')} (held-out subjects)")
    if args.write:
        write(path, {"reference": result["stored"]})
        log.info("reference rule written into %s", path)
    return 0
