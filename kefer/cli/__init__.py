"""The ``kefer`` command: one entry point, a subcommand per job.

    kefer app                        the browser app: webcam and photos
    kefer analyze photos/ clip.mp4   every face in images, folders and videos -> CSV / JSON / plots
    kefer train --dataset ferplus    train a model (flags grouped by data, model, losses, ...)
    kefer evaluate --checkpoint runs/x --dataset ckplus
    kefer export runs/x assets/mine.safetensors
    kefer prepare ferplus ...        dataset downloads -> the layouts the loaders read
    kefer lab ...                    research tools: experiments, template sweeps, operating points, ...

Each subcommand's module is imported only when it runs, so ``kefer --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "app": ("kefer.cli.app", "the browser app: live webcam and photo upload"),
    "analyze": ("kefer.cli.analyze", "find and score every face in images, folders and videos"),
    "train": ("kefer.cli.train", "train a model on a dataset (FER+, RAF-DB, AffectNet, CK+, a folder)"),
    "evaluate": ("kefer.cli.evaluate", "a model's accuracy on a dataset split, also across datasets"),
    "export": ("kefer.cli.export", "ship a model: fp16 safetensors, ONNX or int8 ONNX"),
    "prepare": ("kefer.cli.prepare", "turn dataset downloads into the layouts the loaders read"),
    "lab": ("kefer.cli.lab", "research tools: experiments, template sweeps, operating points, ..."),
}


def dispatch(commands: dict, argv: list[str], prog: str, description: str) -> int:
    """Run ``commands[argv[0]]``'s ``main(argv[1:])``; ``--help`` (or nothing) lists the commands."""
    lines = "\n".join(f"  {name:12s} {text}" for name, (_, text) in commands.items())
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"commands:\n{lines}\n\n'{prog} COMMAND --help' shows a command's flags.")
    parser.add_argument("command", choices=list(commands), metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(commands[args.command][0])
    return module.main(argv[1:]) or 0


def main(argv=None) -> int:
    return dispatch(COMMANDS, sys.argv[1:] if argv is None else list(argv), "kefer",
                    "kefer: knowledge-enhanced facial expression recognition")
