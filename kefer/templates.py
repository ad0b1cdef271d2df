"""Prompt robustness: one model scored with each template alone, and with templates averaged.

    python -m kefer.templates accurate-int8 --split val --output val.json --plot val.png
    python -m kefer.templates fast --sets tuning --wordings raw transfer project project+transfer --output fast.json
    python -m kefer.templates --choose accurate.json fast.json

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

from .data.vocab import adjectives
from .io import log_to_console
from .metrics import classification_metrics
from .recognizer import load
from .options import wording_name
from .text import DEFAULT_WORDING, TEMPLATE_SETS
from .train.evaluate import split_features
from .viz import plot_sweep, plot_wordings


def sweep(rec, dataset: str = "ferplus", data_root=None, split: str = "val", sets=("paper", "held-out"),
          wordings=(DEFAULT_WORDING, "raw")) -> list[dict]:
    """[{"template": str or "all <n> <set> averaged", "set", "names": "own"|"adjectives", "trained":
    bool (every template one the model was trained on: then every wording method is the same),
    "wording": wordings[0], "accuracy", "mean_accuracy" (by ``wordings[0]``), "by_wording": {method:
    {"accuracy", "mean_accuracy"}}}]; no adjective rows when no class has one or two classes share one."""
    data, feats, labels, idx = split_features(rec, dataset, data_root, split)
    names = {"own": list(rec.classes)}
    if adjectives(rec.classes) is not None:
        names["adjectives"] = adjectives(rec.classes)

    def metrics(templates, classes, wording):
        prompts = rec.operate(rec.encode_prompts(templates, classes, wording), balanced=False, abstain=False)
        probs = rec.score(feats.numpy(), prompts)[1]
        m = classification_metrics(labels.numpy(), probs[:, idx.numpy()].argmax(1), data.classes)
        return {"accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"]}

    rows = []
    for kind, classes in names.items():
        for name in sets:
            templates = TEMPLATE_SETS[name]
            for template in [[t] for t in templates] + [templates]:
                trained = set(template) <= set(rec.trained_templates)
                by_wording = {}
                for wording in wordings:
                    by_wording[wording] = (next(iter(by_wording.values())) if trained and by_wording
                                           else metrics(template, classes, wording))
                label = template[0] if len(template) == 1 else f"all {len(template)} {name} averaged"
                rows.append({"template": label, "set": name, "names": kind, "trained": trained,
                             "wording": wordings[0], **by_wording[wordings[0]], "by_wording": by_wording})
    return rows


def wording_scores(rows: list[dict]) -> dict:
    """{method: mean accuracy over the single templates of ``rows`` (both name forms)}."""
    singles = [r for r in rows if "averaged" not in r["template"]]
    return {w: float(np.mean([r["by_wording"][w]["accuracy"] for r in singles])) for w in singles[0]["by_wording"]}


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
        for w in wordings:
            singles = [r["by_wording"][w]["accuracy"] for r in rows if r["names"] == kind and "averaged" not in r["template"]]
            best = max(singles)
            print(f"single templates, class {kind}, {w}: best {100 * best:.2f}, worst {100 * min(singles):.2f}, "
                  f"mean {100 * np.mean(singles):.2f}, within 2 points of the best {sum(a >= best - 0.02 for a in singles)} "
                  f"of {len(singles)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kefer.templates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a shipped model name, a .safetensors/.onnx file or a run directory")
    p.add_argument("--dataset", default="ferplus")
    p.add_argument("--data-root")
    p.add_argument("--split", default="val", help="val to choose with; test only for a final, once-read figure")
    p.add_argument("--sets", nargs="+", default=["paper", "held-out"], choices=list(TEMPLATE_SETS))
    p.add_argument("--wordings", nargs="+", default=[DEFAULT_WORDING, "raw"], type=wording_name,
                   help="how an unseen template becomes anchors (kefer.text.WORDINGS, a projection optionally with "
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
        sweeps = {}
        for path in args.choose:
            with open(path) as f:
                sweep_file = json.load(f)
            sweeps[sweep_file["model"]] = sweep_file["rows"]
        scores = {model: wording_scores(rows) for model, rows in sweeps.items()}
        for model, s in scores.items():
            print(f"{model}: " + ", ".join(f"{w} {100 * v:.2f}" for w, v in s.items()))
        print(f"chosen: {choose_wording(scores, args.against)} (against {args.against}; "
              f"the default now: {DEFAULT_WORDING})")
        if args.plot:
            plot_wordings(sweeps, "Unseen wordings, each alone: how they become anchors", args.plot)
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


if __name__ == "__main__":
    sys.exit(main())
