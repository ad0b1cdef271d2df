"""Prompt robustness: one model scored with each template alone, and with templates averaged.

    python -m kefer.templates accurate-int8 --split val --output val.json --plot val.png

The faces are embedded once; each template only re-encodes the class prompts (the checkpoint's
own text encoder) and re-scores, without the operating point (no balance, no abstain), so that the
templates alone differ. Rows: the paper's 9 templates, kefer's held-out ones
(``text.HELD_OUT_TEMPLATES``, never used in training), and the average of each set; each with the
model's class names (nouns: "happiness", ``own``) and then with their adjectives ("This person is
happy.", ``vocab.adjectives``).
A template the model was not trained on is scored as ``encode_prompts`` makes it by default, moved
onto the trained wording (``text.transfer_wording``), and also as its embeddings stand
(``untransferred_*``).
"""
from __future__ import annotations

import argparse
import json
import sys

from .data.vocab import adjectives
from .io import log_to_console
from .metrics import classification_metrics
from .recognizer import load
from .text import HELD_OUT_TEMPLATES, PAPER_TEMPLATES
from .train.evaluate import split_features
from .viz import plot_sweep


def sweep(rec, dataset: str = "ferplus", data_root=None, split: str = "val") -> list[dict]:
    """[{"template": str or "<set> averaged", "set": "paper"|"held-out", "names": "own"|"adjectives",
    "trained": bool (every template one the model was trained on), "accuracy", "mean_accuracy" (as
    ``encode_prompts`` makes the anchors), "untransferred_accuracy", "untransferred_mean_accuracy"
    (``transfer=False``)}];
    no adjective rows when no class has one or two classes share one."""
    data, feats, labels, idx = split_features(rec, dataset, data_root, split)
    names = {"own": list(rec.classes)}
    if adjectives(rec.classes) is not None:
        names["adjectives"] = adjectives(rec.classes)

    def metrics(templates, classes, transfer):
        prompts = rec.operate(rec.encode_prompts(templates, classes, transfer), balanced=False, abstain=False)
        probs = rec.score(feats.numpy(), prompts)[1]
        return classification_metrics(labels.numpy(), probs[:, idx.numpy()].argmax(1), data.classes)

    rows = []
    for kind, classes in names.items():
        for name, templates in (("paper", PAPER_TEMPLATES), ("held-out", HELD_OUT_TEMPLATES)):
            for template in [[t] for t in templates] + [templates]:
                trained = set(template) <= set(rec.trained_templates)   # then transfer changes nothing
                m = metrics(template, classes, True)
                untransferred = m if trained else metrics(template, classes, False)
                label = template[0] if len(template) == 1 else f"all {len(template)} {name} averaged"
                rows.append({"template": label, "set": name, "names": kind, "trained": trained,
                             "accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"],
                             "untransferred_accuracy": untransferred["accuracy"],
                             "untransferred_mean_accuracy": untransferred["mean_accuracy"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kefer.templates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model name, a .safetensors/.onnx file or a run directory")
    p.add_argument("--dataset", default="ferplus")
    p.add_argument("--data-root")
    p.add_argument("--split", default="val", help="val to choose with; test only for a final, once-read figure")
    p.add_argument("--output", help="write the rows as JSON")
    p.add_argument("--plot", help="write the bars as PNG")
    args = p.parse_args(argv)
    log_to_console()
    try:
        rec = load(args.model)
        rows = sweep(rec, args.dataset, args.data_root, args.split)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("accuracy  mean/class   (untransferred: the template's embeddings as they stand)")
    for r in rows:
        print(f"{100 * r['accuracy']:6.2f} {100 * r['mean_accuracy']:6.2f}  "
              f"(untransferred {100 * r['untransferred_accuracy']:6.2f})  "
              f"{r['names']:10s} {r['set']:8s} {r['template']}")
    for kind in dict.fromkeys(r["names"] for r in rows):
        for key in ("accuracy", "untransferred_accuracy"):
            singles = [r[key] for r in rows if r["names"] == kind and "averaged" not in r["template"]]
            print(f"single templates, class {kind}, {key}: best {100 * max(singles):.2f}, worst "
                  f"{100 * min(singles):.2f} (spread {100 * (max(singles) - min(singles)):.2f} points)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "dataset": args.dataset, "split": args.split, "rows": rows}, f, indent=1)
    if args.plot:
        plot_sweep(rows, f"{rec.name} on {args.dataset}/{args.split}: each template alone", args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
