"""Train kefer: python train.py --dataset ferplus [--preset cpu] [--output runs/x] [--resume]

Flags override the preset's values; the resolved config is saved as config.json in the run.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from kefer.config import PRESETS, preset
from kefer.engine import fit
from kefer.text import PAPER_TEMPLATES


def parse_weights(text: str) -> dict:
    """'t=0.5,sc=2' -> {'t': 0.5, 'sc': 2.0}"""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = float(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper-r18", choices=sorted(PRESETS))
    p.add_argument("--dataset", help="ferplus, rafdb, affectnet7, affectnet8, ckplus-original (with :fold=k/n), "
                                     "folder; options after a colon, e.g. rafdb:val=0.2,images=original")
    p.add_argument("--data-root", help="default: $KEFER_DATA/<dataset>, else ../shared/data/<dataset>")
    p.add_argument("--classes", help="comma-separated class names to keep, in order")
    p.add_argument("--encoder", help="timm model name (resnet18, swin_tiny_patch4_window7_224, "
                                     "vit_base_patch16_224, ...), a kefer pretrained encoder (facenet-casia, "
                                     "msceleb-resnet18, msceleb-swin-t, ...), timm:<model>.<tag> (timm's "
                                     "published weights) or clip:<model>/<tag|file> (a CLIP image tower)")
    p.add_argument("--encoder-weights", help="a state-dict file for the encoder")
    p.add_argument("--img-size", type=int)
    p.add_argument("--init", help="start from the weights of a kefer checkpoint: a run dir, a .safetensors file "
                                  "or a shipped model (e.g. accurate), to fine-tune it on your data")
    p.add_argument("--batchnorm", choices=["auto", "frozen", "train"],
                   help="BatchNorm of a kefer pretrained encoder while training: auto (frozen where the "
                        "statistics were folded, e.g. facenet-casia), frozen (eval mode), or train (batch statistics)")
    p.add_argument("--text-encoder", help="auto, minilm, or clip:<model>/<tag|file|random>")
    p.add_argument("--template", action="append",
                   help="prompt template with [CLS]; repeat to average several; 'paper' = the paper's 9")
    p.add_argument("--losses", help="classifier | ce | ce,t | ce,sc | ce,t,sc | ce,t,infonce")
    p.add_argument("--lambdas", type=parse_weights, help="loss weights, e.g. 'ce=1,t=1,sc=1'")
    p.add_argument("--sc-form", choices=["per-sample", "pairwise"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--balance", choices=["none", "oversample"],
                   help="oversample: draw training images class-balanced (the paper's AffectNet recipe)")
    p.add_argument("--labels", choices=["majority", "votes"],
                   help="FER+ training targets: majority labels (the paper) or the 10 annotators' vote "
                        "distribution for the cross-entropy term; validation and test stay majority-labelled")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int)
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the encoder")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="cut the epochs after warm-up so the run ends within this many minutes")
    p.add_argument("--no-plots", dest="plots", action="store_false", default=None,
                   help="skip the test confusion matrix and t-SNE (the t-SNE takes ~30 s on a CPU)")
    p.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output after a stop")
    args = vars(p.parse_args(argv))

    output = args.pop("output") or time.strftime("runs/%Y%m%d-%H%M%S")
    resume = args.pop("resume")
    cfg = preset(args.pop("preset"))
    if args["classes"]:
        args["classes"] = [c.strip() for c in args["classes"].split(",")]
    templates = args.pop("template")
    if templates:
        args["templates"] = PAPER_TEMPLATES if templates == ["paper"] else templates
    cfg = replace(cfg, **{k: v for k, v in args.items() if v is not None})
    try:
        fit(cfg, output, resume=resume)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
