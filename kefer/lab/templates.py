"""Prompt robustness: one model scored with each template alone, and with templates averaged.

    kefer lab templates accurate-int8 --split val --output val.json --plot val.png
    kefer lab templates fast --sets tuning --wordings raw transfer project project+transfer --output fast.json
    kefer lab templates --choose accurate.json fast.json

The faces are embedded once; each template only re-encodes the class prompts (the checkpoint's
own text encoder) and re-scores, without the operating point (no balance, no abstain), so that the
templates alone differ. Rows: each template of each set (``text.TEMPLATE_SETS``: the paper's 9,
kefer's held-out ones that no training uses, the tuning ones) alone and the set averaged; each with
the model's class names (nouns: "happiness", ``own``) and then with their adjectives ("This person
is happy.", ``vocab.adjectives``). A template the model was not trained on is scored by each
``--wordings`` method (``text.adapt_wording``; the first is the row's ``accuracy``).
``--choose`` applies the rule of docs/results/wording-rule.md (and rank-rule.md, ``--against project``)
to tuning sweeps of several models.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..vocab import adjectives
from ..io import log_to_console
from ..train.metrics import classification_metrics
from ..recognizer import load
from .wordings import DEFAULT_WORDING, encode_prompts, wording_name
from ..train.template_sets import TEMPLATE_SETS
from ..train.evaluate import split_features
from ..viz import plot_sweep, plot_wordings


def sweep(rec, dataset: str = "ferplus", data_root=None, split: str = "val", sets=("paper", "held-out"),
          wordings=(DEFAULT_WORDING, "raw")) -> list[dict]:
    """[{"template": str or "all <n> <set> averaged", "set", "names": "own"|"adjectives", "single": bool
    (one template, not a set averaged), "trained": bool (every template one the model was trained on:
    then every wording method is the same), "wording": wordings[0], "accuracy", "mean_accuracy" (by
    ``wordings[0]``), "by_wording": {method: {"accuracy", "mean_accuracy"}}}]; no adjective rows when
    no class has one or two classes share one."""
    data, feats, labels, idx = split_features(rec, dataset, data_root, split)
    names = {"own": list(rec.classes)}
    if adjectives(rec.classes) is not None:
        names["adjectives"] = adjectives(rec.classes)

    def metrics(templates, classes, wording):
        prompts = rec.operate(encode_prompts(rec, templates, classes, wording), balanced=False, abstain=False)
        probs = rec.score(feats.numpy(), prompts)[1]
        m = classification_metrics(labels.numpy(), probs[:, idx.numpy()].argmax(1), data.classes)
        return {"accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"]}

    rows = []
    for kind, classes in names.items():
        for name in sets:
            templates = TEMPLATE_SETS[name]
            for template in [[t] for t in templates] + [templates]:
                trained = set(template) <= set(rec.trained_prompts.templates)
                by_wording = {}
                for wording in wordings:
                    by_wording[wording] = (next(iter(by_wording.values())) if trained and by_wording
                                           else metrics(template, classes, wording))
                label = template[0] if len(template) == 1 else f"all {len(template)} {name} averaged"
                rows.append({"template": label, "set": name, "names": kind, "single": len(template) == 1,
                             "trained": trained, "wording": wordings[0], **by_wording[wordings[0]],
                             "by_wording": by_wording})
    return rows


def single_accuracies(rows: list[dict], names: str | None = None, unseen: bool = False) -> dict:
    """{method: [accuracy of each single template]} of ``rows`` (one name form, or both with None;
    only templates the model was not trained on with ``unseen``)."""
    rows = [r for r in rows if r["single"] and names in (None, r["names"]) and not (unseen and r["trained"])]
    return {w: [r["by_wording"][w]["accuracy"] for r in rows] for w in rows[0]["by_wording"]} if rows else {}


def wording_scores(rows: list[dict]) -> dict:
    """{method: mean accuracy over the unseen single templates of ``rows``, both name forms}: the
    score of docs/results/wording-rule.md."""
    return {w: float(np.mean(a)) for w, a in single_accuracies(rows, unseen=True).items()}


def choose_wording(scores: dict, current: str = "transfer", margin: float = 0.002) -> str:
    """docs/results/wording-rule.md: ``scores`` {model: {method: score}}. A method is eligible where its
    score is at least ``current``'s on every model; the eligible one with the highest score averaged
    over the models wins if it beats ``current``'s average by more than ``margin``, else ``current``
    (``transfer``: the default when the rule was written)."""
    methods = [w for w in next(iter(scores.values())) if all(w in s for s in scores.values())]
    eligible = [w for w in methods if all(s[w] >= s[current] for s in scores.values())]
    average = {w: np.mean([s[w] for s in scores.values()]) for w in methods}
    best = max(eligible, key=average.get)
    return best if average[best] > average[current] + margin else current


def print_rows(rows: list[dict]) -> None:
    wordings = list(rows[0]["by_wording"])
    print("accuracy by wording method (" + ", ".join(wordings) + "), then mean per class by the first")
    for r in rows:
        cells = " ".join(f"{100 * r['by_wording'][w]['accuracy']:6.2f}" for w in wordings)
        print(f"{cells}  {100 * r['mean_accuracy']:6.2f}  {r['names']:10s} {r['set']:8s} {r['template']}")
    for kind in dict.fromkeys(r["names"] for r in rows):
        for w, singles in single_accuracies(rows, kind).items():
            best = max(singles)
            within = sum(a >= best - 0.02 for a in singles)
            print(f"single templates, class {kind}, {w}: best {100 * best:.2f}, worst {100 * min(singles):.2f}, "
                  f"mean {100 * np.mean(singles):.2f}, within 2 points of the best {within} of {len(singles)}")


def choose(paths: list[str], against: str) -> tuple[dict, str]:
    """The rule applied to sweep files (one per model, FER+ validation): ({model: its sweep rows}, the
    chosen method). ValueError for a test-split file, two files of one model, or a sweep without
    ``against``."""
    sweeps = {}
    for path in paths:
        with open(path) as f:
            sweep_file = json.load(f)
        if sweep_file["split"] != "val":
            raise ValueError(f"{path} is a {sweep_file['split']} sweep: the wording rule chooses on validation.")
        if sweep_file["model"] in sweeps:
            raise ValueError(f"{path}: a second sweep of {sweep_file['model']}; give one per model.")
        sweeps[sweep_file["model"]] = sweep_file["rows"]
    scores = {model: wording_scores(rows) for model, rows in sweeps.items()}
    if not all(against in s for s in scores.values()):
        raise ValueError(f"Not every sweep scored {against!r} on unseen templates: run them with "
                         f"--wordings {against} ...")
    return sweeps, choose_wording(scores, against)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab templates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a shipped model name, a .safetensors/.onnx file or a run directory")
    p.add_argument("--dataset", default="ferplus")
    p.add_argument("--data-root")
    p.add_argument("--split", default="val", help="val to choose with; test only for a final, once-read figure")
    p.add_argument("--sets", nargs="+", default=["paper", "held-out"], choices=list(TEMPLATE_SETS))
    p.add_argument("--wordings", nargs="+", default=[DEFAULT_WORDING, "raw"], type=wording_name,
                   help="how an unseen template becomes anchors (kefer.lab.wordings.WORDINGS, a projection optionally with "
                        "@M; the first gives each row's accuracy)")
    p.add_argument("--choose", nargs="+", metavar="JSON",
                   help="instead of a sweep: apply the wording rule to these sweeps (one per model)")
    p.add_argument("--against", default="transfer", type=wording_name,
                   help="with --choose: the method a winner must beat (docs/results/wording-rule.md: transfer; "
                        "rank-rule.md: project)")
    p.add_argument("--output", help="write the rows as JSON")
    p.add_argument("--plot", help="write the bars as PNG")
    args = p.parse_args(argv)
    log_to_console()
    if args.choose:
        try:
            sweeps, chosen = choose(args.choose, args.against)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for model, rows in sweeps.items():
            print(f"{model}: " + ", ".join(f"{w} {100 * v:.2f}" for w, v in wording_scores(rows).items()))
        print(f"chosen: {chosen} (against {args.against}; the default now: {DEFAULT_WORDING})")
        if args.plot:
            plot_wordings({m: single_accuracies(rows, unseen=True) for m, rows in sweeps.items()},
                          "Unseen wordings, each alone: how they become anchors", args.plot)
        return 0
    if not args.model:
        p.error("give a model, or --choose with sweep files")
    try:
        rec = load(args.model)
        rows = sweep(rec, args.dataset, args.data_root, args.split, args.sets, list(dict.fromkeys(args.wordings)))
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_rows(rows)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "dataset": args.dataset, "split": args.split, "rows": rows}, f, indent=1)
    if args.plot:
        plot_sweep(rows, f"{rec.name} on {args.dataset}/{args.split}: each template alone", args.plot)
    return 0

