"""Train kefer: kefer train --dataset ferplus [--preset cpu] [--output runs/x] [--resume]
Fine-tune a model on your folder: kefer train --dataset folder --data-root mine --init accurate

Flags override the preset's values; the resolved config is saved as config.json in the run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

from ..io import log_to_console
from ..train.config import PRESETS, add_flags, flag_overrides, preset
from ..train.finetune import from_model
from ..train.fit import fit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper-r18", choices=sorted(PRESETS))
    add_flags(p)
    p.add_argument("--output", help="run directory (default: runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output after a stop")
    args = p.parse_args(argv)
    log_to_console(int(os.environ.get("RANK", "0")) == 0)  # under torchrun only the main process shows progress
    overrides = flag_overrides(args)
    cfg = replace(preset(args.preset), **overrides)
    try:
        if cfg.init and not args.resume:
            cfg = from_model(cfg, set(overrides))
        fit(cfg, args.output or time.strftime("runs/%Y%m%d-%H%M%S"), resume=args.resume)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
