"""``kefer export``: a trained run or model as fp16 safetensors, ONNX or int8 ONNX (``kefer.train.export``)."""
from __future__ import annotations

import argparse
import logging
import sys

from ..recognizer import resolve_checkpoint
from ..train.export import __doc__ as EXPORT_DOC, export, record_metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer export", description=EXPORT_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory or checkpoint file")
    p.add_argument("dest", nargs="?", help="the .safetensors or .onnx file to write (omit with --evaluate: measure "
                                           "RUN, a model file, in place and store its metrics)")
    p.add_argument("--command", help="the command that trained it, kept in the metadata")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights in a .safetensors file (default: fp16)")
    p.add_argument("--int8", action="store_true",
                   help="an .onnx file quantised to int8 (calibrated on 512 training images of the run's dataset)")
    p.add_argument("--evaluate", action="store_true",
                   help="store the metrics of the written file on the run's validation and test splits "
                        "(default: the run's own, measured before fp16 conversion)")
    args = p.parse_args(argv)
    try:
        if args.dest is None:
            if not args.evaluate:
                p.error("give DEST, or --evaluate to measure RUN in place")
            dest = resolve_checkpoint(args.run)
            record_metrics(dest)
        else:
            dest = export(args.run, args.dest, args.command, half=not args.fp32, evaluate=args.evaluate, int8=args.int8)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.getLogger("kefer").info("wrote %s (%.1f MB)", dest, dest.stat().st_size / 1e6)
    return 0

