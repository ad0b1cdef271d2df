"""``kefer lab experiments``: list, run and report the reproduction experiments (``kefer.lab.experiments``)."""
from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path

from ..io import log_to_console
from ..lab.experiments import EXPERIMENTS, ROOT, ROWS, SCALES, __doc__ as EXPERIMENTS_DOC, run
from ..lab.report import report

log = logging.getLogger("kefer.lab.experiments")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab experiments", description=EXPERIMENTS_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="experiments, their rows and flags")
    r = sub.add_parser("run", help="train and evaluate the runs of some experiments")
    r.add_argument("experiments", nargs="+")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--scale", choices=sorted(SCALES), default="full",
                   help="small: 2,000 training images, 10 epochs at 48 px (encoder rows: 4 at 80 px)")
    r.add_argument("--parallel", type=int, default=1, help="runs at a time")
    r.add_argument("--deadline", type=float, help="start no run after this many minutes")
    r.add_argument("--root", type=Path, default=ROOT / "runs" / "experiments")
    r.add_argument("--device", default="auto")
    r.add_argument("--workers", type=int, help="data-loading workers per run")
    r.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows of the experiments")
    r.epilog = "Flags after '--' are passed to every train.py run, e.g. -- --time-budget 7"
    g = sub.add_parser("report", help="collect finished runs and rebuild tables and plots")
    g.add_argument("--root", type=Path, default=ROOT / "runs" / "experiments")
    g.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    g.add_argument("--results-md", type=Path, default=ROOT / "docs" / "RESULTS.md")
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:len(argv) - len(passthrough) - (1 if "--" in argv else 0)])
    log_to_console()
    if args.command == "list":
        for name, (title, rows) in EXPERIMENTS.items():
            print(f"{name}: {title}")
            for row in rows:
                print(f"    {row:18s} {' '.join(ROWS[row])}")
    elif args.command == "run":
        extra = ["--device", args.device] + (["--workers", str(args.workers)] if args.workers is not None else [])
        extra += passthrough  # flags after '--' go to every train.py run and win over the row's
        log.info(f"hardware: {platform.processor() or platform.machine()}")
        run(args.experiments, args.seeds, args.scale, args.root, args.parallel, args.deadline, extra,
            "cpu" if args.device == "auto" else args.device, args.only)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        report(args.root, args.out, args.results_md)
    return 0

