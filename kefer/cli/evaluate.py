"""Evaluate a checkpoint on a dataset, also across datasets, printing the metrics as JSON.

    kefer evaluate --checkpoint runs/x --dataset ckplus --data-root ../shared/data/ckplus
"""
from __future__ import annotations

import argparse
import json
import sys

from ..train.evaluate import evaluate
from ..recognizer import load
from ..lab.wordings import DEFAULT_WORDING, encode_prompts, wording_name
from ..train.template_sets import expand_templates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a .safetensors checkpoint, a run directory, or an assets/ model name "
                                        "(default: the shipped accurate model)")
    p.add_argument("--dataset", default="ferplus", help="a dataset name (see kefer.train.data.DATASETS), with options, e.g. ckplus-original:fold=1/10")
    p.add_argument("--data-root", help="dataset root (default: $KEFER_DATA/<dataset> or ../shared/data/<dataset>)")
    p.add_argument("--split", default="test")
    p.add_argument("--classes", help="comma-separated classes to keep (default: the dataset's own)")
    p.add_argument("--plots", help="folder for confusion_matrix.png and tsne.png")
    p.add_argument("--template", action="append",
                   help="score against prompts from this template instead of the checkpoint's own (repeat to "
                        "average several; or a set of kefer.train.template_sets.TEMPLATE_SETS: 'paper' (the paper's 9), 'wide' "
                        "(those and 20 more), 'held-out' and 'tuning' (wordings no training uses)), e.g. to "
                        "measure prompt robustness")
    p.add_argument("--add-class", action="append", default=[], metavar="NAME",
                   help="add a class the model was not trained on, by its text alone (zero-shot; repeatable)")
    p.add_argument("--wording", type=wording_name, default=DEFAULT_WORDING,
                   help="how a --template the model was not trained on becomes anchors (kefer.lab.wordings.adapt_wording): "
                        "raw (its embeddings as they stand, the paper's way), transfer, project or project+transfer, "
                        "a projection optionally with @M (M times as many directions); default: %(default)s")
    p.add_argument("--logit-adjust", type=float, default=None, metavar="A",
                   help="balance strength (post-hoc logit adjustment): logits - A * log(K * training class "
                        "frequency); 0: raw scores (default: the strength stored in the checkpoint, if any)")
    p.add_argument("--no-abstain", action="store_true",
                   help="ignore the checkpoint's stored abstain margin (no coverage figures)")
    p.add_argument("--flip", action="store_true",
                   help="test-time augmentation: average each face with its mirror image (twice the cost)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", help="also write the JSON to this file")
    args = p.parse_args(argv)
    try:
        rec = load(args.checkpoint, device=args.device, abstain=not args.no_abstain)
        if args.template or args.add_class:
            templates = expand_templates(args.template or []) or None
            rec = rec.with_prompts(encode_prompts(rec, templates, rec.classes + args.add_class, args.wording))
        classes = args.classes.split(",") if args.classes else None
        metrics = evaluate(rec, args.dataset, args.data_root, args.plots, classes=classes, split=args.split,
                           flip=args.flip, logit_adjust=args.logit_adjust)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps({"checkpoint": str(args.checkpoint), "templates": rec.templates, **metrics}, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0

