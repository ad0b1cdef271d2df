"""The command line every lab study shares: a model, and where its result, plot and choice go."""
from __future__ import annotations

import argparse


def study_parser(prog: str, doc: str, write: str, plot: str) -> argparse.ArgumentParser:
    """``kefer lab <study> CHECKPOINT [--output JSON] [--plot PNG] [--write]``; ``write`` and
    ``plot`` say what those two flags store and draw. The study adds its own flags."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors or .onnx checkpoint, a run directory, or an assets/ model name")
    p.add_argument("--output", help="write the result as JSON")
    p.add_argument("--plot", help=plot)
    p.add_argument("--write", action="store_true", help=write)
    return p
